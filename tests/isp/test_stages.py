"""Every learnable stage: shape, range, identity at init, gradients, batch invariance, clipping."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from helpers import EDGE_INPUTS, randomize

from diffisp.errors import ConfigError
from diffisp.isp.chain import ISP, SEED_PRESET, parse_stage_list
from diffisp.isp.stages import STAGES, clip_output, resolve_stage_name

ALL = sorted(STAGES)
# Stages whose maths maps [0, 1] into [0, 1] for any parameters: they need no clip to stay in
# range (exposure saturates at white; the others are convex blends or the gamma curve).
KEEP_THE_RANGE = ("denoise", "desaturation", "exposure", "gamma")
# Stage inputs outside [0, 1] (what an earlier stage may now hand on) on top of the edge cases.
STAGE_INPUTS = {
    **EDGE_INPUTS,
    "below_zero": np.full((2, 6, 6, 3), -0.4, np.float32),
    "above_one": np.full((2, 6, 6, 3), 1.6, np.float32),
}


def stage_loss(stage, images, weights):
    return jnp.sum(stage(images) * weights)


@pytest.mark.parametrize("name", ALL)
def test_identity_at_initialisation(name, images):
    np.testing.assert_allclose(STAGES[name]()(images), images, atol=1e-6)


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_shape_and_range_for_random_parameters(name, seed, images):
    stage = randomize(STAGES[name](), seed=seed, scale=3.0)
    out = stage(images)
    assert out.shape == images.shape and out.dtype == images.dtype
    assert np.isfinite(np.asarray(out)).all()
    if name in KEEP_THE_RANGE:  # the others may leave [0, 1]: the chain clips once, at its end
        assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("edge", sorted(STAGE_INPUTS))
@pytest.mark.parametrize("random_params", [False, True])
def test_gradients_are_finite_on_edge_inputs(name, edge, random_params):
    stage = STAGES[name]()
    if random_params:
        randomize(stage, seed=7, scale=3.0)
    x = jnp.asarray(STAGE_INPUTS[edge])
    w = jax.random.normal(jax.random.key(1), x.shape)
    param_grads, image_grads = nnx.grad(stage_loss, argnums=(0, 1))(stage, x, w)
    for leaf in [*jax.tree.leaves(param_grads), image_grads]:
        assert np.isfinite(np.asarray(leaf)).all()


@pytest.mark.parametrize("name", ALL)
def test_every_parameter_gets_a_nonzero_gradient_at_typical_inputs(name, images):
    # Away from the identity, where a zero strength gates e.g. the sharpening kernel, and with
    # every strength switched on (a clipped strength of 0 legitimately cuts the other gradients).
    stage = randomize(STAGES[name](), seed=3, scale=0.2)
    if hasattr(stage, "strength_raw"):
        stage.strength_raw[...] = jnp.float32(0.4)
    if name == "tone_curve":  # rises summing to < 1, so no knot is clipped away
        stage.knots_raw[...] = stage.knots_raw[...] * 0.25 - 0.1
    w = jax.random.normal(jax.random.key(2), images.shape)
    grads = nnx.grad(stage_loss)(stage, images * 0.9 + 0.05, w)
    for path, leaf in jax.tree_util.tree_leaves_with_path(grads):
        assert np.all(np.abs(np.asarray(leaf)) > 0), f"{name}: zero gradient at {path}"


@pytest.mark.parametrize("name", ALL)
def test_switch_parameters_have_nonzero_gradient_at_identity(name, images):
    # At initialisation at least one parameter must be able to move the stage off the identity.
    stage = STAGES[name]()
    w = jax.random.normal(jax.random.key(4), images.shape)
    grads = nnx.grad(stage_loss)(stage, images, w)
    norms = [float(jnp.abs(leaf).sum()) for leaf in jax.tree.leaves(grads)]
    assert max(norms) > 0


@pytest.mark.parametrize("name", ALL)
def test_batch_invariance(name, images):
    stage = randomize(STAGES[name](), seed=5)
    batched = stage(images)
    for i in range(images.shape[0]):
        np.testing.assert_allclose(batched[i : i + 1], stage(images[i : i + 1]), atol=1e-5)


@pytest.mark.parametrize("name", ALL)
def test_per_image_raw_parameters_match_shared_ones(name, images):
    cls = STAGES[name]
    rng = np.random.default_rng(0)
    n = images.shape[0]
    flat = jnp.asarray(rng.normal(0, 1, (n, cls.num_params())), jnp.float32)
    per_image_raw = cls.unflatten_raw(flat)
    batched = cls()(images, raw=per_image_raw)
    for i in range(n):
        shared = {k: v[i] for k, v in per_image_raw.items()}
        np.testing.assert_allclose(batched[i], cls()(images[i : i + 1], raw=shared)[0], atol=1e-5)


@pytest.mark.parametrize("name", ALL)
def test_flat_identity_raw_is_identity(name, images):
    cls = STAGES[name]
    flat = jnp.tile(jnp.asarray(cls.flat_identity_raw())[None], (images.shape[0], 1))
    np.testing.assert_allclose(cls()(images, raw=cls.unflatten_raw(flat)), images, atol=1e-6)


EXTREME = [-1e4, -30.0, 30.0, 1e4]


@pytest.mark.parametrize("value", EXTREME)
def test_constrained_values_stay_in_documented_ranges(value):
    def const(cls):
        return {k: jnp.full(s, value, jnp.float32) for k, s in cls.raw_shapes.items()}

    ev = STAGES["exposure"].constrain(const(STAGES["exposure"]))["ev"]
    assert -8 <= float(ev) <= 8
    gains = STAGES["white_balance"].constrain(const(STAGES["white_balance"]))["gains"]
    assert np.all((gains >= 0.25 - 1e-6) & (gains <= 4 + 1e-5))
    m = STAGES["ccm"].constrain(const(STAGES["ccm"]))["matrix"]
    assert np.all(np.abs(m - np.eye(3)) <= 2 + 1e-6)
    g = STAGES["gamma"].constrain(const(STAGES["gamma"]))["gamma"]
    assert 0.1 - 1e-6 <= float(g) <= 10 + 1e-4
    sharp = STAGES["sharpen"].constrain(const(STAGES["sharpen"]))
    assert -1 <= float(sharp["strength"]) <= 4
    np.testing.assert_allclose(float(sharp["kernel"].sum()), 1.0, atol=1e-5)
    assert np.all(sharp["kernel"] >= 0)
    for name in ("desaturation", "denoise"):
        s = STAGES[name].constrain(const(STAGES[name]))["strength"]
        assert 0 <= float(s) <= 1
    for name in ("saturation", "contrast"):
        f = STAGES[name].constrain(const(STAGES[name]))["factor"]
        assert 0.25 - 1e-6 <= float(f) <= 4 + 1e-5
    knots = STAGES["tone_curve"].constrain(const(STAGES["tone_curve"]))["knots"]
    assert np.all(np.isfinite(knots)) and np.all(np.diff(np.asarray(knots)) >= 0)


def test_seed_preset_has_the_reference_37_parameters():
    isp = ISP(SEED_PRESET)
    per_stage = {n: s.num_params() for n, s in zip(isp.stage_names, isp.stages, strict=True)}
    assert per_stage == {"ccm": 9, "desaturation": 1, "tone_curve": 16, "gamma": 1, "sharpen": 10}
    counted = sum(int(p.size) for p in jax.tree.leaves(nnx.state(isp, nnx.Param)))
    assert isp.num_params() == counted == 37


def test_stage_names_and_aliases():
    assert parse_stage_list("seed") == SEED_PRESET
    assert parse_stage_list("wb, tone ,gamma") == ("white_balance", "tone_curve", "gamma")
    assert resolve_stage_name("Tone-Curve") == "tone_curve"
    with pytest.raises(ConfigError, match=r"unknown ISP stage 'blurr'.*valid stages: exposure"):
        parse_stage_list(["gamma", "blurr"])
    with pytest.raises(ConfigError, match="repeated: gamma"):
        parse_stage_list("gamma,gamma")
    with pytest.raises(ConfigError, match="at least one stage"):
        parse_stage_list("")
    with pytest.raises(ConfigError, match="has no 'denoise' stage"):
        ISP().stage("denoise")


def test_full_isp_is_identity_at_init_and_differentiable(images):
    isp = ISP("full")
    np.testing.assert_allclose(isp(images), images, atol=1e-5)
    grads = nnx.grad(lambda m: jnp.mean(m(images * 0.2) ** 2))(isp)
    assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads))


# --- where the clipping happens -------------------------------------------------------------


def random_full_isp(seed: int = 0) -> ISP:
    return randomize(ISP("full"), seed=seed, scale=2.0)


def test_stages_do_not_clip_and_clip_output_is_jnp_clip_in_value(images):
    # A random colour matrix takes [0, 1] images both below 0 and above 1; the stage keeps that
    # for the stages after it, and the chain's one clip brings the output back.
    ccm = randomize(STAGES["ccm"](), seed=0, scale=3.0)(images)
    assert float(ccm.min()) < 0.0 and float(ccm.max()) > 1.0
    np.testing.assert_array_equal(clip_output(ccm), jnp.clip(ccm, 0.0, 1.0))


@pytest.mark.parametrize("seed", [0, 1])
def test_isp_output_stays_in_the_unit_range(seed, images):
    out = random_full_isp(seed)(images)
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0


def test_full_gradient_reaches_exact_zero_and_one_pixels_through_the_whole_chain(images):
    # 9 % of darkened training pixels are exactly 0. With a jnp.clip in every stage each of them
    # got half of its gradient per clip (a max/min tie); with one clip_unit at the end, all of it.
    x = images.at[:, :4].set(0.0).at[:, -4:].set(1.0)
    isp = ISP("full")  # the identity at initialisation, so d sum(out) / dx is 1 everywhere

    def total(v, clip):
        return jnp.sum(clip(isp(v)))

    grad = np.asarray(jax.grad(total)(x, clip_output))
    np.testing.assert_allclose(grad, 1.0, atol=1e-4)
    grad_jnp_clip = np.asarray(jax.grad(total)(x, lambda v: jnp.clip(v, 0.0, 1.0)))
    np.testing.assert_allclose(grad_jnp_clip[:, :4], 0.5, atol=1e-4)  # what one jnp.clip gives


def test_an_overexposed_all_white_image_recovers():
    # Exposure +6 stops turns every pixel white. The output clip alone would give the gain zero
    # gradient; exposure saturates with a straight-through gradient, so it is told to come down.
    x = jax.random.uniform(jax.random.key(0), (4, 8, 8, 3), minval=0.1, maxval=0.3)
    isp = ISP(("exposure", "gamma"))
    isp.stage("exposure").ev_raw[...] = jnp.float32(8.0 * np.arctanh(6.0 / 8.0))

    def loss(m):
        return jnp.mean((clip_output(m(x)) - 0.5) ** 2)

    assert float(clip_output(isp(x)).min()) == 1.0  # all white
    initial = float(loss(isp))
    opt = nnx.Optimizer(isp, optax.adam(0.2), wrt=nnx.Param)
    step = nnx.jit(lambda m, o: o.update(m, nnx.grad(loss)(m)))
    for _ in range(100):
        step(isp, opt)
    white = float(jnp.mean(clip_output(isp(x)) >= 1.0))
    ev = float(isp.stage("exposure").values()["ev"])
    assert white < 0.05 and ev < 3.0 and float(loss(isp)) < 0.1 * initial, (white, ev)
