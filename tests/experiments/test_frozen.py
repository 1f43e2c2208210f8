"""An ISP for a frozen, deployed model: any NNX classifier from Python, a saved run from the CLI."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from helpers import TINY_CLI_ARGS, toy_dataset

from diffisp.cli import main
from diffisp.experiments.frozen import train_isp_for
from diffisp.models.evaluate import accuracy
from diffisp.training.config import TrainConfig
from diffisp.training.data import prepare_data


class ColourClassifier(nnx.Module):
    """Not a diffisp model: logits from the mean colour and mean brightness of the image."""

    def __init__(self, num_classes: int, *, rngs: nnx.Rngs) -> None:
        self.linear = nnx.Linear(6, num_classes, rngs=rngs)

    def __call__(self, images: jax.Array) -> jax.Array:
        mean = jnp.mean(images, axis=(1, 2))
        return self.linear(jnp.concatenate([mean, jnp.std(images, axis=(1, 2))], axis=-1))


def test_any_nnx_classifier_gets_an_isp_and_stays_frozen():
    cfg = TrainConfig.of(
        num_train=64,
        num_test=32,
        image_size=16,
        batch_size=16,
        epochs_isp=3,
        isp=("exposure", "gamma"),
        isp_warmup_epochs=2,
        lr_isp=5e-2,
    )
    data = prepare_data(toy_dataset(num_train=64, num_test=32, size=16), cfg)
    model = ColourClassifier(data.num_classes, rngs=nnx.Rngs(0))
    # Train it on clean images first (as its owner would have), with plain optax.
    optimizer = nnx.Optimizer(model, optax.adam(0.05), wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer, x, y):
        def loss_fn(m):
            logits = m(x)
            return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], 1))

        optimizer.update(model, nnx.grad(loss_fn)(model))

    for _ in range(200):
        step(model, optimizer, data.train.clean, data.train.targets)
    frozen = jax.tree.map(np.asarray, nnx.state(model))
    state = train_isp_for(model, data, cfg)
    for copy in (model, state.model):  # the caller's model and the state's copy: unchanged
        after = jax.tree.map(np.asarray, nnx.state(copy))
        jax.tree.map(np.testing.assert_array_equal, frozen, after)
    assert [r.phase for r in state.history] == [1, 1, 1]
    alone = accuracy(model, data.test_dark, data.test_labels)
    with_isp = accuracy(model, data.test_dark, data.test_labels, isp=state.isp)
    assert with_isp > alone, (alone, with_isp)


@pytest.mark.slow
def test_cli_frozen_model_trains_an_isp_for_a_saved_run(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *TINY_CLI_ARGS, "--out", str(run)]) == 0
    capsys.readouterr()
    out = tmp_path / "frozen"
    args = ["train", "--frozen-model", str(run), "--epochs-isp", "1", "--out", str(out)]
    assert main([*args, "--isp-warmup-epochs", "1", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "learned ISP + frozen model" in printed
    result = json.loads((out / "frozen.json").read_text())
    assert result["schema"] == "diffisp.frozen/1" and result["metric"] == "accuracy"
    assert set(result["results"]) == {"model_alone", "model_with_isp", "model_on_clean"}
    assert result["config"]["optim"]["isp_warmup_epochs"] == 1
    # The saved model evaluates like any run's.
    assert main(["eval", "--checkpoint", str(out)]) == 0
    # The data set is the checkpoint's.
    assert main([*args, "--num-train", "32"]) == 2
    assert "keeps the checkpoint's data" in capsys.readouterr().err
