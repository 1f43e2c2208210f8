"""The resampled AP@0.5 against faster-coco-eval recomputed on the same resamples."""

from __future__ import annotations

import numpy as np
import pytest

from diffisp.models.ap_bootstrap import MatchedDetections
from diffisp.models.detection import DETECT
from diffisp.models.detection_metrics import coco_metrics
from diffisp.util.stats import bootstrap_counts


def _scene_set(seed: int, n: int = 30, k: int = 24, m: int = 6):
    """Detections near the objects (most of the right class), clutter, padding, difficult
    boxes and an image without objects: every rule of COCO's matching is exercised."""
    rng = np.random.default_rng(seed)
    corner = rng.uniform(0, 48, (n, m, 2))
    gt_boxes = np.concatenate([corner, corner + rng.uniform(6, 16, (n, m, 2))], -1)
    labels = rng.integers(0, 3, (n, m))
    labels[:, 4:] = -1
    labels[0] = -1
    difficult = rng.uniform(size=(n, m)) < 0.15
    near = gt_boxes + rng.normal(0, 1, (n, m, 4)).clip(-2.5, 2.5)
    start = rng.uniform(0, 56, (n, k - m, 2))
    clutter = np.concatenate([start, start + rng.uniform(2, 10, (n, k - m, 2))], -1)
    boxes = np.concatenate([near, clutter], 1)
    right = rng.uniform(size=(n, m)) < 0.8
    classes = np.concatenate(
        [np.where(right, np.maximum(labels, 0), rng.integers(0, 3, (n, m))),
         rng.integers(0, 3, (n, k - m))], 1,
    )  # fmt: skip
    scores = rng.uniform(0, 1, (n, k))
    valid = rng.uniform(size=(n, k)) < 0.9
    return boxes, scores, classes, valid, gt_boxes, labels, difficult


@pytest.mark.parametrize("seed", range(4))
def test_ap50_equals_coco_on_the_set_and_on_resamples(seed):
    data = _scene_set(seed)
    matched = MatchedDetections(*data)
    assert matched.ap50() == pytest.approx(coco_metrics(*data)["map50"], abs=1e-12)
    for counts in bootstrap_counts(matched.num_images, 3, seed=seed):
        drawn = np.repeat(np.arange(matched.num_images), counts)  # the resample, written out
        want = coco_metrics(*(a[drawn] for a in data))["map50"]
        assert matched.ap50(counts) == pytest.approx(want, abs=1e-12)


def test_a_resample_without_objects_has_no_ap_and_draw_counts_sum_to_the_set():
    data = _scene_set(0)
    counts = np.zeros(data[0].shape[0], int)
    counts[0] = 30  # only the image without objects
    assert np.isnan(MatchedDetections(*data).ap50(counts))
    draws = bootstrap_counts(30, 5, seed=1)
    assert draws.shape == (5, 30) and (draws.sum(axis=1) == 30).all()


def test_the_detection_task_resamples_its_headline():
    boxes, scores, classes, valid, gt_boxes, labels, difficult = _scene_set(2)
    predictions = {"boxes": boxes, "scores": scores, "classes": classes, "valid": valid}
    targets = {"boxes": gt_boxes, "labels": labels, "difficult": difficult}
    counts = np.vstack([np.ones(30, int), bootstrap_counts(30, 4)])
    values = DETECT.resampled_headline(predictions, targets, counts)
    assert values.shape == (5,)
    assert values[0] == pytest.approx(DETECT.metrics(predictions, targets)["map50"], abs=1e-12)


def test_a_class_with_objects_and_no_detection_scores_zero_as_coco_does():
    gt_boxes = np.array([[[0, 0, 10, 10], [20, 20, 30, 30]]], float)
    labels = np.array([[0, 1]])  # class 1 is never detected
    data = (gt_boxes[:, :1], np.ones((1, 1)), np.zeros((1, 1), int), np.ones((1, 1), bool))
    want = coco_metrics(*data, gt_boxes, labels)["map50"]
    assert MatchedDetections(*data, gt_boxes, labels).ap50() == pytest.approx(want) == 0.5
