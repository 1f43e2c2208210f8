"""The comparison: every method on the same test images, darkening and seed.

A *method* is "what goes into which CNN": a fixed transform and/or a learned ISP in front of a
trained classifier. The learned ISP is compared with non-learned ISPs in front of the
clean-trained CNN, and - the fair comparison - with CNNs that were themselves fine-tuned on the
dark images (with no ISP, or behind a fixed gamma) for the same number of epochs the learned ISP
gets after phase 0 (``epochs_isp + epochs_joint``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import jax
from flax import nnx

from diffisp.data.degrade import LowLight, darken
from diffisp.experiments.usage import isp_usage
from diffisp.isp import baselines
from diffisp.models.evaluate import evaluate
from diffisp.models.task import CLASSIFY, Task
from diffisp.training.data import RunData
from diffisp.training.loop import finetune_model, train
from diffisp.training.state import TrainState, detached_copy
from diffisp.training.variants import parse_variant
from diffisp.util.stats import gap_closed

_SWEEP_KEY = 5

BRIGHTNESS_SWEEP = (0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0)
NOISE_SWEEP = (0.0, 0.01, 0.02, 0.05, 0.1)


@dataclass
class Method:
    key: str
    label: str
    description: str
    model: nnx.Module
    isp: nnx.Module | None = None
    transform: Callable[[jax.Array], jax.Array] | None = None
    clean_input: bool = False

    def metrics(
        self, dark: jax.Array, clean: jax.Array, targets: Any, task: Task = CLASSIFY
    ) -> dict[str, float]:
        images = clean if self.clean_input else dark
        return evaluate(
            self.model, images, targets, isp=self.isp, transform=self.transform, task=task
        )


def train_finetuned_baselines(state: TrainState, data: RunData) -> dict[str, nnx.Module]:
    """CNNs trained on from the clean-trained one with the learned ISP's budget after phase 0.

    On dark images (no ISP; behind a fixed gamma), and on clean images: the last is the clean
    oracle, so that the ceiling had as many epochs as everything it is compared with.
    """
    cfg, start = state.cfg, state.model_after_phase0
    epochs = cfg.epochs_isp + cfg.epochs_joint
    common = dict(epochs=epochs, lr=cfg.lr_cnn, task=state.task)
    return {
        "dark_cnn": finetune_model(
            start, data.train_dark, data.train_labels, cfg, name="dark_cnn", index=10, **common
        ),
        "fixed_gamma_cnn": finetune_model(
            start,
            data.train_dark,
            data.train_labels,
            cfg,
            transform=baselines.fixed_gamma,
            name="fixed_gamma_cnn",
            index=11,
            **common,
        ),
        "clean_cnn": finetune_model(
            start, data.train_clean, data.train_labels, cfg, name="clean_cnn", index=12, **common
        ),
    }


def protocol_methods(state: TrainState, finetuned: dict[str, nnx.Module]) -> list[Method]:
    """Every row of the comparison, in table order."""
    cnn_clean, isp_phase1 = state.model_after_phase0, state.isp_after_phase1
    epochs = state.cfg.epochs_isp + state.cfg.epochs_joint
    return [
        Method("no_isp", "No ISP", "dark images straight into the clean-trained CNN", cnn_clean),
        Method(
            "fixed_gamma",
            "Fixed gamma 0.5",
            "fixed gamma 0.5, clean-trained CNN",
            cnn_clean,
            transform=baselines.fixed_gamma,
        ),
        Method(
            "auto_isp",
            "Classical auto ISP",
            "gray-world WB + auto exposure to 18% grey + gamma 1/2.2, clean-trained CNN",
            cnn_clean,
            transform=baselines.auto_isp,
        ),
        Method(
            "histogram_eq",
            "Histogram equalisation",
            "per-image histogram equalisation (as scikit-image), clean-trained CNN",
            cnn_clean,
            transform=baselines.equalize_histogram,
        ),
        Method(
            "dark_cnn",
            "CNN fine-tuned on dark",
            f"no ISP; the clean-trained CNN fine-tuned on dark images for {epochs} epochs",
            finetuned["dark_cnn"],
        ),
        Method(
            "fixed_gamma_cnn",
            "Fixed gamma + fine-tuned CNN",
            f"fixed gamma 0.5; CNN fine-tuned behind it on dark images for {epochs} epochs",
            finetuned["fixed_gamma_cnn"],
            transform=baselines.fixed_gamma,
        ),
        Method(
            "learned_isp_phase1",
            "Learned ISP (phase 1)",
            "ISP learned in front of the frozen clean-trained CNN",
            cnn_clean,
            isp=isp_phase1,
        ),
        Method(
            "learned_isp_phase2",
            "Learned ISP (phase 2)",
            "ISP and CNN fine-tuned jointly on dark images",
            state.model,
            isp=state.isp,
        ),
        Method(
            "clean_oracle",
            "Clean oracle",
            f"clean test images into a CNN trained on clean images for phase 0 + {epochs} "
            "epochs, the same budget (upper reference)",
            finetuned["clean_cnn"],
            clean_input=True,
        ),
    ]


def evaluate_methods(
    methods: Sequence[Method], data: RunData, task: Task = CLASSIFY
) -> dict[str, dict]:
    """The task's metrics for every method on the run's test set, and the share of the gap
    (no ISP -> clean oracle) each closes in the task's headline metric."""
    rows = {}
    for m in methods:
        metrics = m.metrics(data.test_dark, data.test_clean, data.test_labels, task)
        rows[m.key] = {"label": m.label, **metrics, "description": m.description}
    key = task.headline
    floor, ceiling = rows["no_isp"][key], rows["clean_oracle"][key]
    for row in rows.values():
        row["gap_closed"] = gap_closed(row[key], floor, ceiling)
    for m in methods:
        if m.isp is not None:
            usage = isp_usage(m.isp, data.test_dark)
            rows[m.key]["active_stages"] = usage["active_stages"]
            rows[m.key]["isp_ms_per_image"] = usage["isp_ms_per_image"]
            rows[m.key]["stage_rates"] = usage["stage_rates"]
    return rows


def sweep(
    methods: Sequence[Method],
    data: RunData,
    cfg: Any,
    kind: str,
    values: Sequence[float],
    task: Task = CLASSIFY,
) -> dict[str, list[float]]:
    """Accuracy of each method as the darkening or the noise changes (ISP trained once).

    ``kind="brightness"``: a fixed brightness factor per point, the run's noise sigma.
    ``kind="noise_sigma"``: the run's brightness range, a given noise sigma per point.
    Every method sees the same darkened test images at each point; values are the task's
    headline metric.
    """
    if kind not in ("brightness", "noise_sigma"):
        raise ValueError(f"unknown sweep {kind!r}")
    out: dict[str, list[float]] = {m.key: [] for m in methods}
    key = jax.random.fold_in(jax.random.key(cfg.seed), _SWEEP_KEY)
    for i, value in enumerate(values):
        if kind == "brightness":
            low_light = LowLight((value, value), cfg.noise_sigma, cfg.noise)
        else:
            low_light = LowLight(tuple(cfg.brightness), value, cfg.noise)
        point_key = jax.random.fold_in(jax.random.fold_in(key, 0 if kind == "brightness" else 1), i)
        dark, _ = darken(point_key, data.test_clean, low_light)
        for m in methods:
            metrics = m.metrics(dark, data.test_clean, data.test_labels, task)
            out[m.key].append(metrics[task.headline])
    return out


# ---------------------------------------------------------------- ISP variants (issue: adaptive)


def train_variant(state: TrainState, data: RunData, overrides: dict[str, Any]) -> TrainState:
    """Phases 1 and 2 with another ISP, starting from the same clean-trained model."""
    cfg = dataclasses.replace(state.cfg, **overrides)
    variant = TrainState.create(cfg, state.num_classes, state.task)
    variant.learner.model = detached_copy(state.model_after_phase0)
    variant.snapshots["cnn_clean"] = state.model_after_phase0
    variant.position = (1, 0)
    return train(variant, data)


def variant_methods(state: TrainState, data: RunData, specs: Sequence[str]) -> list[Method]:
    """Train each ISP variant and return its phase-2 method (with usage fields filled later)."""
    methods = []
    for spec in specs:
        key, label, overrides = parse_variant(spec)
        variant = train_variant(state, data, overrides)
        description = (
            f"{label}: {', '.join(variant.cfg.isp)}; phases 1-2 from the same clean-trained CNN"
        )
        methods.append(Method(key, label, description, variant.model, isp=variant.isp))
    return methods
