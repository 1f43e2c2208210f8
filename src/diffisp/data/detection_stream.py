"""COCO and VOC detection sets streamed from a decoded cache, for sets larger than memory.

The annotations are parsed and split exactly as the in-memory loaders do
(:func:`~diffisp.data.coco.parse_coco`, :func:`~diffisp.data.voc.parse_voc`, the same seeded
subsets), the test split is decoded in memory, and the training images are decoded once into a
:class:`~diffisp.data.decoded.DecodedCache` (letterboxed as in memory, by one process per
CPU). Their boxes need each file's decoded size, which the cache records, so the padded
targets of every training image (a few bytes each) are built from the annotations and the
cache without decoding anything again; they stay in memory, the images stay on disk.

A streamed set gives the in-memory set's images, boxes and slot count exactly, so a streamed
run trains as the in-memory run does (tested).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import jax
import numpy as np

from diffisp.capture.base import CaptureModel
from diffisp.data._common import log_to_stderr
from diffisp.data.boxes import Letterbox
from diffisp.data.decoded import DecodedCache, DecodeRecipe, decoded_cache
from diffisp.data.detection import (
    ParsedDetection,
    check_files,
    decode_split,
    padded_targets,
    split_objects,
)
from diffisp.data.memory import check_fits_in_memory
from diffisp.data.source import StreamOptions
from diffisp.data.stream import StreamedSource


@dataclass(frozen=True, eq=False)
class StreamedDetection:
    """A detection set whose training images are read from a decoded cache while training.

    The test split is in memory as in :class:`~diffisp.data.detection.DetectionDataset`
    (``test_images`` ``(M, S, S, 3)``, ``test_boxes`` ``(M, K, 4)``, ...); the training split
    is ``train_cache`` (its images) and ``train_targets`` (``boxes``/``labels``/``difficult``,
    padded to the same ``K`` slots). ``skipped``/``clipped`` count both splits' annotations."""

    name: str
    description: str
    class_names: tuple[str, ...]
    train_cache: DecodedCache
    train_targets: dict[str, np.ndarray]
    train_info: tuple[Letterbox, ...]
    test_images: np.ndarray
    test_boxes: np.ndarray
    test_labels: np.ndarray
    test_difficult: np.ndarray
    test_info: tuple[Letterbox, ...]
    root: str
    skipped: dict[str, int] = field(default_factory=dict)
    clipped: int = 0
    is_standin: bool = False

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def num_train(self) -> int:
        return len(self.train_cache)

    @property
    def num_test(self) -> int:
        return int(self.test_images.shape[0])

    @property
    def image_size(self) -> int:
        return self.train_cache.image_size

    @property
    def max_objects(self) -> int:
        return int(self.test_boxes.shape[1])

    def targets(self, split: str) -> dict[str, np.ndarray]:
        """The targets of ``split``, as :meth:`DetectionDataset.targets` gives them."""
        if split == "train":
            return dict(self.train_targets)
        return {
            "boxes": self.test_boxes,
            "labels": self.test_labels,
            "difficult": self.test_difficult,
        }

    def train_source(
        self, model: CaptureModel, capture_key: jax.Array, options: StreamOptions | None = None
    ) -> StreamedSource:
        """The training split as the loop reads it: chunks from the cache, captured by
        ``model``."""
        options = StreamOptions() if options is None else options
        return StreamedSource(self.train_cache, self.train_targets, model, capture_key, options)


def build_streamed(
    parsed: ParsedDetection,
    *,
    image_size: int,
    max_objects: int | None,
    cache_dir: str | Path,
    log: Callable[[str], None] = log_to_stderr,
) -> StreamedDetection:
    """:func:`~diffisp.data.detection.build_dataset` with the training images decoded into a
    cache under ``cache_dir`` (or found there) instead of memory.

    Raises:
      DataError: as ``build_dataset`` (a missing, corrupt or wrongly annotated image, named;
        more objects than ``max_objects``).
      ConfigError: the test images would not fit in memory.
    """
    check_files(parsed)
    splits, skipped = parsed.splits, dict(parsed.skipped)
    check_fits_in_memory(len(splits["test"]), image_size, options="--num-test or --image-size")
    test_images, test_sizes = decode_split(splits["test"], image_size)
    files = [item.path for item in splits["train"]]
    cache = decoded_cache(files, DecodeRecipe("letterbox", image_size), cache_dir, log=log)
    objects, infos, clipped = {}, {}, 0
    for split, sizes in (("train", cache.sizes), ("test", test_sizes)):
        objects[split], infos[split], n_clipped = split_objects(
            parsed.name, splits[split], sizes, image_size, skipped
        )
        clipped += n_clipped
    targets = padded_targets(parsed.name, objects, max_objects)
    boxes, labels, difficult = targets["test"]
    train = dict(zip(("boxes", "labels", "difficult"), targets["train"], strict=True))
    return StreamedDetection(
        name=parsed.name,
        description=f"{parsed.description}; training images streamed from {cache.directory}",
        class_names=parsed.class_names,
        train_cache=cache,
        train_targets=train,
        train_info=infos["train"],
        test_images=test_images,
        test_boxes=boxes,
        test_labels=labels,
        test_difficult=difficult,
        test_info=infos["test"],
        root=str(parsed.root),
        skipped=skipped,
        clipped=clipped,
    )


__all__ = ["StreamedDetection", "build_streamed"]
