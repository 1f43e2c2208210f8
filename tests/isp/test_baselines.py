"""The classical baselines compute what their names promise (scikit-image where it has them)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from skimage.exposure import equalize_hist

from diffisp.isp.baselines import (
    AUTO_EXPOSURE_TARGET,
    auto_exposure,
    auto_isp,
    equalize_histogram,
    fixed_gamma,
    gray_world,
)
from diffisp.ops.color import luminance


@pytest.fixture
def dark_images():
    rng = np.random.default_rng(0)
    tint = np.array([0.6, 1.0, 0.4], np.float32)  # a colour cast for gray-world to remove
    return jnp.asarray(rng.uniform(0.0, 0.25, (4, 16, 16, 3)).astype(np.float32) * tint)


def test_histogram_equalisation_matches_scikit_image(dark_images):
    got = np.asarray(equalize_histogram(dark_images))
    # One histogram over all pixels and channels of each image, as the baseline documents.
    want = np.stack([equalize_hist(np.asarray(image).ravel()) for image in dark_images])
    want = want.reshape(got.shape)
    # Values that sit exactly on a bin edge may land one bin apart in float32 vs float64.
    assert np.mean(np.abs(got - want) < 1e-4) > 0.99
    np.testing.assert_allclose(got, want, atol=2 / 256)


def test_fixed_gamma_is_the_square_root_above_its_linear_toe(dark_images):
    x = np.asarray(dark_images)
    above_toe = x >= 1e-3  # below, gamma is linear so that its slope at 0 stays finite
    np.testing.assert_allclose(
        np.asarray(fixed_gamma(dark_images))[above_toe], np.sqrt(x[above_toe]), rtol=1e-5
    )


def test_gray_world_equalises_channel_means(dark_images):
    means = np.asarray(jnp.mean(gray_world(dark_images), axis=(1, 2)))
    np.testing.assert_allclose(means, np.repeat(means.mean(-1, keepdims=True), 3, -1), rtol=1e-4)


def test_auto_exposure_reaches_the_target_mean_luminance(dark_images):
    exposed = auto_exposure(dark_images)
    np.testing.assert_allclose(
        jnp.mean(luminance(exposed), axis=(1, 2, 3)), AUTO_EXPOSURE_TARGET, rtol=1e-4
    )


def test_baselines_keep_shape_and_range_and_survive_black_images(dark_images):
    black = jnp.zeros((2, 8, 8, 3), jnp.float32)
    for baseline in (fixed_gamma, gray_world, auto_exposure, auto_isp, equalize_histogram):
        for images in (dark_images, black):
            out = np.asarray(baseline(images))
            assert out.shape == images.shape and np.isfinite(out).all()
            assert out.min() >= 0.0 and out.max() <= 1.0
