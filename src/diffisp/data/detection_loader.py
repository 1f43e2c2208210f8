"""``load_detection``: one entry point for the detection data sources, by spec string.

Specs:

* ``scenes``: the generated offline stand-in (:func:`~diffisp.data.scenes.load_scenes`);
* ``coco:PATH``: a COCO ``instances`` JSON. PATH is the JSON file itself or a folder holding
  it: the folder's ``instances.json`` when it has one, else its only ``*.json`` file (e.g.
  ``annotations.json``); a folder with several and no ``instances.json`` is refused, listing
  them (name one as ``coco:DIR/NAME.json``). Image ``file_name`` values are relative to the
  folder's ``images/`` subfolder when it has one (the layout
  :func:`~diffisp.data.scenes.write_scenes_coco` writes), else to the folder itself;
* ``voc:ROOT``: a Pascal VOC folder (``Annotations/``, ``JPEGImages/``).

For COCO and VOC data ``num_train``/``num_test`` take seeded subsets of the reader's splits;
asking for more images than a split has is a :class:`DataError`, never a silent cut.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from pathlib import Path

from diffisp.data._common import check_load_arguments, log_to_stderr
from diffisp.data.coco import parse_coco
from diffisp.data.detection import DetectionDataset, build_dataset, subset_parsed
from diffisp.data.detection_stream import StreamedDetection, build_streamed
from diffisp.data.folder import absolute_root
from diffisp.data.scenes import load_scenes
from diffisp.data.spec import DataSpec
from diffisp.data.voc import parse_voc
from diffisp.errors import ConfigError, DataError

DETECTION_SPECS = ("scenes", "coco:PATH", "voc:ROOT")
COCO_JSON = "instances.json"
MAX_LISTED = 10  # candidate JSON files an error names


def is_detection_spec(spec: str) -> bool:
    """Whether ``spec`` names a detection source (``scenes``, ``coco:...``, ``voc:...``)."""
    kind, sep, _ = spec.strip().partition(":")
    kind = kind.lower()
    return kind == "scenes" if not sep else kind in ("coco", "voc")


def absolute_detection_spec(spec: str) -> str:
    """``coco:PATH`` / ``voc:ROOT`` with the path made absolute (``~`` expanded); other specs
    unchanged. A saved run's config then names the same data from any directory."""
    kind, sep, path = spec.strip().partition(":")
    if kind.lower() not in ("coco", "voc") or not sep or not path.strip():
        return spec
    return f"{kind.lower()}:{absolute_root(path.strip())}"


def coco_paths(path: str | Path) -> tuple[Path, Path]:
    """``(instances JSON, images folder)`` of a ``coco:PATH`` spec (see module docstring)."""
    path = absolute_root(path)
    if path.is_dir():
        annotations, base = coco_folder_json(path), path
    else:
        annotations, base = path, path.parent
        if not annotations.is_file():
            raise DataError(f"COCO annotations {annotations} do not exist")
    images = base / "images"
    return annotations, images if images.is_dir() else base


def coco_folder_json(folder: Path) -> Path:
    """The annotation JSON of a ``coco:DIR`` folder: ``instances.json`` when there, else the
    folder's only ``*.json`` file (hidden files not counted); none or several (and no
    ``instances.json``) is a :class:`DataError` listing what the folder holds."""
    known = folder / COCO_JSON
    if known.is_file():
        return known
    candidates = sorted(
        p.name for p in folder.glob("*.json") if p.is_file() and not p.name.startswith(".")
    )
    if len(candidates) == 1:
        return folder / candidates[0]
    if not candidates:
        raise DataError(
            f"{folder} holds no {COCO_JSON} and no other .json file; "
            "pass the COCO annotation file as coco:FILE.json"
        )
    shown = ", ".join(candidates[:MAX_LISTED])
    if len(candidates) > MAX_LISTED:
        shown += f", ... ({len(candidates) - MAX_LISTED} more)"
    raise DataError(
        f"{folder} holds no {COCO_JSON} but {len(candidates)} JSON files ({shown}); "
        f"name the COCO annotation file, e.g. coco:{folder / candidates[0]}"
    )


def load_detection(
    spec: str | DataSpec,
    *,
    num_train: int | None = None,
    num_test: int | None = None,
    seed: int = 0,
    image_size: int = 64,
    up_to: Collection[str] = (),
    stream_cache: str | Path | None = None,
    log: Callable[[str], None] = log_to_stderr,
) -> DetectionDataset | StreamedDetection:
    """Load a detection data set by spec (see module docstring).

    Args:
      spec: ``"scenes"``, ``"coco:PATH"`` or ``"voc:ROOT"``.
      num_train, num_test: images per split (``None``: all of a COCO/VOC split; 2000/500
        scenes). Positive ints.
      seed: seeds the scenes, a seeded split when the data have none, and the subsets.
      image_size: side of the letterboxed square images (>= 8).
      up_to: for COCO/VOC, the splits (``"train"``, ``"test"``) whose count is an upper bound
        (a preset's size fitted to a smaller set): such a split gives all it has.
      stream_cache: for COCO/VOC, stream the training images from a decoded cache in this
        folder (:mod:`diffisp.data.detection_stream`) instead of holding them in memory.
      log: where building a decoded cache reports.

    Returns:
      A :class:`DetectionDataset`, or with ``stream_cache`` a
      :class:`~diffisp.data.detection_stream.StreamedDetection`.

    Raises:
      InputTypeError: ``spec`` not a str. ConfigError: an unknown spec or a bad argument.
      DataError: data missing or malformed, or fewer images than asked for.
    """
    spec, num_train, num_test, seed, image_size = check_load_arguments(
        spec, num_train, num_test, seed, image_size, example="scenes"
    )
    kind, _, argument = spec.strip().partition(":")
    kind, argument = kind.lower(), argument.strip()
    if not is_detection_spec(spec):
        raise ConfigError(
            f"unknown detection data spec {spec!r}; valid specs: "
            f"{', '.join(map(repr, DETECTION_SPECS))}"
        )
    if kind == "scenes":
        if stream_cache is not None:
            raise ConfigError("the generated scenes are made in memory; they do not stream")
        return load_scenes(
            2000 if num_train is None else num_train,
            500 if num_test is None else num_test,
            image_size=image_size,
            seed=seed,
        )
    if not argument:
        raise ConfigError(f"spec '{kind}:' needs a path, e.g. '{kind}:~/data'")
    if kind == "coco":
        parsed = parse_coco(*coco_paths(argument), seed=seed)
    else:
        parsed = parse_voc(argument, seed=seed)
    # The subsets are drawn before decoding: only the images used are read.
    parsed = subset_parsed(parsed, num_train, num_test, seed, up_to=up_to)
    if stream_cache is not None:
        return build_streamed(
            parsed, image_size=image_size, max_objects=None, cache_dir=stream_cache, log=log
        )
    return build_dataset(parsed, image_size=image_size, max_objects=None)


__all__ = [
    "DETECTION_SPECS",
    "absolute_detection_spec",
    "coco_folder_json",
    "coco_paths",
    "is_detection_spec",
    "load_detection",
]
