"""Tone operators: exposure, gamma, tone curve, contrast, smoothstep and its inverse.

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
from diffisp.util.checks import check_float_array, check_images, check_param

# Within this distance of 0 (and of 1) the inverse smoothstep is the straight line (secant)
# through the curve's end point: the exact inverse has an infinite slope there (smoothstep's is
# 0). The secant's slope is about 1/sqrt(3 t) = 577, and it differs from the exact inverse by
# at most ~1.5e-4 in x; smoothstep maps that back to within ~3e-7 of y (below float32's step
# at 1, so invisible after the round trip).
SMOOTHSTEP_TOE = 1e-6

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


def smoothstep(x: jax.Array) -> jax.Array:
    """The smoothstep S-curve ``3 x**2 - 2 x**3``, the tone curve of Brooks et al. (2019).

    It maps [0, 1] onto [0, 1], increasing, with slope 0 at both ends and 1.5 at 0.5: a mild
    contrast boost that Brooks et al. fit to camera JPEGs (applied to sRGB-encoded values).
    Outside [0, 1] the cubic turns back (it is 5 at -1 and -4 at 2), so the input is clipped to
    [0, 1] first: with the slope 0 at the ends this is the curve's own flat continuation, and
    the gradient outside is 0, the curve's slope at the end it continues.

    Args:
      x: float array of any shape, usually ``(N, H, W, 3)`` in [0, 1] (any finite values).

    Returns:
      Same shape, in [0, 1]; gradients finite everywhere.
    """
    x = clip_unit(check_float_array(x, name="x"))
    return x * x * (3.0 - 2.0 * x)


def inverse_smoothstep(y: jax.Array) -> jax.Array:
    """Inverse of :func:`smoothstep`: ``0.5 - sin(asin(1 - 2 y) / 3)`` on [0, 1].

    Computed in a form that is exact in float32 near the ends (where ``1 - 2 y`` rounds to
    +-1): for ``y <= 0.5`` as ``0.5 - sin(pi/6 - (2/3) asin(sqrt(y)))``, which is the same
    function (``asin(1 - 2 y) = pi/2 - 2 asin(sqrt(y))``), and for ``y > 0.5`` by the curve's
    symmetry, ``1 - inverse(1 - y)``. Within :data:`SMOOTHSTEP_TOE` of 0 and of 1 the exact
    inverse, whose slope is infinite there, is replaced by its secant (slope ~577), so the
    gradient is finite everywhere, including exactly 0 and 1.

    The input is clipped to [0, 1] first: smoothstep's values on [0, 1] are exactly [0, 1], so
    nothing outside has a preimage on the curve (the cubic's other branches are not tone
    curves), and a value slightly outside (rounding, a resampled image) is taken as black or
    white, the nearest value that has one; its gradient is 0.

    Args:
      y: float array of any shape, usually ``(N, H, W, 3)`` in [0, 1].

    Returns:
      Same shape, in [0, 1]: ``smoothstep(inverse_smoothstep(y)) == y`` up to float32 rounding
      (and ~3e-7 in the toes).
    """
    y = clip_unit(check_float_array(y, name="y"))
    lower_half = y <= 0.5
    distance = jnp.where(lower_half, y, 1.0 - y)  # to the nearer end; in [0, 0.5]
    x = _inverse_smoothstep_lower(distance)
    return jnp.where(lower_half, x, 1.0 - x)


def _inverse_smoothstep_lower(t: jax.Array) -> jax.Array:
    """Inverse smoothstep on [0, 0.5], with the secant toe below :data:`SMOOTHSTEP_TOE`."""

    def exact(v: jax.Array) -> jax.Array:
        return 0.5 - jnp.sin(np.pi / 6 - (2.0 / 3.0) * jnp.arcsin(jnp.sqrt(v)))

    in_toe = t < SMOOTHSTEP_TOE
    # The double where: the exact branch never sees t < toe (sqrt's slope is infinite at 0, and
    # 0 * inf would poison the gradient of the toe's pixels).
    safe = jnp.where(in_toe, SMOOTHSTEP_TOE, t)
    return jnp.where(in_toe, t * (exact(SMOOTHSTEP_TOE) / SMOOTHSTEP_TOE), exact(safe))
