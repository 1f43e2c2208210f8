"""The exact train/test split of a folder data set, recorded and reloaded.

A folder is split anew from its file list each time it is loaded, so after images are added
the same seed gives a different split, and an image a model was trained on can land in its
test set. A run therefore records which files it used (:func:`split_record`, JSON-ready; the
run writes it next to its model) and an evaluation reloads exactly those files
(:func:`load_folder_split`), checking each one's SHA-256:

* a recorded test image missing or changed: :class:`DataError` (the test set is not the one
  the model was evaluated on);
* a recorded training image missing or changed: a warning, and the image is left out;
* images added to the folder since: a warning listing them; they are ignored.

:func:`compare_split` reports the differences without loading any image.
"""

from __future__ import annotations

import hashlib
import json
import re
import warnings
from pathlib import Path, PurePosixPath
from typing import Any, NamedTuple

import numpy as np

from diffisp.data._common import check_image_size
from diffisp.data.dataset import Dataset, SourceFile
from diffisp.data.folder import absolute_root, folder_dataset, scan_folder
from diffisp.data.images import DEFAULT_MAX_PIXELS, decode_image_bytes, read_file_bytes
from diffisp.data.memory import check_fits_in_memory
from diffisp.errors import DataError

SPLIT_FORMAT = "diffisp-folder-split/1"
SPLIT_FILE = "split.json"  # the name a run directory keeps its split under
SPLITS = ("train", "test")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_MAX_LISTED = 5


class SplitChanges(NamedTuple):
    """How a folder differs from a recorded split (relative paths, sorted)."""

    added: tuple[str, ...]  # images in the folder that the record does not list
    removed: tuple[str, ...]  # recorded images no longer in the folder
    changed: tuple[str, ...]  # recorded images whose content hash differs

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed)


def split_record(dataset: Dataset) -> dict[str, Any]:
    """The exact split of a folder data set as a JSON-ready dict.

    Returns:
      ``{"format", "root" (absolute), "class_names", "image_size", "train", "test"}`` where a
      split is a list of ``{"file": relative path, "label": int, "sha256": hex}`` in image
      order.

    Raises:
      DataError: ``dataset`` was not loaded from a folder (it has no file list).
    """
    if dataset.root is None or dataset.train_files is None or dataset.test_files is None:
        raise DataError(
            f"{dataset.name} was not loaded from a folder; only folder data sets record files"
        )
    record: dict[str, Any] = {
        "format": SPLIT_FORMAT,
        "root": dataset.root,
        "class_names": list(dataset.class_names),
        "image_size": dataset.image_size,
    }
    for split in SPLITS:
        files = getattr(dataset, f"{split}_files")
        labels = getattr(dataset, f"{split}_labels")
        record[split] = [
            {"file": f.path, "label": int(label), "sha256": f.sha256}
            for f, label in zip(files, labels, strict=True)
        ]
    return record


def read_split(path: str | Path) -> dict[str, Any]:
    """A split record written as JSON (e.g. ``RUN_DIR/split.json``).

    Raises:
      DataError: the file cannot be read or is not JSON (its content is checked on use).
    """
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:
        raise DataError(f"cannot read the recorded split {path}: {exc}") from None


def compare_split(record: dict[str, Any]) -> SplitChanges:
    """Compare the folder named in ``record`` with it, hashing every recorded file.

    Raises:
      DataError: ``record`` is malformed, or its folder is missing or not a class folder tree.
    """
    root, _, entries = _parse(record)
    present = _folder_files(root)
    recorded = {e.path: e.sha256 for split in SPLITS for e, _ in entries[split]}
    removed = sorted(p for p in recorded if p not in present)
    changed = sorted(
        p for p in recorded if p in present and _sha256(read_file_bytes(root / p)) != recorded[p]
    )
    return SplitChanges(tuple(sorted(present - recorded.keys())), tuple(removed), tuple(changed))


def load_folder_split(record: dict[str, Any], *, image_size: int | None = None) -> Dataset:
    """Reload exactly the images of a recorded folder split (see the module docstring).

    Args:
      record: from :func:`split_record` (e.g. read back from the run's JSON file).
      image_size: output side; default the recorded one.

    Returns:
      A :class:`Dataset` with the recorded images in the recorded order (minus training images
      that went missing or changed, with a warning), carrying the same file records.

    Raises:
      DataError: ``record`` is malformed; its folder is missing; a recorded test image is
        missing or changed; no recorded training image is left.
    """
    root, class_names, entries = _parse(record)
    image_size = check_image_size(record["image_size"] if image_size is None else image_size)
    check_fits_in_memory(sum(map(len, entries.values())), image_size, options="image_size")
    present = _folder_files(root)
    added = sorted(present - {e.path for split in SPLITS for e, _ in entries[split]})
    if added:
        _warn(
            f"{len(added)} image(s) in {root} are not in the recorded split and are ignored", added
        )
    loaded = {}
    for split in ("test", "train"):  # test first: its problems are errors, fail fast
        images, kept, missing, changed = _load_intact(root, entries[split], present, image_size)
        if split == "test" and (missing or changed):
            problems = "; ".join(
                _listing(paths, what)
                for paths, what in ((missing, "missing"), (changed, "changed"))
                if paths
            )
            raise DataError(
                f"the recorded test set of {root} is no longer intact ({problems}); a model "
                "evaluated on it now would be scored on other images. Restore the files or "
                "evaluate on a new split"
            )
        if missing or changed:
            _warn(
                f"{len(missing) + len(changed)} recorded training image(s) in {root} are missing "
                "or changed and are left out",
                missing + changed,
            )
        if not kept:
            raise DataError(f"none of the recorded training images of {root} is left unchanged")
        labels = np.asarray([label for _, label in kept], np.int32)
        loaded[split] = (images, labels, tuple(e for e, _ in kept))
    how = "the recorded split, every file's SHA-256 checked"
    return folder_dataset(root, class_names, loaded, how, image_size)


def _load_intact(
    root: Path, entries: list[tuple[SourceFile, int]], present: set[str], image_size: int
) -> tuple[np.ndarray, list[tuple[SourceFile, int]], list[str], list[str]]:
    """Decode the recorded files whose bytes still hash to the record, one file at a time.

    Each file is read once, hashed and decoded from the same bytes, so what is checked is what
    is used. Returns ``(images, kept entries, missing paths, changed paths)``.
    """
    images = np.empty((len(entries), image_size, image_size, 3), np.float32)
    kept: list[tuple[SourceFile, int]] = []
    missing, changed = [], []
    for entry, label in entries:
        if entry.path not in present:
            missing.append(entry.path)
            continue
        data = read_file_bytes(root / entry.path)
        if _sha256(data) != entry.sha256:
            changed.append(entry.path)
            continue
        images[len(kept)] = decode_image_bytes(
            data, root / entry.path, image_size, max_pixels=DEFAULT_MAX_PIXELS
        )
        kept.append((entry, label))
    return images[: len(kept)], kept, missing, changed


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _parse(
    record: Any,
) -> tuple[Path, tuple[str, ...], dict[str, list[tuple[SourceFile, int]]]]:
    """Validate a split record; it is read from a run directory, so trust nothing in it."""
    if not isinstance(record, dict) or record.get("format") != SPLIT_FORMAT:
        raise DataError(f"not a folder split record (expected 'format': {SPLIT_FORMAT!r})")
    root, names = record.get("root"), record.get("class_names")
    if not isinstance(root, str) or not Path(root).is_absolute():
        raise DataError(f"split record: 'root' must be an absolute path; got {root!r}")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise DataError("split record: 'class_names' must be a non-empty list of names")
    entries: dict[str, list[tuple[SourceFile, int]]] = {}
    for split in SPLITS:
        items = record.get(split)
        if not isinstance(items, list) or not items:
            raise DataError(f"split record: '{split}' must be a non-empty list of files")
        entries[split] = [_parse_entry(item, split, names) for item in items]
    paths = [e.path for split in SPLITS for e, _ in entries[split]]
    if len(set(paths)) != len(paths):
        raise DataError("split record: a file is listed twice (train and test must be disjoint)")
    return absolute_root(root), tuple(names), entries


def _parse_entry(item: Any, split: str, names: list[str]) -> tuple[SourceFile, int]:
    if not isinstance(item, dict):
        raise DataError(f"split record: every '{split}' entry must be an object; got {item!r}")
    file, label, digest = item.get("file"), item.get("label"), item.get("sha256")
    parts = PurePosixPath(file).parts if isinstance(file, str) else ()
    # Exactly <class>/<name>: nothing absolute, no "..", so a tampered record cannot make us
    # read files outside the data folder.
    if len(parts) != 2 or any(p in ("", ".", "..") for p in parts) or "\\" in file:
        raise DataError(f"split record: {file!r} is not a path <class>/<file> inside the folder")
    if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < len(names):
        raise DataError(f"split record: {file}: label must be an int in [0, {len(names)})")
    if parts[0] != names[label]:
        raise DataError(f"split record: {file} is labelled {names[label]!r}, not its folder")
    if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
        raise DataError(f"split record: {file}: 'sha256' must be 64 lowercase hex digits")
    return SourceFile(file, digest), label


def _folder_files(root: Path) -> set[str]:
    with warnings.catch_warnings():
        # scan_folder's "skipped entries" warning is about loading anew, not about a record.
        warnings.simplefilter("ignore", UserWarning)
        classes = scan_folder(root)
    return {path.relative_to(root).as_posix() for files in classes.values() for path in files}


def _listing(paths: list[str], what: str) -> str:
    more = f" and {len(paths) - _MAX_LISTED} more" if len(paths) > _MAX_LISTED else ""
    return f"{len(paths)} {what}: {', '.join(paths[:_MAX_LISTED])}{more}"


def _warn(message: str, paths: list[str]) -> None:
    more = f" and {len(paths) - _MAX_LISTED} more" if len(paths) > _MAX_LISTED else ""
    warnings.warn(f"{message}: {', '.join(paths[:_MAX_LISTED])}{more}", UserWarning, stacklevel=3)
