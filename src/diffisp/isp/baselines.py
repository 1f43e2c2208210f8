"""Classical, non-learned ISPs: fixed gamma, auto exposure, histogram equalisation.

All are batched JAX functions of ``(N, H, W, 3)`` images in [0, 1] (no per-image Python loop),
module-level so they can be static arguments of compiled steps.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from diffisp.ops import adjust_gamma
from diffisp.ops.color import luminance

_EPS = 1e-6
# A textbook camera pipeline exposes for 18 % grey (mean linear luminance) and encodes with the
# sRGB-like gamma 1/2.2.
AUTO_EXPOSURE_TARGET = 0.18
DISPLAY_GAMMA = 1 / 2.2


def fixed_gamma(images: jax.Array) -> jax.Array:
    """The reference's fixed ISP: gamma 0.5."""
    return adjust_gamma(images, jnp.float32(0.5))


def gray_world(images: jax.Array) -> jax.Array:
    """Gray-world white balance: scale channels so their image means are equal."""
    means = jnp.mean(images, axis=(1, 2), keepdims=True)
    grey = jnp.mean(means, axis=-1, keepdims=True)
    return jnp.clip(images * grey / jnp.maximum(means, _EPS), 0.0, 1.0)


def auto_exposure(images: jax.Array, target: float = AUTO_EXPOSURE_TARGET) -> jax.Array:
    """Global gain per image that brings its mean luminance to ``target``."""
    mean = jnp.mean(luminance(images), axis=(1, 2, 3), keepdims=True)
    return jnp.clip(images * target / jnp.maximum(mean, _EPS), 0.0, 1.0)


def auto_isp(images: jax.Array) -> jax.Array:
    """Classical automatic pipeline: gray-world white balance, auto exposure, gamma 1/2.2."""
    return adjust_gamma(auto_exposure(gray_world(images)), jnp.float32(DISPLAY_GAMMA))


def equalize_histogram(images: jax.Array, nbins: int = 256) -> jax.Array:
    """Per-image histogram equalisation, as ``skimage.exposure.equalize_hist`` on each image.

    Like scikit-image, one histogram over all pixels and channels of an image, ``nbins`` bins
    spanning that image's [min, max], and each value mapped through the normalised cumulative
    histogram by linear interpolation between bin centres.
    """
    return jax.vmap(lambda image: _equalize_one(image, nbins))(images)


def _equalize_one(image: jax.Array, nbins: int) -> jax.Array:
    low, high = jnp.min(image), jnp.max(image)
    width = jnp.maximum(high - low, _EPS) / nbins
    bins = jnp.clip(((image - low) / width).astype(jnp.int32), 0, nbins - 1)
    hist = jnp.zeros(nbins, jnp.float32).at[bins.ravel()].add(1.0)
    cdf = jnp.cumsum(hist)
    cdf = cdf / cdf[-1]
    centres = low + width * (jnp.arange(nbins) + 0.5)
    # A constant image has no histogram to spread; scikit-image maps it to 0.5 (NumPy widens
    # the empty range to +-0.5, putting the value halfway between the middle bin centres).
    return jnp.where(high > low, jnp.interp(image, centres, cdf), 0.5)
