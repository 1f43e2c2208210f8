"""Mixed capture conditions: distributions, gain-tied noise, casts, blur, bins, bad configs."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffisp.capture.mixed import (
    BIN_LABELS,
    ILLUMINANT_CASTS,
    ILLUMINANTS,
    MixedConditions,
    capture_mixed,
    condition_bins,
    gaussian_blur,
)
from diffisp.errors import ConfigError

# Flat mid-grey images and textured ones, few shapes (each shape compiles the capture anew).
FLAT = jnp.full((4000, 4, 4, 3), 0.5, jnp.float32)
CLEAN_ONLY = {"shot_noise": 0.0, "read_noise": 0.0, "blur_probability": 0.0}


def _textured(n: int = 16, size: int = 12) -> jax.Array:
    return jax.random.uniform(jax.random.key(9), (n, size, size, 3), minval=0.2, maxval=0.8)


def test_deterministic_for_a_key_and_different_across_keys():
    images = _textured()
    a, ca = capture_mixed(jax.random.key(1), images)
    b, cb = capture_mixed(jax.random.key(1), images)
    c, cc = capture_mixed(jax.random.key(2), images)
    np.testing.assert_array_equal(a, b)
    for name in ca:
        np.testing.assert_array_equal(ca[name], cb[name])
    assert not np.allclose(a, c)
    assert not np.allclose(ca["brightness"], cc["brightness"])


def test_draws_stay_in_their_ranges_and_gain_follows_the_formula():
    cfg = MixedConditions()
    dark, cond = capture_mixed(jax.random.key(0), FLAT, cfg)
    assert dark.shape == FLAT.shape and dark.dtype == FLAT.dtype
    assert float(dark.min()) >= 0.0 and float(dark.max()) <= 1.0
    brightness = np.asarray(cond["brightness"])
    assert brightness.min() >= 0.02 and brightness.max() <= 1.0
    np.testing.assert_allclose(cond["gain"], np.clip(0.5 / brightness, 1, 64), rtol=1e-6)
    allowed = {ILLUMINANTS.index(name) for name in cfg.illuminants}
    assert set(np.unique(cond["illuminant"]).tolist()) == allowed
    sigma = np.asarray(cond["blur_sigma"])
    blurred = sigma > 0
    assert np.all((sigma[blurred] >= 0.5) & (sigma[blurred] <= 1.0))
    assert abs(blurred.mean() - 0.2) < 0.03  # 4000 draws: binomial std 0.006
    assert all(v.shape == (4000,) for v in cond.values())


def test_brightness_is_log_uniform():
    _, cond = capture_mixed(jax.random.key(3), FLAT, MixedConditions(brightness=(0.01, 1.0)))
    logs = np.log10(np.asarray(cond["brightness"]))
    # log10 B ~ U(-2, 0): each decade half the draws, median at the geometric mean 0.1
    # (a uniform draw in B would put 90 % above 0.1).
    assert abs(np.mean(logs < -1) - 0.5) < 0.03
    assert abs(np.std(logs) - 2 / math.sqrt(12)) < 0.02


def test_illuminants_are_drawn_uniformly_and_repeats_weight_them():
    cfg = MixedConditions(illuminants=("tungsten", "daylight", "tungsten"))
    _, cond = capture_mixed(jax.random.key(10), FLAT, cfg)
    tungsten = np.mean(np.asarray(cond["illuminant"]) == ILLUMINANTS.index("tungsten"))
    assert abs(tungsten - 2 / 3) < 0.03  # binomial std 0.0075
    assert set(np.unique(cond["illuminant"]).tolist()) == {0, ILLUMINANTS.index("tungsten")}


def test_darker_captures_get_more_gain_and_more_noise_relative_to_signal():
    measured, recorded, gains = [], [], []
    for b in (1.0, 0.3, 0.1, 0.04):  # at 0.04 the mid-grey level is 3.9 noise sigmas above 0
        cfg = MixedConditions(brightness=(b, b), illuminants=("daylight",), blur_probability=0)
        dark, cond = capture_mixed(jax.random.key(4), FLAT, cfg)
        dark = np.asarray(dark, np.float64)
        np.testing.assert_allclose(dark.mean(), 0.5 * b, rtol=0.01)
        np.testing.assert_allclose(dark.std(), cond["noise_std"][0], rtol=0.03)
        measured.append(dark.std() / dark.mean())
        recorded.append(float(cond["relative_noise"][0]))
        gains.append(float(cond["gain"][0]))
    assert gains == sorted(gains) and gains[0] == 1.0 and gains[-1] == pytest.approx(12.5)
    np.testing.assert_allclose(measured, recorded, rtol=0.03)
    assert measured == sorted(measured)
    # 1.4 % of the signal at full exposure, 25 % at B = 0.04 (shot noise std ~ 1 / B):
    # sqrt(1e-4 * 12.5 * 0.02 + (8e-5 * 12.5)**2) / 0.02 = 0.255.
    assert measured[0] == pytest.approx(0.0141, rel=0.05)
    assert measured[-1] == pytest.approx(0.255, rel=0.05)


def test_noise_variance_is_linear_in_the_signal_at_a_fixed_gain():
    # B = 0.25 -> gain 2: variance a y + b with a = 2e-4, b = (1.6e-4)**2 (Foi et al.'s model).
    cfg = MixedConditions(brightness=(0.25, 0.25), illuminants=("daylight",), blur_probability=0)
    variances = []
    for level in (0.2, 0.8):
        dark, _ = capture_mixed(jax.random.key(5), FLAT * (level / 0.5), cfg)
        variances.append(float(np.var(np.asarray(dark, np.float64))))
    signals = np.array([0.05, 0.2])
    np.testing.assert_allclose(variances, 2e-4 * signals + (1.6e-4) ** 2, rtol=0.04)


def test_casts_give_the_illuminants_channel_ratios_and_keep_luminance():
    grey = FLAT * 0.8
    for name, expected in (
        ("daylight", (1.0, 1.0, 1.0)),
        ("tungsten", (1.8454, 0.8262, 0.2333)),  # CIE A through the sRGB matrix, / D65
        ("fluorescent", (1.3403, 0.9430, 0.5628)),
        ("shade", (0.9291, 1.0064, 1.1453)),
    ):
        cfg = MixedConditions(brightness=(0.5, 0.5), illuminants=(name,), **CLEAN_ONLY)
        dark, cond = capture_mixed(jax.random.key(6), grey, cfg)
        pixel = np.asarray(dark[0, 0, 0], np.float64)
        np.testing.assert_allclose(pixel, 0.2 * np.array(expected), rtol=2e-4)
        assert ILLUMINANTS[int(cond["illuminant"][0])] == name
        # The cast keeps luminance (Rec. 709 weights); white-balance gains 1 / cast undo it.
        assert float(pixel @ [0.2126, 0.7152, 0.0722]) == pytest.approx(0.2, rel=1e-3)
        wb_gains = 1.0 / ILLUMINANT_CASTS[ILLUMINANTS.index(name)]
        np.testing.assert_allclose(pixel * wb_gains, 0.2, rtol=1e-4)


def test_blur_only_where_drawn():
    images = np.asarray(_textured())
    cfg = MixedConditions(brightness=(1.0, 1.0), illuminants=("daylight",), shot_noise=0.0,
                          read_noise=0.0, blur_probability=0.5)  # fmt: skip
    dark, cond = capture_mixed(jax.random.key(7), jnp.asarray(images), cfg)
    dark = np.asarray(dark)
    blurred = np.asarray(cond["blur_sigma"]) > 0
    assert 0 < blurred.sum() < 16
    np.testing.assert_allclose(dark[~blurred], images[~blurred], atol=1e-6)
    change = np.abs(dark - images).max(axis=(1, 2, 3))
    assert np.all(change[blurred] > 0.05)
    # Blur smooths: lower pixel variance, same mean (edge replication keeps it close).
    assert np.all(np.var(dark[blurred], axis=(1, 2)) < np.var(images[blurred], axis=(1, 2)))
    never = MixedConditions(blur_probability=0.0)
    _, cond = capture_mixed(jax.random.key(7), jnp.asarray(images), never)
    assert not np.any(cond["blur_sigma"])


def test_gaussian_blur_has_the_requested_spread():
    impulse = jnp.zeros((2, 15, 15, 1)).at[:, 7, 7, 0].set(1.0)
    out = gaussian_blur(impulse, jnp.array([1.0, 0.0]), radius=3)
    np.testing.assert_allclose(out[1], impulse[1])  # sigma 0: unchanged
    profile = np.asarray(out[0, 7, :, 0], np.float64)
    profile = profile / profile.sum()
    offsets = np.arange(15) - 7
    # Second moment of the unit Gaussian sampled at -3..3 and normalised:
    # 2 (e^-0.5 + 4 e^-2 + 9 e^-4.5) / (1 + 2 (e^-0.5 + e^-2 + e^-4.5)) = 0.9959.
    assert float(profile @ offsets**2) == pytest.approx(0.9959, rel=1e-3)
    assert float(out[0].sum()) == pytest.approx(1.0, rel=1e-5)


def test_capture_is_jittable():
    images = _textured()
    cfg = MixedConditions()
    jitted = jax.jit(lambda key, x: capture_mixed(key, x, cfg))
    eager, _ = capture_mixed(jax.random.key(8), images, cfg)
    np.testing.assert_allclose(jitted(jax.random.key(8), images)[0], eager, atol=1e-6)


def test_bins_cover_every_image_with_the_documented_edges():
    conditions = {
        "brightness": np.array([0.02, 0.049, 0.05, 0.19, 0.2, 0.49, 0.5, 1.0]),
        "gain": np.array([25.0, 8.0, 7.99, 2.0, 1.99, 1.0, 1.0, 1.0]),
        "illuminant": np.array([0, 5, 1, 3, 0, 0, 2, 4]),
        "blur_sigma": np.array([0.0, 0.7, 0, 0, 0, 0, 0, 1.0]),
    }
    bins = condition_bins(conditions)
    assert list(bins["darkness"]) == ["very dark"] * 2 + ["dark"] * 2 + ["dim"] * 2 + ["bright"] * 2
    assert list(bins["noise"]) == ["high", "high", "mid", "mid", "low", "low", "low", "low"]
    assert list(bins["cast"]) == [ILLUMINANTS[i] for i in conditions["illuminant"]]
    assert list(bins["blur"]) == ["sharp", "blurred"] + ["sharp"] * 5 + ["blurred"]
    _, drawn = capture_mixed(jax.random.key(9), FLAT)
    for kind, labels in condition_bins(drawn).items():
        assert labels.shape == (4000,)
        assert set(labels) <= set(BIN_LABELS[kind])
    assert set(condition_bins(drawn)["darkness"]) == set(BIN_LABELS["darkness"])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"brightness": (0.0, 1.0)}, "0 < low <= high <= 1"),
        ({"brightness": (0.5, 0.1)}, "0 < low <= high <= 1"),
        ({"brightness": 0.3}, r"\(low, high\) pair"),
        ({"target_exposure": 0.0}, "target_exposure"),
        ({"max_gain": 0.5}, "max_gain"),
        ({"shot_noise": -1e-4}, "shot_noise"),
        ({"read_noise": float("nan")}, "read_noise"),
        ({"blur_probability": 1.5}, "blur_probability"),
        ({"blur_sigma": (0.5, 4.0)}, "blur_sigma"),
        ({"illuminants": ()}, "non-empty"),
        ({"illuminants": "tungsten"}, "non-empty"),
        ({"illuminants": ("tungsten", "moonlight")}, "moonlight"),
        ({"shot_noise": True}, "shot_noise"),
    ],
)
def test_bad_configs_are_rejected(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        MixedConditions(**kwargs)
