"""What a RAW ISP takes in: Bayer mosaics and the metadata a camera records with them.

A :class:`RawCapture` is a JAX pytree (its arrays slice, batch and ``jit`` like any other; the
CFA pattern is static), so device-resident training data, batches and single real files all
have the same type. Simulated captures (:mod:`diffisp.capture.unprocess`) and real files
(:mod:`diffisp.data.raw_file`) both produce it; the RAW ISP (:mod:`diffisp.isp.raw`) consumes it.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from diffisp.errors import InputError
from diffisp.ops.raw import BAYER_PATTERNS


@struct.dataclass
class RawCapture:
    """A batch of Bayer captures, black level removed, with per-image camera metadata.

    Attributes:
      mosaic: ``(N, H, W)`` float32, ``H`` and ``W`` even; 0 at the black level, 1 at the white
        level (sensor noise may leave samples slightly below 0; nothing is clipped).
      wb_gains: ``(N, 3)`` white-balance multipliers for the camera's R, G, B (G = 1): the
        as-shot white balance, which makes a neutral surface neutral.
      cam_to_srgb: ``(N, 3, 3)`` white-balanced camera RGB -> linear sRGB, rows = output
        channels, each row summing to 1 (white stays white).
      noise: ``(N, 2)`` shot and read noise of the capture as the variance model
        ``var(x) = shot * x + read`` in normalised units (zeros where unknown).
      pattern: the CFA pattern of every image (``"RGGB"``, ``"GRBG"``, ``"GBRG"``, ``"BGGR"``).
    """

    mosaic: jax.Array
    wb_gains: jax.Array
    cam_to_srgb: jax.Array
    noise: jax.Array
    pattern: str = struct.field(pytree_node=False, default="RGGB")

    @property
    def num_images(self) -> int:
        return int(self.mosaic.shape[0])

    @property
    def image_shape(self) -> tuple[int, int]:
        """``(H, W)`` of the mosaic (and of the RGB image it demosaics to)."""
        return int(self.mosaic.shape[1]), int(self.mosaic.shape[2])

    def __getitem__(self, index: Any) -> RawCapture:
        """The captures ``index`` selects along the batch axis (a slice or index array)."""
        return jax.tree.map(lambda a: a[index], self)


def make_capture(
    mosaic: Any,
    *,
    wb_gains: Any = None,
    cam_to_srgb: Any = None,
    noise: Any = None,
    pattern: str = "RGGB",
) -> RawCapture:
    """Validate and assemble a :class:`RawCapture`; missing metadata get neutral defaults.

    Args:
      mosaic: ``(N, H, W)`` or one ``(H, W)`` mosaic, float, black level removed.
      wb_gains: ``(3,)`` or ``(N, 3)``, positive; default all ones.
      cam_to_srgb: ``(3, 3)`` or ``(N, 3, 3)``; default the identity.
      noise: ``(2,)`` or ``(N, 2)``, non-negative; default zeros (unknown).
      pattern: the CFA pattern.

    Raises:
      InputError: a shape that does not match the mosaic.
      InputError: an unknown pattern, or non-finite or out-of-range metadata.
    """
    pattern_name = str(pattern).upper()
    if pattern_name not in BAYER_PATTERNS:
        raise InputError(f"unknown CFA pattern {pattern!r}; expected one of {BAYER_PATTERNS}")
    mosaic = jnp.asarray(mosaic)
    if mosaic.ndim == 2:
        mosaic = mosaic[None]
    if mosaic.ndim != 3 or mosaic.shape[1] % 2 or mosaic.shape[2] % 2 or 0 in mosaic.shape:
        raise InputError(
            f"a mosaic must be (N, H, W) with even, non-zero H and W; got {tuple(mosaic.shape)}"
        )
    if not jnp.issubdtype(mosaic.dtype, jnp.floating):
        raise InputError(
            f"a capture's mosaic must be float (black level removed, white = 1); got "
            f"{mosaic.dtype}: normalise sensor counts with diffisp.ops.normalize_levels first"
        )
    n = mosaic.shape[0]

    def per_image(value: Any, default: np.ndarray, name: str) -> jax.Array:
        array = jnp.asarray(default if value is None else value, jnp.float32)
        if array.shape == default.shape:
            array = jnp.broadcast_to(array, (n, *default.shape))
        if array.shape != (n, *default.shape):
            raise InputError(
                f"{name} must be {default.shape} or {(n, *default.shape)} for {n} mosaics; "
                f"got {tuple(array.shape)}"
            )
        if not bool(jnp.isfinite(array).all()):
            raise InputError(f"{name} contains NaN or Inf")
        return array

    gains = per_image(wb_gains, np.ones(3, np.float32), "wb_gains")
    if not bool((gains > 0).all()):
        raise InputError(f"wb_gains must be positive; got {np.asarray(gains).tolist()}")
    noise_values = per_image(noise, np.zeros(2, np.float32), "noise")
    if not bool((noise_values >= 0).all()):
        raise InputError("noise levels must be non-negative")
    return RawCapture(
        mosaic=mosaic.astype(jnp.float32),
        wb_gains=gains,
        cam_to_srgb=per_image(cam_to_srgb, np.eye(3, dtype=np.float32), "cam_to_srgb"),
        noise=noise_values,
        pattern=pattern_name,
    )


def num_images(images: Any) -> int:
    """Batch size of an image array ``(N, ...)`` or of a :class:`RawCapture`."""
    return int(jax.tree.leaves(images)[0].shape[0])
