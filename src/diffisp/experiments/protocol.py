"""The comparison: every method on the same test images, darkening and seed.

A *method* is "what goes into which CNN": a fixed transform and/or a learned ISP in front of a
trained classifier. The learned ISP is compared with non-learned ISPs in front of the
clean-trained CNN, and - the fair comparison - with CNNs that were themselves fine-tuned on the
dark images (with no ISP, or behind a fixed gamma) for the same number of epochs the learned ISP
gets after phase 0 (``epochs_isp + epochs_joint``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import jax
import numpy as np
from flax import nnx

from diffisp.capture.base import capture, check_sweep_kind
from diffisp.experiments.usage import isp_usage
from diffisp.isp import baselines, raw_baselines
from diffisp.isp.raw import conventional_pipeline, demosaic_only, packed_raw
from diffisp.models.evaluate import predict
from diffisp.models.task import CLASSIFY, Task
from diffisp.training import keys
from diffisp.training.data import RunData
from diffisp.training.loop import finetune_model, train_from_model
from diffisp.training.state import TrainState
from diffisp.training.variants import parse_variant
from diffisp.util.stats import (
    bootstrap_counts,
    gap_closed,
    paired_difference,
    percentile_interval,
)

_SWEEP_KEY = 5

BRIGHTNESS_SWEEP = (0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0)
NOISE_SWEEP = (0.0, 0.01, 0.02, 0.05, 0.1)


#: What a method's task model is: the clean-trained model left as it is (``"frozen"``), a
#: model trained on the dark captures (``"retrained"``), or the clean-image upper reference.
GROUPS = ("frozen", "retrained", "reference")


@dataclass
class Method:
    key: str
    label: str
    description: str
    model: nnx.Module
    isp: nnx.Module | None = None
    transform: Callable[[jax.Array], jax.Array] | None = None
    clean_input: bool = False
    group: str = "frozen"

    def predictions(self, dark: jax.Array, clean: jax.Array, task: Task = CLASSIFY) -> Any:
        images = clean if self.clean_input else dark
        return predict(self.model, images, isp=self.isp, transform=self.transform, task=task)

    def metrics(
        self, dark: jax.Array, clean: jax.Array, targets: Any, task: Task = CLASSIFY
    ) -> dict[str, float]:
        return task.metrics(self.predictions(dark, clean, task), targets)


@dataclass(frozen=True)
class Pipeline:
    """A fixed (non-learned) input path: ``key``, table label, description and transform."""

    key: str
    label: str
    description: str
    transform: Callable[[Any], jax.Array] | None


# The fixed pipelines in front of the clean-trained model, and the two fine-tuned baselines'
# input paths, per input kind. RAW rows keep the sRGB rows' keys where they play the same role
# (the floor "no_isp", the gamma, the classical auto ISP...), so tables and gaps line up.
SRGB_FIXED = (
    Pipeline("no_isp", "No ISP", "dark images straight into the clean-trained CNN", None),
    Pipeline(
        "fixed_gamma",
        "Fixed gamma 0.5",
        "fixed gamma 0.5, clean-trained CNN",
        baselines.fixed_gamma,
    ),
    Pipeline(
        "auto_isp",
        "Classical auto ISP",
        "gray-world WB + auto exposure to 18% grey + gamma 1/2.2, clean-trained CNN",
        baselines.auto_isp,
    ),
    Pipeline(
        "histogram_eq",
        "Histogram equalisation",
        "per-image histogram equalisation (as scikit-image), clean-trained CNN",
        baselines.equalize_histogram,
    ),
)
RAW_FIXED = (
    Pipeline(
        "no_isp",
        "No ISP (demosaic only)",
        "bilinear-demosaiced camera RGB as recorded (no WB, no matrix, linear), clean-trained CNN",
        demosaic_only,
    ),
    Pipeline(
        "conventional",
        "Conventional pipeline",
        "bilinear demosaic + recorded WB + recorded colour matrix + sRGB curve, clean-trained CNN",
        conventional_pipeline,
    ),
    Pipeline(
        "fixed_gamma",
        "Conventional + gamma 0.5",
        "conventional pipeline, then fixed gamma 0.5, clean-trained CNN",
        raw_baselines.conventional_gamma,
    ),
    Pipeline(
        "auto_isp",
        "Conventional + classical auto ISP",
        "recorded WB + demosaic + matrix, then gray-world + auto exposure + gamma 1/2.2, "
        "clean-trained CNN",
        raw_baselines.conventional_auto,
    ),
    Pipeline(
        "histogram_eq",
        "Conventional + histogram equalisation",
        "conventional pipeline, then per-image histogram equalisation, clean-trained CNN",
        raw_baselines.conventional_histeq,
    ),
)
SRGB_FINETUNED = (
    Pipeline("dark_cnn", "CNN fine-tuned on dark", "no ISP", None),
    Pipeline(
        "fixed_gamma_cnn",
        "Fixed gamma + fine-tuned CNN",
        "fixed gamma 0.5",
        baselines.fixed_gamma,
    ),
)
RAW_FINETUNED = (
    Pipeline(
        "dark_cnn",
        "Conventional + fine-tuned CNN",
        "conventional pipeline",
        conventional_pipeline,
    ),
    Pipeline(
        "fixed_gamma_cnn",
        "Conventional + gamma + fine-tuned CNN",
        "conventional pipeline + fixed gamma 0.5",
        raw_baselines.conventional_gamma,
    ),
)


def fixed_pipelines(data: RunData) -> tuple[Pipeline, ...]:
    return RAW_FIXED if data.raw else SRGB_FIXED


def finetuned_pipelines(data: RunData) -> tuple[Pipeline, ...]:
    return RAW_FINETUNED if data.raw else SRGB_FINETUNED


def train_finetuned_baselines(state: TrainState, data: RunData) -> dict[str, nnx.Module]:
    """CNNs trained on from the clean-trained one with the learned ISP's budget after phase 0.

    On dark inputs (through each of the input kind's fine-tuned pipelines), and on clean
    images: the last is the clean oracle, so that the ceiling had as many epochs as everything
    it is compared with. RAW input adds the packed-RAW model (see :func:`train_packed_raw`).
    """
    cfg, start = state.cfg, state.model_after_phase0
    epochs = cfg.optim.epochs_isp + cfg.optim.epochs_joint
    common = dict(epochs=epochs, lr=cfg.optim.lr_cnn, task=state.task)
    models = {
        p.key: finetune_model(
            start,
            data.train,
            cfg,
            transform=p.transform,
            name=p.key,
            index=10 + i,
            **common,
        )
        for i, p in enumerate(finetuned_pipelines(data))
    }
    models["clean_cnn"] = finetune_model(
        start, data.train, cfg, clean=True, name="clean_cnn", index=12, **common
    )
    if data.raw:
        models["packed_raw"] = train_packed_raw(state, data)
    return models


def train_packed_raw(state: TrainState, data: RunData) -> nnx.Module:
    """The "skip the ISP" baseline (as RAW-Adapter's): a model with a 4-channel input trained
    from scratch on packed dark RAW (``(N, H/2, W/2, 4)``) for every epoch the learned ISP's
    model had (phase 0 + 1 + 2), at phase 0's learning rate."""
    cfg = state.cfg
    rngs = nnx.Rngs(jax.random.fold_in(jax.random.key(cfg.seed), keys.INIT + 7))
    model = state.task.build_model(state.num_classes, rngs=rngs, in_channels=4)
    epochs = cfg.optim.epochs_clean + cfg.optim.epochs_isp + cfg.optim.epochs_joint
    return finetune_model(
        model,
        data.train,
        cfg,
        epochs=epochs,
        lr=cfg.optim.lr_clean,
        transform=packed_raw,
        name="packed_raw",
        index=13,
        task=state.task,
    )


def protocol_methods(
    state: TrainState, finetuned: dict[str, nnx.Module], data: RunData | None = None
) -> list[Method]:
    """Every row of the comparison, in table order (``data`` says the input kind; sRGB if
    ``None``)."""
    raw = data is not None and data.raw
    cnn_clean, isp_phase1 = state.model_after_phase0, state.isp_after_phase1
    epochs = state.cfg.optim.epochs_isp + state.cfg.optim.epochs_joint
    methods = [
        Method(p.key, p.label, p.description, cnn_clean, transform=p.transform)
        for p in (RAW_FIXED if raw else SRGB_FIXED)
    ]
    methods += [
        Method(
            p.key,
            p.label,
            f"{p.description}; the clean-trained CNN fine-tuned behind it on dark inputs for "
            f"{epochs} epochs",
            finetuned[p.key],
            transform=p.transform,
            group="retrained",
        )
        for p in (RAW_FINETUNED if raw else SRGB_FINETUNED)
    ]
    if raw:
        total = state.cfg.optim.epochs_clean + epochs
        methods.append(
            Method(
                "packed_raw",
                "Packed-RAW model, no ISP",
                f"a CNN with 4 input channels trained from scratch on packed dark RAW for "
                f"{total} epochs (no ISP at all)",
                finetuned["packed_raw"],
                transform=packed_raw,
                group="retrained",
            )
        )
    kind = "RAW " if raw else ""
    methods += [
        Method(
            "learned_isp_phase1",
            f"Learned {kind}ISP (phase 1)",
            f"{kind}ISP learned in front of the frozen clean-trained CNN",
            cnn_clean,
            isp=isp_phase1,
        ),
        Method(
            "learned_isp_phase2",
            f"Learned {kind}ISP (phase 2)",
            f"{kind}ISP and CNN fine-tuned jointly on dark inputs",
            state.model,
            isp=state.isp,
            group="retrained",
        ),
        Method(
            "clean_oracle",
            "Clean oracle",
            f"clean test images into a CNN trained on clean images for phase 0 + {epochs} "
            "epochs, the same budget (upper reference)",
            finetuned["clean_cnn"],
            clean_input=True,
            group="reference",
        ),
    ]
    return methods


def evaluate_methods(
    methods: Sequence[Method],
    data: RunData,
    task: Task = CLASSIFY,
    *,
    time_isps: bool = True,
    comparisons: dict[str, Any] | None = None,
) -> dict[str, dict]:
    """The task's metrics for every method on the run's test set, its group
    (:data:`GROUPS`), and the share of the gap (no ISP -> clean oracle) each closes in the
    task's headline metric.

    Every learned ISP's row also says how many stages it runs per image; with ``time_isps``
    also its measured milliseconds per image (each adaptive gate pattern compiles a chain of
    its own, seconds on a CPU: a quick demo leaves it out). ``comparisons``: a dict filled with
    :func:`compare_methods`' answer.

    A task whose headline is not a mean over images but can be recomputed on resamples of the
    test images (``resampled_headline``, detection's mAP) gets a 95 % bootstrap interval in
    every row (``low``, ``high``, ``resamples``: :data:`ROW_RESAMPLES` draws of the test
    images, the same draws for every row), and its comparisons the paired interval over the
    same draws.
    """
    rows, scores, kept = {}, {}, {}
    # The rows' texts name the task model "CNN"; a detection table names its detector.
    name = getattr(task, "reporting", CLASSIFY.reporting).model_name

    def named(text: str) -> str:
        if name == "CNN":
            return text
        return re.sub(r"\bCNN\b", lambda m: name.capitalize() if m.start() == 0 else name, text)

    per_image = getattr(task, "per_image_scores", None)
    resampled = None if per_image is not None else getattr(task, "resampled_headline", None)
    counts = None
    if resampled is not None:
        num_test = int(jax.tree.leaves(data.test_labels)[0].shape[0])
        counts = bootstrap_counts(num_test, ROW_RESAMPLES, seed=0)
    for m in methods:
        predictions = m.predictions(data.test_dark, data.test_clean, task)
        metrics = task.metrics(predictions, data.test_labels)
        rows[m.key] = {
            "label": named(m.label),
            **metrics,
            "group": m.group,
            "learned": m.isp is not None,
            "description": named(m.description),
        }
        if per_image is not None:
            scores[m.key] = per_image(predictions, data.test_labels)
        elif resampled is not None:
            draws = resampled(predictions, data.test_labels, counts)
            low, high = percentile_interval(draws)
            rows[m.key].update(low=low, high=high, resamples=int(np.isfinite(draws).sum()))
            kept[m.key] = draws
        elif comparisons is not None:  # the metric is not a mean over images: bootstrap it
            kept[m.key] = predictions
    key = task.headline
    floor, ceiling = rows["no_isp"][key], rows["clean_oracle"][key]
    for row in rows.values():
        row["gap_closed"] = gap_closed(row[key], floor, ceiling)
    for m in methods:
        if m.isp is not None:
            usage = isp_usage(m.isp, data.test_dark, timed=time_isps)
            rows[m.key].update(usage)
    if comparisons is not None:
        found = compare_methods(rows, scores, key)
        for answer in found.values():
            a, b = answer["a"], answer["b"]
            if "low" in answer or a not in kept or b not in kept:
                continue
            if resampled is not None:  # both rows' metric on the same draws
                difference = kept[a] - kept[b]
                low, high = percentile_interval(difference)
                answer.update(
                    low=low,
                    high=high,
                    num_samples=int(counts.shape[1]),
                    resamples=int(np.isfinite(difference).sum()),
                )
            else:
                answer.update(bootstrap_difference(task, kept[a], kept[b], data.test_labels, key))
        comparisons.update(found)
    return rows


#: Resamples of a bootstrap that recomputes the metric (COCO mAP: ~60 ms each at 128 images).
METRIC_RESAMPLES = 100
#: Resamples of the test images behind every row's interval, for a task that recomputes its
#: headline on a resample cheaply (``resampled_headline``: detection, ~0.2 ms each).
ROW_RESAMPLES = 1000


def bootstrap_difference(
    task: Task,
    predictions_a: Any,
    predictions_b: Any,
    targets: Any,
    key: str,
    *,
    resamples: int = METRIC_RESAMPLES,
    seed: int = 0,
) -> dict[str, Any]:
    """95 % paired bootstrap interval of ``metric(a) - metric(b)`` for a metric that is not a
    mean over images (COCO mAP): the test images are resampled with replacement, the same
    draw for both methods, and the task's metric recomputed on each draw. ``{"low", "high",
    "num_samples", "resamples"}``; NaN draws (no object of a kind drawn) are left out."""
    n = int(jax.tree.leaves(targets)[0].shape[0])
    rng = np.random.default_rng(seed)
    differences = []
    for _ in range(resamples):
        index = rng.integers(0, n, n)

        def drawn(tree: Any, index: np.ndarray = index) -> Any:
            return jax.tree.map(lambda leaf: np.asarray(leaf)[index], tree)

        truth = drawn(targets)
        differences.append(
            task.metrics(drawn(predictions_a), truth)[key]
            - task.metrics(drawn(predictions_b), truth)[key]
        )
    low, high = percentile_interval(differences)
    return {
        "low": low,
        "high": high,
        "num_samples": n,
        "resamples": int(np.isfinite(differences).sum()),
    }


#: The questions a results table answers, by the group of rows each compares within.
QUESTIONS = ("retrained", "frozen")


def question_pairs(
    rows: dict[str, dict], value: Callable[[str], float | None]
) -> dict[str, tuple[str, str]]:
    """Per question (:data:`QUESTIONS`), the ``(a, b)`` row keys it compares: within the
    question's group, the learned ISP and the method without one of highest ``value(key)``
    (rows without a number are passed over). A question without both kinds of row is left out.

    ``rows``: results rows with ``group`` and ``learned`` (older files' rows, without them,
    answer nothing).
    """

    def best(keys: list[str]) -> str | None:
        scored = [k for k in keys if isinstance(value(k), (int, float))]
        return max(scored, key=value) if scored else None

    pairs = {}
    for group in QUESTIONS:
        members = [k for k, row in rows.items() if row.get("group") == group]
        a = best([k for k in members if rows[k].get("learned")])
        b = best([k for k in members if not rows[k].get("learned")])
        if a is not None and b is not None:
            pairs[group] = (a, b)
    return pairs


def compare_methods(
    rows: dict[str, dict], scores: dict[str, np.ndarray], key: str
) -> dict[str, dict[str, Any]]:
    """The two answers a user asks the table for, each the best learned ISP against the best
    method without one, on the same test images (:func:`question_pairs`):

    - ``"retrained"``: when the model may be retrained, the best learned ISP trained with it
      against the best model simply fine-tuned on the dark captures;
    - ``"frozen"``: when the model stays as it is, the best learned ISP in front of it against
      the best fixed pipeline in front of it (no ISP, gamma, classical auto ISP, ...).

    Each: ``{"a", "b"}`` (the two rows' keys), ``"a_value"``, ``"b_value"``, ``"difference"``
    (a - b in ``key``) and, when ``scores`` has both rows' per-image scores, the 95 % paired
    bootstrap interval ``"low"``/``"high"`` and ``"num_samples"``
    (:func:`~diffisp.util.stats.paired_difference`).
    """
    out: dict[str, dict[str, Any]] = {}
    for group, (a, b) in question_pairs(rows, lambda k: rows[k].get(key)).items():
        answer: dict[str, Any] = {
            "a": a,
            "b": b,
            "a_value": rows[a][key],
            "b_value": rows[b][key],
            "difference": rows[a][key] - rows[b][key],
        }
        if a in scores and b in scores:
            paired = paired_difference(scores[a], scores[b])
            answer.update(low=paired["low"], high=paired["high"], num_samples=paired["num_samples"])
        out[group] = answer
    return out


def sweep(
    methods: Sequence[Method],
    data: RunData,
    cfg: Any,
    kind: str,
    values: Sequence[float],
    task: Task = CLASSIFY,
) -> dict[str, list[float]]:
    """The headline metric of each method as the capture changes (ISP trained once).

    Each point captures the test images with the run's capture model at that point
    (``data.capture_model.at(kind, value)``: ``"brightness"``, a fixed brightness factor;
    ``"noise_sigma"``, a fixed noise level, as the model defines it). Every method sees the same
    captures at each point.
    """
    check_sweep_kind(kind)
    out: dict[str, list[float]] = {m.key: [] for m in methods}
    key = jax.random.fold_in(jax.random.key(cfg.seed), _SWEEP_KEY)
    for i, value in enumerate(values):
        point_key = jax.random.fold_in(jax.random.fold_in(key, 0 if kind == "brightness" else 1), i)
        dark, _ = capture(data.capture_model.at(kind, value), point_key, data.test_clean)
        for m in methods:
            metrics = m.metrics(dark, data.test_clean, data.test_labels, task)
            out[m.key].append(metrics[task.headline])
    return out


# ---------------------------------------------------------------- ISP variants (issue: adaptive)


def train_variant(state: TrainState, data: RunData, overrides: dict[str, Any]) -> TrainState:
    """Phases 1 and 2 with another ISP, starting from the same clean-trained model."""
    cfg = state.cfg.replace(**overrides)
    return train_from_model(cfg, state.model_after_phase0, data, state.num_classes)


FROZEN_SUFFIX = "_frozen"


def variant_methods(state: TrainState, data: RunData, specs: Sequence[str]) -> list[Method]:
    """Train each ISP variant; return its phase-2 methods, then each one's phase-1 method.

    Phase 2 (key ``<variant>``): the variant's ISP and the CNN fine-tuned together. Phase 1
    (key ``<variant>_frozen``): the variant's ISP after phase 1 in front of the frozen
    clean-trained CNN - a deployed model nobody may retrain, where the ISP alone must absorb
    the capture conditions. Usage fields are filled later.
    """
    tuned, frozen = [], []
    for spec in specs:
        key, label, overrides = parse_variant(spec)
        variant = train_variant(state, data, overrides)
        stages = ", ".join(variant.cfg.isp.stages)
        description = f"{label}: {stages}; phases 1-2 from the same clean-trained CNN"
        tuned.append(
            Method(key, label, description, variant.model, isp=variant.isp, group="retrained")
        )
        frozen.append(
            Method(
                key + FROZEN_SUFFIX,
                f"{label}, frozen CNN",
                f"{label}: {stages}; phase 1 only, in front of the frozen clean-trained CNN",
                variant.model_after_phase0,
                isp=variant.isp_after_phase1,
            )
        )
    return tuned + frozen
