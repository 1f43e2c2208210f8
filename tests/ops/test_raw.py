"""RAW ops: mosaic and demosaic against colour-demosaicing, packing, levels, white balance,
camera-to-sRGB matrix, the sRGB curve, gradients, batching and bad input."""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffisp import ops
from diffisp.errors import ConfigError, InputError, InputTypeError

with warnings.catch_warnings():  # colour-science warns about optional packages it lacks
    warnings.simplefilter("ignore")
    import colour_demosaicing as reference

PATTERNS = ops.BAYER_PATTERNS
DEMOSAICERS = {
    "bilinear": (ops.demosaic_bilinear, reference.demosaicing_CFA_Bayer_bilinear, 1),
    "malvar2004": (ops.demosaic_malvar2004, reference.demosaicing_CFA_Bayer_Malvar2004, 2),
}
# Float32 rounding of a sum of up to 11 taps of values in [0, 1]; the reference runs in float64.
FLOAT32_ATOL = 1e-6


def random_mosaics(seed: int = 0, shape: tuple[int, ...] = (3, 10, 14)) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 1, shape).astype(np.float32)


def reference_demosaic(function, raw: np.ndarray, pattern: str) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.stack([function(image, pattern) for image in raw])


# --- mosaic, masks, packing --------------------------------------------------------------------


@pytest.mark.parametrize("pattern", PATTERNS)
def test_masks_and_mosaic_match_colour_demosaicing(pattern):
    masks = ops.cfa_masks(pattern, 5, 7)
    want = reference.masks_CFA_Bayer((5, 7), pattern)
    for channel in range(3):
        np.testing.assert_array_equal(masks[..., channel], want[channel])
    rgb = np.random.default_rng(1).uniform(0, 1, (2, 6, 8, 3)).astype(np.float32)
    got = ops.mosaic(jnp.asarray(rgb), pattern)
    assert got.shape == (2, 6, 8)
    np.testing.assert_array_equal(got, [reference.mosaicing_CFA_Bayer(x, pattern) for x in rgb])
    np.testing.assert_array_equal(got, (rgb * ops.cfa_masks(pattern, 6, 8)).sum(-1))


@pytest.mark.parametrize("pattern", PATTERNS)
def test_pack_bayer_orders_r_g1_g2_b_and_unpack_inverts_it(pattern):
    # Green values that say which row they are on: G1 must come from the red rows.
    rgb = np.zeros((2, 4, 6, 3), np.float32)
    rgb[..., 0], rgb[..., 2] = 0.25, 0.75
    rgb[:, :, :, 1] = np.arange(4)[:, None] % 2
    red_row, blue_row = pattern.index("R") // 2, pattern.index("B") // 2
    raw = ops.mosaic(jnp.asarray(rgb), pattern)
    packed = ops.pack_bayer(raw, pattern)
    assert packed.shape == (2, 2, 3, 4)
    np.testing.assert_array_equal(packed[..., 0], 0.25)
    np.testing.assert_array_equal(packed[..., 1], red_row)
    np.testing.assert_array_equal(packed[..., 2], blue_row)
    np.testing.assert_array_equal(packed[..., 3], 0.75)
    np.testing.assert_array_equal(ops.pack_bayer(raw, pattern.lower()), packed)
    mosaics = random_mosaics(2, (2, 6, 8))
    np.testing.assert_array_equal(
        ops.unpack_bayer(ops.pack_bayer(mosaics, pattern), pattern), mosaics
    )
    planes = random_mosaics(3, (2, 3, 4, 4))
    np.testing.assert_array_equal(
        ops.pack_bayer(ops.unpack_bayer(planes, pattern), pattern), planes
    )


# --- demosaicing -------------------------------------------------------------------------------


@pytest.mark.parametrize("method", DEMOSAICERS)
@pytest.mark.parametrize("pattern", PATTERNS)
def test_demosaic_matches_colour_demosaicing_inside_the_border(pattern, method):
    ours, theirs, radius = DEMOSAICERS[method]
    raw = random_mosaics()
    got = np.asarray(ours(jnp.asarray(raw), pattern))
    want = reference_demosaic(theirs, raw, pattern)
    assert got.shape == (*raw.shape, 3)
    inside = np.s_[:, radius:-radius, radius:-radius]
    np.testing.assert_allclose(got[inside], want[inside], rtol=0, atol=FLOAT32_ATOL)


@pytest.mark.parametrize("method", DEMOSAICERS)
@pytest.mark.parametrize("pattern", PATTERNS)
def test_demosaic_border_differs_from_colour_demosaicing_only_by_the_mirrored_extension(
    pattern, method
):
    # Given the mosaic extended by whole-sample mirroring (which keeps the CFA phase, as the
    # padding is even), colour-demosaicing agrees with diffisp at every pixel. On the bare mosaic
    # its own border rule (scipy's half-sample "reflect") changes the outer `radius` rows and
    # columns, and only those (colour-demosaicing issue #8; see the diffisp.ops.raw docstring).
    ours, theirs, radius = DEMOSAICERS[method]
    raw = random_mosaics(4)
    got = np.asarray(ours(jnp.asarray(raw), pattern))
    mirrored = np.pad(raw, ((0, 0), (2, 2), (2, 2)), mode="reflect")
    want = reference_demosaic(theirs, mirrored, pattern)[:, 2:-2, 2:-2]
    np.testing.assert_allclose(got, want, rtol=0, atol=FLOAT32_ATOL)

    differs = np.abs(got - reference_demosaic(theirs, raw, pattern)).max(axis=(0, 3)) > 1e-3
    assert not differs[radius:-radius, radius:-radius].any()
    for side in (differs[:radius], differs[-radius:], differs[:, :radius], differs[:, -radius:]):
        assert side.any()


@pytest.mark.parametrize("method", DEMOSAICERS)
@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("size", [(2, 2), (4, 6), (10, 8)])
def test_demosaic_returns_a_constant_colour_at_every_pixel(pattern, method, size):
    colour = np.array([0.2, 0.5, 0.9], np.float32)
    images = np.broadcast_to(colour, (2, *size, 3))
    out = DEMOSAICERS[method][0](ops.mosaic(jnp.asarray(images), pattern), pattern)
    np.testing.assert_allclose(out, images, rtol=0, atol=FLOAT32_ATOL)


@pytest.mark.parametrize("method", DEMOSAICERS)
@pytest.mark.parametrize("pattern", PATTERNS)
def test_demosaic_keeps_the_measured_samples(pattern, method):
    raw = jnp.asarray(random_mosaics(5))
    demosaiced = DEMOSAICERS[method][0](raw, pattern)
    np.testing.assert_array_equal(ops.mosaic(demosaiced, pattern), raw)


def test_malvar_beats_bilinear_on_a_natural_image():
    # The gradient correction is what Malvar et al. add; in the wrong place it would hurt.
    from skimage import data

    image = jnp.asarray(data.astronaut()[None, 100:260, 150:310] / 255.0, jnp.float32)
    for pattern in PATTERNS:
        raw = ops.mosaic(image, pattern)
        errors = {
            name: float(jnp.mean((function(raw, pattern) - image) ** 2))
            for name, (function, _, _) in DEMOSAICERS.items()
        }
        gain_db = 10 * np.log10(errors["bilinear"] / errors["malvar2004"])
        assert gain_db > 2.0, (pattern, gain_db)


# --- levels, white balance, colour -------------------------------------------------------------


def test_normalize_levels_per_cfa_position_unclipped():
    counts = np.random.default_rng(6).integers(0, 4096, (2, 4, 6)).astype(np.uint16)
    black, white = np.array([64, 60, 62, 66], np.float32), 4095.0
    tile = np.tile(black.reshape(2, 2), (2, 3))
    want = (counts - tile) / (white - tile)
    got = ops.normalize_levels(jnp.asarray(counts), black, white)
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    assert float(got.min()) < 0  # counts under the black level stay negative
    np.testing.assert_allclose(
        ops.normalize_levels(counts.astype(np.float32), 64, 4095), (counts - 64.0) / 4031.0, 1e-6
    )
    per_image = np.stack([black, black + 10])
    got = ops.normalize_levels(jnp.asarray(counts), per_image, np.array([4095.0, 1023.0]))
    np.testing.assert_allclose(got[1], (counts[1] - tile - 10) / (1023.0 - tile - 10), 1e-6)


@pytest.mark.parametrize("pattern", PATTERNS)
def test_cfa_white_balance_commutes_with_mosaicing(pattern):
    rgb = jnp.asarray(np.random.default_rng(7).uniform(0, 1, (2, 4, 6, 3)), jnp.float32)
    gains = jnp.array([[2.0, 1.0, 1.5], [1.2, 1.0, 3.0]])
    np.testing.assert_allclose(
        ops.apply_cfa_white_balance(ops.mosaic(rgb, pattern), gains, pattern),
        ops.mosaic(rgb * gains[:, None, None, :], pattern),
        rtol=1e-7,
    )


def test_camera_to_srgb_is_a_per_pixel_matrix_product_unclipped():
    images = np.random.default_rng(8).uniform(-0.05, 1.1, (2, 3, 4, 3)).astype(np.float32)
    matrix = np.array([[1.8, -0.6, -0.2], [-0.2, 1.5, -0.3], [0.0, -0.5, 1.5]], np.float32)
    want = np.einsum("ij,nhwj->nhwi", matrix, images)
    np.testing.assert_allclose(ops.camera_to_srgb(images, matrix), want, rtol=1e-5, atol=1e-6)
    matrices = np.stack([matrix, np.eye(3, dtype=np.float32)])
    got = ops.camera_to_srgb(images, matrices)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got[1], images[1], rtol=0, atol=0)


def _srgb_encode_float64(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)  # (abs: np.where evaluates the power on negatives too)
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.abs(x) ** (1 / 2.4) - 0.055)


def test_srgb_curve_known_values_and_round_trip():
    encoded = ops.srgb_encode(jnp.array([0.0, 0.0031308, 0.18, 1.0, -0.01]))
    np.testing.assert_allclose(encoded, [0.0, 0.04045, 0.46135613, 1.0, -0.1292], atol=1e-6)
    grid = jnp.linspace(-0.1, 1.2, 4001)  # both sides of both knees, and beyond [0, 1]
    np.testing.assert_allclose(ops.srgb_encode(grid), _srgb_encode_float64(grid), atol=1e-6)
    np.testing.assert_allclose(ops.srgb_decode(ops.srgb_encode(grid)), grid, atol=1e-6)
    np.testing.assert_allclose(ops.srgb_encode(ops.srgb_decode(grid)), grid, atol=1e-6)


@pytest.mark.parametrize("function", [ops.srgb_encode, ops.srgb_decode])
def test_srgb_curve_gradients_are_finite_at_zero_tiny_saturated_and_negative(function):
    # -0.1 puts decode's power base (v + 0.055) / 1.055 below 0, where x**2.4 is NaN.
    x = jnp.array([0.0, 1e-12, 1.0, -1e-3, -1e-30, -0.1])
    grad = np.asarray(jax.grad(lambda v: function(v).sum())(x))
    assert np.isfinite(grad).all()
    encode = function is ops.srgb_encode
    np.testing.assert_allclose(grad[[0, 1, 3, 4, 5]], 12.92 if encode else 1 / 12.92, rtol=1e-6)
    np.testing.assert_allclose(grad[2], 1.055 / 2.4 if encode else 2.4 / 1.055, rtol=1e-5)


def test_raw_pipeline_gradient_is_finite_from_black_to_saturation():
    # Counts exactly at the black level, at saturation, below black (noise) and in between.
    counts = np.array(
        [[60, 64, 4095, 4095], [1000, 64, 30, 64], [64, 64, 2000, 3000], [1, 0, 64, 4095]]
    )
    raw = jnp.asarray(np.tile(counts, (1, 2, 2)), jnp.float32)
    matrix = jnp.array([[1.7, -0.5, -0.2], [-0.2, 1.4, -0.2], [0.0, -0.6, 1.6]])

    def loss(raw, gains):
        linear = ops.normalize_levels(raw, 64.0, 4095.0)
        balanced = ops.apply_cfa_white_balance(linear, gains, "GRBG")
        rgb = ops.camera_to_srgb(ops.demosaic_malvar2004(balanced, "GRBG"), matrix)
        return ops.srgb_encode(rgb).sum()

    grads = jax.jit(jax.grad(loss, argnums=(0, 1)))(raw, jnp.array([2.0, 1.0, 1.6]))
    assert all(np.isfinite(g).all() for g in grads)
    assert np.abs(grads[1]).sum() > 0


# --- batching, jit, bad input ------------------------------------------------------------------

_RGB = np.random.default_rng(9).uniform(0, 1, (3, 6, 8, 3)).astype(np.float32)
_RAW = random_mosaics(10, (3, 6, 8))
BATCHED = {
    "mosaic": (lambda x: ops.mosaic(x, "GBRG"), _RGB),
    "bilinear": (lambda x: ops.demosaic_bilinear(x, "BGGR"), _RAW),
    "malvar2004": (lambda x: ops.demosaic_malvar2004(x, "GRBG"), _RAW),
    "pack": (lambda x: ops.pack_bayer(x, "GBRG"), _RAW),
    "levels": (lambda x: ops.normalize_levels(x, jnp.array([0.1, 0.0, 0.05, 0.1]), 0.9), _RAW),
    "white_balance": (
        lambda x: ops.apply_cfa_white_balance(x, jnp.array([2, 1, 1.5]), "BGGR"),
        _RAW,
    ),
    "camera_to_srgb": (lambda x: ops.camera_to_srgb(x, jnp.eye(3) * 1.5 - 0.1), _RGB),
    "srgb_encode": (ops.srgb_encode, _RGB),
}


@pytest.mark.parametrize("name", BATCHED)
def test_image_k_of_a_batch_equals_that_image_alone_and_jit_equals_eager(name):
    function, batch = BATCHED[name]
    out = np.asarray(function(jnp.asarray(batch)))
    for k in range(batch.shape[0]):
        np.testing.assert_allclose(out[k], function(jnp.asarray(batch[k : k + 1]))[0], atol=1e-7)
    np.testing.assert_allclose(jax.jit(function)(batch), out, rtol=1e-6, atol=1e-7)


MOSAIC = np.zeros((1, 4, 4), np.float32)
RGB = np.zeros((1, 4, 4, 3), np.float32)


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: ops.demosaic_malvar2004(np.zeros((1, 5, 6), np.float32)), InputError, "even"),
        (lambda: ops.demosaic_bilinear(np.zeros((1, 6, 7), np.float32)), InputError, "W=7"),
        (lambda: ops.mosaic(np.zeros((1, 3, 4, 3), np.float32)), InputError, "H=3"),
        (lambda: ops.pack_bayer(np.zeros((4, 6), np.float32)), InputError, r"raw\[None\]"),
        (
            lambda: ops.demosaic_bilinear(np.zeros((1, 4, 6, 1), np.float32)),
            InputError,
            r"\.\.\., 0",
        ),
        (
            lambda: ops.demosaic_bilinear(np.zeros((1, 4, 6), np.uint16)),
            InputTypeError,
            "normalize_levels",
        ),
        (lambda: ops.demosaic_bilinear(np.full((1, 2, 2), np.nan, np.float32)), InputError, "NaN"),
        (lambda: ops.demosaic_bilinear(MOSAIC, "RGBG"), ConfigError, "RGBG"),
        (lambda: ops.mosaic(RGB, "XYZW"), ConfigError, "one of"),
        (lambda: ops.pack_bayer(MOSAIC, 3), InputTypeError, "string"),
        (lambda: ops.cfa_masks("RGGB", 0, 4), InputError, "height must be a positive"),
        (
            lambda: ops.unpack_bayer(np.zeros((1, 2, 2, 3), np.float32)),
            InputError,
            r"\(N, H/2, W/2, 4\)",
        ),
        (lambda: ops.normalize_levels(MOSAIC, np.zeros(3), 1.0), InputError, "black_level"),
        (lambda: ops.normalize_levels(MOSAIC, 100, 100), InputError, "must exceed"),
        (lambda: ops.apply_cfa_white_balance(MOSAIC, -np.ones(3)), InputError, "gains_rgb"),
        (lambda: ops.camera_to_srgb(RGB, np.eye(4)), InputError, "matrix"),
        (lambda: ops.srgb_encode(np.arange(3)), InputTypeError, "floating"),
        (lambda: ops.srgb_decode(np.array([0.5, np.inf])), InputError, "NaN/Inf"),
    ],
)
def test_bad_input_gives_a_clear_error(call, error, match):
    with pytest.raises(error, match=match):
        call()
