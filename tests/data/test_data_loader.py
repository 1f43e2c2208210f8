"""load_dataset: spec parsing, argument validation, fallbacks; the Dataset container."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import diffisp.data
from diffisp.data import Dataset, load_dataset, load_image
from diffisp.errors import ConfigError, DataError, InputTypeError


def test_public_api_imports():
    assert callable(load_image) and callable(load_dataset) and Dataset.__name__ == "Dataset"
    for name in diffisp.data.__all__:
        assert hasattr(diffisp.data, name)


def test_auto_without_cifar_falls_back_to_builtin_and_says_so():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no data_dir given: nothing to warn about
        ds = load_dataset("auto", num_train=20, num_test=10)
    assert ds.name == "builtin" and ds.is_standin and "NOT CIFAR-10" in ds.description


def test_auto_with_empty_data_dir_warns(tmp_path):
    with pytest.warns(UserWarning, match="no CIFAR-10 in data_dir"):
        ds = load_dataset("auto", num_train=10, num_test=10, data_dir=tmp_path)
    assert ds.is_standin


def test_builtin_defaults_and_spec_spelling():
    ds = load_dataset(" Builtin ", num_test=10)
    assert ds.num_train == 2000 and ds.num_test == 10
    assert load_dataset("builtin", num_train=10).num_test == 500


@pytest.mark.parametrize("spec", ["imagenet", "cifar100", "cifar10:x", "builtin:3", "", "folder"])
def test_unknown_spec_names_the_valid_ones(spec):
    valid = "valid specs: 'auto', 'cifar10', 'builtin', 'folder:PATH'"
    with pytest.raises(ConfigError, match=valid):
        load_dataset(spec)


def test_folder_spec_needs_a_path():
    with pytest.raises(ConfigError, match="needs a path"):
        load_dataset("folder:  ")


def test_folder_spec_missing_path(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(f"folder:{tmp_path / 'nope'}")


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"num_train": 0}, ConfigError, "num_train must be a positive int or None"),
        ({"num_test": -5}, ConfigError, "num_test must be a positive int or None"),
        ({"num_train": 2.0}, InputTypeError, "num_train must be a positive int"),
        ({"num_train": True}, InputTypeError, "num_train must be a positive int"),
        ({"num_test": "10"}, InputTypeError, "num_test must be a positive int"),
        ({"seed": -1}, ConfigError, "seed must be >= 0"),
        ({"seed": 1.5}, InputTypeError, "seed must be an int"),
        ({"image_size": 7}, ConfigError, "image_size must be >= 8"),
        ({"image_size": "32"}, InputTypeError, "image_size must be an int"),
        ({"data_dir": 3}, InputTypeError, "data_dir must be a path"),
        ({"download": "yes"}, InputTypeError, "download must be a bool"),
    ],
)
def test_argument_validation(kwargs, error, message):
    with pytest.raises(error, match=message):
        load_dataset("builtin", **kwargs)


def test_spec_must_be_a_string():
    with pytest.raises(InputTypeError, match="spec must be a str"):
        load_dataset(10)


def test_numpy_ints_are_accepted():
    ds = load_dataset("builtin", num_train=np.int64(10), num_test=np.int32(10), seed=np.int64(1))
    assert ds.num_train == 10


# --- Dataset ------------------------------------------------------------------------------


def _arrays(n: int = 4, size: int = 8) -> dict:
    rng = np.random.default_rng(0)
    images = rng.random((n, size, size, 3), dtype=np.float32)
    labels = (np.arange(n) % 2).astype(np.int32)
    return {
        "train_images": images,
        "train_labels": labels,
        "test_images": images[:2].copy(),
        "test_labels": labels[:2].copy(),
    }


def _dataset(**overrides) -> Dataset:
    fields = {**_arrays(), "name": "t", "class_names": ("a", "b"), "description": "test"}
    return Dataset(**{**fields, **overrides})


def test_dataset_properties_and_read_only_arrays():
    ds = _dataset()
    assert (ds.num_classes, ds.image_size, ds.num_train, ds.num_test) == (2, 8, 4, 2)
    assert not ds.is_standin
    with pytest.raises(ValueError, match="read-only"):
        ds.train_images[0, 0, 0, 0] = 0.5
    assert "train=4" in repr(ds) and "array" not in repr(ds)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"train_images": np.zeros((4, 8, 8, 3))}, "float32"),
        ({"train_images": np.zeros((4, 8, 6, 3), np.float32)}, r"shape \(N, S, S, 3\)"),
        ({"train_images": np.zeros((4, 8, 8), np.float32)}, r"shape \(N, S, S, 3\)"),
        ({"train_images": np.full((4, 8, 8, 3), 1.5, np.float32)}, r"lie in \[0, 1\]"),
        ({"train_images": np.full((4, 8, 8, 3), np.nan, np.float32)}, r"lie in \[0, 1\]"),
        ({"train_labels": np.zeros(4, np.int64)}, "int32"),
        ({"train_labels": np.zeros(3, np.int32)}, "4 images but 3 labels"),
        ({"test_labels": np.array([0, 2], np.int32)}, r"labels must lie in \[0, 2\)"),
        ({"test_images": np.zeros((2, 4, 4, 3), np.float32)}, "one image size"),
        ({"test_images": np.zeros((0, 8, 8, 3), np.float32)}, "test split is empty"),
        ({"class_names": ()}, "class_names"),
    ],
)
def test_dataset_validation(overrides, message):
    with pytest.raises(DataError, match=message):
        _dataset(**overrides)
