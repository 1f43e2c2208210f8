"""Colour operators: colour correction matrix, white balance, (de)saturation.

Contract (as in dm-pix): images are ``(N, H, W, 3)`` float arrays, RGB, nominally in [0, 1];
any finite values are accepted and nothing is clipped unless ``clip=True`` is asked for, so ops
chain without losing what an earlier one pushed out of range (an ISP clips once, at its output).
Parameters are either shared by the batch or given per image with a leading ``N`` axis
(Kornia-style broadcasting), which is what per-image adaptive ISPs need.

Luminance uses the Rec. 709 / sRGB weights ``(0.2126, 0.7152, 0.0722)``. They are the weights for
*linear* RGB, which is what a camera ISP sees before its gamma; they also stay close to Rec. 601
on gamma-encoded data. Blends with luminance are used instead of HSV round-trips because they
are linear, cheap and have no division, hence no NaN gradients (Kornia's recurring HSV problem).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from diffisp.ops._broadcast import per_image, per_image_channels
from diffisp.ops.clip import clip_unit
from diffisp.util.checks import check_images, check_param

LUMA_WEIGHTS = (0.2126, 0.7152, 0.0722)


def luminance(images: jax.Array) -> jax.Array:
    """Rec. 709 luminance.

    Args:
      images: ``(N, H, W, 3)`` RGB, any finite values.

    Returns:
      ``(N, H, W, 1)`` luminance (in [0, 1] when the input is: the weights are positive, sum 1).
    """
    images = check_images(images, value_range=None)
    weights = jnp.asarray(LUMA_WEIGHTS, dtype=images.dtype)
    return jnp.einsum("nhwc,c->nhw", images, weights)[..., None]


def apply_ccm(images: jax.Array, matrix: jax.Array, *, clip: bool = False) -> jax.Array:
    """Apply a 3x3 colour correction matrix: ``out_rgb = matrix @ in_rgb`` per pixel.

    Rows are output channels (the camera convention: row ``i`` says how much of each input
    channel goes into output channel ``i``). The identity matrix leaves images unchanged.

    Args:
      images: ``(N, H, W, 3)`` RGB, any finite values.
      matrix: ``(3, 3)`` shared or ``(N, 3, 3)`` per image.
      clip: clip the result to [0, 1] with :func:`clip_unit` (a matrix with negative or large
        entries leaves it).

    Returns:
      ``(N, H, W, 3)``, in [0, 1] when ``clip``.
    """
    images = check_images(images, value_range=None)
    matrix = check_param(matrix, name="matrix", batch=images.shape[0], shape=(3, 3))
    # Nine elementwise multiply-adds rather than an einsum: a matmul with a contraction of 3 is
    # dominated by call overhead on CPU, while this fuses into one pass (takes per-image
    # matrices without a batched matmul, and stays exact float32 on a GPU, where a matmul may
    # drop to TF32).
    matrix = matrix.astype(images.dtype)
    channels = [images[..., j] for j in range(3)]
    rows = [
        sum(per_image(matrix[..., i, j], trailing=2) * channels[j] for j in range(3))
        for i in range(3)
    ]
    out = jnp.stack(rows, axis=-1)
    return clip_unit(out) if clip else out


def white_balance(images: jax.Array, gains: jax.Array, *, clip: bool = False) -> jax.Array:
    """Multiply each colour channel by its gain (a diagonal colour matrix).

    Args:
      images: ``(N, H, W, 3)`` RGB, any finite values.
      gains: ``(3,)`` shared or ``(N, 3)`` per image; positive, 1 is identity.
      clip: clip the result to [0, 1] with :func:`clip_unit` (gains above 1 leave it).

    Returns:
      ``(N, H, W, 3)``, in [0, 1] when ``clip``.
    """
    images = check_images(images, value_range=None)
    gains = check_param(
        gains, name="gains", batch=images.shape[0], shape=(3,), value_range=(0, 1e6)
    )
    out = images * per_image_channels(gains)
    return clip_unit(out) if clip else out


def desaturate(images: jax.Array, strength: jax.Array) -> jax.Array:
    """Blend each pixel towards its luminance: ``out = (1 - s) * rgb + s * Y``.

    Args:
      images: ``(N, H, W, 3)`` RGB, any finite values.
      strength: ``s`` in [0, 1], scalar or ``(N,)``; 0 is identity, 1 is grayscale.

    Returns:
      ``(N, H, W, 3)``; a convex blend, so in [0, 1] whenever the input is.
    """
    images = check_images(images, value_range=None)
    strength = check_param(strength, name="strength", batch=images.shape[0], value_range=(0, 1))
    return images + per_image(strength) * (luminance(images) - images)


def adjust_saturation(images: jax.Array, factor: jax.Array, *, clip: bool = False) -> jax.Array:
    """Scale chroma around luminance: ``out = Y + k * (rgb - Y)``.

    Args:
      images: ``(N, H, W, 3)`` RGB, any finite values.
      factor: ``k >= 0``, scalar or ``(N,)``; 1 is identity, 0 grayscale, > 1 more saturated.
      clip: clip the result to [0, 1] with :func:`clip_unit` (``k > 1`` can leave it).

    Returns:
      ``(N, H, W, 3)``, in [0, 1] when ``clip``.
    """
    images = check_images(images, value_range=None)
    factor = check_param(factor, name="factor", batch=images.shape[0], value_range=(0, 1e6))
    luma = luminance(images)
    out = luma + per_image(factor) * (images - luma)
    return clip_unit(out) if clip else out
