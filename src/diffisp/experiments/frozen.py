"""An ISP for a deployed model that cannot be retrained: phase 1 alone, in front of it.

``diffisp train --frozen-model CHECKPOINT`` (and :func:`train_isp_for` from Python) tunes only
the ISP, with phase 1's warm-up, in front of a frozen task model, and reports what the ISP buys
that model on dark images. Any Flax NNX classifier works from Python if it has the documented
call signature: ``model(images)`` with ``images`` ``(N, H, W, 3)`` float32 in [0, 1] returns
``(N, num_classes)`` logits, and ``model.eval()`` puts it in inference mode (batch norm with
running statistics, no dropout). The model's parameters are never changed.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import nnx

from diffisp.errors import ConfigError
from diffisp.experiments.run import load_run_data, prepare_run_data
from diffisp.models.evaluate import evaluate
from diffisp.training.checkpoint import load_model, save_model
from diffisp.training.config import TrainConfig, flatten_config
from diffisp.training.data import RunData
from diffisp.training.loop import train_from_model
from diffisp.training.state import TrainState
from diffisp.util.io import atomic_write_json, check_output_path


def train_isp_for(model: nnx.Module, data: RunData, cfg: TrainConfig) -> TrainState:
    """Phase 1 (and its warm-up) for ``cfg``'s ISP in front of ``model``, which stays frozen.

    Returns the final state: ``state.isp`` is the trained ISP, ``state.model`` a copy of
    ``model`` with the same parameters (training steps donate their buffers; ``model`` itself
    is left as it was).
    """
    cfg = cfg.replace(epochs_clean=0, epochs_joint=0)
    before = jax.tree.map(np.asarray, nnx.state(model, nnx.Param))
    state = train_from_model(cfg, model, data)
    after = jax.tree.map(np.asarray, nnx.state(state.model, nnx.Param))
    if not all(jax.tree.leaves(jax.tree.map(np.array_equal, before, after))):
        raise AssertionError("the frozen model's parameters changed")  # the core's promise
    return state


def run_frozen_model(
    checkpoint: str | Path,
    overrides: dict[str, Any],
    out_dir: str | Path,
    *,
    command: str | None = None,
) -> dict[str, Any]:
    """Load a saved model, train an ISP for it, evaluate, and write ``out_dir`` (``model/``: the
    ISP with the unchanged model, ``frozen.json``: the results).

    ``overrides`` are config values to change from the checkpoint's run (ISP stages, epochs of
    phase 1, warm-up, learning rate, darkening...); the data set and model come from the
    checkpoint.
    """
    checkpoint = Path(checkpoint)
    model_dir = checkpoint / "model" if (checkpoint / "model").is_dir() else checkpoint
    run_dir = model_dir.parent
    _, model, meta = load_model(model_dir)
    if "config" not in meta:
        raise ConfigError(f"{model_dir} has no run config: save models with diffisp train")
    fixed = {"data", "data_dir", "num_train", "num_test", "image_size", "seed", "task"}
    refused = sorted(fixed & set(overrides))
    if refused:
        raise ConfigError(
            f"--frozen-model keeps the checkpoint's data; it would ignore {', '.join(refused)}"
        )
    cfg = TrainConfig.from_dict({**flatten_config(meta["config"]), **overrides})
    out_dir = check_output_path(out_dir, directory=True, what="output directory")
    started = time.perf_counter()
    data = prepare_run_data(load_run_data(cfg, run_dir), cfg)
    state = train_isp_for(model, data, cfg)
    model, task, key = state.model, state.task, state.task.headline
    rows = {
        "model_alone": evaluate(model, data.test_dark, data.test_labels, task=task),
        "model_with_isp": evaluate(
            model, data.test_dark, data.test_labels, isp=state.isp, task=task
        ),
        "model_on_clean": evaluate(model, data.test_clean, data.test_labels, task=task),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    save_model(out_dir / "model", state.isp, model, {**meta, "config": state.cfg.to_dict()})
    result = {
        "schema": "diffisp.frozen/1",
        "command": command,
        "checkpoint": str(model_dir.absolute()),
        "metric": key,
        "config": state.cfg.to_dict(),
        "results": rows,
        "history": [dataclasses.asdict(r) for r in state.history],
        "seconds": time.perf_counter() - started,
    }
    atomic_write_json(out_dir / "frozen.json", result)
    return result
