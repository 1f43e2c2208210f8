"""The :class:`DetectionDataset` container and the loading steps the COCO and VOC readers share.

A detection data set is plain NumPy data: letterboxed ``(N, S, S, 3)`` float32 images in
[0, 1] (see :mod:`diffisp.data.boxes` for the letterbox and the pixel convention) and, per
image, up to ``M`` objects as padded arrays: ``(N, M, 4)`` float32 xyxy boxes in letterboxed
pixels, ``(N, M)`` int32 class indices with ``-1`` marking padding, and ``(N, M)`` bool
``difficult`` flags. ``M`` (:attr:`DetectionDataset.max_objects`) is the same for train and
test: by default the most objects any image of the data set has (at least 1), or a fixed value
asked for with ``max_objects=`` (so compiled code sees one shape whatever the data). Objects
of an image come first, in annotation order; the padded slots are all zero boxes.

Images are decoded by :func:`diffisp.data.images.load_image`, which applies the EXIF
orientation, so annotations are taken to be in the upright frame (as Detectron2 reads them); an
image whose decoded size differs from its annotated size is refused rather than given boxes
that do not fit it.

Readers: :func:`diffisp.data.coco.load_coco`, :func:`diffisp.data.voc.load_voc`, and the
generated stand-in :func:`diffisp.data.scenes.load_scenes`.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from diffisp.data._common import check_int
from diffisp.data.boxes import (
    SKIP_EMPTY,
    Letterbox,
    clean_boxes,
    letterbox_boxes,
    letterbox_of,
    pad_objects,
)
from diffisp.data.decoded import DecodeRecipe
from diffisp.data.memory import check_fits_in_memory
from diffisp.data.source import InMemoryTrainSplit
from diffisp.errors import ConfigError, DataError

SPLITS = ("train", "test")
DEFAULT_TEST_FRACTION = 0.2
_OPTIONS = "the number of images or image_size (--image-size)"


@dataclass(frozen=True, eq=False)
class DetectionDataset(InMemoryTrainSplit):
    """An object-detection data set with a fixed train/test split (see module docstring).

    Attributes:
      name: ``"coco:<json>"``, ``"voc:<root>"`` or ``"scenes"``.
      class_names: label ``i`` is ``class_names[i]``.
      train_images: ``(N, S, S, 3)`` float32 RGB in [0, 1], letterboxed.
      train_boxes: ``(N, M, 4)`` float32 xyxy in letterboxed pixels, within ``[0, S]``;
        zeros in padded slots.
      train_labels: ``(N, M)`` int32 in ``[0, num_classes)``, or ``-1`` for padding.
      train_difficult: ``(N, M)`` bool; VOC ``difficult`` objects, which VOC evaluators neither
        reward nor penalise (always False for COCO and scenes).
      train_info: one :class:`~diffisp.data.boxes.Letterbox` per image: source file (relative to
        ``root``), original size, and the scale/offset to map boxes back to it.
      test_*: likewise for the test split.
      description: one line for reports.
      is_standin: True for the generated scene set.
      root: absolute folder the ``info`` files are relative to; None for generated data.
      skipped: how many annotations were dropped, by reason (``crowd``, ``outside_image``,
        ``zero_area``); printed by the CLI.
      clipped: how many kept boxes were partly outside their image and were clipped to it.

    Raises:
      DataError: on construction, if arrays have the wrong shape, dtype or range.
    """

    name: str
    class_names: tuple[str, ...]
    train_images: np.ndarray
    train_boxes: np.ndarray
    train_labels: np.ndarray
    train_difficult: np.ndarray
    train_info: tuple[Letterbox, ...]
    test_images: np.ndarray
    test_boxes: np.ndarray
    test_labels: np.ndarray
    test_difficult: np.ndarray
    test_info: tuple[Letterbox, ...]
    description: str
    is_standin: bool = False
    root: str | None = None
    skipped: dict[str, int] = field(default_factory=dict)
    clipped: int = 0

    def __post_init__(self) -> None:
        if not self.class_names or not all(isinstance(c, str) for c in self.class_names):
            raise DataError(f"{self.name}: class_names must be a non-empty tuple of str")
        shapes = set()
        for split in SPLITS:
            arrays = [getattr(self, f"{split}_{a}") for a in ("images", "boxes", "labels")]
            difficult = getattr(self, f"{split}_difficult")
            _check_split(f"{self.name} {split} split", *arrays, difficult, self.num_classes)
            if len(getattr(self, f"{split}_info")) != len(arrays[0]):
                raise DataError(f"{self.name} {split} split: one info entry per image needed")
            for array in (*arrays, difficult):
                array.setflags(write=False)
            shapes.add((arrays[0].shape[1:], arrays[1].shape[1]))
        if len(shapes) != 1:
            raise DataError(f"{self.name}: train and test differ in image size or max_objects")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def targets(self, split: str) -> dict[str, np.ndarray]:
        """The task targets of ``split`` (``"train"`` or ``"test"``), what
        :class:`~diffisp.models.detection.Detection` takes: ``{"boxes": (N, M, 4) float32,
        "labels": (N, M) int32 (-1 = padding), "difficult": (N, M) bool}``."""
        return {
            "boxes": np.asarray(getattr(self, f"{split}_boxes"), np.float32),
            "labels": np.asarray(getattr(self, f"{split}_labels"), np.int32),
            "difficult": np.asarray(getattr(self, f"{split}_difficult"), bool),
        }

    @property
    def max_objects(self) -> int:
        """``M``, the padded number of object slots per image."""
        return int(self.train_boxes.shape[1])

    def __repr__(self) -> str:
        return (
            f"DetectionDataset(name={self.name!r}, train={self.num_train}, test={self.num_test}, "
            f"image_size={self.image_size}, classes={self.num_classes}, "
            f"max_objects={self.max_objects}, skipped={self.skipped}, clipped={self.clipped})"
        )


def _check_split(
    where: str,
    images: np.ndarray,
    boxes: np.ndarray,
    labels: np.ndarray,
    difficult: np.ndarray,
    num_classes: int,
) -> None:
    if not isinstance(images, np.ndarray) or images.dtype != np.float32 or images.ndim != 4:
        raise DataError(f"{where}: images must be a (N, S, S, 3) float32 numpy array")
    n, size = images.shape[0], images.shape[1]
    if images.shape[2:] != (size, 3) or n == 0:
        raise DataError(f"{where}: images must have shape (N, S, S, 3), N > 0; got {images.shape}")
    if boxes.dtype != np.float32 or boxes.ndim != 3 or boxes.shape[::2] != (n, 4):
        raise DataError(f"{where}: boxes must be (N, M, 4) float32; got {boxes.shape}")
    if labels.dtype != np.int32 or labels.shape != boxes.shape[:2]:
        raise DataError(f"{where}: labels must be (N, M) int32; got {labels.shape}")
    if difficult.dtype != bool or difficult.shape != labels.shape:
        raise DataError(f"{where}: difficult must be (N, M) bool")
    if labels.size and (labels.min() < -1 or labels.max() >= num_classes):
        raise DataError(f"{where}: labels must lie in [-1, {num_classes})")
    real = labels >= 0
    x0, y0, x1, y1 = np.moveaxis(boxes, -1, 0)
    bad = real & ~((x0 >= 0) & (y0 >= 0) & (x1 <= size) & (y1 <= size) & (x1 > x0) & (y1 > y0))
    if bad.any() or np.any(boxes[~real] != 0) or np.any(difficult[~real]):
        raise DataError(f"{where}: boxes must be non-empty, inside [0, {size}], zero if padding")
    if not (images.min() >= 0.0 and images.max() <= 1.0):
        raise DataError(f"{where}: images must lie in [0, 1]")


class AnnotatedImage(NamedTuple):
    """One image as a reader parsed it, before decoding.

    ``boxes`` are xyxy in original pixels (``(K, 4)`` float64, not yet cleaned), ``labels``
    ``(K,)`` int class indices, ``difficult`` ``(K,)`` bool; ``width``/``height`` as the
    annotation states them (None if it does not), checked against the decoded file.
    """

    path: Path
    file: str  # relative to the data set root, "/" separators
    boxes: np.ndarray
    labels: np.ndarray
    difficult: np.ndarray
    width: int | None
    height: int | None


def seeded_split(num: int, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split ``num`` images (in the reader's order) into train and test indices.

    ``round(num * test_fraction)`` images, at least one and leaving at least one for training,
    are drawn for test with ``numpy.random.default_rng(seed)``; both index arrays come back
    sorted, so each split keeps the reader's order. Deterministic in ``(num, test_fraction,
    seed)``.

    Raises:
      DataError: fewer than two images.
      ConfigError: ``test_fraction`` not in (0, 1).
    """
    seed = check_int(seed, "seed", minimum=0)
    if not isinstance(test_fraction, (int, float)) or not 0 < test_fraction < 1:
        raise ConfigError(f"test_fraction must be a number in (0, 1); got {test_fraction!r}")
    if num < 2:
        raise DataError(f"a seeded train/test split needs at least 2 images; got {num}")
    num_test = min(max(1, round(num * test_fraction)), num - 1)
    test = np.sort(np.random.default_rng(seed).permutation(num)[:num_test])
    train = np.setdiff1d(np.arange(num), test)
    return train, test


def check_max_objects(max_objects: int | None) -> int | None:
    return None if max_objects is None else check_int(max_objects, "max_objects", minimum=1)


class ParsedDetection(NamedTuple):
    """A detection set as its reader parsed it, nothing decoded: what :func:`build_dataset`
    (in memory) and :func:`~diffisp.data.detection_stream.build_streamed` (a decoded cache)
    turn into images and padded targets. ``splits``: the :class:`AnnotatedImage` of each split
    in the reader's order; ``skipped``: annotations the reader already dropped, by reason."""

    name: str
    description: str
    class_names: tuple[str, ...]
    splits: dict[str, list[AnnotatedImage]]
    root: Path
    skipped: dict[str, int]


def subset_parsed(
    parsed: ParsedDetection,
    num_train: int | None,
    num_test: int | None,
    seed: int,
    *,
    up_to: Collection[str] = (),
) -> ParsedDetection:
    """``parsed`` cut to ``num_train``/``num_test`` images per split (``None``: all), drawn
    with ``numpy.random.default_rng(seed)`` and kept in the reader's order, before anything is
    decoded. ``up_to``: the splits whose count is an upper bound (kept whole when smaller).

    Raises:
      DataError: a split has fewer images than asked for (and not ``up_to``).
    """
    wanted = {"train": num_train, "test": num_test}
    rng = np.random.default_rng(seed)
    splits = dict(parsed.splits)
    for split in SPLITS:
        have, want = len(splits[split]), wanted[split]
        if split in up_to and want is not None:
            want = min(want, have)
        if want is None or want == have:
            continue
        if want > have:
            raise DataError(
                f"{parsed.name}: asked for {want} {split} images (--num-{split}) but its "
                f"{split} split has {have}; lower --num-{split}"
            )
        keep = np.sort(rng.permutation(have)[:want])
        splits[split] = [splits[split][i] for i in keep]
    return parsed._replace(splits=splits)


def check_files(parsed: ParsedDetection) -> None:
    """Every split has images and every image file exists (before any is decoded)."""
    for split in SPLITS:
        if not parsed.splits[split]:
            raise DataError(f"{parsed.name}: the {split} split has no images")
        for item in parsed.splits[split]:
            if not item.path.is_file():
                raise DataError(f"{parsed.name}: image file {item.path} does not exist")


def decode_split(items: list[AnnotatedImage], image_size: int) -> tuple[np.ndarray, np.ndarray]:
    """The letterboxed images ``(N, S, S, 3)`` float32 of ``items`` and their decoded
    ``(width, height)`` ``(N, 2)``, as a decoded cache stores them."""
    recipe = DecodeRecipe("letterbox", image_size)
    images = np.empty((len(items), image_size, image_size, 3), np.float32)
    sizes = np.empty((len(items), 2), np.int32)
    for i, item in enumerate(items):
        images[i], sizes[i] = recipe.decode(item.path)
    return images, sizes


def split_objects(
    name: str,
    items: list[AnnotatedImage],
    sizes: np.ndarray,
    image_size: int,
    skipped: dict[str, int],
) -> tuple[list[tuple[np.ndarray, np.ndarray, np.ndarray]], tuple[Letterbox, ...], int]:
    """Each image's objects in letterboxed pixels (cleaned against its decoded ``sizes``,
    counted in ``skipped``), its :class:`Letterbox`, and how many boxes were clipped.

    Raises:
      DataError: an image's decoded size differs from its annotated one (named).
    """
    objects, infos, clipped = [], [], 0
    for item, (width, height) in zip(items, sizes.tolist(), strict=True):
        if (item.width, item.height) not in ((None, None), (width, height)):
            raise DataError(
                f"{name}: image {item.path} is {width}x{height} but its annotation says "
                f"{item.width}x{item.height} (an EXIF rotation, or the wrong file?); the "
                "boxes would not match it"
            )
        boxes = np.array(item.boxes, np.float64).reshape(-1, 4)
        keep, n_clipped = clean_boxes(boxes, width, height, skipped)
        clipped += n_clipped
        info = letterbox_of(width, height, image_size, item.file)
        # Float rounding must not push a box past the edge; a box far below a pixel in a
        # huge image can collapse to zero width in float32, so is dropped as empty.
        scaled = np.clip(letterbox_boxes(boxes[keep], info), 0, np.float32(image_size))
        nonempty = (scaled[:, 2] > scaled[:, 0]) & (scaled[:, 3] > scaled[:, 1])
        skipped[SKIP_EMPTY] = skipped.get(SKIP_EMPTY, 0) + int((~nonempty).sum())
        objects.append(
            (
                scaled[nonempty],
                np.asarray(item.labels, np.int32)[keep][nonempty],
                np.asarray(item.difficult, bool)[keep][nonempty],
            )
        )
        infos.append(info)
    return objects, tuple(infos), clipped


def padded_targets(
    name: str, objects: dict[str, list], max_objects: int | None
) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Every split's objects as ``(boxes, labels, difficult)`` padded to one slot count: the
    most objects of any image (at least 1), or ``max_objects``.

    Raises:
      DataError: an image has more objects than ``max_objects``.
    """
    most = max(len(o[1]) for split in SPLITS for o in objects[split])
    if max_objects is not None and most > max_objects:
        raise DataError(
            f"{name}: an image has {most} objects but max_objects={max_objects}; raise it"
        )
    slots = max_objects or max(1, most)
    return {split: pad_objects(objects[split], slots) for split in SPLITS}


def build_dataset(
    parsed: ParsedDetection, *, image_size: int, max_objects: int | None
) -> DetectionDataset:
    """Decode, check, clean and letterbox the parsed images of both splits, in memory.

    Every image file is checked to exist before any is decoded. Boxes are cleaned against the
    decoded size (:func:`~diffisp.data.boxes.clean_boxes`, counted in ``skipped``).

    Raises:
      DataError: a split is empty, an image is missing or unreadable (named), its decoded size
        differs from the annotated one, or an image has more objects than ``max_objects``.
      ConfigError: the images would not fit in memory.
    """
    check_files(parsed)
    splits, skipped = parsed.splits, dict(parsed.skipped)
    check_fits_in_memory(sum(len(v) for v in splits.values()), image_size, options=_OPTIONS)
    images, objects, infos, clipped = {}, {}, {}, 0
    for split in SPLITS:
        images[split], sizes = decode_split(splits[split], image_size)
        objects[split], infos[split], n_clipped = split_objects(
            parsed.name, splits[split], sizes, image_size, skipped
        )
        clipped += n_clipped
    targets = padded_targets(parsed.name, objects, max_objects)
    arrays = {}
    for split in SPLITS:
        boxes, labels, difficult = targets[split]
        arrays |= {
            f"{split}_images": images[split],
            f"{split}_boxes": boxes,
            f"{split}_labels": labels,
            f"{split}_difficult": difficult,
            f"{split}_info": infos[split],
        }
    return DetectionDataset(
        name=parsed.name,
        class_names=parsed.class_names,
        description=parsed.description,
        root=str(parsed.root),
        skipped=skipped,
        clipped=clipped,
        **arrays,
    )
