"""The built-in stand-in data set: format, balance, determinism, train/test disjointness."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from diffisp.data import builtin
from diffisp.data._common import stratified_subset
from diffisp.data.builtin import (
    CROP_FRACTION,
    PHOTOS,
    CropPlan,
    load_builtin,
    photo_shape,
    plan_crops,
    render_crops,
    split_blocks,
)
from diffisp.errors import ConfigError, DataError, InputTypeError


def test_ten_distinct_bundled_photos_load_offline():
    assert len(PHOTOS) == 10 and len({p.name for p in PHOTOS}) == 10
    means = []
    for index in range(len(PHOTOS)):
        height, width = photo_shape(index)
        assert min(height, width) >= 300
        image = np.asarray(builtin._photo(index))
        assert image.dtype == np.uint8 and image.shape == (height, width, 3)
        means.append(image.reshape(-1, 3).mean(0))
    # No two classes share a photo: their mean colours all differ.
    means = np.asarray(means)
    distances = np.linalg.norm(means[:, None] - means[None], axis=-1)
    assert distances[~np.eye(len(PHOTOS), dtype=bool)].min() > 1.0


def test_default_size_is_fast_and_well_formed():
    builtin._decoded_photo.cache_clear()  # time it cold: decoding the photos counts too
    start = time.perf_counter()
    ds = load_builtin(2000, 500, seed=0)
    elapsed = time.perf_counter() - start
    assert elapsed < 5.0, f"2000 + 500 crops took {elapsed:.1f} s"
    assert ds.train_images.shape == (2000, 32, 32, 3) and ds.test_images.shape == (500, 32, 32, 3)
    assert ds.train_images.dtype == np.float32 and ds.train_labels.dtype == np.int32
    assert ds.train_images.min() >= 0.0 and ds.train_images.max() <= 1.0
    assert ds.train_images.std() > 0.1  # real pictures, not blank crops
    assert np.bincount(ds.train_labels).tolist() == [200] * 10
    assert np.bincount(ds.test_labels).tolist() == [50] * 10
    assert ds.is_standin and ds.name == "builtin" and ds.num_classes == 10
    assert ds.class_names == tuple(p.name for p in PHOTOS)
    assert "NOT CIFAR-10" in ds.description and "stand-in" in ds.description


def test_image_size_and_uneven_counts():
    ds = load_builtin(23, 11, seed=5, image_size=48)
    assert ds.train_images.shape == (23, 48, 48, 3) and ds.image_size == 48
    assert sorted(np.bincount(ds.train_labels, minlength=10)) == [2] * 7 + [3] * 3
    assert sorted(np.bincount(ds.test_labels, minlength=10)) == [1] * 9 + [2]


def test_deterministic_in_the_seed():
    first, again, other = (load_builtin(60, 30, seed=s) for s in (7, 7, 8))
    np.testing.assert_array_equal(first.train_images, again.train_images)
    np.testing.assert_array_equal(first.test_images, again.test_images)
    np.testing.assert_array_equal(first.train_labels, again.train_labels)
    assert not np.array_equal(first.train_images, other.train_images)
    assert not np.array_equal(first.test_images, other.test_images)


def test_test_set_does_not_depend_on_num_train():
    small, large = load_builtin(50, 40, seed=1), load_builtin(120, 40, seed=1)
    np.testing.assert_array_equal(small.test_images, large.test_images)


def _intersect(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) bool: do boxes (top, left, bottom, right), bottom/right exclusive, meet?"""
    a, b = a[:, None], b[None]
    return (
        (a[..., 0] < b[..., 2])
        & (b[..., 0] < a[..., 2])
        & (a[..., 1] < b[..., 3])
        & (b[..., 1] < a[..., 3])
    )


@pytest.mark.parametrize("seeds", [(0, 0), (0, 1), (3, 11)])
def test_train_and_test_crops_never_overlap(seeds):
    train = plan_crops(2000, split="train", seed=seeds[0])
    test = plan_crops(500, split="test", seed=seeds[1])
    for c in range(len(PHOTOS)):
        train_boxes = train.boxes[train.labels == c]
        test_boxes = test.boxes[test.labels == c]
        assert len(train_boxes) == 200 and len(test_boxes) == 50
        assert not _intersect(train_boxes, test_boxes).any(), f"overlap in {PHOTOS[c].name}"


def test_the_check_above_would_catch_an_overlap():
    boxes = np.array([[0, 0, 10, 10]])
    assert _intersect(boxes, np.array([[9, 9, 20, 20]])).all()
    assert not _intersect(boxes, np.array([[10, 0, 20, 10]])).any()  # touching edges only


@settings(max_examples=40, deadline=None)
@given(
    num=st.integers(1, 300),
    split=st.sampled_from(["train", "test"]),
    seed=st.integers(0, 2**32 - 1),
)
def test_every_crop_is_square_in_bounds_and_inside_one_block(num, split, seed):
    plan = plan_crops(num, split=split, seed=seed)
    counts = np.bincount(plan.labels, minlength=10)
    assert counts.max() - counts.min() <= 1 and counts.sum() == num
    top, left, bottom, right = plan.boxes.T
    side = bottom - top
    assert (side == right - left).all() and (side >= 1).all()
    for c in np.unique(plan.labels):
        mask = plan.labels == c
        short = min(photo_shape(int(c)))
        assert (side[mask] >= int(CROP_FRACTION[0] * short)).all()
        assert (side[mask] <= CROP_FRACTION[1] * short).all()
        blocks = split_blocks(int(c), split)
        inside = (
            (blocks[None, :, 0] <= top[mask, None])
            & (blocks[None, :, 1] <= left[mask, None])
            & (bottom[mask, None] <= blocks[None, :, 2])
            & (right[mask, None] <= blocks[None, :, 3])
        )
        assert inside.any(axis=1).all()


def _area(boxes: np.ndarray) -> int:
    return int(((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).sum())


def test_blocks_tile_each_photo_in_one_row_and_column_pattern():
    for c in range(len(PHOTOS)):
        train, test = split_blocks(c, "train"), split_blocks(c, "test")
        assert len(train) == 6 and len(test) == 3
        assert not _intersect(train, test).any()
        height, width = photo_shape(c)
        assert _area(train) + _area(test) == height * width
        # One test block in every grid row and column: test covers the whole photo evenly.
        assert len(set(test[:, 0])) == 3 and len(set(test[:, 1])) == 3


def test_render_uses_the_box_as_top_left_bottom_right():
    photo = np.asarray(builtin._photo(2), np.float32) / 255
    # A box of exactly image_size pixels is copied unscaled (Lanczos at scale 1).
    plan = CropPlan(
        labels=np.array([2, 2], np.int32),
        boxes=np.array([[10, 50, 42, 82], [10, 50, 42, 82]]),
        flips=np.array([False, True]),
    )
    crops = render_crops(plan, 32)
    np.testing.assert_allclose(crops[0], photo[10:42, 50:82], atol=1e-6)
    np.testing.assert_allclose(crops[1], crops[0][:, ::-1], atol=1e-6)


@settings(max_examples=50, deadline=None)
@given(
    counts=st.lists(st.integers(0, 30), min_size=2, max_size=6),
    fraction=st.floats(0.0, 1.0),
    seed=st.integers(0, 1000),
)
def test_stratified_subset_is_as_balanced_as_classes_allow(counts, fraction, seed):
    labels = np.repeat(np.arange(len(counts)), counts)
    n = round(fraction * len(labels))
    index = stratified_subset(labels, n, np.random.default_rng(seed), len(counts))
    assert len(index) == n == len(set(index.tolist()))
    got = np.bincount(labels[index], minlength=len(counts))
    # Balanced: only a class that ran out may have fewer than the others (minus one).
    target = got.max()
    assert all(g >= target - 1 or g == c for g, c in zip(got, counts, strict=True))


def test_argument_errors():
    with pytest.raises(ConfigError, match="num must be >= 1"):
        plan_crops(0, split="train", seed=0)
    with pytest.raises(ConfigError, match="split must be 'train' or 'test'"):
        plan_crops(5, split="validation", seed=0)
    with pytest.raises(ConfigError, match="seed must be >= 0"):
        plan_crops(5, split="train", seed=-1)
    with pytest.raises(InputTypeError, match="num must be an int"):
        plan_crops(2.5, split="train", seed=0)
    with pytest.raises(ConfigError, match="image_size must be >= 8"):
        load_builtin(10, 10, image_size=4)


def test_library_loader_is_the_fallback_when_the_file_moves():
    moved = dataclasses.replace(PHOTOS[1], file="data/no_such_file.png")
    np.testing.assert_array_equal(
        np.asarray(builtin._read(moved)), np.asarray(builtin._read(PHOTOS[1]))
    )


def test_broken_install_is_a_clear_error(monkeypatch):
    def broken() -> np.ndarray:
        raise ModuleNotFoundError("pooch")

    photo = dataclasses.replace(PHOTOS[0], file="data/no_such_file.png", fallback=broken)
    monkeypatch.setattr(builtin, "PHOTOS", (photo, *PHOTOS[1:]))
    with pytest.raises(DataError, match=r"built-in photo 'astronaut' could not be loaded.*pooch"):
        builtin._decoded_photo.__wrapped__(0)  # bypass the in-process cache
