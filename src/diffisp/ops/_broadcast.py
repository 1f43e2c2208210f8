"""Broadcasting of shared or per-image parameters against NHWC batches."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def per_image(value: jax.Array, trailing: int = 3) -> jax.Array:
    """Reshape a scalar or a ``(N,)`` vector so it broadcasts over ``(N, H, W, C)``.

    ``trailing`` is how many image axes follow the batch axis (3 for H, W, C).
    """
    value = jnp.asarray(value)
    if value.ndim == 0:
        return value
    return value.reshape(value.shape[:1] + (1,) * trailing)


def per_image_channels(value: jax.Array) -> jax.Array:
    """Reshape ``(3,)`` or ``(N, 3)`` channel parameters to broadcast over ``(N, H, W, 3)``."""
    value = jnp.asarray(value)
    if value.ndim == 1:
        return value
    return value[:, None, None, :]
