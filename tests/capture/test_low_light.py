"""Low-light simulation: reference model, determinism, shot noise, bad configs."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffisp.capture.low_light import LowLight, darken
from diffisp.errors import ConfigError


def test_reference_defaults():
    cfg = LowLight()
    assert cfg.brightness == (0.1, 0.3) and cfg.noise_sigma == 0.02 and cfg.noise == "gaussian"


def test_factors_in_range_output_clipped_and_dark(images):
    dark, factors = darken(jax.random.key(0), images)
    assert dark.shape == images.shape
    assert np.all((factors >= 0.1) & (factors <= 0.3))
    assert float(dark.min()) >= 0 and float(dark.max()) <= 1
    assert float(dark.mean()) < 0.3 * float(images.mean())


def test_deterministic_for_a_key_and_different_across_keys(images):
    a, _ = darken(jax.random.key(5), images)
    b, _ = darken(jax.random.key(5), images)
    c, _ = darken(jax.random.key(6), images)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_noise_free_darkening_is_exact_scaling(images):
    dark, _ = darken(jax.random.key(1), images, LowLight(brightness=(0.2, 0.2), noise_sigma=0.0))
    np.testing.assert_allclose(dark, images * 0.2, atol=1e-6)


def test_gaussian_noise_has_the_requested_sigma():
    flat = jnp.full((4, 64, 64, 3), 0.5)
    dark, _ = darken(jax.random.key(2), flat, LowLight(brightness=(1.0, 1.0), noise_sigma=0.05))
    assert abs(float(jnp.std(dark)) - 0.05) < 0.003


def test_shot_noise_variance_grows_with_signal():
    cfg = LowLight(brightness=(1.0, 1.0), noise_sigma=0.0, noise="poisson_gaussian", full_well=500)
    stds = []
    for level in (0.05, 0.2, 0.8):
        flat = jnp.full((2, 64, 64, 3), level)
        dark, _ = darken(jax.random.key(3), flat, cfg)
        stds.append(float(jnp.std(dark)))
        np.testing.assert_allclose(float(jnp.mean(dark)), level, rtol=0.02)
        np.testing.assert_allclose(stds[-1], np.sqrt(level / 500), rtol=0.08)
    assert stds[0] < stds[1] < stds[2]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"brightness": (0.0, 0.3)}, "0 < low <= high <= 1"),
        ({"brightness": (0.3, 0.1)}, "0 < low <= high <= 1"),
        ({"brightness": (0.1, 1.5)}, "0 < low <= high <= 1"),
        ({"brightness": 0.2}, r"\(low, high\) pair"),
        ({"noise_sigma": -0.1}, "noise_sigma"),
        ({"noise_sigma": float("nan")}, "noise_sigma"),
        ({"noise": "speckle"}, "poisson_gaussian"),
        ({"full_well": 0}, "full_well"),
    ],
)
def test_bad_configs_are_rejected(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        LowLight(**kwargs)
