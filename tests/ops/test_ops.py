"""Pure ops: reference values, no clipping by default, the one clip, gradients, bad input."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage

from diffisp import ops
from diffisp.errors import InputError, InputTypeError
from diffisp.ops._broadcast import per_image as broadcast
from diffisp.ops.spatial import _bilateral


def test_luminance_weights_are_rec709_and_sum_to_one(images):
    assert ops.LUMA_WEIGHTS == (0.2126, 0.7152, 0.0722)
    grey = jnp.full((1, 2, 2, 3), 0.4)
    np.testing.assert_allclose(ops.luminance(grey), 0.4, atol=1e-6)


def test_ccm_matches_matrix_product(images):
    m = jnp.array([[0.9, 0.1, 0.0], [0.05, 0.8, 0.1], [0.0, 0.2, 0.7]])
    want = np.einsum("ij,nhwj->nhwi", np.asarray(m), np.asarray(images))
    np.testing.assert_allclose(ops.apply_ccm(images, m), want, atol=1e-6)


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


@pytest.mark.parametrize("per_image", [True, False])
@pytest.mark.parametrize("radius", [1, 2])
def test_denoise_gradient_is_jaxs_own_gradient_of_the_filter(per_image, radius):
    # The written-out backward pass against autodiff of the same forward maths, on a small
    # odd-sized batch (every pixel near a border) with edges, in every input.
    def autodiff(x, s, r):
        filtered, _ = _bilateral(x, r, radius)
        return x + broadcast(s) * (filtered - x)

    x = jax.random.uniform(jax.random.key(0), (3, 7, 6, 3))
    x = x.at[:, :, 3:].multiply(0.2)
    s = jnp.asarray([0.2, 0.7, 1.0]) if per_image else jnp.asarray(0.6)
    r = jnp.asarray([0.03, 0.1, 0.4]) if per_image else jnp.asarray(0.08)
    w = jax.random.normal(jax.random.key(1), x.shape)

    def loss(f):
        return lambda x, s, r: jnp.sum(w * jnp.sin(3 * f(x, s, r)))

    def ours(x, s, r):
        return ops.denoise(x, s, r, radius=radius)

    want = jax.grad(loss(autodiff), argnums=(0, 1, 2))(x, s, r)
    got = jax.grad(loss(ours), argnums=(0, 1, 2))(x, s, r)
    np.testing.assert_allclose(ours(x, s, r), autodiff(x, s, r), atol=1e-6)
    for g, e in zip(got, want, strict=True):
        assert g.shape == e.shape
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-5 * float(jnp.max(jnp.abs(e))))


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
        (np.full((1, 4, 4, 3), np.inf, np.float32), InputError, "NaN/Inf"),
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


# --- the one clip --------------------------------------------------------------------------


def test_clip_unit_values_equal_jnp_clip():
    x = jnp.array([-3.0, -0.1, 0.0, 1e-7, 0.5, 1.0 - 1e-7, 1.0, 1.1, 250.0])
    np.testing.assert_array_equal(ops.clip_unit(x), jnp.clip(x, 0.0, 1.0))
    np.testing.assert_array_equal(jax.jit(ops.clip_unit)(x), jnp.clip(x, 0.0, 1.0))


def test_clip_unit_passes_the_full_gradient_on_the_closed_interval():
    x = jnp.array([-0.1, 0.0, 0.5, 1.0, 1.1])
    grad = jax.vmap(jax.grad(ops.clip_unit))(x)
    np.testing.assert_array_equal(grad, [0.0, 1.0, 1.0, 1.0, 0.0])
    # Forward mode agrees (custom_jvp), and jnp.clip, for contrast, splits the tie at 0 and 1.
    np.testing.assert_array_equal(jax.jvp(ops.clip_unit, (x,), (jnp.ones_like(x),))[1], grad)
    np.testing.assert_array_equal(
        jax.vmap(jax.grad(lambda v: jnp.clip(v, 0.0, 1.0)))(x), [0.0, 0.5, 1.0, 0.5, 0.0]
    )


def test_full_gradient_reaches_exact_zero_pixels_through_clipped_ops():
    # Low-light training images have many exact zeros (noise clipped at 0); a gain followed by
    # a clip must pass their whole gradient, not jnp.clip's half.
    x = jnp.zeros((1, 2, 2, 3)).at[0, 0, 0].set(0.3)

    def total(images):
        return ops.white_balance(images, jnp.array([1.0, 1.0, 1.0]), clip=True).sum()

    grad = jax.grad(total)(x)
    np.testing.assert_array_equal(grad, np.ones(x.shape, np.float32))


# --- no clipping unless asked ----------------------------------------------------------------

RAMP = jnp.linspace(0.0, 1.0, 4 * 5 * 3).reshape(1, 4, 5, 3)
BOOST_KNOTS = jnp.linspace(-0.2, 1.5, 16)
# Each op with parameters whose maths takes [0, 1] inputs outside [0, 1].
LEAVES_THE_RANGE = {
    "ccm": lambda x, **kw: ops.apply_ccm(x, 2.0 * jnp.eye(3) - 0.3, **kw),
    "white_balance": lambda x, **kw: ops.white_balance(x, jnp.array([2.0, 1.0, 0.5]), **kw),
    "saturation": lambda x, **kw: ops.adjust_saturation(x, 3.0, **kw),
    "exposure": lambda x, **kw: ops.adjust_exposure(x, 1.0, **kw),
    "contrast": lambda x, **kw: ops.adjust_contrast(x, 3.0, **kw),
    "sharpen": lambda x, **kw: ops.sharpen(x, 3.0, jnp.ones((3, 3)) / 9, **kw),
}


@pytest.mark.parametrize("name", sorted(LEAVES_THE_RANGE))
def test_ops_do_not_clip_by_default_and_clip_when_asked(name):
    fn = LEAVES_THE_RANGE[name]
    raw = np.asarray(fn(RAMP))
    assert raw.min() < -1e-3 or raw.max() > 1 + 1e-3, f"{name}: range [{raw.min()}, {raw.max()}]"
    np.testing.assert_array_equal(fn(RAMP, clip=True), np.clip(raw, 0.0, 1.0))


def test_tone_curve_extends_its_end_segments_linearly_outside_the_unit_range():
    knots = np.sort(np.random.default_rng(2).uniform(-0.2, 1.5, 16)).astype(np.float32)
    first, last = 15 * (knots[1] - knots[0]), 15 * (knots[-1] - knots[-2])  # end slopes
    values = np.array([-0.5, -0.01, 0.0, 0.37, 1.0, 1.01, 3.0], np.float32)
    inside = np.interp(np.clip(values, 0, 1), np.linspace(0, 1, 16), knots)
    want = inside + np.minimum(values, 0) * first + np.maximum(values - 1, 0) * last
    x = jnp.asarray(values).reshape(1, 1, 7, 1).repeat(3, -1)
    np.testing.assert_allclose(ops.tone_curve(x, knots)[0, 0, :, 0], want, atol=1e-5)
    # Identity knots are the identity everywhere, not only inside [0, 1].
    np.testing.assert_allclose(ops.tone_curve(x, jnp.linspace(0, 1, 16)), x, atol=1e-5)


def test_gamma_is_odd_linear_above_one_and_continuous_at_the_toe():
    t = ops.tone.GAMMA_TOE
    x = jnp.array([-4.0, -0.25, -t, t, 0.25, 1.0, 4.0]).reshape(1, 1, 7, 1).repeat(3, -1)
    out = np.asarray(ops.adjust_gamma(x, 0.5))[0, 0, :, 0]
    # Above 1: the tangent at 1, 1 + 0.5 (4 - 1) = 2.5; mirrored below -1.
    np.testing.assert_allclose(out, [-2.5, -0.5, -(t**0.5), t**0.5, 0.5, 1.0, 2.5], rtol=1e-5)
    # The pieces meet: just below the toe, and just either side of 1 (value and slope g).
    below = ops.adjust_gamma(jnp.full((1, 1, 1, 3), t * (1 - 1e-6)), 0.5)
    np.testing.assert_allclose(below, t**0.5, rtol=1e-5)

    def pixel(v, g):
        return ops.adjust_gamma(jnp.full((1, 1, 1, 3), v), g)[0, 0, 0, 0]

    for g in (0.3, 4.0):
        slopes = [jax.grad(pixel)(v, g) for v in (1.0 - 1e-4, 1.0, 1.0 + 1e-4)]
        np.testing.assert_allclose(slopes, g, rtol=2e-3)


def test_gamma_does_not_blow_up_values_a_gain_pushed_far_out():
    x = jnp.full((1, 2, 2, 3), 1e4).at[0, 0].set(-1e4)

    def total(images, g):
        return jnp.sum(ops.adjust_gamma(images, g))

    out = np.asarray(ops.adjust_gamma(x, 10.0))
    assert np.abs(out).max() <= 10 * 1e4  # linear growth, where 1e4**10 would overflow
    grads = jax.grad(total, argnums=(0, 1))(x, jnp.float32(10.0))
    assert all(np.isfinite(np.asarray(g)).all() for g in grads)


# --- finite gradients everywhere ----------------------------------------------------------

# Every op as f(images, p) with a scalar parameter p that it actually uses.
EVERY_OP = {
    "luminance": lambda x, p: ops.luminance(x) * p,
    "ccm": lambda x, p: ops.apply_ccm(x, jnp.eye(3) * p + 0.1),
    "white_balance": lambda x, p: ops.white_balance(x, jnp.stack([p, 1.0, 2.0 * p])),
    "desaturate": lambda x, p: ops.desaturate(x, p * 0.5),
    "saturation": lambda x, p: ops.adjust_saturation(x, 2.0 * p),
    "exposure": lambda x, p: ops.adjust_exposure(x, p),
    "gamma": lambda x, p: ops.adjust_gamma(x, 0.3 * p),
    "contrast": lambda x, p: ops.adjust_contrast(x, 2.0 * p),
    "tone_curve": lambda x, p: ops.tone_curve(x, BOOST_KNOTS * p),
    "blur": lambda x, p: ops.blur3x3(x, jnp.full((3, 3), p / 9)),
    "sharpen": lambda x, p: ops.sharpen(x, p, jnp.ones((3, 3)) / 9),
    "denoise": lambda x, p: ops.denoise(x, 0.5 * p, 0.1),
}
INPUT_VALUES = {
    "zero": 0.0,
    "tiny": 1e-7,
    "one": 1.0,
    "below_zero": -0.3,
    "above_one": 1.7,
    "far_out": 3e3,
    "mixed": None,  # a ramp from -0.5 to 1.5 through exact 0 and 1
}


@pytest.mark.parametrize("value", sorted(INPUT_VALUES))
@pytest.mark.parametrize("name", sorted(EVERY_OP))
def test_gradients_are_finite_for_any_input(name, value):
    fill = INPUT_VALUES[value]
    if fill is None:
        x = jnp.linspace(-0.5, 1.5, 5 * 5 * 3).reshape(1, 5, 5, 3)
    else:
        x = jnp.full((1, 5, 5, 3), fill, jnp.float32)
    w = jax.random.normal(jax.random.key(0), x.shape)

    def loss(images, p):
        out = EVERY_OP[name](images, p)
        return jnp.sum(out * w[..., : out.shape[-1]])  # luminance has one channel

    out = EVERY_OP[name](x, jnp.float32(0.9))
    assert np.isfinite(np.asarray(out)).all()
    grad_x, grad_p = jax.grad(loss, argnums=(0, 1))(x, jnp.float32(0.9))
    assert np.isfinite(np.asarray(grad_x)).all() and np.isfinite(float(grad_p))
