"""Results split by capture condition: accuracy and ISP stage usage per condition bin.

With mixed capture conditions (:mod:`diffisp.capture.mixed`) every test image has its own
brightness, gain, colour cast and blur; :func:`~diffisp.capture.mixed.condition_bins` groups
the images by them. Here, per bin: each method's accuracy (:func:`accuracy_by_bin`), how often
each ISP stage runs (:func:`gate_usage_by_bin`), and how many different per-image stage
subsets an adaptive ISP uses (:func:`gate_patterns`). A per-image ISP earns its keep where its
gates differ between bins and its accuracy beats the global ISP's in them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
from flax import nnx

from diffisp.capture.mixed import BIN_LABELS, condition_bins
from diffisp.capture.raw_capture import num_images
from diffisp.errors import DataError, InputError
from diffisp.models.evaluate import Transform, predict
from diffisp.training.data import RunData
from diffisp.util.stats import mean_std

Bins = Mapping[str, Any]


def correct_per_image(
    model: nnx.Module,
    images: Any,
    labels: Any,
    *,
    isp: nnx.Module | None = None,
    transform: Transform | None = None,
) -> np.ndarray:
    """``(N,)`` bool: whether ``model`` behind ``transform`` and ``isp`` classifies each image
    right (eval mode, :func:`diffisp.models.evaluate.predict`)."""
    predictions = predict(model, images, isp=isp, transform=transform)
    return np.asarray(predictions) == np.asarray(labels)


def method_correct(method: Any, dark: Any, clean: jax.Array, labels: Any) -> np.ndarray:
    """:func:`correct_per_image` for a :class:`~diffisp.experiments.protocol.Method` (its model,
    ISP and transform; the clean images when it is the clean-input reference)."""
    images = clean if method.clean_input else dark
    return correct_per_image(
        method.model, images, labels, isp=method.isp, transform=method.transform
    )


def accuracy_by_bin(correct: Any, bins: Bins) -> dict[str, dict[str, dict[str, Any]]]:
    """Accuracy within each condition bin.

    Args:
      correct: ``(N,)`` per-image correctness (bool or 0/1).
      bins: ``{kind: (N,) labels}``, e.g. :func:`~diffisp.capture.mixed.condition_bins`.

    Returns:
      ``{kind: {label: {"accuracy": float, "num_samples": int}}}``, labels in display order
      (:data:`~diffisp.capture.mixed.BIN_LABELS`; others sorted after them), empty bins left
      out.
    """
    correct = np.asarray(correct)
    if correct.ndim != 1:
        raise InputError(f"correct must be a (N,) vector; got shape {correct.shape}")
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for kind, labels in _checked_bins(bins, correct.shape[0]).items():
        out[kind] = {}
        for label in _ordered_labels(kind, labels):
            members = correct[labels == label]
            out[kind][label] = {
                "accuracy": float(np.mean(members.astype(np.float64))),
                "num_samples": int(members.size),
            }
    return out


def accuracy_by_condition(
    methods: Sequence[Any], data: RunData
) -> dict[str, dict[str, dict[str, dict[str, Any]]]]:
    """:func:`accuracy_by_bin` of every method on the run's test set, binned by its recorded
    conditions: ``{method key: {kind: {label: {"accuracy", "num_samples"}}}}``.

    Needs ``data.test_conditions`` (a run with ``conditions="mixed"``); methods are
    :class:`~diffisp.experiments.protocol.Method` s.
    """
    if data.test_conditions is None:
        raise DataError(
            "the test images have no recorded conditions; results can be split by condition "
            "only for runs with conditions='mixed' (--conditions mixed)"
        )
    bins = condition_bins(data.test_conditions)
    return {
        method.key: accuracy_by_bin(
            method_correct(method, data.test_dark, data.test_clean, data.test_labels), bins
        )
        for method in methods
    }


def gate_usage_by_bin(
    isp: nnx.Module, images: Any, bins: Bins
) -> dict[str, dict[str, dict[str, float]]]:
    """Share of each bin's images that each ISP stage runs on.

    ``isp`` is any ISP with ``stage_names`` and ``decisions(images)["active"]`` (``(N, S)``);
    a global ISP runs every stage everywhere (rate 1).

    Returns:
      ``{kind: {label: {stage: rate in [0, 1]}}}``, labels ordered as in
      :func:`accuracy_by_bin`.
    """
    active = _active(isp, images)
    out: dict[str, dict[str, dict[str, float]]] = {}
    for kind, labels in _checked_bins(bins, active.shape[0]).items():
        out[kind] = {
            label: {
                stage: float(active[labels == label, s].mean())
                for s, stage in enumerate(isp.stage_names)
            }
            for label in _ordered_labels(kind, labels)
        }
    return out


def gate_patterns(isp: nnx.Module, images: Any) -> dict[str, int]:
    """How many images use each distinct subset of stages, most frequent first.

    A pattern is written as its active stages joined by ``+`` in chain order (``"none"`` when no
    stage runs); ties are broken by the pattern's name.
    """
    active = _active(isp, images)
    names = [
        "+".join(s for s, on in zip(isp.stage_names, row, strict=True) if on) or "none"
        for row in active
    ]
    return dict(sorted(Counter(names).items(), key=lambda item: (-item[1], item[0])))


def distinct_gate_patterns(isp: nnx.Module, images: Any) -> int:
    """Number of distinct per-image stage subsets the ISP uses on ``images``."""
    return len(gate_patterns(isp, images))


@nnx.jit
def _active_stages(isp: nnx.Module, images: Any) -> jax.Array:
    # One compiled call: op by op, an adaptive ISP's predictor compiled ~100 small programs.
    return isp.decisions(images)["active"]


def _active(isp: nnx.Module, images: Any) -> np.ndarray:
    if isinstance(isp, nnx.Module):
        active = np.asarray(_active_stages(isp, images), dtype=bool)
    else:  # any object with decisions(), run as it is
        active = np.asarray(isp.decisions(images)["active"], dtype=bool)
    expected = (num_images(images), len(isp.stage_names))
    if active.shape != expected:
        raise InputError(
            f"the ISP's decisions have shape {active.shape}; expected (images, stages) {expected}"
        )
    return active


def _checked_bins(bins: Bins, n: int) -> dict[str, np.ndarray]:
    if not bins:
        raise DataError("no condition bins given (were the test conditions recorded?)")
    out = {}
    for kind, labels in bins.items():
        labels = np.asarray(labels, dtype=object)
        if labels.shape != (n,):
            raise InputError(
                f"bins[{kind!r}] has shape {labels.shape}; expected one label per image ({n},)"
            )
        out[kind] = labels
    return out


def _ordered_labels(kind: str, labels: np.ndarray) -> list[str]:
    present = set(labels.tolist())
    known = [label for label in BIN_LABELS.get(kind, ()) if label in present]
    return known + sorted(present - set(known), key=str)


def condition_report(methods: Sequence[Any], data: RunData) -> dict[str, Any]:
    """What a mixed-conditions run records: every method's accuracy per bin, and for every
    method with an ISP its stage usage per bin and its distinct gate patterns."""
    bins = condition_bins(data.test_conditions) if data.test_conditions is not None else None
    with_isp = [m for m in methods if m.isp is not None]
    return {
        "accuracy": accuracy_by_condition(methods, data),
        "gate_usage": {m.key: gate_usage_by_bin(m.isp, data.test_dark, bins) for m in with_isp},
        "gate_patterns": {m.key: gate_patterns(m.isp, data.test_dark) for m in with_isp},
    }


def aggregate_condition_reports(reports: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Seeds' :func:`condition_report` s -> per method and bin: accuracy mean, s.d. and the
    per-seed values; mean stage usage; the number of distinct gate patterns per seed."""
    first = reports[0]
    accuracy: dict[str, Any] = {}
    for key, kinds in first["accuracy"].items():
        accuracy[key] = {}
        for kind, labels in kinds.items():
            accuracy[key][kind] = {}
            for label in labels:
                cells = [r["accuracy"][key][kind][label] for r in reports]
                values = [cell["accuracy"] for cell in cells]
                accuracy[key][kind][label] = {
                    "accuracy": values,
                    **mean_std(values),
                    "num_samples": [
                        r["accuracy"][key][kind][label]["num_samples"] for r in reports
                    ],
                }
    usage: dict[str, Any] = {}
    for key, kinds in first["gate_usage"].items():
        usage[key] = {
            kind: {
                label: {
                    stage: float(
                        np.mean([r["gate_usage"][key][kind][label][stage] for r in reports])
                    )
                    for stage in rates
                }
                for label, rates in labels.items()
            }
            for kind, labels in kinds.items()
        }
    patterns = {
        key: [len(r["gate_patterns"][key]) for r in reports] for key in first["gate_patterns"]
    }
    return {"accuracy": accuracy, "gate_usage": usage, "distinct_gate_patterns": patterns}
