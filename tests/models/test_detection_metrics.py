"""COCO metrics through faster-coco-eval on hand-made cases with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from diffisp.errors import InputError
from diffisp.models.detection import DETECT
from diffisp.models.detection_metrics import coco_metrics
from diffisp.models.detector import Detections

# 101-point interpolated AP of one class when half of its objects are found at precision 1:
# the recall thresholds 0.00, 0.01, ..., 0.50 (51 of 101) have precision 1, the rest 0.
HALF_RECALL_AP = 51 / 101


def _gt(*objects, slots=3):
    """One image's padded ground truth from ``(box, label)`` pairs."""
    boxes = np.zeros((1, slots, 4), np.float32)
    labels = np.full((1, slots), -1, np.int32)
    for j, (box, label) in enumerate(objects):
        boxes[0, j], labels[0, j] = box, label
    return boxes, labels


def _dets(*detections, slots=4):
    """One image's fixed-size detections from ``(box, label, score)`` triples."""
    boxes = np.zeros((1, slots, 4), np.float32)
    scores = np.zeros((1, slots), np.float32)
    classes = np.zeros((1, slots), np.int32)
    valid = np.zeros((1, slots), bool)
    for j, (box, label, score) in enumerate(detections):
        boxes[0, j], classes[0, j], scores[0, j], valid[0, j] = box, label, score, True
    return boxes, scores, classes, valid


BOX = (10.0, 10.0, 30.0, 40.0)  # 20 x 30 = 600 px: "small" (< 32^2)
BIG = (0.0, 0.0, 40.0, 40.0)  # 1600 px: "medium"


def test_perfect_predictions_score_one():
    gt = _gt((BOX, 0), (BIG, 1))
    m = coco_metrics(*_dets((BOX, 0, 0.9), (BIG, 1, 0.8)), *gt)
    assert m["map"] == 1.0 and m["map50"] == 1.0 and m["map75"] == 1.0
    assert m["map_small"] == 1.0 and m["map_medium"] == 1.0
    assert math.isnan(m["map_large"])  # no object over 96^2 px: nothing to measure
    assert m["num_samples"] == 1


def test_box_shifted_past_iou_half_is_a_miss():
    # Shift by 10 px in x: intersection 10 x 30 = 300, union 900, IoU 1/3.
    shifted = (20.0, 10.0, 40.0, 40.0)
    m = coco_metrics(*_dets((shifted, 0, 0.9)), *_gt((BOX, 0)))
    assert m["map50"] == 0.0 and m["map"] == 0.0
    # Shifted by 2 px: IoU 18 x 30 / (2 x 600 - 540) = 540 / 660 = 0.818: a hit at 0.5 to 0.80
    # (7 of the 10 thresholds), a miss at 0.85 to 0.95.
    near = (12.0, 10.0, 32.0, 40.0)
    m = coco_metrics(*_dets((near, 0, 0.9)), *_gt((BOX, 0)))
    assert m["map50"] == 1.0
    assert m["map"] == pytest.approx(0.7)


def test_wrong_class_is_a_miss():
    m = coco_metrics(*_dets((BOX, 1, 0.9)), *_gt((BOX, 0)))
    assert m["map50"] == 0.0 and m["map"] == 0.0


def test_false_positive_scored_below_the_true_positive_costs_nothing():
    fp = (40.0, 40.0, 60.0, 60.0)
    m = coco_metrics(*_dets((BOX, 0, 0.9), (fp, 0, 0.3)), *_gt((BOX, 0)))
    assert m["map50"] == 1.0 and m["map"] == 1.0
    # Ranked above it, the same false positive halves precision at every recall: AP 0.5.
    m = coco_metrics(*_dets((BOX, 0, 0.3), (fp, 0, 0.9)), *_gt((BOX, 0)))
    assert m["map50"] == pytest.approx(0.5)


def test_one_of_two_objects_found_gives_the_101_point_value():
    other = (40.0, 40.0, 60.0, 60.0)
    m = coco_metrics(*_dets((BOX, 0, 0.9)), *_gt((BOX, 0), (other, 0)))
    assert m["map50"] == pytest.approx(HALF_RECALL_AP)
    assert m["map"] == pytest.approx(HALF_RECALL_AP)


def test_no_detections_score_zero():
    m = coco_metrics(*_dets(), *_gt((BOX, 0), (BIG, 2)))
    assert m["map"] == 0.0 and m["map50"] == 0.0


def test_classes_without_ground_truth_do_not_drag_the_mean():
    # Class 1 has a false positive but no ground truth: the evaluator gives it -1, left out of
    # the mean, so class 0's perfect AP is the mAP (a 0 for class 1 would halve it).
    fp = (40.0, 40.0, 60.0, 60.0)
    m = coco_metrics(*_dets((BOX, 0, 0.9), (fp, 1, 0.95)), *_gt((BOX, 0)))
    assert m["map50"] == 1.0 and m["map"] == 1.0
    # Class 2 absent from the ground truth and the detections, class 3 present: the same.
    m = coco_metrics(*_dets((BOX, 3, 0.9)), *_gt((BOX, 3)))
    assert m["map50"] == 1.0


def test_mean_over_classes_and_images():
    # Two images: class 0 perfect (AP 1), class 1 half found (AP 51/101); mAP is their mean.
    other = (40.0, 40.0, 60.0, 60.0)
    gt = [_gt((BOX, 0)), _gt((BOX, 1), (other, 1))]
    dets = [_dets((BOX, 0, 0.9)), _dets((BOX, 1, 0.8))]
    joined = [np.concatenate(parts) for parts in zip(*dets, strict=True)]
    m = coco_metrics(*joined, *[np.concatenate(parts) for parts in zip(*gt, strict=True)])
    assert m["map50"] == pytest.approx((1 + HALF_RECALL_AP) / 2)
    assert m["num_samples"] == 2


def test_detections_on_an_image_without_objects_are_false_positives():
    boxes, labels = _gt((BOX, 0))
    gt = (
        np.concatenate([boxes, np.zeros_like(boxes)]),
        np.concatenate([labels, np.full_like(labels, -1)]),
    )
    dets = [_dets((BOX, 0, 0.5)), _dets((BOX, 0, 0.9))]  # the top one on the empty image
    m = coco_metrics(*[np.concatenate(parts) for parts in zip(*dets, strict=True)], *gt)
    assert m["map50"] == pytest.approx(0.5)


def test_difficult_objects_are_neither_rewarded_nor_penalised():
    other = (40.0, 40.0, 60.0, 60.0)
    boxes, labels = _gt((BOX, 0), (other, 0))
    difficult = np.array([[False, True, False]])
    # Missing the difficult object is no miss; finding it is no false positive.
    for dets in (_dets((BOX, 0, 0.9)), _dets((BOX, 0, 0.5), (other, 0, 0.9))):
        m = coco_metrics(*dets, boxes, labels, difficult)
        assert m["map50"] == 1.0
    # Without the flag, the miss halves recall.
    m = coco_metrics(*_dets((BOX, 0, 0.9)), boxes, labels)
    assert m["map50"] == pytest.approx(HALF_RECALL_AP)


def test_no_ground_truth_at_all_gives_nan_not_a_crash():
    boxes, labels = _gt()
    m = coco_metrics(*_dets((BOX, 0, 0.9)), boxes, labels)
    assert math.isnan(m["map"]) and m["num_samples"] == 1


def test_evaluator_prints_nothing(capsys, caplog):
    caplog.set_level("DEBUG")
    coco_metrics(*_dets((BOX, 0, 0.9)), *_gt((BOX, 0)))
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""
    assert not [r for r in caplog.records if r.name.startswith("faster_coco_eval")]


def test_task_metrics_take_detections_or_a_dict():
    boxes, scores, classes, valid = _dets((BOX, 0, 0.9))
    gt_boxes, labels = _gt((BOX, 0))
    targets = {"boxes": gt_boxes, "labels": labels}
    as_tuple = DETECT.metrics(Detections(boxes, scores, classes, valid), targets)
    as_dict = DETECT.metrics(
        {"boxes": boxes, "scores": scores, "classes": classes, "valid": valid}, targets
    )
    np.testing.assert_equal(as_tuple, as_dict)  # NaN where no object is medium or large
    assert as_tuple["map50"] == 1.0


def test_mismatched_shapes_are_refused():
    boxes, labels = _gt((BOX, 0))
    with pytest.raises(InputError, match="same N"):
        coco_metrics(*_dets((BOX, 0, 0.9)), np.concatenate([boxes, boxes]), labels)
