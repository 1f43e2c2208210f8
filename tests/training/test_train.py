"""Training protocol: tiny end-to-end runs, phase semantics, determinism, checkpoints, resume."""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from helpers import tiny, toy_dataset

from diffisp.errors import CheckpointError, TrainingDivergedError
from diffisp.experiments.protocol import (
    evaluate_methods,
    protocol_methods,
    train_finetuned_baselines,
    variant_methods,
)
from diffisp.training.checkpoint import TrainingCheckpoints, load_model, save_model
from diffisp.training.config import TrainConfig
from diffisp.training.data import prepare_data
from diffisp.training.loop import train, train_clean_model
from diffisp.training.state import PHASES, TrainState
from diffisp.training.step import train_one_epoch

TINY = tiny(epochs_clean=3, epochs_isp=2)


def params_of(module) -> list[np.ndarray]:
    return [np.asarray(x).copy() for x in jax.tree.leaves(nnx.state(module, nnx.Param))]


def changed(before, after) -> bool:
    return any(not np.allclose(a, b) for a, b in zip(before, after, strict=True))


@pytest.fixture(scope="module")
def tiny_data():
    return prepare_data(toy_dataset(), TrainConfig.of(**TINY))


@pytest.fixture(scope="module")
def tiny_run(tiny_data):
    cfg = TrainConfig.of(**TINY)
    trainer = TrainState.create(cfg, tiny_data.num_classes)
    snapshots = {"start": (params_of(trainer.isp), params_of(trainer.model))}

    def on_epoch(t, record):
        snapshots[(record.phase, record.epoch)] = (params_of(t.isp), params_of(t.model))

    train(trainer, tiny_data, on_epoch=on_epoch)
    return trainer, snapshots


@pytest.mark.slow
def test_phase0_loss_goes_down_and_only_the_cnn_moves(tiny_run):
    trainer, snaps = tiny_run
    losses = [r.loss for r in trainer.history if r.phase == 0]
    assert losses[-1] < losses[0]
    isp0, cnn0 = snaps["start"]
    isp1, cnn1 = snaps[(0, 3)]
    assert not changed(isp0, isp1) and changed(cnn0, cnn1)


@pytest.mark.slow
def test_phase1_moves_only_the_isp(tiny_run):
    _, snaps = tiny_run
    isp_a, cnn_a = snaps[(0, 3)]
    isp_b, cnn_b = snaps[(1, 2)]
    assert changed(isp_a, isp_b)
    assert not changed(cnn_a, cnn_b)  # frozen weights and BN statistics


@pytest.mark.slow
def test_phase2_moves_both(tiny_run):
    _, snaps = tiny_run
    isp_a, cnn_a = snaps[(1, 2)]
    isp_b, cnn_b = snaps[(2, 1)]
    assert changed(isp_a, isp_b) and changed(cnn_a, cnn_b)


@pytest.mark.slow
def test_protocol_rows_and_sample_counts(tiny_run, tiny_data):
    trainer, _ = tiny_run
    results = evaluate_methods(
        protocol_methods(trainer, train_finetuned_baselines(trainer, tiny_data)), tiny_data
    )
    assert list(results) == [
        "no_isp",
        "fixed_gamma",
        "auto_isp",
        "histogram_eq",
        "dark_cnn",
        "fixed_gamma_cnn",
        "learned_isp_phase1",
        "learned_isp_phase2",
        "clean_oracle",
    ]
    floor, ceiling = results["no_isp"]["accuracy"], results["clean_oracle"]["accuracy"]
    for row in results.values():
        assert row["num_samples"] == 32
        assert row["accuracy"] * 32 == pytest.approx(round(row["accuracy"] * 32))  # k of 32
        assert row["gap_closed"] == pytest.approx((row["accuracy"] - floor) / (ceiling - floor))
    assert results["no_isp"]["gap_closed"] == 0.0 and results["clean_oracle"]["gap_closed"] == 1.0
    # One row recomputed by hand, eagerly: the joint model behind the joint ISP on dark images.
    model = nnx.clone(trainer.model)
    model.eval()
    logits = model(trainer.isp(tiny_data.test_dark))
    expected = np.mean(np.argmax(np.asarray(logits), -1) == np.asarray(tiny_data.test_labels))
    assert results["learned_isp_phase2"]["accuracy"] == pytest.approx(expected)
    # The toy classes are trivially separable on clean images.
    assert results["clean_oracle"]["accuracy"] > 0.9


@pytest.mark.slow
def test_same_seed_same_result(tiny_run):
    trainer, _ = tiny_run
    cfg = TrainConfig.of(**TINY)
    data = prepare_data(toy_dataset(), cfg)
    again = train(TrainState.create(cfg, data.num_classes), data)
    for a, b in zip(params_of(trainer.isp), params_of(again.isp), strict=True):
        np.testing.assert_array_equal(a, b)
    assert [r.loss for r in again.history] == [r.loss for r in trainer.history]


@pytest.mark.slow
def test_model_checkpoint_round_trip(tiny_run, tiny_data, tmp_path):
    trainer, _ = tiny_run
    save_model(tmp_path / "model", trainer.isp, trainer.model, {"image_size": 16})
    isp, model, meta = load_model(tmp_path / "model")
    assert meta["isp_stages"] == list(trainer.isp.stage_names) and meta["image_size"] == 16
    x = tiny_data.test_dark[:4]
    np.testing.assert_allclose(isp(x), trainer.isp(x), atol=1e-6)
    trainer.model.eval()
    np.testing.assert_allclose(model(isp(x)), trainer.model(trainer.isp(x)), atol=1e-5)


def test_load_model_rejects_missing_and_foreign_directories(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_model(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no finished"):
        load_model(tmp_path / "empty")


@pytest.mark.slow
def test_resumed_run_matches_uninterrupted_run(tiny_run, tmp_path):
    trainer, _ = tiny_run
    cfg = TrainConfig.of(**TINY)
    data = prepare_data(toy_dataset(), cfg)
    checkpoints = TrainingCheckpoints(tmp_path)
    first = TrainState.create(cfg, data.num_classes)

    class Stop(Exception):
        pass

    def stop_mid_phase1(t, record):
        checkpoints.save(t)
        if (record.phase, record.epoch) == (1, 1):
            raise Stop

    with pytest.raises(Stop):
        train(first, data, on_epoch=stop_mid_phase1)
    resumed = TrainState.create(cfg, data.num_classes)
    TrainingCheckpoints(tmp_path).restore_into(resumed, data.num_train)
    assert resumed.position == (1, 1)
    train(resumed, data)
    for a, b in zip(params_of(trainer.isp), params_of(resumed.isp), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)
    for a, b in zip(params_of(trainer.model), params_of(resumed.model), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)
    assert [r.loss for r in resumed.history] == pytest.approx([r.loss for r in trainer.history])


def test_nan_loss_stops_training_before_writing_parameters():
    cfg = TrainConfig.of(**{**TINY, "epochs_clean": 1})
    data = prepare_data(toy_dataset(), cfg)
    trainer = TrainState.create(cfg, data.num_classes)
    trainer.isp.stage("gamma").gamma_raw[...] = jnp.float32(jnp.nan)  # poisons phase 1
    saved = []
    with pytest.raises(TrainingDivergedError, match=r"loss became nan in phase 1 \(isp\)"):
        train(trainer, data, on_epoch=lambda t, r: saved.append(r))
    # Phase 0 finished and was handed to the checkpoint callback; the diverged epoch never was.
    assert [r.phase for r in saved] == [0]


def test_nan_parameters_under_a_finite_loss_stop_training():
    # The loss stays 0 while its gradient is NaN (where() differentiates both branches): only
    # the compiled epoch's check of the trained parameters can see it.
    @dataclass(frozen=True)
    class NanGradient:
        def loss(self, model, images, targets):
            out = model(images)
            loss = jnp.where(True, 0.0, jnp.sum(jnp.sqrt(-jnp.abs(out) - 1.0)))
            return loss, {"loss": loss}

        def train_score(self, sums, num_samples):
            return 0.0

    cfg = TrainConfig.of(**TINY)
    data = prepare_data(toy_dataset(), cfg)
    trainer = TrainState.create(cfg, data.num_classes)
    optimizer = trainer.new_optimizer(PHASES[0], data.num_train)
    with pytest.raises(TrainingDivergedError, match=r"parameters became NaN/Inf in phase 0"):
        train_one_epoch(
            trainer.learner,
            optimizer,
            PHASES[0],
            data.train,
            task=NanGradient(),
            seed=0,
            epoch=0,
            batch_size=cfg.optim.batch_size,
        )


def test_train_clean_model_is_phase_0_of_the_full_protocol(tiny_run, tiny_data):
    # The same seed's phase 0 alone gives exactly the model the full run kept after phase 0.
    trainer, snapshots = tiny_run
    model = train_clean_model(TrainConfig.of(**TINY), tiny_data)
    for a, b in zip(params_of(trainer.model_after_phase0), params_of(model), strict=True):
        np.testing.assert_array_equal(a, b)
    assert changed(snapshots["start"][1], params_of(model))


@pytest.mark.slow
def test_each_isp_variant_gives_a_fine_tuned_and_a_frozen_model_row(tiny_run, tiny_data):
    # The frozen row is the variant's ISP after phase 1 in front of the clean-trained CNN (the
    # deployed-model case); the plain row is phase 2, ISP and CNN fine-tuned together.
    trainer, _ = tiny_run
    tuned, frozen = variant_methods(trainer, tiny_data, ["global-full"])
    assert (tuned.key, frozen.key) == ("global_full", "global_full_frozen")
    assert frozen.label.endswith("frozen CNN") and "phase 1 only" in frozen.description
    clean = params_of(trainer.model_after_phase0)
    for a, b in zip(clean, params_of(frozen.model), strict=True):
        np.testing.assert_array_equal(a, b)
    assert changed(clean, params_of(tuned.model))
    assert changed(params_of(frozen.isp), params_of(tuned.isp))  # phase 2 moved the ISP on
    accuracy = frozen.metrics(tiny_data.test_dark, tiny_data.test_clean, tiny_data.test_labels)
    model = nnx.clone(trainer.model_after_phase0)
    model.eval()
    logits = model(frozen.isp(tiny_data.test_dark))
    expected = np.mean(np.argmax(np.asarray(logits), -1) == np.asarray(tiny_data.test_labels))
    assert accuracy["accuracy"] == pytest.approx(expected)


def test_compiled_epochs_of_finished_phases_are_released(tiny_data):
    # Each optimiser compiles its own epoch, never reused after its phase; kept, a five-seed
    # study held ~72,000 memory mappings of machine code and died past Linux's default limit.
    from diffisp.training.step import train_epoch

    cfg = TrainConfig.of(**{**TINY, "epochs_clean": 1, "epochs_isp": 1, "epochs_joint": 1})
    train(TrainState.create(cfg, tiny_data.num_classes), tiny_data)
    assert train_epoch._cache_size() == 1  # phase 2's, the last optimiser's
