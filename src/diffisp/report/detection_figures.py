"""Figures of a detection run: predicted boxes on dark, brightened and ISP-processed scenes."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import matplotlib

matplotlib.use("Agg")
import matplotlib.patches as patches
import matplotlib.pyplot as plt
import numpy as np

from diffisp.models.evaluate import predict
from diffisp.util.io import atomic_savefig

# The rows of the figure: (method key, row title). Each row shows what that method's detector
# sees and what it finds there; rows whose method the run lacks are left out.
DETECTION_ROWS = (
    ("no_isp", "dark input, no ISP"),
    ("fixed_gamma", "fixed gamma 0.5"),
    ("learned_isp_phase2", "learned ISP (phase 2)"),
)
# Detections drawn: at most this many per image, scoring at least this much (the mAP uses all
# of them; a figure of 100 low-score boxes shows nothing).
MAX_DRAWN = 8
MIN_DRAWN_SCORE = 0.3
GT_COLOUR = "lime"
PREDICTION_COLOUR = "red"


def method_view(method: Any, inputs: Any, task: Any) -> tuple[np.ndarray, Any]:
    """What ``method``'s detector sees for ``inputs`` (the transform, then the ISP, as in
    evaluation) as ``(N, H, W, 3)`` images in [0, 1], and its detections on them."""
    x = inputs if method.transform is None else method.transform(inputs)
    shown = x if method.isp is None else method.isp(x)
    detections = predict(
        method.model, inputs, isp=method.isp, transform=method.transform, task=task
    )
    return np.clip(np.asarray(shown), 0, 1), detections


def detections_figure(
    path: Path,
    rows: Sequence[tuple[str, np.ndarray, Any]],
    gt_boxes: np.ndarray,
    gt_labels: np.ndarray,
    class_names: Sequence[str],
    *,
    title: str = "Detections (red: predicted class and score; green: ground truth)",
) -> Path:
    """One row per input path: ``(title, images (N, H, W, 3), detections)`` where detections
    has ``boxes (N, K, 4)`` xyxy pixels, ``scores``, ``classes`` and ``valid`` (N, K) (a
    :class:`~diffisp.models.detector.Detections` or a dict). Ground truth ``gt_boxes (N, M, 4)``
    with ``gt_labels (N, M)`` (-1 = padding) is drawn dashed in every panel."""
    n = len(rows[0][1])
    fig, axes = plt.subplots(len(rows), n, figsize=(2.0 * n, 2.15 * len(rows)), squeeze=False)
    for r, (label, images, found) in enumerate(rows):
        found = found._asdict() if hasattr(found, "_asdict") else found
        for c in range(n):
            ax = axes[r, c]
            ax.imshow(images[c], interpolation="nearest")
            for box, cls in zip(gt_boxes[c], gt_labels[c], strict=True):
                if cls >= 0:
                    _box(ax, box, GT_COLOUR, dashed=True)
            keep = np.flatnonzero(
                np.asarray(found["valid"][c]) & (np.asarray(found["scores"][c]) >= MIN_DRAWN_SCORE)
            )[:MAX_DRAWN]
            for k in keep:
                _box(ax, found["boxes"][c][k], PREDICTION_COLOUR)
                name = class_names[int(found["classes"][c][k])]
                x0, y0 = (float(v) for v in found["boxes"][c][k][:2])
                ax.text(
                    x0,
                    y0,
                    f"{name} {float(found['scores'][c][k]):.2f}",
                    fontsize=5,
                    color="white",
                    va="bottom",
                    bbox={"facecolor": PREDICTION_COLOUR, "alpha": 0.7, "pad": 0.5, "linewidth": 0},
                )
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r, 0].set_ylabel(label, fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=120, bbox_inches="tight", facecolor="white")
    plt.close(fig)
    return path


def _box(ax: Any, box: Any, colour: str, *, dashed: bool = False) -> None:
    x0, y0, x1, y1 = (float(v) for v in box)
    ax.add_patch(
        patches.Rectangle(
            (x0, y0),
            x1 - x0,
            y1 - y0,
            fill=False,
            edgecolor=colour,
            linewidth=0.9,
            linestyle="--" if dashed else "-",
        )
    )


def run_detections_figure(
    path: Path, methods: Sequence[Any], data: Any, task: Any, class_names: Sequence[str], n: int = 6
) -> Path | None:
    """:func:`detections_figure` of a run's first ``n`` test scenes through
    :data:`DETECTION_ROWS`' methods (``None`` when the run has none of them)."""
    by_key = {m.key: m for m in methods}
    inputs = jax.tree.map(lambda a: a[:n], data.test_dark)
    rows = []
    for key, label in DETECTION_ROWS:
        if key in by_key:
            images, found = method_view(by_key[key], inputs, task)
            rows.append((label, images, found))
    if not rows:
        return None
    targets = jax.tree.map(lambda a: np.asarray(a[:n]), data.test_labels)
    return detections_figure(path, rows, targets["boxes"], targets["labels"], class_names)


__all__ = ["DETECTION_ROWS", "detections_figure", "method_view", "run_detections_figure"]
