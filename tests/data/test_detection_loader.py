"""``load_detection``: one spec string per detection source; subsets; errors that name the fix."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import write_voc_from_scenes

from diffisp.data.detection_loader import (
    absolute_detection_spec,
    coco_paths,
    is_detection_spec,
    load_detection,
)
from diffisp.data.scenes import load_scenes, write_scenes_coco
from diffisp.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def scenes_coco(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("scenes")
    write_scenes_coco(out, num_train=6, num_test=4, image_size=32, seed=3)
    return out


def test_specs_are_recognised_and_made_absolute(monkeypatch, tmp_path):
    assert (
        is_detection_spec("scenes") and is_detection_spec(" COCO:x ") and is_detection_spec("voc:r")
    )
    for spec in ("auto", "builtin", "cifar10", "folder:x", "scenes:x", "coco"):
        assert not is_detection_spec(spec), spec
    monkeypatch.chdir(tmp_path)
    assert absolute_detection_spec("coco:data") == f"coco:{tmp_path / 'data'}"
    assert absolute_detection_spec("voc:~/v") == f"voc:{Path('~/v').expanduser()}"
    assert absolute_detection_spec("scenes") == "scenes"


def test_scenes_spec_is_load_scenes():
    ds = load_detection("scenes", num_train=5, num_test=3, image_size=32, seed=1)
    ref = load_scenes(5, 3, 32, seed=1)
    assert ds.name == "scenes" and ds.is_standin
    np.testing.assert_array_equal(ds.train_images, ref.train_images)
    np.testing.assert_array_equal(ds.test_boxes, ref.test_boxes)


def test_coco_folder_written_by_write_scenes_loads_the_same_scenes(scenes_coco):
    annotations, images = coco_paths(scenes_coco)
    assert annotations == scenes_coco / "instances.json" and images == scenes_coco / "images"
    ds = load_detection(f"coco:{scenes_coco}", image_size=32, seed=3)
    ref = load_scenes(6, 4, 32, seed=3)
    assert (ds.num_train, ds.num_test) == (6, 4)
    assert ds.class_names == ref.class_names
    # PNG round trip of 8-bit images: exact.
    np.testing.assert_allclose(ds.train_images, ref.train_images, atol=1e-6)
    real = ref.train_labels >= 0
    m = ds.max_objects  # the most objects of any image; the scenes pad to 8
    np.testing.assert_array_equal(ds.train_labels, ref.train_labels[:, :m])
    np.testing.assert_allclose(ds.train_boxes[real[:, :m]], ref.train_boxes[real], atol=1e-4)
    # The JSON file itself works too (images under its folder's images/).
    same = load_detection(f"coco:{scenes_coco / 'instances.json'}", image_size=32)
    np.testing.assert_array_equal(same.test_labels, ds.test_labels)


def test_subsets_are_seeded_ordered_and_never_larger_than_the_data(scenes_coco):
    full = load_detection(f"coco:{scenes_coco}", image_size=32)
    part = load_detection(f"coco:{scenes_coco}", num_train=3, num_test=2, image_size=32, seed=5)
    assert (part.num_train, part.num_test) == (3, 2)
    files = [i.file for i in part.train_info]
    assert files == sorted(files)  # the reader's order is kept
    index = [[i.file for i in full.train_info].index(f) for f in files]
    np.testing.assert_array_equal(part.train_images, full.train_images[index])
    np.testing.assert_array_equal(part.train_boxes, full.train_boxes[index])
    again = load_detection(f"coco:{scenes_coco}", num_train=3, num_test=2, image_size=32, seed=5)
    assert [i.file for i in again.train_info] == files
    with pytest.raises(DataError, match=r"asked for 7 train images .* has 6; lower --num-train"):
        load_detection(f"coco:{scenes_coco}", num_train=7, image_size=32)


def test_voc_folder_loads_with_its_image_sets(scenes_coco, tmp_path):
    root = write_voc_from_scenes(scenes_coco, tmp_path / "VOC")
    ds = load_detection(f"voc:{root}", num_train=4, image_size=32)
    coco = load_detection(f"coco:{scenes_coco}", image_size=32)
    assert (ds.num_train, ds.num_test) == (4, 4)
    assert ds.name == f"voc:{root}"
    # Same objects as the COCO copy (VOC's sorted names index the same sorted class list).
    assert int((ds.test_labels >= 0).sum()) == int((coco.test_labels >= 0).sum())
    np.testing.assert_allclose(
        np.sort(ds.test_boxes[ds.test_labels >= 0], axis=0),
        np.sort(coco.test_boxes[coco.test_labels >= 0], axis=0),
        atol=1e-4,
    )


def test_bad_specs_name_the_problem(tmp_path):
    with pytest.raises(ConfigError, match="unknown detection data spec 'builtin'"):
        load_detection("builtin")
    with pytest.raises(ConfigError, match="needs a path"):
        load_detection("voc:")
    with pytest.raises(DataError, match=r"holds no instances\.json"):
        load_detection(f"coco:{tmp_path}", image_size=32)
    with pytest.raises(DataError, match="do not exist"):
        load_detection(f"coco:{tmp_path / 'none.json'}", image_size=32)
    with pytest.raises(DataError, match="no Annotations folder"):
        load_detection(f"voc:{tmp_path}", image_size=32)
