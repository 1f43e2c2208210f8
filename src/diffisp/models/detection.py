"""Object detection as a :class:`~diffisp.models.task.Task`: CenterNet model, loss and COCO mAP."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import numpy as np
from flax import nnx

from diffisp.models.ap_bootstrap import MatchedDetections
from diffisp.models.detection_loss import detection_loss
from diffisp.models.detection_metrics import coco_metrics
from diffisp.models.detector import SmallCenterNet, decode
from diffisp.models.reporting import DETECT_REPORTING, Reporting
from diffisp.util.compiled import compiled_init


@dataclass(frozen=True)
class Detection:
    """Object detection with :class:`~diffisp.models.detector.SmallCenterNet`.

    Targets are ``{"boxes": (N, M, 4) xyxy pixels, "labels": (N, M) int (-1 = padding)}``,
    optionally with ``"difficult": (N, M) bool``: a
    :class:`~diffisp.data.detection.DetectionDataset`'s arrays as they are; the loss encodes
    them (:func:`~diffisp.models.detection_loss.detection_loss`).

    Predictions are :class:`~diffisp.models.detector.Detections` (``top_k`` fixed-size boxes,
    scores, classes, valid mask per image), after peak extraction and class-wise NMS at
    ``nms_iou``, keeping scores above ``min_score`` (low, as COCO's AP wants every ranked
    detection). Metrics come from faster-coco-eval
    (:func:`~diffisp.models.detection_metrics.coco_metrics`): ``map`` (AP@[.5:.95]),
    ``map50``, ``map75``, per-size AP and ``num_samples``.

    The headline is ``map50`` (AP at IoU 0.5), the number AdaptiveISP, RAW-Adapter and
    IA-YOLO report, so comparisons with them read off one column; ``map`` is reported beside it.

    The training score is the fraction of the training batches' objects whose centre cell is
    a heatmap peak of their class above 0.3 (a cheap, jittable stand-in for recall: mAP cannot
    be computed inside the compiled training step). It is not mAP.
    """

    name: str = "detect"
    headline: str = "map50"
    reporting: Reporting = DETECT_REPORTING
    top_k: int = 100
    nms_iou: float = 0.5
    min_score: float = 0.001

    def build_model(
        self, num_outputs: int, *, rngs: nnx.Rngs, in_channels: int = 3
    ) -> SmallCenterNet:
        return compiled_init(
            lambda rngs: SmallCenterNet(num_outputs, rngs=rngs, in_channels=in_channels), rngs
        )

    def loss(
        self, model: nnx.Module, images: jax.Array, targets: dict[str, jax.Array]
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        return detection_loss(model(images), targets, stride=model.stride)

    def train_score(self, sums: dict[str, jax.Array], num_samples: int) -> float:
        objects = int(sums["objects"])
        return float(sums["centres_found"]) / objects if objects else 0.0

    def predict(self, model: nnx.Module, images: jax.Array) -> Any:
        return decode(
            model(images),
            stride=model.stride,
            top_k=self.top_k,
            nms_iou=self.nms_iou,
            min_score=self.min_score,
        )

    def metrics(self, predictions: Any, targets: dict[str, Any]) -> dict[str, float]:
        """COCO metrics of :class:`Detections` (or a dict with its fields) against targets."""
        return coco_metrics(*_evaluator_inputs(predictions, targets))

    def resampled_headline(
        self, predictions: Any, targets: dict[str, Any], counts: np.ndarray
    ) -> np.ndarray:
        """The headline (COCO AP at IoU 0.5) on each resample of the test images: ``counts``
        ``(R, N)`` says how often each image is drawn; ``(R,)`` values (NaN where a resample
        has no object). The detections are matched once
        (:class:`~diffisp.models.ap_bootstrap.MatchedDetections`), so a resample costs well
        under a millisecond where re-running the evaluator costs ~60 ms."""
        if self.headline != "map50":
            raise ValueError(f"resampling is implemented for map50, not {self.headline}")
        matched = MatchedDetections(*_evaluator_inputs(predictions, targets))
        return np.asarray([matched.ap50(row) for row in np.asarray(counts)])


def _evaluator_inputs(predictions: Any, targets: dict[str, Any]) -> tuple[Any, ...]:
    """Detections (:class:`Detections` or a dict of its fields) and targets in the argument
    order of :func:`~diffisp.models.detection_metrics.coco_metrics`."""
    p = predictions._asdict() if hasattr(predictions, "_asdict") else predictions
    fields = (p["boxes"], p["scores"], p["classes"], p["valid"])
    return (*fields, targets["boxes"], targets["labels"], targets.get("difficult"))


DETECT = Detection()
