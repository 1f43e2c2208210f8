"""The RAW ISP: RAW front stages, RawISP over global and adaptive chains, conventional pipelines."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from helpers import randomize

from diffisp.capture.raw_capture import RawCapture, make_capture, num_images
from diffisp.errors import ConfigError, InputError, InputTypeError
from diffisp.isp import raw_baselines
from diffisp.isp.adaptive import AdaptiveISP
from diffisp.isp.chain import ISP, RAW_FRONT, SEED_PRESET, parse_stage_list
from diffisp.isp.raw import (
    RawFront,
    build_raw_isp,
    conventional_linear,
    conventional_pipeline,
    demosaic_only,
    packed_raw,
)
from diffisp.ops import smoothstep
from diffisp.ops.raw import BAYER_PATTERNS, demosaic_malvar2004, mosaic, srgb_encode

CAMERA_MATRIX = np.array([[1.6, -0.4, -0.2], [-0.2, 1.5, -0.3], [0.0, -0.5, 1.5]], np.float32)


def capture(pattern: str = "RGGB", n: int = 3, size: int = 12, seed: int = 0) -> RawCapture:
    rng = np.random.default_rng(seed)
    rgb = rng.uniform(0.0, 0.4, (n, size, size, 3)).astype(np.float32)
    gains = np.stack([rng.uniform(1.5, 2.5, n), np.ones(n), rng.uniform(1.2, 2.0, n)], axis=1)
    return make_capture(
        mosaic(jnp.asarray(rgb), pattern),
        wb_gains=gains,
        cam_to_srgb=CAMERA_MATRIX,
        pattern=pattern,
    )


def raw_isp(stages="raw-seed", adaptive: bool = False, residual: bool = True, **kwargs):
    def back(names):
        if adaptive:
            return AdaptiveISP(names, rngs=nnx.Rngs(0))
        return ISP(names)

    return build_raw_isp(stages, back, residual=residual, **kwargs)


# ------------------------------------------------------------------------- the capture type


def test_make_capture_defaults_and_slicing():
    c = make_capture(np.zeros((4, 8, 10), np.float32), pattern="bggr")
    assert c.pattern == "BGGR" and c.image_shape == (8, 10) and num_images(c) == 4
    np.testing.assert_array_equal(c.wb_gains, np.ones((4, 3)))
    np.testing.assert_array_equal(c.cam_to_srgb, np.broadcast_to(np.eye(3), (4, 3, 3)))
    part = c[1:3]
    assert isinstance(part, RawCapture) and part.mosaic.shape == (2, 8, 10)
    assert part.pattern == "BGGR"


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"mosaic": np.zeros((2, 7, 8), np.float32)}, "even"),
        ({"mosaic": np.zeros((2, 8, 8, 3), np.float32)}, r"\(N, H, W\)"),
        ({"mosaic": np.zeros((2, 8, 8), np.uint16)}, "must be float"),
        ({"wb_gains": [1.0, 0.0, 1.0]}, "positive"),
        ({"wb_gains": np.ones((3, 3))}, "wb_gains must be"),
        ({"cam_to_srgb": np.full((3, 3), np.nan)}, "NaN"),
        ({"pattern": "RGBG"}, "unknown CFA pattern"),
        ({"noise": [-1.0, 0.0]}, "non-negative"),
    ],
)
def test_make_capture_rejects_bad_input(kwargs, match):
    args = {"mosaic": np.zeros((2, 8, 8), np.float32), **kwargs}
    with pytest.raises(InputError, match=match):
        make_capture(args.pop("mosaic"), **args)


# ------------------------------------------------------------------------------- stage lists


def test_raw_presets_and_stage_order():
    assert parse_stage_list("raw-seed") == RAW_FRONT + SEED_PRESET
    assert parse_stage_list("demosaic,ccm") == ("demosaic", "ccm")
    with pytest.raises(ConfigError, match="must come first"):
        parse_stage_list("ccm,demosaic")
    with pytest.raises(ConfigError, match="must come first"):
        parse_stage_list("demosaic,raw_wb,ccm")
    with pytest.raises(ConfigError, match="needs the 'demosaic' stage"):
        parse_stage_list("raw_wb,ccm")
    with pytest.raises(ConfigError, match="RawISP"):
        ISP("raw-seed")


# -------------------------------------------------------------------------- identity at init


@pytest.mark.parametrize("pattern", BAYER_PATTERNS)
@pytest.mark.parametrize("method", ["bilinear", "malvar"])
def test_front_at_init_is_the_camera_recipe(pattern, method):
    c = capture(pattern)
    front = RawFront(demosaic=method)
    expected = conventional_linear(c, demosaic=method)
    np.testing.assert_allclose(front.linear(c), expected, atol=1e-6)
    if method == "bilinear":
        np.testing.assert_allclose(front(c), conventional_pipeline(c), atol=1e-6)


def test_front_without_learned_stages_uses_the_metadata():
    c = capture()
    balanced = (
        c.mosaic
        * jnp.asarray(  # RGGB: R at (0,0), B at (1,1)
            np.tile([[1.0, 0.0], [0.0, 0.0]], (6, 6))
        )[None]
        * (c.wb_gains[:, 0, None, None] - 1)
        + c.mosaic
    )
    balanced = balanced + c.mosaic * jnp.asarray(np.tile([[0.0, 0.0], [0.0, 1.0]], (6, 6)))[
        None
    ] * (c.wb_gains[:, 2, None, None] - 1)
    rgb = demosaic_malvar2004(balanced, "RGGB")
    expected = jnp.einsum("ij,nhwj->nhwi", CAMERA_MATRIX, rgb)
    np.testing.assert_allclose(RawFront(("demosaic",)).linear(c), expected, atol=1e-5)


def test_raw_isp_at_init_is_the_chain_after_the_camera_recipe():
    c = capture()
    isp = raw_isp("raw-seed", demosaic="bilinear")
    expected = ISP(SEED_PRESET)(smoothstep(srgb_encode(jnp.clip(conventional_linear(c), 0, 1))))
    np.testing.assert_allclose(isp(c), expected, atol=1e-6)
    assert isp.stage_names == RAW_FRONT + SEED_PRESET
    assert isp.num_params() == 3 + 432 + 9 + 37
    assert raw_isp("raw-seed", residual=False).num_params() == 3 + 9 + 37


# --------------------------------------------------------------------- range, bounds, gradients


@pytest.mark.parametrize("seed", [0, 1])
def test_output_range_and_parameter_bounds_for_random_parameters(seed):
    c = capture(seed=seed)
    isp = randomize(raw_isp("raw-full"), seed=seed, scale=5.0)
    out = np.asarray(isp(c))
    assert out.shape == (3, 12, 12, 3) and np.isfinite(out).all()
    assert out.min() >= 0.0 and out.max() <= 1.0
    front = isp.front
    correction = np.asarray(front.raw_wb.gains(c) / c.wb_gains)
    assert (correction >= 0.5).all() and (correction <= 2.0).all()  # tanh saturates in float32
    matrix = np.asarray(front.raw_ccm.correction())
    np.testing.assert_allclose(matrix.sum(axis=1), 1.0, atol=1e-5)  # white stays white
    summary = isp.parameter_summary(c)
    assert summary["demosaic"]["residual_max_abs_weight"] <= 0.1 + 1e-6


def test_finite_gradients_for_dark_tiny_and_saturated_raw():
    """AdaptiveISP's users hit NaN on tiny RAW values: every parameter's gradient is finite for
    captures of 0, tiny values, saturation and beyond (one image per value)."""
    values = np.array([0.0, 1e-9, 1e-4, 1.0, 1.5], np.float32)
    c = make_capture(
        np.broadcast_to(values[:, None, None], (5, 8, 8)).copy(), wb_gains=[2.0, 1.0, 1.5]
    )
    for isp in (raw_isp("raw-full"), randomize(raw_isp("raw-seed"), seed=3)):
        # One loss over all images: a NaN or Inf from any of them would poison every sum.
        grads = nnx.grad(lambda m: jnp.sum(m(c) * jnp.linspace(0, 1, 3)))(isp)
        leaves = jax.tree.leaves(nnx.state(grads, nnx.Param))
        assert leaves and all(bool(jnp.isfinite(g).all()) for g in leaves)


def test_every_raw_stage_gets_a_gradient_at_initialisation():
    c = capture()
    isp = raw_isp("raw-seed")
    target = jnp.asarray(np.random.default_rng(0).uniform(0, 1, (3, 12, 12, 3)), jnp.float32)
    grads = nnx.grad(lambda m: jnp.mean((m(c) - target) ** 2))(isp)
    for g in (
        grads.front.raw_wb.correction_raw,
        grads.front.demosaic.residual_raw,
        grads.front.raw_ccm.delta_raw,
    ):
        assert float(jnp.abs(g[...]).max()) > 0


def test_batch_invariance():
    c = capture(n=4)
    isp = randomize(raw_isp("raw-seed"), seed=1)
    whole = np.asarray(isp(c))
    one_by_one = np.concatenate([np.asarray(isp(c[i : i + 1])) for i in range(4)])
    np.testing.assert_allclose(whole, one_by_one, atol=1e-5)


def test_wrong_input_type_is_named():
    with pytest.raises(InputTypeError, match="RawCapture"):
        raw_isp()(jnp.zeros((1, 8, 8, 3)))
    with pytest.raises(InputTypeError, match="RawCapture"):
        conventional_pipeline(jnp.zeros((1, 8, 8)))


# ------------------------------------------------------------------------- adaptive back end


def test_adaptive_chain_behind_the_front():
    c = capture(n=2, size=16)
    isp = raw_isp("raw-full", adaptive=True)
    assert isp.per_image
    out, aux = isp.forward_train(c, jax.random.key(0))
    assert out.shape == (2, 16, 16, 3) and aux["penalty"].shape == ()
    decisions = isp.decisions(c)
    assert decisions["stage_names"] == isp.stage_names
    active = np.asarray(decisions["active"])
    assert active.shape == (2, len(isp.stage_names)) and active[:, :3].all()
    fast = isp.fastest_inference()
    np.testing.assert_allclose(fast(c), isp(c), atol=1e-5)


def test_front_only_isp():
    c = capture()
    isp = raw_isp(("raw_wb", "demosaic"))
    assert isp.back is None and not isp.per_image
    np.testing.assert_allclose(isp(c), RawFront(("raw_wb", "demosaic"))(c), atol=1e-6)
    assert np.asarray(isp.decisions(c)["active"]).all()


# ----------------------------------------------------------------------- fixed RAW pipelines


@pytest.mark.parametrize(
    "fn, shape",
    [
        (conventional_pipeline, (3, 12, 12, 3)),
        (demosaic_only, (3, 12, 12, 3)),
        (raw_baselines.conventional_gamma, (3, 12, 12, 3)),
        (raw_baselines.conventional_auto, (3, 12, 12, 3)),
        (raw_baselines.conventional_histeq, (3, 12, 12, 3)),
        (packed_raw, (3, 6, 6, 4)),
    ],
)
def test_fixed_raw_pipelines(fn, shape):
    out = np.asarray(jax.jit(fn)(capture()))
    assert out.shape == shape and np.isfinite(out).all()
    if shape[-1] == 3:
        assert out.min() >= 0.0 and out.max() <= 1.0


def test_conventional_pipeline_restores_a_neutral_grey():
    """A grey surface seen through the camera (inverse matrix, inverse WB) comes back grey."""
    grey = jnp.full((1, 8, 8, 3), 0.18, jnp.float32)
    camera_rgb = jnp.einsum("ij,nhwj->nhwi", jnp.linalg.inv(CAMERA_MATRIX), grey)
    gains = jnp.array([2.0, 1.0, 1.6])
    c = make_capture(
        mosaic(camera_rgb / gains, "GRBG"),
        wb_gains=gains,
        cam_to_srgb=CAMERA_MATRIX,
        pattern="GRBG",
    )
    np.testing.assert_allclose(conventional_linear(c), grey, atol=1e-5)
    np.testing.assert_allclose(conventional_pipeline(c), smoothstep(srgb_encode(grey)), atol=1e-5)
