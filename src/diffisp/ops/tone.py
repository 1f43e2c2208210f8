"""Tone operators: exposure, gamma, tone curve, contrast.

Contract: images are ``(N, H, W, 3)`` float RGB, nominally in [0, 1] but any finite values are
accepted: nothing is clipped unless ``clip=True`` is asked for (an ISP clips once, at its output),
and the gamma and the tone curve define themselves outside [0, 1] (see each). Parameters are
shared (scalars) or per image (leading ``N`` axis). Every operator has finite gradients for any
finite input, including exact 0 and 1, which is where naive ``x ** gamma`` produces
``inf``/``NaN``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from diffisp.errors import InputError
from diffisp.ops._broadcast import per_image
from diffisp.ops.clip import clip_unit
from diffisp.ops.color import luminance
from diffisp.util.checks import check_images, check_param

# Below this input the gamma curve continues as a straight line through 0 (a "linear toe", as in
# sRGB): the slope at 0 is then t**(gamma-1) (at most ~500 for gamma >= 0.1) instead of infinite,
# and the curve differs from x**gamma only on inputs under 1e-3, a quarter of an 8-bit step.
GAMMA_TOE = 1e-3


def adjust_exposure(images: jax.Array, ev: jax.Array, *, clip: bool = False) -> jax.Array:
    """Digital gain in photographic stops: ``out = rgb * 2**ev``.

    Args:
      images: ``(N, H, W, 3)`` RGB, any finite values.
      ev: exposure compensation in stops, scalar or ``(N,)``; 0 is identity, +1 doubles.
      clip: clip the result to [0, 1] with :func:`clip_unit` (highlights saturate, as on a
        sensor). Off by default: a positive ``ev`` takes bright pixels above 1, and a later
        tone curve may bring them back.

    Returns:
      ``(N, H, W, 3)``, in [0, 1] when ``clip``.
    """
    images = check_images(images, value_range=None)
    ev = check_param(ev, name="ev", batch=images.shape[0])
    out = images * jnp.exp2(per_image(ev))
    return clip_unit(out) if clip else out


def adjust_gamma(images: jax.Array, gamma: jax.Array) -> jax.Array:
    """Power-law tone response ``x**g`` on [0, 1], extended to any real input.

    With ``t = GAMMA_TOE``, for ``x >= 0`` (and mirrored, ``out(-x) = -out(x)``, below 0):

    * ``t <= x <= 1``: ``x**g``;
    * ``0 <= x < t``: the straight line ``x * t**(g - 1)`` through 0 that meets ``x**g`` at ``t``
      (a "linear toe", as in sRGB), so the slope at 0 is finite (at most ~500 for ``g >= 0.1``)
      instead of infinite;
    * ``x > 1``: the tangent at 1, ``1 + g * (x - 1)``. ``x**g`` itself would grow without bound
      for ``g > 1`` (a pixel an earlier gain took to 20 would become 20**10 = 1e13 at ``g = 10``,
      and overflow to ``inf`` further on, which turns gradients into NaN);
    * ``x < 0``: mirrored, as extended-range sRGB encodes negative values. ``x**g`` has no real
      value there, and a clamp to 0 would cut the gradient of every negative pixel that an
      earlier colour matrix or sharpening produced.

    0 maps to 0 and 1 to 1, ``g = 1`` is exactly the identity, the curve is odd, increasing and
    continuous with its slope at 1, and gradients with respect to both ``x`` and ``g`` are finite
    everywhere, including ``x = 0`` (slope ``t**(g - 1)``) and ``x = 1`` (slope ``g``).
    ``g < 1`` brightens (0.5 is the classic "fixed ISP" brightening).

    Args:
      images: ``(N, H, W, 3)`` RGB, any finite values (maps [0, 1] onto [0, 1]).
      gamma: positive exponent, scalar or ``(N,)``.

    Returns:
      ``(N, H, W, 3)``, in [0, 1] whenever the input is.
    """
    images = check_images(images, value_range=None)
    gamma = check_param(gamma, name="gamma", batch=images.shape[0], value_range=(1e-6, 1e6))
    return _gamma(images, per_image(gamma))


def _gamma(x: jax.Array, g: jax.Array) -> jax.Array:
    magnitude = jnp.abs(x)
    above_one = magnitude > 1.0
    # The power sees only bases in [t, 1] (never 0: no infinite slope; never > 1: no overflow),
    # also where its branch is not selected, so that branch's gradient is finite, not inf * 0.
    # At |x| = 1 exactly the base is 1 through max(), not a clip's tie, so the slope there is g.
    base = jnp.where(above_one, 1.0, jnp.maximum(magnitude, GAMMA_TOE))
    power_law = x * jnp.power(base, g - 1.0)  # x**g above the toe, the toe's line below it
    tangent = g * x + (1.0 - g) * jnp.sign(x)  # 1 + g (x - 1) above 1, mirrored below -1
    return jnp.where(above_one, tangent, power_law)


def tone_curve(images: jax.Array, knots: jax.Array) -> jax.Array:
    """Piecewise-linear tone curve through ``K`` knots at inputs ``0, 1/(K-1), ..., 1``.

    Each value is mapped by linear interpolation between the two knots around it. Outside
    [0, 1], where there are no knots, the first and last segments continue as straight lines:
    the curve stays continuous and (for non-decreasing knots) monotone, identity knots give the
    identity everywhere, and an out-of-range pixel keeps the gradient of its end segment, where a
    clamp to [0, 1] would give it none. The curve is monotone exactly when the knots are
    non-decreasing; learnable stages build them that way (see
    :func:`diffisp.isp.params.monotone_knots`).

    Args:
      images: ``(N, H, W, 3)`` RGB, any finite values.
      knots: ``(K,)`` shared or ``(N, K)`` per image, ``K >= 2``: curve values at the knots.

    Returns:
      ``(N, H, W, 3)``, not clipped: in the range of the knots for inputs in [0, 1].
    """
    images = check_images(images, value_range=None)
    try:
        shape = np.shape(knots)
    except ValueError:  # a ragged list: check_param names it
        shape = ()
    # (K,) shared or (N, K) per image; check_param converts and refuses None, strings, NaN.
    knots = check_param(knots, name="knots", batch=images.shape[0], shape=shape[-1:])
    if knots.ndim not in (1, 2) or knots.shape[-1] < 2:
        raise InputError(f"knots must have shape (K,) or (N, K) with K >= 2; got {knots.shape}")
    return _tone_curve(images, knots)


def _tone_curve(images: jax.Array, knots: jax.Array) -> jax.Array:
    # Look up each value's segment and interpolate. One gather forward and one scatter-add
    # backward: on CPU ~3x cheaper (forward + backward) than an unrolled sum of K-1 ramps,
    # whose backward needs K-1 separate reductions.
    num_segments = knots.shape[-1] - 1
    scaled = images * num_segments
    # Inputs outside [0, 1] use the end segments with frac < 0 or > 1: a linear extension.
    segment = jnp.clip(jnp.floor(scaled), 0, num_segments - 1).astype(jnp.int32)
    frac = scaled - segment
    flat = knots.reshape(-1)
    if knots.ndim == 2:  # per-image curves: offset into the flattened (N, K) table
        segment = segment + (knots.shape[-1] * jnp.arange(images.shape[0]))[:, None, None, None]
    low, high = flat[segment], flat[segment + 1]
    return low + frac * (high - low)


def adjust_contrast(images: jax.Array, factor: jax.Array, *, clip: bool = False) -> jax.Array:
    """Scale deviations from each image's mean luminance: ``out = m + c * (rgb - m)``.

    Pivoting on the image's own mean (not mid-grey 0.5) keeps a dark image's brightness where it
    is while stretching its contrast, which is what a dark, low-contrast input needs.

    Args:
      images: ``(N, H, W, 3)`` RGB, any finite values.
      factor: ``c >= 0``, scalar or ``(N,)``; 1 is identity, 0 a flat grey image.
      clip: clip the result to [0, 1] with :func:`clip_unit` (``c > 1`` can leave it).

    Returns:
      ``(N, H, W, 3)``, in [0, 1] when ``clip``.
    """
    images = check_images(images, value_range=None)
    factor = check_param(factor, name="factor", batch=images.shape[0], value_range=(0, 1e6))
    mean = jnp.mean(luminance(images), axis=(1, 2, 3), keepdims=True)
    out = mean + per_image(factor) * (images - mean)
    return clip_unit(out) if clip else out
