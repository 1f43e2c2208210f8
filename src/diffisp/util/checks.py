"""Input checks shared by every public entry point.

Shape and dtype checks are static, so they cost nothing inside ``jit`` and run at trace time.
Value checks (NaN/Inf, range) need concrete numbers: they run only on concrete arrays, i.e. when
a user calls a function eagerly, never on tracers inside compiled training steps.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import numpy as np

from diffisp.errors import ConfigError, InputError, InputTypeError

# A little slack: values that left [0, 1] by float rounding are not user errors.
RANGE_TOLERANCE = 1e-4


def is_concrete(x: Any) -> bool:
    """True when ``x`` holds actual numbers (not a tracer inside jit/grad/vmap)."""
    return not isinstance(x, jax.core.Tracer)


def check_images(
    images: Any,
    *,
    name: str = "images",
    check_values: bool = True,
    value_range: tuple[float, float] | None = (0.0, 1.0),
) -> jax.Array:
    """Validate a batch of RGB images and return it as a JAX array.

    Args:
      images: ``(N, H, W, 3)`` floating-point array.
      name: how the argument is called in error messages.
      check_values: also check NaN/Inf and the value range (only on concrete arrays).
      value_range: allowed ``(low, high)`` values, or ``None`` for any finite value.

    Raises:
      InputTypeError: not an array, or not floating point.
      InputError: wrong rank, channel count, empty, non-finite or out-of-range values.
    """
    if not hasattr(images, "shape") or not hasattr(images, "dtype"):
        raise InputTypeError(
            f"{name} must be an array of shape (N, H, W, 3); got {type(images).__name__}"
        )
    if not np.issubdtype(np.dtype(images.dtype), np.floating):
        raise InputTypeError(
            f"{name} must be floating point with values in [0, 1]; got dtype {images.dtype}"
            + (" (divide 8-bit images by 255 first)" if images.dtype == np.uint8 else "")
        )
    if images.ndim != 4:
        raise InputError(
            f"{name} must have shape (N, H, W, 3) (a batch of RGB images); "
            f"got rank {images.ndim} shape {tuple(images.shape)}"
        )
    if images.shape[-1] != 3:
        raise InputError(
            f"{name} must have 3 colour channels in the last axis (NHWC); "
            f"got shape {tuple(images.shape)}"
        )
    if 0 in images.shape:
        raise InputError(f"{name} is empty: shape {tuple(images.shape)}")
    if check_values and is_concrete(images):
        check_finite_range(images, name=name, value_range=value_range)
    return images if isinstance(images, jax.Array) else jax.numpy.asarray(images)


def check_finite_range(
    values: Any, *, name: str, value_range: tuple[float, float] | None = (0.0, 1.0)
) -> None:
    """Raise :class:`InputError` if ``values`` has NaN/Inf or leaves ``value_range``."""
    arr = np.asarray(values)
    finite = np.isfinite(arr)
    if not finite.all():
        bad = int((~finite).sum())
        raise InputError(f"{name} contains {bad} NaN/Inf value(s)")
    if value_range is not None:
        low, high = value_range
        lo, hi = float(arr.min()), float(arr.max())
        if lo < low - RANGE_TOLERANCE or hi > high + RANGE_TOLERANCE:
            hint = " (scale 8-bit images to [0, 1] by dividing by 255)" if hi > 2.0 else ""
            raise InputError(
                f"{name} must lie in [{low:g}, {high:g}]; got values in [{lo:.4g}, {hi:.4g}]{hint}"
            )


def check_param(
    value: Any,
    *,
    name: str,
    batch: int,
    shape: tuple[int, ...] = (),
    value_range: tuple[float, float] | None = None,
) -> jax.Array:
    """Validate an op parameter: shared ``shape`` or per-image ``(batch, *shape)``.

    Raises:
      InputTypeError: not numeric.
      InputError: wrong shape, NaN/Inf, or outside ``value_range`` (checked when concrete).
    """
    if isinstance(value, (bool, np.bool_)):
        raise InputTypeError(f"{name} must be a number or an array, not a bool")
    try:
        arr = jax.numpy.asarray(value)
    except (TypeError, ValueError) as exc:  # strings, ragged lists, objects
        raise InputTypeError(f"{name} must be a number or an array; got {type(value)}") from exc
    dtype = np.dtype(arr.dtype)
    if not (np.issubdtype(dtype, np.floating) or np.issubdtype(dtype, np.integer)):
        raise InputTypeError(f"{name} must be real-valued; got dtype {arr.dtype}")
    if arr.shape not in (shape, (batch, *shape)):
        per_image = (batch, *shape)
        raise InputError(
            f"{name} must have shape {shape} (shared) or {per_image} (one per image); "
            f"got {tuple(arr.shape)}"
        )
    if is_concrete(arr):
        check_finite_range(arr, name=name, value_range=value_range)
    return arr.astype(jax.numpy.float32) if not np.issubdtype(arr.dtype, np.floating) else arr


def check_float_array(values: Any, *, name: str) -> jax.Array:
    """Validate a floating-point array of any shape (for elementwise ops); return it as JAX.

    Raises:
      InputTypeError: not an array, or not floating point.
      InputError: NaN/Inf (checked when concrete).
    """
    if not hasattr(values, "dtype") or not np.issubdtype(np.dtype(values.dtype), np.floating):
        raise InputTypeError(
            f"{name} must be a floating-point array; got {getattr(values, 'dtype', type(values))}"
        )
    if is_concrete(values):
        check_finite_range(values, name=name, value_range=None)
    return jax.numpy.asarray(values)


def finite_real(value: object) -> float | None:
    """``value`` as a float if it is a finite real number (not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def positive_range(name: str, pair: Any, upper: float = math.inf) -> tuple[float, float]:
    """A ``(low, high)`` pair with ``0 < low <= high <= upper``, as floats.

    Raises:
      ConfigError: not a pair of finite numbers in that order and range (naming ``name``).
    """
    if not isinstance(pair, (tuple, list)) or len(pair) != 2:
        raise ConfigError(f"{name} must be a (low, high) pair; got {pair!r}")
    low, high = finite_real(pair[0]), finite_real(pair[1])
    if low is None or high is None or not 0.0 < low <= high <= upper:
        bound = "" if math.isinf(upper) else f" <= {upper:g}"
        raise ConfigError(f"{name} range must satisfy 0 < low <= high{bound}; got {tuple(pair)}")
    return low, high
