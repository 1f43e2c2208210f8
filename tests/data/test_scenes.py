"""The generated scene set: deterministic, boxes tight to visible masks, COCO round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest

from diffisp.data import generate_scenes, load_coco, load_scenes, write_scenes_coco
from diffisp.data.scenes import (
    CLASS_NAMES,
    MAX_OBJECTS,
    MIN_VISIBLE_PIXELS,
    generate_scenes_with_masks,
)
from diffisp.errors import ConfigError

SIZE = 48


@pytest.fixture(scope="module")
def scenes():
    return generate_scenes_with_masks(160, SIZE, seed=3)


def test_deterministic_per_seed_and_prefix_stable():
    images, boxes, labels = generate_scenes(20, 32, seed=5)
    again, boxes_again, labels_again = generate_scenes(40, 32, seed=5)
    np.testing.assert_array_equal(images, again[:20])
    for a, b in zip(boxes + labels, boxes_again[:20] + labels_again[:20], strict=True):
        np.testing.assert_array_equal(a, b)
    other = generate_scenes(20, 32, seed=6)[0]
    assert np.abs(other.astype(int) - images).mean() > 10
    test = generate_scenes(20, 32, seed=5, split="test")[0]
    assert np.abs(test.astype(int) - images).mean() > 10
    with pytest.raises(ConfigError, match="split"):
        generate_scenes(2, 32, seed=0, split="val")


def test_shapes_counts_and_types(scenes):
    images, boxes, labels, _ = scenes
    assert images.shape == (160, SIZE, SIZE, 3) and images.dtype == np.uint8
    counts = np.array([len(lab) for lab in labels])
    assert counts.min() >= 1 and counts.max() == MAX_OBJECTS
    assert np.all(np.concatenate(labels) < len(CLASS_NAMES))
    assert all(
        b.dtype == np.float32 and b.shape == (len(lab), 4)
        for b, lab in zip(boxes, labels, strict=True)
    )


def test_boxes_are_tight_to_the_visible_masks(scenes):
    _, boxes, _, masks = scenes
    for scene_boxes, scene_masks in zip(boxes, masks, strict=True):
        for box, mask in zip(scene_boxes, scene_masks, strict=True):
            assert mask.sum() >= MIN_VISIBLE_PIXELS
            rows, cols = np.nonzero(mask)
            expected = [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]
            np.testing.assert_array_equal(box, expected)
        # Occlusion: visible masks of one scene never overlap.
        assert scene_masks.sum(axis=0).max() <= 1


def test_objects_are_occluded_sometimes_and_range_from_small_to_large(scenes):
    _, boxes, _, masks = scenes
    all_boxes = np.concatenate(boxes)
    long_side = np.maximum(all_boxes[:, 2] - all_boxes[:, 0], all_boxes[:, 3] - all_boxes[:, 1])
    assert long_side.min() <= 0.1 * SIZE and long_side.max() >= 0.4 * SIZE
    fill = np.concatenate([m.sum(axis=(1, 2)) for m in masks]) / np.prod(
        all_boxes[:, 2:] - all_boxes[:, :2], axis=1
    )
    # Soft blobs, not rectangles: a mask fills part of its box (an ellipse about pi/4).
    assert np.median(fill) < 0.85


def test_classes_differ_in_colour(scenes):
    images, _, labels, masks = scenes
    means = np.zeros((len(CLASS_NAMES), 3))
    for c in range(len(CLASS_NAMES)):
        pixels = [
            images[i][masks[i][k]]
            for i in range(len(images))
            for k in np.flatnonzero(labels[i] == c)
        ]
        means[c] = np.concatenate(pixels).mean(axis=0) / 255
    distances = np.linalg.norm(means[:, None] - means[None], axis=-1)
    assert distances[~np.eye(len(CLASS_NAMES), dtype=bool)].min() > 0.15


def test_coco_files_round_trip_to_the_in_memory_scenes(tmp_path):
    path = write_scenes_coco(tmp_path / "out", num_train=18, num_test=5, image_size=32, seed=2)
    data = json.loads(path.read_text())
    assert [c["id"] for c in data["categories"]] == list(range(1, len(CLASS_NAMES) + 1))
    assert len(list((tmp_path / "out" / "images" / "train").glob("*.png"))) == 18
    loaded = load_coco(path, tmp_path / "out" / "images", image_size=32, max_objects=MAX_OBJECTS)
    direct = load_scenes(18, 5, image_size=32, seed=2)
    assert loaded.class_names == direct.class_names == CLASS_NAMES
    assert direct.is_standin and direct.max_objects == MAX_OBJECTS
    assert sum(loaded.skipped.values()) == 0 and loaded.clipped == 0
    for split in ("train", "test"):
        for part in ("images", "boxes", "labels", "difficult", "info"):
            a, b = getattr(loaded, f"{split}_{part}"), getattr(direct, f"{split}_{part}")
            if part == "info":
                assert a == b
            else:
                np.testing.assert_array_equal(a, b)
    areas = [a["area"] for a in data["annotations"]]
    assert min(areas) >= MIN_VISIBLE_PIXELS


def test_scenes_whose_objects_are_all_too_hidden_are_redrawn(monkeypatch):
    import diffisp.data.scenes as scenes_module

    # Demand large visible parts: many objects fail, and some scenes lose all of theirs.
    monkeypatch.setattr(scenes_module, "MIN_VISIBLE_PIXELS", 60)
    _, _, labels, masks = generate_scenes_with_masks(64, 32, seed=0)
    assert min(len(lab) for lab in labels) >= 1
    assert min(m.sum() for scene in masks for m in scene) >= 60
