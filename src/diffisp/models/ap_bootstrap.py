"""A bootstrap interval of COCO AP at IoU 0.5, fast enough for every row of a table.

Recomputing COCO mAP with the evaluator on each resample of the test images costs ~60 ms at
128 images (mostly building its inputs), a minute per table at 100 resamples a row. But COCO's
matching is per image (and category): it does not change when the images are resampled. So the
detections are matched once, as ``COCOeval`` matches them (at IoU 0.5, area "all", the 100
best-scoring detections of each image and category, a crowd/difficult box ignored), and each
resample only re-weights them by how often their image was drawn and accumulates the 101-point
precision-recall curve again: well under a millisecond per resample.
"""

from __future__ import annotations

from typing import Any

import numpy as np

RECALL_THRESHOLDS = np.linspace(0.0, 1.0, 101)
MAX_DETECTIONS = 100
IOU_THRESHOLD = 0.5


def _iou(dets: np.ndarray, gts: np.ndarray, crowd: np.ndarray) -> np.ndarray:
    """``(D, G)`` IoU of xyxy boxes; against a crowd box, intersection over the detection's
    area (as COCO's). An inverted box (x2 < x1) is empty here (COCO's evaluator gives it an
    area of its own; a detector's decoded boxes are never inverted)."""
    lo = np.maximum(dets[:, None, :2], gts[None, :, :2])
    hi = np.minimum(dets[:, None, 2:], gts[None, :, 2:])
    inter = np.prod(np.clip(hi - lo, 0, None), axis=-1)
    area_d = np.prod(np.clip(dets[:, 2:] - dets[:, :2], 0, None), axis=-1)[:, None]
    area_g = np.prod(np.clip(gts[:, 2:] - gts[:, :2], 0, None), axis=-1)[None, :]
    union = np.where(crowd[None, :], area_d, area_d + area_g - inter)
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def _match(dets: np.ndarray, gts: np.ndarray, ignored: np.ndarray) -> tuple[np.ndarray, ...]:
    """COCOeval's greedy matching of score-sorted detections to one image's boxes of one
    category: ``(true positive, ignored)`` per detection."""
    order = np.argsort(ignored, kind="mergesort")  # boxes that count first, as COCO sorts them
    gts, ignored = gts[order], ignored[order]
    ious = _iou(dets, gts, ignored)
    taken = np.zeros(len(gts), bool)
    tp = np.zeros(len(dets), bool)
    skip = np.zeros(len(dets), bool)
    for d in range(len(dets)):
        best, best_iou = -1, min(IOU_THRESHOLD, 1 - 1e-10)
        for g in range(len(gts)):
            if taken[g] and not ignored[g]:
                continue
            if best > -1 and not ignored[best] and ignored[g]:
                break
            if ious[d, g] < best_iou:
                continue
            best, best_iou = g, ious[d, g]
        if best > -1:
            skip[d] = ignored[best]
            tp[d] = not ignored[best]
            taken[best] = True
    return tp, skip


class MatchedDetections:
    """Every image's detections matched once; :meth:`ap50` of any multiset of the images.

    Args: as :func:`~diffisp.models.detection_metrics.coco_metrics` takes them (``(N, K, 4)``
    xyxy detections with ``(N, K)`` scores, classes, valid; ``(N, M, 4)`` ground truth with
    ``(N, M)`` labels, ``-1`` padding, and ``difficult`` or None).
    """

    def __init__(
        self,
        boxes: Any,
        scores: Any,
        classes: Any,
        valid: Any,
        gt_boxes: Any,
        gt_labels: Any,
        gt_difficult: Any = None,
    ) -> None:
        boxes, scores = np.asarray(boxes, np.float64), np.asarray(scores, np.float64)
        classes, valid = np.asarray(classes), np.asarray(valid, bool)
        gt_boxes, gt_labels = np.asarray(gt_boxes, np.float64), np.asarray(gt_labels)
        difficult = (
            np.zeros(gt_labels.shape, bool)
            if gt_difficult is None
            else np.asarray(gt_difficult, bool)
        )
        self.num_images = n = gt_labels.shape[0]
        real = gt_labels >= 0
        num_categories = int(max(gt_labels.max(initial=-1), classes[valid].max(initial=-1))) + 1
        # Per category: boxes that count per image (N,), and the kept detections' image,
        # score and true-positive flag, sorted by score as COCO's accumulate sorts them.
        self.positives = np.zeros((num_categories, n), np.int64)
        self.curves: list[tuple[np.ndarray, np.ndarray]] = []
        per_category: list[list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = [
            [] for _ in range(num_categories)
        ]
        for i in range(n):
            for k in range(num_categories):
                g = real[i] & (gt_labels[i] == k)
                self.positives[k, i] = int(np.sum(g & ~difficult[i]))
                d = np.nonzero(valid[i] & (classes[i] == k))[0]
                if d.size == 0:
                    continue
                d = d[np.argsort(-scores[i, d], kind="mergesort")][:MAX_DETECTIONS]
                tp, skip = _match(boxes[i, d], gt_boxes[i, g], difficult[i, g])
                keep = ~skip
                per_category[k].append((np.full(int(keep.sum()), i), scores[i, d][keep], tp[keep]))
        for k in range(num_categories):
            parts = per_category[k]
            image = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, int)
            score = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0)
            tp = np.concatenate([p[2] for p in parts]) if parts else np.zeros(0, bool)
            order = np.argsort(-score, kind="mergesort")
            self.curves.append((image[order], tp[order]))

    def ap50(self, counts: np.ndarray | None = None) -> float:
        """Mean over categories (with a box that counts) of the 101-point AP at IoU 0.5, each
        image counted ``counts[i]`` times (default: once); NaN when no category has one."""
        counts = np.ones(self.num_images, np.int64) if counts is None else np.asarray(counts)
        aps = []
        for k, (image, tp) in enumerate(self.curves):
            positives = int(self.positives[k] @ counts)
            if positives == 0:
                continue
            if not len(tp):  # objects to find, no detection of their class: AP 0
                aps.append(0.0)
                continue
            weight = counts[image]
            tps = np.cumsum(tp * weight)
            fps = np.cumsum(~tp * weight)
            recall = tps / positives
            precision = tps / (tps + fps + np.spacing(1))
            precision = np.maximum.accumulate(precision[::-1])[::-1]
            at = np.searchsorted(recall, RECALL_THRESHOLDS, side="left")
            sampled = np.where(
                at < len(precision), precision[np.minimum(at, len(precision) - 1)], 0.0
            )
            aps.append(float(np.mean(sampled)))
        return float(np.mean(aps)) if aps else float("nan")
