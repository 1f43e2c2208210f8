"""The capture protocol: a model of how a camera records clean images, one key per image.

Every capture model (:class:`~diffisp.capture.low_light.LowLight`,
:class:`~diffisp.capture.mixed.MixedConditions`, :class:`~diffisp.capture.unprocess.RawCamera`)
is a frozen, hashable dataclass with

* ``raw``: whether its captures are :class:`~diffisp.capture.raw_capture.RawCapture` mosaics
  (else ``(N, H, W, 3)`` sRGB images);
* ``capture_batch(key, images) -> (captures, conditions)``: a batch drawn from one key, the
  recorded per-image draws as ``(N,)`` arrays;
* ``bins(conditions)``: the images grouped by those draws for per-condition results, or
  ``None`` when every image is captured alike (nothing to split by);
* ``at(kind, value)``: the model at one point of a robustness sweep (``"brightness"``: a fixed
  brightness factor; ``"noise_sigma"``: a fixed noise level, as each model defines it), and
  ``trained_range(kind)``: the range of that quantity the model draws from.

:func:`capture` is the one way training and evaluation capture images: image ``i`` is drawn from
``fold_in(key, indices[i])``, so it gets the same capture whether the set is in memory, streamed
in chunks of any size, or split over hosts.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np

from diffisp.capture.raw_capture import RawCapture

Captured = jax.Array | RawCapture
# Images captured per compiled call: bounds the device memory of one call on large sets, and
# small enough that sets of a few hundred images share one compiled size.
CAPTURE_CHUNK = 256
SWEEP_KINDS = ("brightness", "noise_sigma")


class CaptureModel(Protocol):
    """How a camera records clean ``(N, H, W, 3)`` images (see the module docstring)."""

    @property
    def raw(self) -> bool: ...

    def capture_batch(
        self, key: jax.Array, images: jax.Array
    ) -> tuple[Captured, dict[str, jax.Array]]: ...

    def bins(self, conditions: dict[str, np.ndarray]) -> dict[str, np.ndarray] | None: ...

    def at(self, kind: str, value: float) -> CaptureModel: ...

    def trained_range(self, kind: str) -> tuple[float, float]: ...


def capture(
    model: CaptureModel, key: jax.Array, images: Any, indices: Any = None
) -> tuple[Captured, dict[str, np.ndarray]]:
    """Capture ``images`` ``(N, H, W, 3)`` in [0, 1] with ``model``, image ``i`` from
    ``fold_in(key, indices[i])`` (default ``indices = arange(N)``).

    Returns the captures (images or a :class:`RawCapture` of N) on the device and each image's
    recorded conditions as ``(N,)`` host arrays.
    """
    images = jnp.asarray(images)
    n = int(images.shape[0])
    indices = np.arange(n) if indices is None else np.asarray(indices)
    if indices.shape != (n,):
        raise ValueError(f"indices must be ({n},) for {n} images; got {indices.shape}")
    # One chunk size (the last chunk padded with copies of its first image, dropped after):
    # a training and a test set compile one call between them, not one per size.
    chunk = min(CAPTURE_CHUNK, 1 << max(n - 1, 0).bit_length())
    parts = []
    for start in range(0, n, chunk):
        part, index = images[start : start + chunk], indices[start : start + chunk]
        short = chunk - int(part.shape[0])
        if short:
            part = jnp.concatenate([part, jnp.repeat(part[:1], short, axis=0)])
            index = np.concatenate([index, np.repeat(index[:1], short)])
        out = _capture_per_image(model, key, part, index)
        parts.append(jax.tree.map(lambda a, keep=chunk - short: a[:keep], out))
    captures, conditions = parts[0] if len(parts) == 1 else _concatenate(parts)
    return captures, {name: np.asarray(values) for name, values in conditions.items()}


@partial(jax.jit, static_argnames="model")
def _capture_per_image(
    model: CaptureModel, key: jax.Array, images: jax.Array, indices: jax.Array
) -> tuple[Captured, dict[str, jax.Array]]:
    def one(index: jax.Array, image: jax.Array) -> tuple[Captured, dict[str, jax.Array]]:
        out = model.capture_batch(jax.random.fold_in(key, index), image[None])
        return jax.tree.map(lambda a: a[0], out)

    return jax.vmap(one)(indices, images)


def _concatenate(parts: list) -> Any:
    return jax.tree.map(lambda *leaves: jnp.concatenate(leaves), *parts)


def check_sweep_kind(kind: str) -> str:
    if kind not in SWEEP_KINDS:
        raise ValueError(f"unknown sweep {kind!r}; choose from {', '.join(SWEEP_KINDS)}")
    return kind
