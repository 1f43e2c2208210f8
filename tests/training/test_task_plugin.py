"""The task is a plug-in: a task written here trains through the unchanged training core."""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from diffisp.capture.low_light import LowLight
from diffisp.data.source import InMemorySource
from diffisp.models.evaluate import evaluate
from diffisp.models.task import CLASSIFY
from diffisp.training.config import TrainConfig
from diffisp.training.data import RunData
from diffisp.training.loop import train
from diffisp.training.state import PHASES, TrainState
from diffisp.training.step import train_one_epoch


class _BrightnessRegressor(nnx.Module):
    def __init__(self, *, rngs: nnx.Rngs) -> None:
        self.head = nnx.Linear(3, 1, rngs=rngs)

    def __call__(self, images: jax.Array) -> jax.Array:
        return self.head(images.mean(axis=(1, 2)))[:, 0]


@dataclass(frozen=True)
class BrightnessRegression:
    """A task unlike classification: predict each image's mean clean brightness (a float)."""

    name: str = "brightness"
    headline: str = "neg_mse"

    def build_model(self, num_outputs: int, *, rngs: nnx.Rngs) -> nnx.Module:
        return _BrightnessRegressor(rngs=rngs)

    def loss(self, model, images, targets):
        error = model(images) - targets
        return jnp.mean(error**2), {"squared_error": jnp.sum(error**2)}

    def train_score(self, sums, num_samples):
        return -float(sums["squared_error"]) / num_samples

    def predict(self, model, images):
        return model(images)

    def metrics(self, predictions, targets):
        mse = float(np.mean((np.asarray(predictions) - np.asarray(targets)) ** 2))
        return {"neg_mse": -mse, "num_samples": int(np.asarray(targets).shape[0])}


def _regression_data(n: int = 64) -> RunData:
    rng = np.random.default_rng(0)
    clean = rng.uniform(0, 1, (2 * n, 8, 8, 3)).astype(np.float32)
    clean *= rng.uniform(0.2, 1.0, (2 * n, 1, 1, 1)).astype(np.float32)
    dark = clean * 0.2
    targets = clean.mean(axis=(1, 2, 3))
    darken = LowLight(brightness=(0.2, 0.2), noise_sigma=0.0)  # exactly clean * 0.2
    return RunData(
        train=InMemorySource(clean[:n], targets[:n], darken, jax.random.key(0)),
        test_clean=jnp.asarray(clean[n:]),
        test_dark=jnp.asarray(dark[n:]),
        test_labels=jnp.asarray(targets[n:]),
        num_classes=1,
        capture_model=darken,
    )


CFG = TrainConfig.of(
    num_train=64,
    num_test=64,
    image_size=8,
    batch_size=16,
    epochs_clean=20,
    epochs_isp=10,
    epochs_joint=0,
    lr_clean=3e-2,
    lr_isp=3e-2,
    bn_calibration=0,
    isp=("exposure",),
)


def test_a_new_task_trains_through_the_unchanged_core():
    task = BrightnessRegression()
    data = _regression_data()
    state = train(TrainState.create(CFG, data.num_classes, task), data)
    phase0 = [r for r in state.history if r.phase == 0]
    phase1 = [r for r in state.history if r.phase == 1]
    # Phase 0 learns the regression on clean images; its headline metric is the task's.
    assert phase0[-1].loss < 0.5 * phase0[0].loss
    # Phase 1: the frozen regressor was trained on clean images, so on dark ones it is biased
    # low; only the ISP (one exposure gain) learns, and it must brighten to undo the darkening.
    ev = float(state.isp.values()["exposure"]["ev"])
    assert ev > 1.0, f"the exposure stage should brighten by >1 stop, got {ev:+.2f} EV"
    assert phase1[-1].loss < phase1[0].loss
    dark_score = evaluate(state.model, data.test_dark, data.test_labels, task=task)["neg_mse"]
    isp_score = evaluate(state.model, data.test_dark, data.test_labels, isp=state.isp, task=task)[
        "neg_mse"
    ]
    assert isp_score > dark_score  # the learned ISP helps the frozen model
    assert state.history[-1].test_acc == pytest.approx(isp_score, rel=1e-5)


def test_a_phase_moves_only_its_own_parameter_group():
    """One optax transformation with per-group labels; frozen groups get no update at all."""
    data = _regression_data()
    state = TrainState.create(CFG, 1, BrightnessRegression())
    before_model = jax.tree.map(np.array, nnx.state(state.model, nnx.Param))
    phase = PHASES[1]  # ISP only
    optimizer = state.new_optimizer(phase, data.num_train)
    learner, _, _, _ = train_one_epoch(
        state.learner,
        optimizer,
        phase,
        data.train,
        task=state.task,
        seed=0,
        epoch=0,
        batch_size=16,
    )
    after_model = jax.tree.map(np.array, nnx.state(learner.model, nnx.Param))
    for a, b in zip(jax.tree.leaves(before_model), jax.tree.leaves(after_model), strict=True):
        np.testing.assert_array_equal(a, b)
    assert float(learner.isp.values()["exposure"]["ev"]) != 0.0
    # The optimiser holds moments for the ISP's one parameter only (Adam's mu and nu).
    flat = jax.tree_util.tree_flatten_with_path(nnx.state(optimizer, nnx.OptState))[0]
    moments = [jax.tree_util.keystr(p) for p, _ in flat if "'mu'" in jax.tree_util.keystr(p)]
    moments += [jax.tree_util.keystr(p) for p, _ in flat if "'nu'" in jax.tree_util.keystr(p)]
    assert len(moments) == 2 and all("['ev_raw']" in m for m in moments), moments


def test_classification_loss_and_metrics_are_the_standard_ones():
    model = CLASSIFY.build_model(10, rngs=nnx.Rngs(0))
    model.eval()
    images = jax.random.uniform(jax.random.key(1), (6, 32, 32, 3))
    labels = jnp.array([0, 1, 2, 3, 4, 5])
    loss, sums = CLASSIFY.loss(model, images, labels)
    logits = model(images)
    expected = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    np.testing.assert_allclose(loss, expected, rtol=1e-6)
    assert int(sums["correct"]) == int(jnp.sum(jnp.argmax(logits, -1) == labels))
    metrics = CLASSIFY.metrics(np.array([0, 1, 9, 3, 9, 5]), np.asarray(labels))
    assert metrics == {"accuracy": pytest.approx(4 / 6), "num_samples": 6}
