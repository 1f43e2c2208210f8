"""``load_detection``: one spec string per detection source; subsets; errors that name the fix."""

from __future__ import annotations

import shutil
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


def _renamed_coco(scenes_coco: Path, out: Path, *names: str) -> Path:
    """A copy of the scenes COCO folder whose ``instances.json`` is saved as each of ``names``."""
    shutil.copytree(scenes_coco / "images", out / "images")
    for name in names:
        shutil.copyfile(scenes_coco / "instances.json", out / name)
    return out


def test_a_coco_folder_with_one_json_file_of_another_name_loads_it(scenes_coco, tmp_path):
    folder = _renamed_coco(scenes_coco, tmp_path / "c", "annotations.json")
    (folder / ".hidden.json").write_text("{}")  # hidden files are no candidates
    (folder / "notes.txt").write_text("not JSON")
    assert coco_paths(folder) == (folder / "annotations.json", folder / "images")
    ds = load_detection(f"coco:{folder}", image_size=32, seed=3)
    ref = load_detection(f"coco:{scenes_coco}", image_size=32, seed=3)
    assert ds.name == f"coco:{folder / 'annotations.json'}"
    np.testing.assert_array_equal(ds.test_labels, ref.test_labels)


def test_instances_json_wins_over_other_json_files(scenes_coco, tmp_path):
    folder = _renamed_coco(scenes_coco, tmp_path / "c", "instances.json", "a.json")
    (folder / "z.json").write_text("[]")
    assert coco_paths(folder)[0] == folder / "instances.json"


def test_several_json_files_are_listed_and_one_can_be_named(scenes_coco, tmp_path):
    folder = _renamed_coco(scenes_coco, tmp_path / "c", "val.json", "train.json")
    with pytest.raises(DataError) as err:
        coco_paths(folder)
    message = str(err.value)
    assert "holds no instances.json but 2 JSON files (train.json, val.json)" in message
    assert f"coco:{folder / 'train.json'}" in message
    # Naming the file picks it; images still resolve to the folder's images/.
    assert coco_paths(folder / "val.json") == (folder / "val.json", folder / "images")
    ds = load_detection(f"coco:{folder / 'val.json'}", image_size=32)
    assert ds.num_train == 6


def test_a_long_candidate_list_is_cut(tmp_path):
    for i in range(13):
        (tmp_path / f"f{i:02d}.json").write_text("{}")
    with pytest.raises(DataError) as err:
        coco_paths(tmp_path)
    shown = ", ".join(f"f{i:02d}.json" for i in range(10))
    assert f"13 JSON files ({shown}, ... (3 more))" in str(err.value)


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
    # A preset's counts are upper bounds: the whole of a smaller split, the asked part of a larger.
    fitted = load_detection(
        f"coco:{scenes_coco}", num_train=2000, num_test=2, image_size=32, seed=5, up_to=["train"]
    )
    assert (fitted.num_train, fitted.num_test) == (6, 2)
    whole = load_detection(f"coco:{scenes_coco}", num_test=2, image_size=32, seed=5)
    assert [i.file for i in fitted.test_info] == [i.file for i in whole.test_info]
    with pytest.raises(DataError, match="asked for 7 train images"):  # up to: the test split
        load_detection(f"coco:{scenes_coco}", num_train=7, image_size=32, up_to=["test"])


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
    with pytest.raises(DataError, match=r"holds no instances\.json and no other \.json file"):
        load_detection(f"coco:{tmp_path}", image_size=32)
    with pytest.raises(DataError, match="do not exist"):
        load_detection(f"coco:{tmp_path / 'none.json'}", image_size=32)
    with pytest.raises(DataError, match="no Annotations folder"):
        load_detection(f"voc:{tmp_path}", image_size=32)
