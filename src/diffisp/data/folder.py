"""The user's own photos: ``root/<class_name>/*.png|jpg|jpeg``, one sub-folder per class.

Classes are the sub-folder names in sorted order (label ``i`` is the ``i``-th name). Images
of any size are resized so their short side is ``image_size`` and centre-cropped (see
:func:`~diffisp.data.images.load_image` for formats). Hidden files and folders (names starting
with ".") are ignored silently; other files that are not images, and nested folders, are
skipped with one warning listing them.

The train/test split is stratified and seeded: in every class a ``test_fraction`` of the
images (rounded, but at least one, and at least one left for training) goes to test.
"""

from __future__ import annotations

import numbers
import os
import warnings
from collections.abc import Collection
from pathlib import Path

import numpy as np

from diffisp.data._common import (
    SIZE_OPTIONS,
    check_count,
    check_enough,
    check_image_size,
    check_int,
    stratified_subset,
)
from diffisp.data.dataset import Dataset, SourceFile
from diffisp.data.images import (
    DEFAULT_MAX_PIXELS,
    IMAGE_EXTENSIONS,
    check_inside_root,
    is_image_file,
    load_image_and_digest,
)
from diffisp.data.memory import check_fits_in_memory
from diffisp.errors import ConfigError, DataError, InputTypeError

DEFAULT_TEST_FRACTION = 0.2
_LAYOUT = "expected one sub-folder per class: root/<class_name>/*.png|jpg|jpeg"
_MAX_LISTED = 5


def load_folder(
    root: str | Path,
    *,
    num_train: int | None = None,
    num_test: int | None = None,
    seed: int = 0,
    image_size: int = 32,
    test_fraction: float = DEFAULT_TEST_FRACTION,
    up_to: Collection[str] = (),
) -> Dataset:
    """Load ``root/<class_name>/*`` as a :class:`Dataset` with a stratified train/test split.

    Args:
      root: the folder holding one sub-folder per class (at least two classes).
      num_train: how many training images; ``None`` for all after the split.
      num_test: how many test images; ``None`` for all after the split.
      seed: seeds the split and the subsets (independent streams, so the test set does not
        change with ``num_train``).
      image_size: output side; short side resized to it, then centre-cropped.
      test_fraction: share of every class held out for testing, in (0, 1).
      up_to: the splits (``"train"``, ``"test"``) whose count is an upper bound (a preset's
        size fitted to a smaller folder): such a split with fewer images gives all it has
        instead of an error.

    Returns:
      A :class:`Dataset` named ``"folder:<absolute root>"``; images
      ``(N, image_size, image_size, 3)`` float32 in [0, 1], in seeded random order. A requested
      count smaller than what is available takes a subset with the classes as balanced as
      they allow. Its ``train_files``/``test_files`` record the exact split (file and SHA-256
      of every image), so it can be reloaded with :func:`diffisp.data.split.load_folder_split`
      even after images were added to the folder.

    Raises:
      DataError: ``root`` missing or not a folder, no class folders, fewer than two classes, a
        class with fewer than two images, a corrupt image (named), or more images requested
        than available (the message names the option to lower).
      ConfigError: the requested images would not fit in memory.
    """
    image_size = check_image_size(image_size)
    root, names, chosen_files = choose_files(
        root,
        num_train=num_train,
        num_test=num_test,
        seed=seed,
        test_fraction=test_fraction,
        up_to=up_to,
    )
    check_fits_in_memory(
        sum(len(files) for files, _ in chosen_files.values()), image_size, options=SIZE_OPTIONS
    )
    chosen = {}
    for split, (files, labels) in chosen_files.items():
        images, sources = load_images_with_sources(root, files, image_size)
        chosen[split] = (images, labels, sources)
    how = f"seeded stratified split, test_fraction={float(test_fraction):g}"
    return folder_dataset(root, names, chosen, how, image_size)


def choose_files(
    root: str | Path,
    *,
    num_train: int | None,
    num_test: int | None,
    seed: int,
    test_fraction: float,
    up_to: Collection[str] = (),
) -> tuple[Path, tuple[str, ...], dict[str, tuple[list[Path], np.ndarray]]]:
    """The files :func:`load_folder` (and the streamed reader) use, without reading them:
    ``(absolute root, class names, {"train"|"test": (files, labels)})``, the seeded stratified
    split and the requested subsets of it.

    Raises:
      DataError, ConfigError, InputTypeError: as :func:`load_folder` (not the memory check).
    """
    num_train, num_test = check_count(num_train, "num_train"), check_count(num_test, "num_test")
    seed = check_int(seed, "seed", minimum=0)
    test_fraction = _check_fraction(test_fraction)
    root = absolute_root(root)
    classes = scan_folder(root)
    split_rng, train_rng, test_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3)
    )
    pools = split_files(classes, test_fraction, split_rng)
    names = tuple(classes)
    chosen = {}
    for split, requested, rng in (("train", num_train, train_rng), ("test", num_test, test_rng)):
        files, labels = pools[split]
        if split in up_to and requested is not None:
            requested = min(requested, len(files))
        count = check_enough(
            requested,
            len(files),
            f"{split} images",
            f"{root} has {len(files)} after holding out test_fraction={test_fraction:g} of "
            f"every class for testing; lower num_{split} (--num-{split}) to at most "
            f"{len(files)}, or add images",
        )
        index = stratified_subset(labels, count, rng, len(names))
        chosen[split] = ([files[i] for i in index], labels[index])
    return root, names, chosen


def folder_dataset(
    root: Path,
    class_names: tuple[str, ...],
    splits: dict[str, tuple[np.ndarray, np.ndarray, tuple[SourceFile, ...]]],
    how: str,
    image_size: int,
) -> Dataset:
    """A folder :class:`Dataset` from ``splits["train"|"test"] = (images, labels, files)``."""
    train, test = splits["train"], splits["test"]
    return Dataset(
        name=f"folder:{root}",
        train_images=train[0],
        train_labels=train[1],
        test_images=test[0],
        test_labels=test[1],
        class_names=class_names,
        description=(
            f"user images from {root}: {len(class_names)} classes, {len(train[1])} train / "
            f"{len(test[1])} test ({how}), resized and centre-cropped to "
            f"{image_size}x{image_size}"
        ),
        is_standin=False,
        root=str(root),
        train_files=train[2],
        test_files=test[2],
    )


def absolute_root(root: str | Path) -> Path:
    """``root`` with ``~`` expanded, absolute and normalised, so a recorded name stays valid
    from any working directory."""
    return Path(os.path.abspath(Path(root).expanduser()))


def load_images_with_sources(
    root: Path, files: list[Path], image_size: int
) -> tuple[np.ndarray, tuple[SourceFile, ...]]:
    """Decode ``files`` and record each one's path relative to ``root`` and content hash.

    Returns:
      ``(images, sources)``: ``(N, image_size, image_size, 3)`` float32, one
      :class:`SourceFile` per image.
    """
    images = np.empty((len(files), image_size, image_size, 3), np.float32)
    sources = []
    for i, path in enumerate(files):
        images[i], digest = load_image_and_digest(path, image_size, max_pixels=DEFAULT_MAX_PIXELS)
        sources.append(SourceFile(path.relative_to(root).as_posix(), digest))
    return images, tuple(sources)


def scan_folder(root: str | Path) -> dict[str, list[Path]]:
    """Find the class folders and their image files.

    Returns:
      ``{class_name: [image paths]}`` with classes and files in sorted order.

    Raises:
      DataError: ``root`` missing or not a folder, no class folders, an empty class folder,
        or fewer than two classes.
    """
    root = Path(root)
    if not root.exists():
        raise DataError(f"image folder {root} does not exist; {_LAYOUT}")
    if not root.is_dir():
        raise DataError(f"{root} is a file, not a folder; {_LAYOUT}")
    skipped: list[Path] = []
    classes: dict[str, list[Path]] = {}
    for entry in _visible(root):
        if not entry.is_dir():
            skipped.append(entry)
            continue
        check_inside_root(entry, root, f"class folder {entry.name!r}")
        files = []
        for item in _visible(entry):
            if item.is_file() and is_image_file(item):
                # A link may stay inside the folder; one that reads elsewhere is refused.
                check_inside_root(item, root, f"image {item.relative_to(root)}")
                files.append(item)
            else:
                skipped.append(item)
        if not files:
            raise DataError(
                f"class folder {entry} has no images ({', '.join(sorted(IMAGE_EXTENSIONS))}); "
                "add images or remove the folder"
            )
        classes[entry.name] = files
    if not classes:
        what = "is empty" if not skipped else "has no class sub-folders"
        raise DataError(f"image folder {root} {what}; {_LAYOUT}")
    if len(classes) < 2:
        raise DataError(
            f"image folder {root} has only one class ({next(iter(classes))!r}); a classifier "
            f"needs at least two; {_LAYOUT}"
        )
    if skipped:
        listed = ", ".join(str(p.relative_to(root)) for p in skipped[:_MAX_LISTED])
        more = f" and {len(skipped) - _MAX_LISTED} more" if len(skipped) > _MAX_LISTED else ""
        warnings.warn(
            f"skipped {len(skipped)} entries in {root} that are not images directly inside a "
            f"class folder: {listed}{more}",
            UserWarning,
            stacklevel=2,
        )
    return classes


def split_files(
    classes: dict[str, list[Path]], test_fraction: float, rng: np.random.Generator
) -> dict[str, tuple[list[Path], np.ndarray]]:
    """Stratified random split of every class into train and test files.

    Each class with ``n >= 2`` images puts ``clip(round(test_fraction * n), 1, n - 1)`` of them
    into test.

    Returns:
      ``{"train": (files, labels), "test": (files, labels)}``, labels ``(K,)`` int32.

    Raises:
      DataError: a class has fewer than two images.
    """
    out: dict[str, tuple[list[Path], list[int]]] = {"train": ([], []), "test": ([], [])}
    for label, (name, files) in enumerate(classes.items()):
        if len(files) < 2:
            raise DataError(
                f"class {name!r} has {len(files)} image(s); every class needs at least 2 (one "
                "for training, one for testing); add images to its folder"
            )
        n_test = min(max(1, round(test_fraction * len(files))), len(files) - 1)
        order = rng.permutation(len(files))
        for split, part in (("test", order[:n_test]), ("train", order[n_test:])):
            out[split][0].extend(files[i] for i in part)
            out[split][1].extend([label] * len(part))
    return {k: (files, np.asarray(labels, np.int32)) for k, (files, labels) in out.items()}


def _visible(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    except OSError as exc:
        raise DataError(f"cannot list folder {folder}: {exc}") from exc


def _check_fraction(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InputTypeError(f"test_fraction must be a number; got {type(value).__name__}")
    if not 0.0 < float(value) < 1.0:
        raise ConfigError(f"test_fraction must lie strictly between 0 and 1; got {value}")
    return float(value)
