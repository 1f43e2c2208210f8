"""The adaptive predictor's linear pathways: exposure features in stops, identity at init, and
the learning rates the trainer gives them."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from diffisp.errors import ConfigError
from diffisp.isp.adaptive import AdaptiveISP
from diffisp.isp.adaptive.predictor import (
    DIRECT_PARAM_NAMES,
    STATS_MAP_NAME,
    log_exposure_features,
)
from diffisp.models.classifier import SmallCNN
from diffisp.ops import luminance
from diffisp.training.config import TrainConfig
from diffisp.training.state import ISP_PARAMS, Learner, group_labels, isp_transforms

STAGES = ("exposure", "white_balance", "gamma")


def textures(brightness, size: int = 8, seed: int = 0) -> jax.Array:
    """One random texture (values 0.2-1) scaled by each brightness: same content, other exposure."""
    base = np.random.default_rng(seed).uniform(0.2, 1.0, (1, size, size, 3))
    scale = np.asarray(brightness, np.float64)[:, None, None, None]
    return jnp.asarray(base * scale, jnp.float32)


def test_exposure_features_are_stops_from_mid_grey():
    grey = jnp.full((1, 4, 4, 3), 0.18, jnp.float32)
    np.testing.assert_allclose(log_exposure_features(grey), 0.0, atol=0.01)  # floor: 1/1024
    # Each halving of the light subtracts one stop from every feature (well above the floor).
    feats = np.asarray(log_exposure_features(textures([0.8, 0.4, 0.1])))
    np.testing.assert_allclose(feats[0] - feats[1], 1.0, atol=0.02)
    np.testing.assert_allclose(feats[0] - feats[2], 3.0, atol=0.05)
    black = log_exposure_features(jnp.zeros((1, 4, 4, 3)))
    assert np.isfinite(np.asarray(black)).all() and float(black.min()) > -8
    grad = jax.grad(lambda x: log_exposure_features(x).sum())(jnp.zeros((1, 4, 4, 3)))
    assert np.isfinite(np.asarray(grad)).all()


def test_pathways_start_at_zero_so_the_isp_starts_as_the_identity():
    isp = AdaptiveISP(STAGES, rngs=nnx.Rngs(0))
    assert not np.asarray(isp.predictor.global_raw[...]).any()
    assert not np.asarray(isp.predictor.stats_head.kernel[...]).any()
    x = textures([0.05, 0.3, 1.0])
    np.testing.assert_allclose(isp(x), x, atol=1e-6)


def test_one_weight_of_the_statistics_pathway_is_auto_exposure():
    # Raw EV = -1 * (luminance in stops from mid-grey): exposure's bound 8 tanh(raw / 8) gives
    # EV, and every image (20x apart in brightness) comes out near mid-grey, without clipping.
    isp = AdaptiveISP(("exposure",), rngs=nnx.Rngs(0))
    isp.predictor.stats_head.kernel[...] = jnp.zeros((4, 2)).at[3, 0].set(-1.0)  # EV, gate
    x = textures([0.02, 0.05, 0.2, 0.4])
    before = np.asarray(luminance(x).mean(axis=(1, 2, 3)))
    ev = 8.0 * np.tanh(-np.asarray(log_exposure_features(x))[:, 3] / 8.0)
    after = np.asarray(luminance(isp(x)).mean(axis=(1, 2, 3)))
    np.testing.assert_allclose(after, before * 2.0**ev, rtol=1e-4)
    np.testing.assert_allclose(after, 0.18, rtol=0.25)  # was 0.012-0.24
    assert after.max() / after.min() < 1.3 and before.max() / before.min() > 19


def test_each_parameter_group_gets_its_learning_rate():
    # Shared offset: lr_isp; statistics map: lr_stats_map (lr_isp in the warm-up); network:
    # lr_predictor.
    cfg = TrainConfig.of(adaptive=True, lr_isp=1e-2, lr_predictor=1e-3, lr_stats_map=3e-3)
    learner = Learner(AdaptiveISP(STAGES, rngs=nnx.Rngs(0)), SmallCNN(10, rngs=nnx.Rngs(1)))
    params = nnx.state(learner, ISP_PARAMS)
    labels = group_labels(params)
    flat = {jax.tree_util.keystr(p): v for p, v in jax.tree.leaves_with_path(labels)}
    groups = {name: {k for k, v in flat.items() if v == name} for name in set(flat.values())}
    assert set(groups) == {"isp", "isp_direct", "isp_stats"}
    assert all(STATS_MAP_NAME in k for k in groups["isp_stats"])
    assert all(any(n in k for n in DIRECT_PARAM_NAMES) for k in groups["isp_direct"])
    # A tiny gradient on every parameter (under the clip norm): Adam's first step is lr * sign.
    grads = jax.tree.map(lambda p: jnp.full_like(p, 1e-3), params)
    for stats_lr, expected_stats in ((None, 3e-3), (1e-2, 1e-2)):
        transforms = isp_transforms(cfg, 100, "constant", lr_stats_map=stats_lr)
        tx = optax.multi_transform(transforms, group_labels)
        updates, _ = tx.update(grads, tx.init(params), params)
        expected = {"isp": 1e-3, "isp_direct": 1e-2, "isp_stats": expected_stats}
        for path, update in jax.tree.leaves_with_path(updates):
            key = jax.tree_util.keystr(path)
            step = float(jnp.abs(update).max())
            np.testing.assert_allclose(step, expected[flat[key]], rtol=1e-3, err_msg=key)


def test_auto_exposure_start_levels_and_white_balances_every_capture():
    # A grey-world texture (equal channel means) under three casts and three brightnesses: after
    # the closed-form start every capture comes out near the target luminance with equal channel
    # means, i.e. auto-exposure and grey-world white balance, whatever its light.
    isp = AdaptiveISP(("exposure", "white_balance", "gamma"), rngs=nnx.Rngs(0))
    rng = np.random.default_rng(1)
    base = rng.uniform(0.2, 0.8, (1, 8, 8, 3))
    base = base / base.mean(axis=(1, 2), keepdims=True) * 0.5
    casts = np.array([[1.0, 1.0, 1.0], [1.34, 0.943, 0.563], [0.929, 1.006, 1.145]])
    brightness = np.array([0.03, 0.1, 0.3])
    x = jnp.asarray(base * brightness[:, None, None, None] * casts[:, None, None, :], jnp.float32)
    isp.start_from_auto_exposure(0.4)
    out = np.asarray(isp(x))
    means = out.mean(axis=(1, 2))
    np.testing.assert_allclose(means, np.broadcast_to(means[:, 1:2], (3, 3)), rtol=0.04)
    # Exposure: near the target from 10x apart in light (0.03: 0.005-0.015 before). The bounded
    # EV, 8 tanh(raw / 8), falls short the more stops are missing (4.7 -> 4.2 for the darkest),
    # which learning has to complete.
    level = np.asarray(luminance(jnp.asarray(out)).mean(axis=(1, 2, 3)))
    np.testing.assert_allclose(level[1:], 0.4, rtol=0.2)
    assert 0.25 < level[0] < level[1] < level[2]
    # Only exposure and white balance changed: gamma and the gates are still at their start.
    _, logits = isp.predict(x)
    np.testing.assert_allclose(logits, 3.0, atol=1e-6)
    gamma = isp.decisions(x)["values"]["gamma"]
    np.testing.assert_allclose(jax.tree.leaves(gamma)[0], 1.0, atol=1e-6)


def test_auto_exposure_start_skips_missing_stages_and_rejects_bad_levels():
    isp = AdaptiveISP(("gamma", "sharpen"), rngs=nnx.Rngs(0))
    isp.start_from_auto_exposure(0.4)  # no exposure or white balance: stays the identity
    x = textures([0.05, 0.5])
    np.testing.assert_allclose(isp(x), x, atol=1e-6)
    for bad in (0.0, 1.0, -0.2, float("nan")):
        with pytest.raises(ConfigError, match="target_level"):
            isp.start_from_auto_exposure(bad)
