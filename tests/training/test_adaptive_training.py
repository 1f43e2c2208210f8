"""The adaptive ISP inside the training protocol: trains, saves, reloads, reports its usage."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from flax import nnx
from helpers import tiny, toy_dataset

from diffisp.experiments.usage import isp_usage, parameter_summary
from diffisp.isp.adaptive import AdaptiveISP
from diffisp.training.checkpoint import load_model, save_model
from diffisp.training.config import TrainConfig
from diffisp.training.data import prepare_data
from diffisp.training.loop import train
from diffisp.training.state import TrainState
from diffisp.training.variants import parse_variant

TINY = tiny(
    data="auto",
    epochs_isp=2,
    isp=("exposure", "gamma", "tone_curve"),
    adaptive=True,
    cost_weight=0.5,
)


@pytest.fixture(scope="module")
def trained():
    cfg = TrainConfig.of(**TINY)
    data = prepare_data(toy_dataset(), cfg)
    trainer = TrainState.create(cfg, data.num_classes)
    before = [np.asarray(p).copy() for p in jax.tree.leaves(nnx.state(trainer.isp, nnx.Param))]
    train(trainer, data)
    return trainer, before, data


@pytest.mark.slow
def test_adaptive_isp_trains_in_the_protocol(trained):
    trainer, before, _ = trained
    assert isinstance(trainer.isp, AdaptiveISP)
    after = jax.tree.leaves(nnx.state(trainer.isp, nnx.Param))
    assert any(not np.allclose(a, b) for a, b in zip(before, after, strict=True))
    assert all(np.isfinite(r.loss) for r in trainer.history)


@pytest.mark.slow
def test_usage_and_parameter_summary(trained):
    trainer, _, data = trained
    x = data.test_dark  # 32 images
    usage = isp_usage(trainer.isp, x, repeats=1)
    decisions = trainer.isp.decisions(x)
    active = np.asarray(decisions["active"], dtype=bool)  # (32, 3), recomputed here
    rates = dict(zip(("exposure", "gamma", "tone_curve"), active.mean(axis=0), strict=True))
    assert usage["stage_rates"] == pytest.approx(rates)
    assert usage["active_stages"] == pytest.approx(active.sum(axis=1).mean())
    assert all(r * 32 == pytest.approx(round(r * 32)) for r in usage["stage_rates"].values())
    assert np.isfinite(usage["isp_ms_per_image"]) and usage["isp_ms_per_image"] > 0
    summary = parameter_summary(trainer.isp, x)
    assert set(summary) == set(rates)
    ev = np.asarray(decisions["values"]["exposure"]["ev"])  # (32,) per-image exposure
    assert summary["exposure"]["active_rate"] == pytest.approx(rates["exposure"])
    assert summary["exposure"]["ev"] == pytest.approx({"mean": ev.mean(), "std": ev.std()})


@pytest.mark.slow
def test_saved_adaptive_model_reloads_identically(trained, tmp_path):
    trainer, _, data = trained
    save_model(tmp_path / "m", trainer.isp, trainer.model, {"config": trainer.cfg.to_dict()})
    isp, _, _ = load_model(tmp_path / "m")
    assert isinstance(isp, AdaptiveISP)
    x = data.test_dark[:4]
    np.testing.assert_allclose(isp(x), trainer.isp(x), atol=1e-6)


def test_variant_specs():
    assert parse_variant("adaptive:0.2")[0] == "adaptive_l0.2"
    assert parse_variant("adaptive-params")[2]["gates"] is False
    assert parse_variant("global-full")[2]["adaptive"] is False
