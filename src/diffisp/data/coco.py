"""COCO ``instances`` JSON: images, annotations with ``bbox = [x, y, w, h]``, categories.

Category ids become contiguous class indices in ascending id order (COCO's 1..90 with gaps
become 0..79); the names are kept. What is checked and what happens:

* annotations with ``iscrowd = 1`` are skipped and counted (``skipped["crowd"]``): they mark a
  crowd region, not one object, and COCO's evaluator ignores them too;
* boxes partly outside the image are clipped (counted in ``clipped``); boxes entirely outside
  or of zero or negative width/height are skipped and counted (``skipped["outside_image"]``,
  ``skipped["zero_area"]``), see :func:`~diffisp.data.boxes.clean_boxes`;
* an unknown ``category_id`` or ``image_id``, a ``bbox`` that is not four finite numbers, a
  missing image file, an image whose size differs from its ``width``/``height``, or malformed
  JSON raise :class:`DataError` naming the file (and the annotation id).

Train/test split (``split="auto"``): a second file ``test_annotations`` (COCO's own
``instances_train2017.json`` + ``instances_val2017.json``) gives the split; else a ``"split"``
field on every image (``"train"``, or ``"test"``/``"val"``; what
:func:`diffisp.data.scenes.write_scenes_coco` writes); else a seeded split of the images
(:func:`~diffisp.data.detection.seeded_split`). ``split="seeded"`` ignores the ``"split"``
fields. Each split keeps the order of the ``images`` list.
"""

from __future__ import annotations

import json
import math
import numbers
import time
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import numpy as np

from diffisp.data._common import check_image_size, log_to_stderr
from diffisp.data.boxes import SKIP_CROWD, SKIP_EMPTY, SKIP_OUTSIDE
from diffisp.data.detection import (
    DEFAULT_TEST_FRACTION,
    SPLITS,
    AnnotatedImage,
    DetectionDataset,
    ParsedDetection,
    build_dataset,
    check_max_objects,
    seeded_split,
)
from diffisp.data.folder import absolute_root
from diffisp.data.images import check_inside_root
from diffisp.errors import ConfigError, DataError

_SPLIT_FIELD = {"train": "train", "test": "test", "val": "test"}


def load_coco(
    annotations: str | Path,
    images_dir: str | Path,
    *,
    image_size: int,
    split: Literal["auto", "seeded"] = "auto",
    seed: int = 0,
    test_fraction: float = DEFAULT_TEST_FRACTION,
    max_objects: int | None = None,
    test_annotations: str | Path | None = None,
    test_images_dir: str | Path | None = None,
    log: Callable[[str], None] | None = None,
) -> DetectionDataset:
    """Load a COCO ``instances`` JSON and its images as a :class:`DetectionDataset`.

    Args:
      annotations: the JSON file (all images, or the train images if ``test_annotations``).
      images_dir: the folder each image's ``file_name`` is relative to.
      image_size: side of the letterboxed square images (>= 8).
      split: ``"auto"`` or ``"seeded"`` (see module docstring).
      seed, test_fraction: of the seeded split, when one is made.
      max_objects: pad to exactly this many object slots (DataError if an image has more);
        None: the most objects of any image.
      test_annotations: optional JSON of the test images (its categories must match).
      test_images_dir: their folder; default ``images_dir``.
      log: where a file of at least :data:`PROGRESS_BYTES` says it is being read (a line
        before, with its size, and the counts after: 200 MB take about a minute); default
        standard error.

    Raises:
      DataError, ConfigError: see module docstring; ConfigError for bad arguments.
    """
    image_size = check_image_size(image_size)
    max_objects = check_max_objects(max_objects)
    parsed = parse_coco(
        annotations,
        images_dir,
        split=split,
        seed=seed,
        test_fraction=test_fraction,
        test_annotations=test_annotations,
        test_images_dir=test_images_dir,
        log=log,
    )
    return build_dataset(parsed, image_size=image_size, max_objects=max_objects)


def parse_coco(
    annotations: str | Path,
    images_dir: str | Path,
    *,
    split: Literal["auto", "seeded"] = "auto",
    seed: int = 0,
    test_fraction: float = DEFAULT_TEST_FRACTION,
    test_annotations: str | Path | None = None,
    test_images_dir: str | Path | None = None,
    log: Callable[[str], None] | None = None,
) -> ParsedDetection:
    """:func:`load_coco`'s annotations read, checked and split, no image decoded (the
    arguments as there).

    Raises:
      DataError, ConfigError: as :func:`load_coco`.
    """
    if split not in ("auto", "seeded"):
        raise ConfigError(f"split must be 'auto' or 'seeded'; got {split!r}")
    if split == "seeded" and test_annotations is not None:
        raise ConfigError("split='seeded' and test_annotations exclude each other")
    annotations = absolute_root(annotations)
    images_dir = absolute_root(images_dir)
    skipped = {SKIP_CROWD: 0, SKIP_OUTSIDE: 0, SKIP_EMPTY: 0}
    log = log_to_stderr if log is None else log
    data = _read_json(annotations, log)
    categories = _categories(data, annotations)
    items, fields = _timed(
        log,
        annotations,
        data,
        skipped,
        lambda: _images(data, annotations, images_dir, categories, skipped),
    )
    if test_annotations is not None:
        test_annotations = absolute_root(test_annotations)
        test_data = _read_json(test_annotations, log)
        if _categories(test_data, test_annotations) != categories:
            raise DataError(
                f"{test_annotations} and {annotations} list different categories (ids and "
                "names must match)"
            )
        test_dir = images_dir if test_images_dir is None else absolute_root(test_images_dir)
        test_items, _ = _timed(
            log,
            test_annotations,
            test_data,
            skipped,
            lambda: _images(test_data, test_annotations, test_dir, categories, skipped),
        )
        splits, how = {"train": items, "test": test_items}, f"test images from {test_annotations}"
    elif split == "auto" and any(f is not None for f in fields):
        if None in fields:
            missing = items[fields.index(None)].file
            raise DataError(
                f"{annotations}: some images have a 'split' field and some (e.g. {missing}) do "
                "not; give every image one, or load with split='seeded'"
            )
        splits = {s: [it for it, f in zip(items, fields, strict=True) if f == s] for s in SPLITS}
        how = "split from the images' 'split' fields"
    else:
        train, test = seeded_split(len(items), test_fraction, seed)
        splits = {"train": [items[i] for i in train], "test": [items[i] for i in test]}
        how = f"seeded split (seed {seed}, test_fraction={test_fraction:g})"
    names = tuple(categories.values())
    return ParsedDetection(
        name=f"coco:{annotations}",
        description=f"COCO annotations {annotations} ({len(names)} classes; {how})",
        class_names=names,
        splits=splits,
        root=images_dir,
        skipped=skipped,
    )


# Annotation files from this size on take seconds to read and check (COCO's 448 MB
# instances_train2017.json: minutes), so their reading is announced.
PROGRESS_BYTES = 16 * 2**20


def _timed(
    log: Callable[[str], None],
    path: Path,
    data: dict[str, Any],
    skipped: dict[str, int],
    check: Callable[[], Any],
) -> Any:
    """``check()``, then for a large file a line with what it held and how long it took."""
    started = time.perf_counter()
    result = check()
    if _is_large(path):
        log(
            f"read {len(data['images']):,} images, {len(data['annotations']):,} annotations "
            f"and {len(data['categories']):,} categories from {path} "
            f"({time.perf_counter() - started:.1f} s to check; {sum(skipped.values()):,} "
            "annotations skipped so far)"
        )
    return result


def _is_large(path: Path) -> bool:
    try:
        return path.stat().st_size >= PROGRESS_BYTES
    except OSError:
        return False


def _read_json(path: Path, log: Callable[[str], None] = log_to_stderr) -> dict[str, Any]:
    if not path.is_file():
        raise DataError(f"COCO annotation file {path} does not exist or is not a file")
    if _is_large(path):
        log(
            f"reading {path.stat().st_size / 1e6:.0f} MB of COCO annotations from {path} "
            "(a minute or more for COCO-sized files) ..."
        )
    try:
        data = json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot parse COCO annotation file {path}: {exc}") from exc
    except (OSError, RecursionError) as exc:
        raise DataError(f"cannot read COCO annotation file {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise DataError(f"{path}: a COCO annotation file is a JSON object; got {type(data)}")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise DataError(f"{path}: the key {key!r} is missing or not a list")
    return data


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _categories(data: dict[str, Any], path: Path) -> dict[int, str]:
    """``{category id: name}`` in ascending id order (= class index order)."""
    found: dict[int, str] = {}
    for entry in data["categories"]:
        if not (isinstance(entry, dict) and _is_int(entry.get("id"))):
            raise DataError(f"{path}: a category without an integer 'id': {entry!r:.200}")
        if not isinstance(entry.get("name"), str) or entry["id"] in found:
            raise DataError(f"{path}: category id {entry['id']} has no name or is repeated")
        found[entry["id"]] = entry["name"]
    if not found:
        raise DataError(f"{path}: no categories")
    if len(set(found.values())) != len(found):
        raise DataError(f"{path}: two categories share a name; class names must be unique")
    return dict(sorted(found.items()))


def _images(
    data: dict[str, Any],
    path: Path,
    images_dir: Path,
    categories: dict[int, str],
    skipped: dict[str, int],
) -> tuple[list[AnnotatedImage], list[str | None]]:
    """The images of ``data`` in file order with their annotations, and each one's split field."""
    class_index = {cat: i for i, cat in enumerate(categories)}
    entries: dict[Any, dict[str, Any]] = {}
    for entry in data["images"]:
        if not (isinstance(entry, dict) and isinstance(entry.get("file_name"), str)):
            raise DataError(f"{path}: an image entry without a 'file_name': {entry!r:.200}")
        image_id = entry.get("id")
        if not isinstance(image_id, (int, str)) or image_id in entries:
            raise DataError(f"{path}: image {entry['file_name']} has a missing or repeated id")
        for key in ("width", "height"):
            if key in entry and not (_is_int(entry[key]) and entry[key] > 0):
                raise DataError(f"{path}: image id {image_id} has {key} {entry[key]!r}")
        if entry.get("split", "train") not in _SPLIT_FIELD:
            raise DataError(f"{path}: image id {image_id} has split {entry['split']!r}")
        entries[image_id] = entry
    objects: dict[Any, list[tuple[list[float], int]]] = {i: [] for i in entries}
    for ann in data["annotations"]:
        ann_id = ann.get("id") if isinstance(ann, dict) else None
        where = f"{path}: annotation id {ann_id!r}"
        if not isinstance(ann, dict):
            raise DataError(f"{path}: an annotation is not a JSON object: {ann!r:.200}")
        if ann.get("image_id") not in entries:
            raise DataError(f"{where} refers to image id {ann.get('image_id')!r}, not listed")
        if ann.get("category_id") not in class_index:
            raise DataError(
                f"{where} has unknown category_id {ann.get('category_id')!r} (known: "
                f"{sorted(class_index)[:20]})"
            )
        bbox = ann.get("bbox")
        if not (
            isinstance(bbox, list)
            and len(bbox) == 4
            and all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in bbox)
            and all(math.isfinite(v) for v in bbox)
        ):
            raise DataError(f"{where} has bbox {bbox!r:.100}; expected [x, y, width, height]")
        if ann.get("iscrowd"):
            skipped[SKIP_CROWD] += 1
            continue
        x, y, w, h = (float(v) for v in bbox)
        objects[ann["image_id"]].append(([x, y, x + w, y + h], class_index[ann["category_id"]]))
    items, fields = [], []
    for image_id, entry in entries.items():
        image_path = _inside(images_dir, entry["file_name"], path)
        boxes = np.array([b for b, _ in objects[image_id]], np.float64).reshape(-1, 4)
        labels = np.array([c for _, c in objects[image_id]], np.int32)
        items.append(
            AnnotatedImage(
                path=image_path,
                file=PurePosixPath(image_path.relative_to(images_dir)).as_posix(),
                boxes=boxes,
                labels=labels,
                difficult=np.zeros(len(labels), bool),
                width=entry.get("width"),
                height=entry.get("height"),
            )
        )
        fields.append(_SPLIT_FIELD[entry["split"]] if "split" in entry else None)
    return items, fields


def _inside(images_dir: Path, file_name: str, path: Path) -> Path:
    """``images_dir / file_name``, refusing names that leave ``images_dir``, and symbolic
    links that resolve outside it (:func:`~diffisp.data.images.check_inside_root`)."""
    relative = PurePosixPath(file_name.replace("\\", "/"))
    if relative.is_absolute() or ".." in relative.parts or not relative.parts:
        raise DataError(
            f"{path}: image file_name {file_name!r} must be a relative path inside {images_dir}"
        )
    image = images_dir.joinpath(*relative.parts)
    check_inside_root(image, images_dir, f"{path}: image {file_name!r}")
    return image
