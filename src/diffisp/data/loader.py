"""``load_dataset``: one entry point for every data source."""

from __future__ import annotations

import os
import warnings
from collections.abc import Collection
from pathlib import Path

from diffisp.data._common import check_load_arguments
from diffisp.data.builtin import DEFAULT_NUM_TEST, DEFAULT_NUM_TRAIN, load_builtin
from diffisp.data.cifar import find_cifar10, load_cifar10, missing_message
from diffisp.data.dataset import Dataset
from diffisp.data.download import download_cifar10
from diffisp.data.folder import load_folder
from diffisp.data.spec import DataSpec
from diffisp.errors import ConfigError, DataError, InputTypeError

VALID_SPECS = ("auto", "cifar10", "builtin", "folder:PATH")


def load_dataset(
    spec: str | DataSpec = "auto",
    *,
    num_train: int | None = None,
    num_test: int | None = None,
    seed: int = 0,
    image_size: int = 32,
    data_dir: str | Path | None = None,
    download: bool = False,
    up_to: Collection[str] = (),
) -> Dataset:
    """Load a data set by name.

    Args:
      spec: which data:

        * ``"auto"``: CIFAR-10 if it is found in ``data_dir`` or the cache (or ``download``
          is set), else the built-in stand-in set; the result's ``name``, ``description`` and
          ``is_standin`` say which one you got.
        * ``"cifar10"``: the real CIFAR-10; an error explaining how to get it if missing.
        * ``"builtin"``: crops of 10 bundled photos, offline, NOT CIFAR-10
          (:mod:`diffisp.data.builtin`).
        * ``"folder:PATH"``: your own images in ``PATH/<class_name>/*.png|jpg|jpeg``
          (:mod:`diffisp.data.folder`), 20% of every class held out for testing.

      num_train: training images, a positive int. ``None``: all available (CIFAR-10, folder)
        or 2000 (built-in). Asking for more than is available is an error, never a silent cut.
      num_test: test images, likewise; ``None`` gives all, or 500 for the built-in set.
      seed: non-negative int seeding the subsets, splits and crops; same seed, same data.
      image_size: side ``S`` of the square output images, >= 8.
      data_dir: where to look for CIFAR-10 (``data_dir/cifar-10-batches-py``, the batch files
        directly in ``data_dir``, or ``cifar-10-python.tar.gz``) before the cache
        (``$DIFFISP_CACHE`` or ``~/.cache/diffisp``); with ``download``, where to put it.
        Ignored by ``"builtin"`` and ``"folder:"``.
      download: fetch CIFAR-10 (about 170 MB, MD5-checked) if it is not found.
      up_to: for ``"folder:PATH"``, the splits whose count is an upper bound
        (:func:`~diffisp.data.folder.load_folder`).

    Returns:
      A :class:`Dataset`: images ``(N, S, S, 3)`` float32 in [0, 1], labels int32.

    Raises:
      InputTypeError: an argument of the wrong type.
      ConfigError: an unknown ``spec`` or an out-of-range argument.
      DataError: data missing, corrupt or smaller than requested.
    """
    spec, num_train, num_test, seed, image_size = check_load_arguments(
        spec, num_train, num_test, seed, image_size, example="auto"
    )
    if data_dir is not None and not isinstance(data_dir, (str, os.PathLike)):
        raise InputTypeError(f"data_dir must be a path or None; got {type(data_dir).__name__}")
    if not isinstance(download, bool):
        raise InputTypeError(f"download must be a bool; got {type(download).__name__}")

    kind, sep, argument = spec.strip().partition(":")
    kind = kind.lower()
    common = {"num_train": num_train, "num_test": num_test, "seed": seed, "image_size": image_size}
    if kind == "folder" and sep:
        if not argument.strip():
            raise ConfigError("spec 'folder:' needs a path, e.g. 'folder:~/photos'")
        return load_folder(argument.strip(), **common, up_to=up_to)
    if sep or kind not in ("auto", "cifar10", "builtin"):
        raise ConfigError(
            f"unknown data set spec {spec!r}; valid specs: {', '.join(map(repr, VALID_SPECS))}"
        )
    if kind == "builtin":
        return _builtin(num_train, num_test, seed, image_size)
    batches_dir = find_cifar10(data_dir)
    if batches_dir is None and download:
        batches_dir = download_cifar10(data_dir)
    if batches_dir is not None:
        return load_cifar10(batches_dir, **common)
    if kind == "cifar10":
        raise DataError(missing_message(data_dir))
    if data_dir is not None:
        warnings.warn(
            f"no CIFAR-10 in data_dir={str(data_dir)!r} or the cache; using the built-in "
            "stand-in data set instead (pass spec='cifar10' to make this an error)",
            UserWarning,
            stacklevel=2,
        )
    return _builtin(num_train, num_test, seed, image_size)


def _builtin(num_train: int | None, num_test: int | None, seed: int, image_size: int) -> Dataset:
    return load_builtin(
        DEFAULT_NUM_TRAIN if num_train is None else num_train,
        DEFAULT_NUM_TEST if num_test is None else num_test,
        seed=seed,
        image_size=image_size,
    )
