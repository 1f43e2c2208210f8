"""Pascal VOC folders: ``Annotations/*.xml``, ``JPEGImages/``, optional ``ImageSets/Main``.

The layout of VOC itself and of the releases that copy it (LOD, PASCALRAW, ROD). An XML file
``Annotations/<id>.xml`` describes the image named by its ``<filename>``, or, if that file does
not exist, ``JPEGImages/<id>.jpg|.jpeg|.png``.

Boxes: ``<bndbox>`` holds 1-based pixel indices, inclusive (the VOC devkit's convention), so a
box ``xmin..xmax`` covers continuous x from ``xmin - 1`` to ``xmax`` (see
:mod:`diffisp.data.boxes`). Fractional values are accepted as they are.

Difficult objects (``<difficult>1``) are kept and flagged in ``*_difficult``: the VOC evaluator
neither counts them as objects to find nor a detection on them as a false positive, so a later
evaluator needs them; training code may use or mask them.

Classes: the sorted ``<name>`` values of all files, or ``class_names`` if given (then a name
outside it is a :class:`DataError` naming the file and object). Bad boxes are clipped or skipped
and counted as in :mod:`diffisp.data.coco`; malformed XML, XML with a DTD (refused, so no entity
expansion can happen), a missing field or a missing image raise :class:`DataError` naming the
file. The DTD check is the XML parser's (defusedxml), so it holds in every encoding (UTF-8,
UTF-16 LE/BE, UTF-32).

Split (``split="auto"``): from ``ImageSets/Main`` when it has ``test.txt`` (test; train is
``trainval.txt``, else ``train.txt`` plus ``val.txt``) or ``val.txt`` (test; train is
``train.txt``); else a seeded split (:func:`~diffisp.data.detection.seeded_split`) over the
XML files in name order. A split keeps the order of its list file, or name order.
"""

from __future__ import annotations

import codecs
import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, NamedTuple

import defusedxml.ElementTree as defused_et
import numpy as np
from defusedxml import DefusedXmlException

from diffisp.data._common import check_image_size
from diffisp.data.boxes import SKIP_EMPTY, SKIP_OUTSIDE
from diffisp.data.detection import (
    DEFAULT_TEST_FRACTION,
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

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".JPG", ".JPEG", ".PNG")
_FIELDS = ("xmin", "ymin", "xmax", "ymax")


class _Parsed(NamedTuple):
    xml: Path
    image: Path
    width: int | None
    height: int | None
    boxes: np.ndarray  # (K, 4) xyxy, continuous pixels
    names: list[str]
    difficult: np.ndarray


def load_voc(
    root: str | Path,
    *,
    image_size: int,
    split: Literal["auto", "seeded"] = "auto",
    seed: int = 0,
    test_fraction: float = DEFAULT_TEST_FRACTION,
    max_objects: int | None = None,
    class_names: Sequence[str] | None = None,
) -> DetectionDataset:
    """Load a Pascal VOC folder as a :class:`DetectionDataset` (see module docstring).

    Args:
      root: the folder holding ``Annotations`` and ``JPEGImages``.
      image_size: side of the letterboxed square images (>= 8).
      split: ``"auto"`` (ImageSets if present, else seeded) or ``"seeded"``.
      seed, test_fraction: of the seeded split, when one is made.
      max_objects: as :func:`diffisp.data.coco.load_coco`.
      class_names: the classes in label order; default the sorted names found.

    Raises:
      DataError: see module docstring. ConfigError: bad arguments.
    """
    image_size = check_image_size(image_size)
    max_objects = check_max_objects(max_objects)
    parsed = parse_voc(
        root, split=split, seed=seed, test_fraction=test_fraction, class_names=class_names
    )
    return build_dataset(parsed, image_size=image_size, max_objects=max_objects)


def parse_voc(
    root: str | Path,
    *,
    split: Literal["auto", "seeded"] = "auto",
    seed: int = 0,
    test_fraction: float = DEFAULT_TEST_FRACTION,
    class_names: Sequence[str] | None = None,
) -> ParsedDetection:
    """:func:`load_voc`'s annotations read, checked and split, no image decoded (the
    arguments as there).

    Raises:
      DataError, ConfigError: as :func:`load_voc`.
    """
    if split not in ("auto", "seeded"):
        raise ConfigError(f"split must be 'auto' or 'seeded'; got {split!r}")
    root = absolute_root(root)
    annotations = root / "Annotations"
    if not annotations.is_dir():
        raise DataError(f"{root} has no Annotations folder; expected a Pascal VOC layout")
    xmls = sorted(p for p in annotations.glob("*.xml") if not p.name.startswith("."))
    if not xmls:
        raise DataError(f"{annotations} has no .xml files")
    parsed = {p.stem: _parse(p, root / "JPEGImages") for p in xmls}
    if class_names is None:
        names = tuple(sorted({n for item in parsed.values() for n in item.names}))
        if not names:
            raise DataError(f"{annotations}: no file has an <object>; no classes to learn")
    else:
        names = tuple(class_names)
        if not names or len(set(names)) != len(names):
            raise ConfigError(f"class_names must be non-empty and unique; got {names}")
    index = {n: i for i, n in enumerate(names)}
    items = {stem: _annotated(item, index, root) for stem, item in parsed.items()}
    sets = _image_sets(root / "ImageSets" / "Main", items) if split == "auto" else None
    if sets is not None:
        splits, how = sets
    else:
        stems = list(items)
        train, test = seeded_split(len(stems), test_fraction, seed)
        splits = {
            "train": [items[stems[i]] for i in train],
            "test": [items[stems[i]] for i in test],
        }
        how = f"seeded split (seed {seed}, test_fraction={test_fraction:g})"
    return ParsedDetection(
        name=f"voc:{root}",
        description=f"Pascal VOC folder {root} ({len(names)} classes; {how})",
        class_names=names,
        splits=splits,
        root=root,
        skipped={SKIP_OUTSIDE: 0, SKIP_EMPTY: 0},
    )


def _parse(xml: Path, images: Path) -> _Parsed:
    check_inside_root(xml, images.parent, f"VOC annotation {xml}")
    try:
        data = xml.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read VOC annotation {xml}: {exc.strerror or exc}") from exc
    tree = parse_xml(data, xml)
    if tree.tag != "annotation":
        raise DataError(f"{xml}: the root element is <{tree.tag}>, not <annotation>")
    width, height = (_size(tree, key, xml) for key in ("width", "height"))
    boxes, names, difficult = [], [], []
    for k, obj in enumerate(tree.findall("object")):
        where = f"{xml}: object #{k}"
        name = (obj.findtext("name") or "").strip()
        if not name:
            raise DataError(f"{where} has no <name>")
        flag = (obj.findtext("difficult") or "0").strip()
        if flag not in ("0", "1"):
            raise DataError(f"{where} ({name}) has <difficult>{flag}</difficult>; expected 0 or 1")
        xmin, ymin, xmax, ymax = (_number(obj.findtext(f"bndbox/{f}")) for f in _FIELDS)
        if not all(math.isfinite(v) for v in (xmin, ymin, xmax, ymax)):
            raise DataError(f"{where} ({name}) lacks a numeric <bndbox> xmin/ymin/xmax/ymax")
        boxes.append((xmin - 1, ymin - 1, xmax, ymax))
        names.append(name)
        difficult.append(flag == "1")
    return _Parsed(
        xml,
        _image_file(xml, images, (tree.findtext("filename") or "").strip()),
        width,
        height,
        np.array(boxes, np.float64).reshape(-1, 4),
        names,
        np.array(difficult, bool),
    )


_UTF32_STARTS = (codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE, b"<\0\0\0", b"\0\0\0<")
_DECLARATION = re.compile(r"^\s*<\?xml[^>]*\?>")


def parse_xml(data: bytes, path: Path) -> ET.Element:
    """The root element of the XML ``data`` (the file ``path``), parsed with DTDs refused.

    defusedxml's parser refuses a ``<!DOCTYPE>`` (and with it every entity declaration,
    external entity and entity-expansion bomb) in whatever encoding the file is in: the check
    runs on what the XML parser decodes, not on the raw bytes. UTF-32, which expat cannot
    decode, is decoded here first.

    Raises:
      DataError: a DTD or entity, malformed XML, or an undecodable file; the message names it.
    """
    if data.startswith(_UTF32_STARTS):
        try:
            codec = {b"\0\0\0<": "utf-32-be", b"<\0\0\0": "utf-32-le"}.get(data[:4], "utf-32")
            text = data.decode(codec)
        except UnicodeDecodeError as exc:
            raise DataError(f"cannot parse VOC annotation {path}: {exc}") from None
        data = _DECLARATION.sub("", text, count=1).encode("utf-8")
    try:
        return defused_et.fromstring(data, forbid_dtd=True)
    except DefusedXmlException as exc:
        raise DataError(
            f"VOC annotation {path} has a DTD or entity ({type(exc).__name__}); these are refused"
        ) from None
    except ET.ParseError as exc:
        raise DataError(f"cannot parse VOC annotation {path}: {exc}") from None
    except (ValueError, LookupError) as exc:  # e.g. an encoding expat does not know
        raise DataError(f"cannot parse VOC annotation {path}: {exc}") from None


def _number(text: str | None) -> float:
    """``float(text)``, NaN if missing or not a number."""
    try:
        return float((text or "").strip())
    except ValueError:
        return math.nan


def _size(tree: ET.Element, key: str, xml: Path) -> int | None:
    """``<size><key>``; None if absent or 0 (some tools write 0 for unknown)."""
    text = (tree.findtext(f"size/{key}") or "").strip()
    try:
        value = int(float(text)) if text else 0
    except ValueError:
        raise DataError(f"{xml}: <size><{key}> is {text!r}, not a number") from None
    return value or None


def _image_file(xml: Path, images: Path, filename: str) -> Path:
    candidates = []
    if filename and "/" not in filename and "\\" not in filename and filename not in (".", ".."):
        candidates.append(images / filename)
    candidates += [images / (xml.stem + suffix) for suffix in IMAGE_SUFFIXES]
    for candidate in candidates:
        if candidate.is_file():
            check_inside_root(candidate, images.parent, f"the image of {xml}")
            return candidate
    raise DataError(
        f"the image of {xml} does not exist: tried {', '.join(c.name for c in candidates[:4])} "
        f"in {images}"
    )


def _annotated(item: _Parsed, index: dict[str, int], root: Path) -> AnnotatedImage:
    for k, name in enumerate(item.names):
        if name not in index:
            raise DataError(f"{item.xml}: object #{k} has class {name!r}, not in class_names")
    return AnnotatedImage(
        path=item.image,
        file=item.image.relative_to(root).as_posix(),
        boxes=item.boxes,
        labels=np.array([index[n] for n in item.names], np.int32),
        difficult=item.difficult,
        width=item.width,
        height=item.height,
    )


def _image_sets(
    main: Path, items: dict[str, AnnotatedImage]
) -> tuple[dict[str, list[AnnotatedImage]], str] | None:
    """The split ImageSets/Main gives, or None if it gives none."""
    lists = {n: main / f"{n}.txt" for n in ("train", "val", "trainval", "test")}
    have = {n for n, p in lists.items() if p.is_file()}
    if "test" in have:
        test = ["test"]
        train = ["trainval"] if "trainval" in have else sorted(have & {"train", "val"})
    elif "val" in have:
        test, train = ["val"], ["train"] if "train" in have else []
    else:
        return None
    if not train:
        raise DataError(f"{main} names test images but has no train.txt or trainval.txt")
    chosen: dict[str, list[AnnotatedImage]] = {}
    seen: dict[str, str] = {}
    for split, files in (("train", train), ("test", test)):
        chosen[split] = []
        for stem in _read_ids([lists[f] for f in files]):
            if stem not in items:
                raise DataError(
                    f"{main}: {split} lists {stem!r} but Annotations/{stem}.xml is missing"
                )
            if stem in seen:
                raise DataError(f"{main}: {stem!r} is listed for both {seen[stem]} and {split}")
            seen[stem] = split
            chosen[split].append(items[stem])
    return chosen, f"split from {main} ({'+'.join(train)} / {test[0]})"


def _read_ids(files: list[Path]) -> list[str]:
    ids: list[str] = []
    for path in files:
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise DataError(f"cannot read {path}: {exc}") from exc
        ids += [line.split()[0] for line in lines if line.strip()]
    return list(dict.fromkeys(ids))  # train.txt + val.txt never double an id
