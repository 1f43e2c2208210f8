"""The :class:`Dataset` container every loader returns.

A ``Dataset`` is plain NumPy data: ``(N, S, S, 3)`` float32 images in [0, 1] (NHWC, RGB, the
contract of :mod:`diffisp.ops`) and ``(N,)`` int32 labels. Its arrays are made read-only, so one
loaded data set can be shared by several consumers without one of them changing it under the
others; copy an array (``np.array(ds.train_images)``) to get a writable one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from diffisp.data.source import InMemoryTrainSplit
from diffisp.errors import DataError


class SourceFile(NamedTuple):
    """Where one image of a data set came from: a file and a hash of its content."""

    path: str  # relative to the data set's root folder, with "/" separators
    sha256: str  # hex SHA-256 of the file's bytes, as decoded


@dataclass(frozen=True, eq=False)
class Dataset(InMemoryTrainSplit):
    """An image-classification data set with a fixed train/test split.

    Attributes:
      name: where the data came from: ``"cifar10"``, ``"builtin"`` or ``"folder:<path>"``.
      train_images: ``(N, S, S, 3)`` float32 RGB in [0, 1].
      train_labels: ``(N,)`` int32 in ``[0, num_classes)``.
      test_images: ``(M, S, S, 3)`` float32 RGB in [0, 1].
      test_labels: ``(M,)`` int32 in ``[0, num_classes)``.
      class_names: one name per class; label ``i`` is ``class_names[i]``.
      description: one line for reports, saying what the data really is.
      is_standin: True when this is not a real benchmark (the built-in photo-crop set).
      root: for a folder data set, the absolute folder the files are relative to; else None.
      train_files: for a folder data set, the file of every training image, in image order
        (``train_files[i]`` is ``train_images[i]``); None for other data sets.
      test_files: likewise for the test images.

    Raises:
      DataError: on construction, if arrays have the wrong shape, dtype or value range, or
        train and test images differ in size.
    """

    name: str
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    class_names: tuple[str, ...]
    description: str
    is_standin: bool = False
    root: str | None = None
    train_files: tuple[SourceFile, ...] | None = None
    test_files: tuple[SourceFile, ...] | None = None

    def __post_init__(self) -> None:
        if not self.class_names or not all(isinstance(c, str) for c in self.class_names):
            raise DataError(f"{self.name}: class_names must be a non-empty tuple of str")
        for split in ("train", "test"):
            images = getattr(self, f"{split}_images")
            labels = getattr(self, f"{split}_labels")
            _check_split(self.name, split, images, labels, len(self.class_names))
            images.setflags(write=False)
            labels.setflags(write=False)
        for split in ("train", "test"):
            files = getattr(self, f"{split}_files")
            if files is not None and len(files) != len(getattr(self, f"{split}_labels")):
                raise DataError(
                    f"{self.name}: {len(files)} {split} files for "
                    f"{len(getattr(self, f'{split}_labels'))} {split} images; give one per image"
                )
        if self.train_images.shape[1:] != self.test_images.shape[1:]:
            raise DataError(
                f"{self.name}: train images are {self.train_images.shape[1:]} but test images "
                f"are {self.test_images.shape[1:]}; both splits must have one image size"
            )

    @property
    def num_classes(self) -> int:
        """Number of classes, ``len(class_names)``."""
        return len(self.class_names)

    def targets(self, split: str) -> np.ndarray:
        """The task targets of ``split`` (``"train"`` or ``"test"``): ``(N,)`` int32 labels."""
        return getattr(self, f"{split}_labels")

    def __repr__(self) -> str:
        # The default repr would print whole arrays.
        return (
            f"Dataset(name={self.name!r}, train={self.num_train}, test={self.num_test}, "
            f"image_size={self.image_size}, classes={self.num_classes}, "
            f"is_standin={self.is_standin})"
        )


def _check_split(
    name: str, split: str, images: np.ndarray, labels: np.ndarray, num_classes: int
) -> None:
    where = f"{name} {split} split"
    if not isinstance(images, np.ndarray) or images.dtype != np.float32:
        raise DataError(f"{where}: images must be a float32 numpy array")
    if images.ndim != 4 or images.shape[-1] != 3 or images.shape[1] != images.shape[2]:
        raise DataError(f"{where}: images must have shape (N, S, S, 3); got {images.shape}")
    if images.shape[0] == 0:
        raise DataError(f"{where} is empty")
    if not isinstance(labels, np.ndarray) or labels.dtype != np.int32 or labels.ndim != 1:
        raise DataError(f"{where}: labels must be a 1-D int32 numpy array")
    if labels.shape[0] != images.shape[0]:
        raise DataError(f"{where}: {images.shape[0]} images but {labels.shape[0]} labels")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise DataError(
            f"{where}: labels must lie in [0, {num_classes}); got [{labels.min()}, {labels.max()}]"
        )
    lo, hi = float(images.min()), float(images.max())
    if not (lo >= 0.0 and hi <= 1.0):  # also false for NaN
        raise DataError(f"{where}: images must lie in [0, 1]; got [{lo:.4g}, {hi:.4g}]")
