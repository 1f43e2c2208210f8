"""COCO detection metrics from faster-coco-eval (the C++ port of pycocotools' COCOeval).

No AP is computed here: the ground truth and the detections are handed, in memory, to
``faster_coco_eval.COCOeval_faster`` with ``iouType="bbox"`` and its defaults (IoU thresholds
0.50:0.05:0.95, 101 recall points, at most 100 detections per image, COCO's area ranges), and
its summary is read back.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from faster_coco_eval import COCO, COCOeval_faster

from diffisp.errors import InputError

# Positions in COCOeval's ``stats`` (its summarize() order).
_STATS = {"map": 0, "map50": 1, "map75": 2, "map_small": 3, "map_medium": 4, "map_large": 5}


def _quiet(*args: Any, **kwargs: Any) -> None:
    """The evaluator's print function: it logs every step and prints its summary table."""


def coco_metrics(
    boxes: np.ndarray,
    scores: np.ndarray,
    classes: np.ndarray,
    valid: np.ndarray,
    gt_boxes: np.ndarray,
    gt_labels: np.ndarray,
    gt_difficult: np.ndarray | None = None,
) -> dict[str, float]:
    """COCO box AP of fixed-size detections against padded ground truth, per faster-coco-eval.

    Images get ids ``1..N`` (all of them, so an image without objects still counts its false
    positives), class ``k`` category id ``k + 1``. Categories are ``0..max`` over the ground
    truth and the detections; a category without ground truth has no AP (the evaluator marks it
    -1 and leaves it out of every mean, so detections of it cost nothing). A ``difficult``
    object is given to the evaluator as ``iscrowd=1``: it is ignored, so a detection on it is
    neither a true nor a false positive and missing it is no miss (as VOC treats difficult
    objects; unlike VOC, the crowd rule matches a detection by its intersection over the
    *detection's* area). Areas are box areas in the given pixels, so on 64x64 images there are
    no "large" (> 96^2) objects.

    Args:
      boxes: ``(N, K, 4)`` xyxy detections; ``scores``, ``classes``, ``valid``: ``(N, K)``
        (only ``valid`` slots are detections).
      gt_boxes: ``(N, M, 4)`` xyxy; ``gt_labels``: ``(N, M)``, ``-1`` for padding;
        ``gt_difficult``: ``(N, M)`` bool or None.

    Returns:
      ``map`` (AP at IoU 0.50:0.95), ``map50``, ``map75``, ``map_small``, ``map_medium``,
      ``map_large`` in [0, 1], NaN where no ground truth exists to measure (e.g. ``map_large``
      with no large object), and ``num_samples`` (N).

    Raises:
      InputError: mismatched shapes.
    """
    boxes, scores = np.asarray(boxes, np.float64), np.asarray(scores, np.float64)
    classes, valid = np.asarray(classes), np.asarray(valid, bool)
    gt_boxes, gt_labels = np.asarray(gt_boxes, np.float64), np.asarray(gt_labels)
    n = gt_labels.shape[0]
    gt_difficult = (
        np.zeros(gt_labels.shape, bool) if gt_difficult is None else np.asarray(gt_difficult)
    )
    if not (
        boxes.shape[:1] == gt_boxes.shape[:1] == (n,)
        and boxes.shape[-1:] == gt_boxes.shape[-1:] == (4,)
        and scores.shape == classes.shape == valid.shape == boxes.shape[:2]
        and gt_difficult.shape == gt_labels.shape == gt_boxes.shape[:2]
    ):
        raise InputError(
            f"detections (boxes {boxes.shape}, scores {scores.shape}, classes {classes.shape}, "
            f"valid {valid.shape}) and ground truth (boxes {gt_boxes.shape}, labels "
            f"{gt_labels.shape}, difficult {gt_difficult.shape}) must be (N, K, 4)/(N, K) and "
            "(N, M, 4)/(N, M) for the same N"
        )
    real = gt_labels >= 0
    num_categories = int(max(gt_labels.max(initial=-1), classes[valid].max(initial=-1))) + 1
    image, slot = np.nonzero(real)
    xywh = _xywh(gt_boxes[image, slot])
    ground_truth = {
        "images": [{"id": i + 1, "width": 1, "height": 1} for i in range(n)],
        "categories": [{"id": k + 1, "name": str(k)} for k in range(num_categories)],
        "annotations": [
            {
                "id": j + 1,
                "image_id": int(image[j]) + 1,
                "category_id": int(gt_labels[image[j], slot[j]]) + 1,
                "bbox": xywh[j].tolist(),
                "area": float(xywh[j, 2] * xywh[j, 3]),
                "iscrowd": int(gt_difficult[image[j], slot[j]]),
            }
            for j in range(len(image))
        ],
    }
    image, slot = np.nonzero(valid)
    xywh = _xywh(boxes[image, slot])
    # The detections' data set is built here rather than by ``COCO.loadRes``, which fills in
    # the same fields (area w * h, id, iscrowd 0) but logs through a logger it cannot silence.
    detections = {
        "images": ground_truth["images"],
        "categories": ground_truth["categories"],
        "annotations": [
            {
                "id": j + 1,
                "image_id": int(image[j]) + 1,
                "category_id": int(classes[image[j], slot[j]]) + 1,
                "bbox": xywh[j].tolist(),
                "area": float(xywh[j, 2] * xywh[j, 3]),
                "score": float(scores[image[j], slot[j]]),
                "iscrowd": 0,
            }
            for j in range(len(image))
        ],
    }
    metrics = {key: float("nan") for key in _STATS}
    if num_categories and real.any():
        coco_gt = COCO(ground_truth, print_function=_quiet)
        coco_dt = COCO(detections, print_function=_quiet)
        evaluator = COCOeval_faster(coco_gt, coco_dt, iouType="bbox", print_function=_quiet)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
        # summarize() averages precision over the entries > -1 and reports -1 when none is.
        metrics = {k: _or_nan(evaluator.stats[i]) for k, i in _STATS.items()}
    return metrics | {"num_samples": int(n)}


def _xywh(xyxy: np.ndarray) -> np.ndarray:
    return np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], axis=1).reshape(-1, 4)


def _or_nan(value: float) -> float:
    return float("nan") if value < 0 else float(value)
