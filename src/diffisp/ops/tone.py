"""Tone operators: exposure, gamma, tone curve, contrast.

Contract: images are ``(N, H, W, 3)`` float RGB in [0, 1]; parameters are shared (scalars) or
per image (leading ``N`` axis). Every operator has finite gradients for inputs anywhere in
[0, 1], including exact 0 and 1, which is where naive ``x ** gamma`` produces ``inf``/``NaN``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from diffisp.errors import InputError
from diffisp.ops._broadcast import per_image
from diffisp.ops.color import _luma
from diffisp.util.checks import check_images, check_param

# Below this input the gamma curve continues as a straight line through 0 (a "linear toe", as in
# sRGB): the slope at 0 is then t**(gamma-1) (at most ~500 for gamma >= 0.1) instead of infinite,
# and the curve differs from x**gamma only on inputs under 1e-3, a quarter of an 8-bit step.
GAMMA_TOE = 1e-3


def adjust_exposure(
    images: jax.Array, ev: jax.Array, *, clip: bool = True, saturation_gradient: bool = False
) -> jax.Array:
    """Digital gain in photographic stops: ``out = rgb * 2**ev``.

    Args:
      images: ``(N, H, W, 3)`` RGB in [0, 1].
      ev: exposure compensation in stops, scalar or ``(N,)``; 0 is identity, +1 doubles.
      clip: clip the result to [0, 1] (highlights saturate, as on a sensor).
      saturation_gradient: let gradients pass the clip as if it were not there (the values are
        still clipped). A learned gain that overexposes an image to all-white otherwise gets
        exactly zero gradient from it and can never come back; with this it is told to.

    Returns:
      ``(N, H, W, 3)``, in [0, 1] when ``clip``.
    """
    images = check_images(images)
    ev = check_param(ev, name="ev", batch=images.shape[0])
    out = images * jnp.exp2(per_image(ev))
    if not clip:
        return out
    if saturation_gradient:
        return out + jax.lax.stop_gradient(jnp.clip(out, 0.0, 1.0) - out)
    return jnp.clip(out, 0.0, 1.0)


def adjust_gamma(images: jax.Array, gamma: jax.Array) -> jax.Array:
    """Power-law tone response ``x**g`` with a linear toe so the slope at 0 stays finite.

    ``out = x**g`` for ``x >= t`` and ``out = x * t**(g - 1)`` below, with ``t = GAMMA_TOE``: the
    two pieces meet at ``t``, 0 maps to 0 and 1 to 1, ``g = 1`` is exactly the identity, and
    gradients with respect to both ``x`` and ``g`` are finite everywhere, including ``x = 0``.
    ``g < 1`` brightens (0.5 is the classic "fixed ISP" brightening).

    Args:
      images: ``(N, H, W, 3)`` RGB in [0, 1] (values outside are clamped first).
      gamma: positive exponent, scalar or ``(N,)``.

    Returns:
      ``(N, H, W, 3)`` in [0, 1].
    """
    images = check_images(images)
    gamma = check_param(gamma, name="gamma", batch=images.shape[0], value_range=(1e-6, 1e6))
    g = per_image(gamma)
    t = GAMMA_TOE
    x = jnp.clip(images, 0.0, 1.0)
    # max(x, t)**g * min(x / t, 1) is x**g above the toe and x * t**(g - 1) below it, in one
    # branch-free expression whose power never sees an input under t.
    return jnp.power(jnp.maximum(x, t), g) * jnp.minimum(x * (1.0 / t), 1.0)


def tone_curve(images: jax.Array, knots: jax.Array) -> jax.Array:
    """Piecewise-linear tone curve through ``K`` knots at inputs ``0, 1/(K-1), ..., 1``.

    Each value is mapped by linear interpolation between the two knots around it (inputs are
    clamped to [0, 1] first). The curve is monotone exactly when the knots are non-decreasing;
    learnable stages build them that way (see :func:`diffisp.isp.params.monotone_knots`).

    Args:
      images: ``(N, H, W, 3)`` RGB in [0, 1].
      knots: ``(K,)`` shared or ``(N, K)`` per image, ``K >= 2``: curve values at the knots.

    Returns:
      ``(N, H, W, 3)`` clipped to [0, 1].
    """
    images = check_images(images)
    knots = jnp.asarray(knots)
    if knots.ndim not in (1, 2) or knots.shape[-1] < 2:
        raise InputError(f"knots must have shape (K,) or (N, K) with K >= 2; got {knots.shape}")
    knots = check_param(knots, name="knots", batch=images.shape[0], shape=knots.shape[-1:])
    return _tone_curve(images, knots)


def _tone_curve(images: jax.Array, knots: jax.Array) -> jax.Array:
    # Look up each value's segment and interpolate. One gather forward and one scatter-add
    # backward: on CPU ~3x cheaper (forward + backward) than an unrolled sum of K-1 ramps,
    # whose backward needs K-1 separate reductions.
    num_segments = knots.shape[-1] - 1
    scaled = jnp.clip(images, 0.0, 1.0) * num_segments
    segment = jnp.clip(jnp.floor(scaled), 0, num_segments - 1).astype(jnp.int32)
    frac = scaled - segment
    flat = knots.reshape(-1)
    if knots.ndim == 2:  # per-image curves: offset into the flattened (N, K) table
        segment = segment + (knots.shape[-1] * jnp.arange(images.shape[0]))[:, None, None, None]
    low, high = flat[segment], flat[segment + 1]
    return jnp.clip(low + frac * (high - low), 0.0, 1.0)


def adjust_contrast(images: jax.Array, factor: jax.Array, *, clip: bool = True) -> jax.Array:
    """Scale deviations from each image's mean luminance: ``out = m + c * (rgb - m)``.

    Pivoting on the image's own mean (not mid-grey 0.5) keeps a dark image's brightness where it
    is while stretching its contrast, which is what a dark, low-contrast input needs.

    Args:
      images: ``(N, H, W, 3)`` RGB in [0, 1].
      factor: ``c >= 0``, scalar or ``(N,)``; 1 is identity, 0 a flat grey image.
      clip: clip the result to [0, 1].

    Returns:
      ``(N, H, W, 3)``, in [0, 1] when ``clip``.
    """
    images = check_images(images)
    factor = check_param(factor, name="factor", batch=images.shape[0], value_range=(0, 1e6))
    mean = jnp.mean(_luma(images), axis=(1, 2, 3), keepdims=True)
    out = mean + per_image(factor) * (images - mean)
    return jnp.clip(out, 0.0, 1.0) if clip else out
