"""Pure ops: reference values, per-image broadcasting, bad input."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage

from diffisp import ops
from diffisp.errors import InputError, InputTypeError


def test_luminance_weights_are_rec709_and_sum_to_one(images):
    assert ops.LUMA_WEIGHTS == (0.2126, 0.7152, 0.0722)
    grey = jnp.full((1, 2, 2, 3), 0.4)
    np.testing.assert_allclose(ops.luminance(grey), 0.4, atol=1e-6)


def test_ccm_matches_matrix_product(images):
    m = jnp.array([[0.9, 0.1, 0.0], [0.05, 0.8, 0.1], [0.0, 0.2, 0.7]])
    want = np.einsum("ij,nhwj->nhwi", np.asarray(m), np.asarray(images))
    np.testing.assert_allclose(ops.apply_ccm(images, m), np.clip(want, 0, 1), atol=1e-6)


def test_desaturate_full_strength_is_grey(images):
    out = ops.desaturate(images, 1.0)
    np.testing.assert_allclose(out[..., 0], out[..., 1], atol=1e-6)
    np.testing.assert_allclose(out[..., :1], ops.luminance(images), atol=1e-6)


def test_saturation_zero_is_grey_and_one_is_identity(images):
    np.testing.assert_allclose(ops.adjust_saturation(images, 1.0), images, atol=1e-6)
    np.testing.assert_allclose(
        ops.adjust_saturation(images, 0.0)[..., :1], ops.luminance(images), atol=1e-6
    )


def test_white_balance_scales_channels(images):
    out = ops.white_balance(images * 0.5, jnp.array([1.0, 0.5, 2.0]))
    np.testing.assert_allclose(out[..., 2], np.clip(images[..., 2], 0, 1), atol=1e-6)
    np.testing.assert_allclose(out[..., 1], images[..., 1] * 0.25, atol=1e-6)


def test_gamma_close_to_plain_power_and_exact_at_ends(images):
    x = np.asarray(images)
    out = np.asarray(ops.adjust_gamma(images, 0.5))
    above = x >= ops.tone.GAMMA_TOE
    np.testing.assert_allclose(out[above], np.sqrt(x[above]), atol=1e-6)
    # Below the toe the curve is a line through 0 that meets x**g at the toe.
    np.testing.assert_allclose(out[~above], x[~above] * ops.tone.GAMMA_TOE**-0.5, rtol=1e-5)
    ends = ops.adjust_gamma(jnp.array([0.0, 1.0]).reshape(1, 1, 2, 1).repeat(3, -1), 0.3)
    np.testing.assert_allclose(ends.ravel(), [0, 0, 0, 1, 1, 1], atol=1e-6)


def test_exposure_doubles_per_stop(images):
    np.testing.assert_allclose(ops.adjust_exposure(images * 0.25, 1.0), images * 0.5, atol=1e-6)


def test_tone_curve_matches_numpy_interp(images):
    knots = np.sort(np.random.default_rng(0).uniform(0, 1, 16)).astype(np.float32)
    want = np.interp(np.asarray(images), np.linspace(0, 1, 16), knots)
    np.testing.assert_allclose(ops.tone_curve(images, knots), want, atol=1e-5)


def test_contrast_pivots_on_mean_luminance(images):
    dark = images * 0.2
    out = ops.adjust_contrast(dark, 0.0)
    mean = np.asarray(ops.luminance(dark)).mean(axis=(1, 2, 3))
    np.testing.assert_allclose(out[:, 0, 0, 0], mean, atol=1e-6)


def test_blur_matches_scipy_correlate_with_edge_mode(images):
    kernel = np.random.default_rng(1).uniform(0, 1, (3, 3)).astype(np.float32)
    want = ndimage.correlate(np.asarray(images), kernel[None, :, :, None], mode="nearest")
    np.testing.assert_allclose(ops.blur3x3(images, kernel), want, atol=1e-5)


def test_sharpen_and_denoise_leave_flat_images_alone():
    flat = jnp.full((2, 7, 7, 3), 0.3)
    np.testing.assert_allclose(ops.sharpen(flat, 2.0, jnp.ones((3, 3)) / 9), flat, atol=1e-6)
    np.testing.assert_allclose(ops.denoise(flat, 1.0, 0.1), flat, atol=1e-6)


def test_denoise_reduces_noise_but_keeps_a_strong_edge():
    rng = np.random.default_rng(0)
    step = np.zeros((1, 16, 16, 3), np.float32)
    step[:, :, 8:] = 0.8
    noisy = np.clip(step + rng.normal(0, 0.02, step.shape), 0, 1).astype(np.float32)
    out = np.asarray(ops.denoise(noisy, 1.0, 0.05))
    assert np.std(out[:, :, :6] - step[:, :, :6]) < 0.6 * np.std(noisy[:, :, :6] - step[:, :, :6])
    assert out[0, 8, 9, 0] > 0.7 and out[0, 8, 6, 0] < 0.1  # the edge survives


PER_IMAGE_CASES = {
    "ccm": (lambda x, p: ops.apply_ccm(x, p), (3, 3)),
    "white_balance": (lambda x, p: ops.white_balance(x, p), (3,)),
    "desaturate": (lambda x, p: ops.desaturate(x, p), ()),
    "saturation": (lambda x, p: ops.adjust_saturation(x, p), ()),
    "exposure": (lambda x, p: ops.adjust_exposure(x, p), ()),
    "gamma": (lambda x, p: ops.adjust_gamma(x, p), ()),
    "contrast": (lambda x, p: ops.adjust_contrast(x, p), ()),
    "tone_curve": (lambda x, p: ops.tone_curve(x, jnp.cumsum(p, -1) / 8), (16,)),
    "blur": (lambda x, p: ops.blur3x3(x, p), (3, 3)),
    "sharpen": (lambda x, p: ops.sharpen(x, p.sum(), jnp.ones((3, 3)) / 9), (2,)),
    "denoise": (lambda x, p: ops.denoise(x, p, 0.1), ()),
}


@pytest.mark.parametrize("name", PER_IMAGE_CASES)
def test_per_image_parameters_equal_one_call_per_image(name, images):
    fn, shape = PER_IMAGE_CASES[name]
    params = jax.random.uniform(
        jax.random.key(3), (images.shape[0], *shape), minval=0.2, maxval=1.0
    )
    if name == "sharpen":  # strength per image through a (N,) vector
        batched = ops.sharpen(images, params.sum(-1), jnp.ones((3, 3)) / 9)
    else:
        batched = fn(images, params)
    for i in range(images.shape[0]):
        single = fn(images[i : i + 1], params[i])
        np.testing.assert_allclose(batched[i : i + 1], single, atol=1e-5, err_msg=name)


@pytest.mark.parametrize(
    ("bad", "error", "match"),
    [
        (np.zeros((4, 4, 3), np.float32), InputError, "rank 3"),
        (np.zeros((1, 4, 4, 4), np.float32), InputError, "3 colour channels"),
        (np.zeros((1, 4, 4, 3), np.uint8), InputTypeError, "divide 8-bit"),
        (np.zeros((1, 4, 4, 3), np.int32), InputTypeError, "floating point"),
        (np.full((1, 4, 4, 3), np.nan, np.float32), InputError, "NaN"),
        (np.full((1, 4, 4, 3), 255.0, np.float32), InputError, r"\[0, 1\]"),
        (np.zeros((0, 4, 4, 3), np.float32), InputError, "empty"),
        ([[0.1, 0.2, 0.3]], InputTypeError, "array"),
    ],
)
def test_bad_images_give_clear_errors(bad, error, match):
    with pytest.raises(error, match=match):
        ops.adjust_gamma(bad, 0.5)


def test_bad_parameters_give_clear_errors(images):
    with pytest.raises(InputError, match=r"matrix must have shape \(3, 3\)"):
        ops.apply_ccm(images, jnp.eye(4))
    with pytest.raises(InputError, match="gamma must lie in"):
        ops.adjust_gamma(images, -1.0)
    with pytest.raises(InputError, match="NaN"):
        ops.adjust_exposure(images, jnp.nan)
    with pytest.raises(InputError, match="strength must lie in"):
        ops.desaturate(images, 2.0)
    with pytest.raises(InputError, match="knots must have shape"):
        ops.tone_curve(images, jnp.zeros((2, 3, 4)))
    with pytest.raises(InputTypeError, match="bool"):
        ops.adjust_gamma(images, True)


def test_checks_cost_nothing_inside_jit(images):
    # Value checks are skipped on tracers, so a jitted op compiles and runs on valid input.
    out = jax.jit(lambda x: ops.adjust_gamma(x, 0.5))(images)
    assert out.shape == images.shape
