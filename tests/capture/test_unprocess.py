"""Unprocessing (Brooks et al. 2019): the inverse of the reference pipeline, metadata, noise.

Round-trip PSNRs measured on the first 300 built-in test images (32x32, seed 0), key 0, no
noise, no darkening, ``process_capture(unprocess(x))`` against ``x``:

* without demosaicing (``process_rgb(unprocess_rgb(x))``), highlight preservation off:
  145.3 dB, max abs error 3.6e-7 (the colour, white-balance and tone inversion is exact);
  on (the default): 78.2 dB, max abs error 0.039 (highlights are not inverted exactly);
* through the mosaic (white balance before demosaicing), highlight preservation on or off:
  bilinear 24.04 dB, Malvar 27.77 dB. The demosaicing error dominates: mosaicing and
  demosaicing the sRGB images directly gives 27.0 / 30.1 dB on these small, detailed crops.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffisp.capture.camera_matrices import srgb_to_camera_matrices
from diffisp.capture.raw_capture import make_capture
from diffisp.capture.unprocess import (
    UnprocessConfig,
    process_rgb,
    sample_camera,
    unprocess,
    unprocess_rgb,
)
from diffisp.data.builtin import load_builtin
from diffisp.errors import ConfigError, InputError, InputTypeError
from diffisp.isp.raw import process_capture
from diffisp.ops import BAYER_PATTERNS, mosaic

EXACT = UnprocessConfig(brightness=(1.0, 1.0), noise=False, preserve_highlights=False)
NOISY_12_BIT = UnprocessConfig(quantize_bits=12)


def psnr(a, b) -> float:
    error = np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)
    return float(10 * np.log10(1 / error))


@pytest.fixture(scope="module")
def photos() -> jax.Array:
    return jnp.asarray(load_builtin(1, 300, seed=0).test_images)


def test_colour_white_balance_and_tone_inversion_is_exact(photos):
    capture, camera = unprocess(jax.random.key(0), photos, EXACT)
    camera_rgb = unprocess_rgb(photos, camera, preserve_highlights=False)
    back = process_rgb(camera_rgb, capture.wb_gains, capture.cam_to_srgb)
    assert float(jnp.abs(back - photos).max()) < 1e-5  # measured 3.6e-7
    assert psnr(back, photos) > 60  # measured 145.3 dB
    # Brooks et al.'s highlight-preserving inverse is only approximately undone (78.2 dB).
    camera_rgb = unprocess_rgb(photos, camera, preserve_highlights=True)
    back = process_rgb(camera_rgb, capture.wb_gains, capture.cam_to_srgb)
    assert 70 < psnr(back, photos) < 100


@pytest.mark.parametrize(("demosaic", "floor"), [("bilinear", 23.5), ("malvar", 27.2)])
def test_round_trip_through_the_mosaic(photos, demosaic, floor):
    capture, _ = unprocess(jax.random.key(0), photos, EXACT)
    assert psnr(process_capture(capture, demosaic=demosaic), photos) > floor  # 24.04 / 27.77


def test_highlight_preservation_saturates_white_in_every_channel():
    white = jnp.ones((2, 4, 4, 3))
    cfg = dataclasses.replace(EXACT, preserve_highlights=True)
    _, camera = unprocess(jax.random.key(1), white, cfg)
    np.testing.assert_allclose(unprocess_rgb(white, camera), 1.0, atol=1e-5)
    plain = unprocess_rgb(white, camera, preserve_highlights=False)[:, 0, 0]
    want = jnp.stack([1 / camera["red_gain"], jnp.ones(2), 1 / camera["blue_gain"]], -1)
    np.testing.assert_allclose(plain, want, rtol=1e-5)
    # Both still process back to white (the red and blue gains take 1 above 1, then clipped).
    capture, _ = unprocess(jax.random.key(1), white, cfg)
    np.testing.assert_allclose(process_capture(capture), 1.0, atol=1e-5)


@pytest.mark.parametrize("pattern", BAYER_PATTERNS)
def test_every_pattern_samples_the_right_colours_and_round_trips_a_flat_colour(pattern):
    colour = jnp.broadcast_to(jnp.array([0.8, 0.4, 0.2]), (3, 8, 8, 3))
    cfg = dataclasses.replace(EXACT, pattern=pattern.lower())
    capture, camera = unprocess(jax.random.key(2), colour, cfg)
    assert capture.pattern == pattern
    want = mosaic(unprocess_rgb(colour, camera, preserve_highlights=False), pattern)
    np.testing.assert_allclose(capture.mosaic, want, atol=1e-6)
    for demosaic in ("bilinear", "malvar"):  # both reproduce a flat colour everywhere
        np.testing.assert_allclose(process_capture(capture, demosaic=demosaic), colour, atol=2e-5)


def test_deterministic_per_key_and_different_across_keys(photos):
    x, cfg = photos[:8], NOISY_12_BIT
    (a, info_a), (b, info_b) = (unprocess(jax.random.key(3), x, cfg) for _ in range(2))
    for left, right in zip(jax.tree.leaves((a, info_a)), jax.tree.leaves((b, info_b)), strict=True):
        np.testing.assert_array_equal(left, right)
    c, info_c = unprocess(jax.random.key(4), x, cfg)
    assert not np.allclose(a.mosaic, c.mosaic)
    assert not np.allclose(info_a["red_gain"], info_c["red_gain"])


def test_jit_and_vmap_agree_with_eager_calls(photos):
    x, cfg = photos[:8], NOISY_12_BIT
    keys = jax.random.split(jax.random.key(5), 2)
    compiled = jax.jit(jax.vmap(lambda k: unprocess(k, x, cfg)[0].mosaic))(keys)
    for key, mosaic_of_key in zip(keys, compiled, strict=True):
        np.testing.assert_allclose(mosaic_of_key, unprocess(key, x, cfg)[0].mosaic, atol=1e-6)


def test_metadata_shapes_and_ranges(photos):
    n, cfg = 8, NOISY_12_BIT
    capture, info = unprocess(jax.random.key(6), photos[:n], cfg)
    assert capture.mosaic.shape == (n, 32, 32) and capture.mosaic.dtype == jnp.float32
    assert capture.wb_gains.shape == (n, 3) and capture.cam_to_srgb.shape == (n, 3, 3)
    assert capture.noise.shape == (n, 2) and capture.pattern == "RGGB"
    assert float(capture.mosaic.max()) <= 1.0 and float(capture.mosaic.min()) < 0  # kept
    gains = np.asarray(capture.wb_gains)
    assert ((gains[:, 0] >= 1.9) & (gains[:, 0] <= 2.4)).all() and (gains[:, 1] == 1).all()
    assert ((gains[:, 2] >= 1.5) & (gains[:, 2] <= 1.9)).all()
    assert info["brightness"].shape == (n,)
    assert ((info["brightness"] >= 0.1) & (info["brightness"] <= 0.3)).all()
    np.testing.assert_allclose(capture.cam_to_srgb.sum(-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(
        capture.cam_to_srgb @ info["srgb_to_camera"],
        np.broadcast_to(np.eye(3), (n, 3, 3)),
        atol=1e-5,
    )
    cameras, weight = np.asarray(info["cameras"]), np.asarray(info["camera_weight"])[:, None, None]
    table = srgb_to_camera_matrices()
    mixed = weight * table[cameras[:, 0]] + (1 - weight) * table[cameras[:, 1]]
    assert (cameras[:, 0] != cameras[:, 1]).all()
    np.testing.assert_allclose(info["srgb_to_camera"], mixed, atol=1e-6)
    np.testing.assert_array_equal(
        capture.noise, np.stack([info["shot_noise"], info["read_noise"]], -1)
    )


def test_darkening_scales_the_linear_signal():
    x = jax.random.uniform(jax.random.key(7), (3, 8, 8, 3))
    full, _ = unprocess(jax.random.key(8), x, EXACT)
    dark, info = unprocess(jax.random.key(8), x, dataclasses.replace(EXACT, brightness=(0.2, 0.2)))
    np.testing.assert_allclose(info["brightness"], 0.2)
    np.testing.assert_allclose(dark.mosaic, 0.2 * full.mosaic, atol=1e-6)


def test_noise_levels_follow_the_brooks_model():
    camera = sample_camera(jax.random.key(9), 4000, UnprocessConfig())
    log_shot, log_read = np.log(camera["shot_noise"]), np.log(camera["read_noise"])
    assert log_shot.min() >= np.log(1e-4) - 1e-5 and log_shot.max() <= np.log(0.012) + 1e-5
    assert abs(log_shot.mean() - (np.log(1e-4) + np.log(0.012)) / 2) < 0.1  # log-uniform
    residual = log_read - (2.18 * log_shot + 1.20)
    assert abs(residual.mean()) < 0.02 and abs(residual.std() - 0.26) < 0.02


def test_noise_variance_is_shot_times_signal_plus_read(photos):
    grey = jnp.full(photos.shape, 0.5)  # 300 images of 32x32, each with its own noise levels
    noisy, info = unprocess(jax.random.key(10), grey, dataclasses.replace(EXACT, noise=True))
    clean, _ = unprocess(jax.random.key(10), grey, EXACT)  # the same camera, no noise
    np.testing.assert_array_equal(clean.noise, 0.0)
    variance = info["shot_noise"][:, None, None] * clean.mosaic + info["read_noise"][:, None, None]
    standardised = (noisy.mosaic - clean.mosaic) / jnp.sqrt(variance)
    assert abs(float(standardised.var()) - 1) < 0.01 and abs(float(standardised.mean())) < 0.01
    # Per image (1024 samples, standard error of the variance ~0.044).
    np.testing.assert_allclose(standardised.var(axis=(1, 2)), 1.0, atol=0.25)


def test_quantisation_puts_every_sample_on_the_grid(photos):
    capture, _ = unprocess(jax.random.key(11), photos[:8], NOISY_12_BIT)
    counts = np.asarray(capture.mosaic, np.float64) * 4095
    np.testing.assert_allclose(counts, np.round(counts), atol=1e-3)


def test_gradients_with_respect_to_the_images_are_finite_at_0_tiny_and_1():
    x = jnp.stack([jnp.zeros((4, 4, 3)), jnp.full((4, 4, 3), 1e-7), jnp.ones((4, 4, 3))])

    def loss(images):  # noise, highlight preservation and quantisation (straight-through) on
        capture, _ = unprocess(jax.random.key(12), images, NOISY_12_BIT)
        return (capture.mosaic**2).sum()

    grads = np.asarray(jax.grad(loss)(x))
    assert np.isfinite(grads).all() and np.abs(grads).max() > 0


@pytest.mark.parametrize(
    "changes",
    [
        {"red_gain": (2.4, 1.9)},
        {"blue_gain": (0.0, 1.0)},
        {"brightness": (0.1, 1.5)},
        {"brightness": 0.2},
        {"shot_noise": (1e-4, float("nan"))},
        {"read_noise_sigma": -0.1},
        {"read_noise_slope": "2.18"},
        {"pattern": "RGBG"},
        {"quantize_bits": 0},
        {"quantize_bits": 12.0},
        {"noise": 1},
        {"preserve_highlights": None},
    ],
)
def test_bad_config_raises_config_error(changes):
    with pytest.raises(ConfigError):
        UnprocessConfig(**changes)


@pytest.mark.parametrize(
    ("images", "error", "match"),
    [
        (np.zeros((2, 8, 8, 3), np.uint8), InputTypeError, "divide 8-bit"),
        (np.full((2, 8, 8, 3), 2.0, np.float32), InputError, r"\[0, 1\]"),
        (np.zeros((2, 7, 8, 3), np.float32), InputError, "even height and width"),
        (np.zeros((8, 8, 3), np.float32), InputError, r"\(N, H, W, 3\)"),
        (np.full((1, 8, 8, 3), np.nan, np.float32), InputError, "NaN"),
    ],
)
def test_bad_images_give_clear_errors(images, error, match):
    with pytest.raises(error, match=match):
        unprocess(jax.random.key(0), images)


def test_bad_arguments_give_clear_errors():
    x = jnp.zeros((1, 4, 4, 3))
    with pytest.raises(InputTypeError, match="UnprocessConfig"):
        unprocess(jax.random.key(0), x, {"noise": False})
    capture = make_capture(jnp.zeros((1, 4, 4)))
    with pytest.raises(ConfigError, match="demosaic"):
        process_capture(capture, demosaic="nearest")
    with pytest.raises(InputTypeError, match="RawCapture"):
        process_capture(x)
