"""``diffisp tune``: an ISP for a user's own frozen PyTorch or ONNX model, with labels or none.

:func:`tune_isp_for` is phase 1 and its warm-up (the training core unchanged) in front of any
frozen model with any task, e.g. :class:`~diffisp.models.external_tasks.OutputConsistency`,
whose targets are the model's outputs on the clean training images (:func:`consistency_data`).
:func:`run_tune` is the command: load the model and the data, tune the ISP, compare it with the
fixed pipelines (no ISP, fixed gamma, classical auto ISP...) in front of the same model on the
same dark test images, and write ``out_dir`` (``metrics.json``, ``isp.npz``).
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
from diffisp.experiments.protocol import RAW_FIXED, SRGB_FIXED
from diffisp.experiments.run import environment, load_run_data, prepare_run_data
from diffisp.models.evaluate import evaluate
from diffisp.models.external import InputSpec, load_model
from diffisp.models.external_tasks import (
    CenterNetConsistency,
    ExternalCenterNet,
    LabelCrossEntropy,
    OutputConsistency,
    clean_outputs,
)
from diffisp.models.task import Task
from diffisp.training.config import TrainConfig
from diffisp.training.data import RunData
from diffisp.training.loop import train
from diffisp.training.state import Learner, TrainState, build_isp, detached_copy
from diffisp.util.io import atomic_write_json, check_output_path

LOSSES = ("labels", "consistency")
#: ``--consistency`` per task: what the clean outputs are matched with (the first is the default).
CONSISTENCY = {"classify": ("kl", "mse"), "detect": ("centernet", "mse")}


def tune_isp_for(model: nnx.Module, data: RunData, cfg: TrainConfig, task: Task) -> TrainState:
    """Phase 1 (and its warm-up) of ``cfg``'s ISP in front of ``model`` (frozen) for ``task``.

    The same as :func:`diffisp.experiments.frozen.train_isp_for` with the task given instead of
    ``cfg.task.name``'s. ``data.train``'s targets are ``task``'s targets. ``model`` itself is
    left as it was; ``state.model`` is a copy with the same weights.
    """
    cfg = cfg.replace(epochs_clean=0, epochs_joint=0)
    before = jax.tree.map(np.asarray, nnx.state(model))
    state = TrainState(cfg, Learner(build_isp(cfg), detached_copy(model)), data.num_classes, task)
    state.snapshots["cnn_clean"] = model
    state.position = (1, 0)
    state = train(state, data)
    after = jax.tree.map(np.asarray, nnx.state(state.model))
    if not all(jax.tree.leaves(jax.tree.map(np.array_equal, before, after))):
        raise AssertionError("the frozen model's weights changed")
    return state


def consistency_data(model: nnx.Module, data: RunData, *, labelled: bool = True) -> RunData:
    """``data`` with the model's outputs on the clean training images as training targets.

    Test targets stay the true labels when ``labelled`` (to measure accuracy); otherwise they
    become the model's predictions on the clean test images (accuracy then reads as agreement
    with what the model sees on clean images).
    """
    test_labels = data.test_labels
    if not labelled:
        test_labels = np.argmax(clean_outputs(model, data.test_clean), axis=-1)
    return dataclasses.replace(
        data,
        train=data.train.with_targets(clean_outputs(model, data.train.clean)),
        test_labels=test_labels,
    )


def make_task(
    loss: str, consistency: str | None = None, *, task: str = "classify", layout: str = "NCHW"
) -> Task:
    """The training task of ``--loss`` for ``task`` (``classify`` or ``detect``).

    ``labels``: cross-entropy for a classifier, the CenterNet loss for a detector with a
    CenterNet head. ``consistency`` (no labels): the clean outputs matched by ``consistency``:
    ``kl`` (logits), ``mse`` (any dense maps or features), ``centernet`` (a CenterNet head's
    maps: :class:`~diffisp.models.external_tasks.CenterNetConsistency`); ``None`` takes the
    task's default (:data:`CONSISTENCY`). ``layout``: the model's output layout (detectors).
    """
    if task not in CONSISTENCY:
        raise ConfigError(f"diffisp tune takes --task classify or detect; got {task!r}")
    if loss not in LOSSES:
        raise ConfigError(f"--loss must be one of {', '.join(LOSSES)}; got {loss!r}")
    if loss == "labels":
        return LabelCrossEntropy() if task == "classify" else ExternalCenterNet(layout=layout)
    kind = CONSISTENCY[task][0] if consistency is None else consistency
    if kind not in CONSISTENCY[task]:
        raise ConfigError(
            f"--consistency for --task {task} must be one of {', '.join(CONSISTENCY[task])}; "
            f"got {kind!r}"
        )
    if kind == "centernet":
        return CenterNetConsistency(layout=layout)
    return OutputConsistency(kind=kind)


def evaluation_task(task: str, *, layout: str = "NCHW") -> Task:
    """What the tuned ISP is measured with: accuracy (classify), COCO mAP (detect)."""
    return LabelCrossEntropy() if task == "classify" else ExternalCenterNet(layout=layout)


def compare(
    model: nnx.Module,
    data: RunData,
    isp: nnx.Module | None,
    cfg: TrainConfig,
    task: Task = LabelCrossEntropy(),  # noqa: B008 (a frozen dataclass)
) -> dict[str, dict[str, Any]]:
    """``task``'s metrics for ``model`` behind each fixed pipeline, the learned ``isp`` and on
    clean images, on the same test images."""
    rows: dict[str, dict[str, float]] = {}
    for pipeline in RAW_FIXED if cfg.capture.input == "raw" else SRGB_FIXED:
        rows[pipeline.key] = evaluate(
            model, data.test_dark, data.test_labels, transform=pipeline.transform, task=task
        ) | {"label": pipeline.label}
    if isp is not None:
        rows["learned_isp"] = evaluate(
            model, data.test_dark, data.test_labels, isp=isp, task=task
        ) | {"label": "Learned ISP"}
    rows["clean"] = evaluate(model, data.test_clean, data.test_labels, task=task) | {
        "label": "The model on clean images"
    }
    return rows


def run_tune(
    model_spec: str,
    cfg: TrainConfig,
    out_dir: str | Path,
    *,
    weights: str | Path | None = None,
    input_spec: InputSpec | None = None,
    loss: str = "consistency",
    consistency: str | None = None,
    command: str | None = None,
    figures: Any = None,
) -> dict[str, Any]:
    """Load ``model_spec`` (``torch:PKG.MODULE:FACTORY`` with ``weights``, or ``PATH.onnx``),
    tune ``cfg``'s ISP for it with ``loss``, compare, and write ``out_dir/metrics.json``.

    ``cfg.task.name`` says what the model is: ``classify`` (logits) or ``detect`` (a CenterNet
    head's dense maps, :func:`~diffisp.models.external_tasks.centernet_maps`). ``figures``:
    the report layer's :data:`~diffisp.report.tune_figures.TUNE_FIGURES` (``None``: no figures).
    """
    layout = (input_spec or InputSpec()).layout
    task = make_task(loss, consistency, task=cfg.task.name, layout=layout)
    measure = evaluation_task(cfg.task.name, layout=layout)
    out_dir = check_output_path(out_dir, directory=True, what="output directory")
    started = time.perf_counter()
    model = load_model(model_spec, weights=weights, input_spec=input_spec)
    if cfg.data.stream:
        raise ConfigError("diffisp tune holds the training set in memory (no --stream)")
    dataset = load_run_data(cfg)
    data = prepare_run_data(dataset, cfg)
    if loss == "consistency":
        data = consistency_data(model, data)
    state = tune_isp_for(model, data, cfg, task)
    rows = compare(state.model, data, state.isp, cfg, measure)
    out_dir.mkdir(parents=True, exist_ok=True)
    isp_params = nnx.to_flat_state(nnx.state(state.isp, nnx.Param))
    np.savez(
        out_dir / "isp.npz",
        **{"/".join(map(str, k)): np.asarray(v[...]) for k, v in isp_params},
    )
    drawn = (
        []
        if figures is None
        else figures.tune(
            out_dir / "figures", state.isp, data, rows, measure.headline, dataset.class_names
        )
    )
    result = {
        "schema": "diffisp.tune/1",
        "command": command,
        "model": model_spec,
        "weights": None if weights is None else str(Path(weights).absolute()),
        "input_spec": dataclasses.asdict(model.spec),
        "model_weights": model.num_weights,
        "loss": loss,
        "consistency": getattr(task, "kind", "centernet") if loss == "consistency" else None,
        "labels_used_in_training": loss == "labels",
        "task": cfg.task.name,
        "metric": measure.headline,
        "config": state.cfg.to_dict(),
        "results": rows,
        "figures": [str(p.relative_to(out_dir)) for p in drawn],
        "history": [dataclasses.asdict(r) for r in state.history],
        "seconds": time.perf_counter() - started,
        "environment": environment(),
    }
    atomic_write_json(out_dir / "metrics.json", result)
    return result
