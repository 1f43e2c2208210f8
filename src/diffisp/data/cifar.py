"""CIFAR-10, the real data set, from its official "python version" files.

Layout (``cifar-10-batches-py/``): ``data_batch_1`` … ``data_batch_5`` (10 000 training images
each), ``test_batch`` (10 000) and ``batches.meta``. Each batch is a pickled dict with
``b"data"``: ``(N, 3072)`` uint8, every row one 32x32 image stored channel-major (1024 red,
then 1024 green, then 1024 blue values, each plane row-major), and ``b"labels"``: ``N`` ints in
[0, 10). ``batches.meta`` holds ``b"label_names"``.

The files are pickles, and unpickling can run arbitrary code, so they are read with an
unpickler that only accepts the handful of globals a NumPy array needs: a file from an
unknown source can be rejected, not executed.
"""

from __future__ import annotations

import codecs
import pickle
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from diffisp.data._common import (
    SIZE_OPTIONS,
    check_enough,
    resize_batch,
    stratified_subset,
    uint8_to_float,
)
from diffisp.data.dataset import Dataset
from diffisp.data.download import (
    BATCHES_DIR,
    CACHE_ENV,
    CIFAR10_FILE_MD5,
    CIFAR10_MD5,
    CIFAR10_URL,
    TARBALL_NAME,
    default_cache_dir,
    extract_cifar10,
    file_md5,
)
from diffisp.data.memory import check_fits_in_memory
from diffisp.errors import DataError

TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
META_FILE = "batches.meta"
NUM_CLASSES = 10
SIDE = 32


class CifarArrays(NamedTuple):
    """CIFAR-10 as read from disk: uint8 NHWC images and int32 labels."""

    train_images: np.ndarray  # (50000, 32, 32, 3) uint8
    train_labels: np.ndarray  # (50000,) int32
    test_images: np.ndarray  # (10000, 32, 32, 3) uint8
    test_labels: np.ndarray  # (10000,) int32
    class_names: tuple[str, ...]


def find_cifar10(data_dir: str | Path | None = None, *, extract: bool = True) -> Path | None:
    """Locate an extracted ``cifar-10-batches-py`` directory, or ``None``.

    Looks in ``data_dir`` (for ``data_dir/cifar-10-batches-py``, or ``data_dir`` itself when it
    holds the batch files), then in the cache (:func:`default_cache_dir`). With ``extract``, a
    ``cifar-10-python.tar.gz`` found in one of those directories is verified and unpacked next
    to itself first. A directory counts as found as soon as it exists, even if incomplete:
    reading it then reports what is wrong instead of silently using other data.
    """
    search = [Path(data_dir).expanduser()] if data_dir is not None else []
    search.append(default_cache_dir())
    for directory in search:
        if (directory / BATCHES_DIR).is_dir():
            return directory / BATCHES_DIR
        if any((directory / name).is_file() for name in (*TRAIN_FILES, TEST_FILE)):
            return directory
        if extract and (directory / TARBALL_NAME).is_file():
            return extract_cifar10(directory / TARBALL_NAME, directory, md5=CIFAR10_MD5)
    return None


def missing_message(data_dir: str | Path | None) -> str:
    """How to get CIFAR-10, for the error raised when it is not found."""
    looked = [Path(data_dir).expanduser()] if data_dir is not None else []
    looked.append(default_cache_dir())
    cache = default_cache_dir()
    return (
        f"CIFAR-10 not found (looked in {', '.join(str(p) for p in looked)}). To get it: pass "
        f"download=True (command line: --download) to fetch it into {cache}, or download "
        f"{CIFAR10_URL} (MD5 {CIFAR10_MD5})"
        f" yourself and put the .tar.gz (or its extracted {BATCHES_DIR}/ directory) into {cache}"
        f" or into data_dir. Set ${CACHE_ENV} to use another cache directory; "
        'spec="builtin" gives an offline stand-in data set.'
    )


def read_cifar10(batches_dir: str | Path) -> CifarArrays:
    """Read and validate all of ``cifar-10-batches-py``.

    Returns:
      :class:`CifarArrays` with NHWC uint8 images (a pixel ``[n, y, x, c]`` is
      ``data[n, c * 1024 + y * 32 + x]`` of the file) and int32 labels.

    Raises:
      DataError: a missing, unreadable or corrupt file, unexpected keys, shapes or dtypes, or
        labels outside [0, 10); the message names the file.
    """
    batches_dir = Path(batches_dir)
    if not batches_dir.is_dir():
        raise DataError(f"CIFAR-10 directory {batches_dir} does not exist")
    class_names = _read_meta(batches_dir / META_FILE)
    train = [_read_batch(batches_dir / name) for name in TRAIN_FILES]
    test_images, test_labels = _read_batch(batches_dir / TEST_FILE)
    return CifarArrays(
        train_images=np.concatenate([images for images, _ in train]),
        train_labels=np.concatenate([labels for _, labels in train]),
        test_images=test_images,
        test_labels=test_labels,
        class_names=class_names,
    )


def load_cifar10(
    batches_dir: str | Path,
    *,
    num_train: int | None,
    num_test: int | None,
    seed: int,
    image_size: int,
) -> Dataset:
    """CIFAR-10 as a :class:`Dataset` (arguments already validated by ``load_dataset``).

    ``num_train``/``num_test`` of ``None`` take the whole split in file order; a number takes a
    seeded subset with the classes balanced (see :func:`stratified_subset`), so even small runs
    see every class. Images are resized with Lanczos when ``image_size != 32``.

    Raises:
      DataError: a file differs from the official CIFAR-10 (:func:`verify_cifar10`), is
        corrupt, or fewer images are available than requested.
      ConfigError: the requested images would not fit in memory.
    """
    verify_cifar10(batches_dir)
    arrays = read_cifar10(batches_dir)
    train_rng, test_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    counts = {
        split: check_enough(
            requested,
            len(labels),
            f"CIFAR-10 {split} images",
            f"lower num_{split} (--num-{split}) to at most {len(labels)}",
        )
        for split, requested, labels in (
            ("train", num_train, arrays.train_labels),
            ("test", num_test, arrays.test_labels),
        )
    }
    check_fits_in_memory(sum(counts.values()), image_size, options=SIZE_OPTIONS)
    splits = {}
    for split, images, labels, rng in (
        ("train", arrays.train_images, arrays.train_labels, train_rng),
        ("test", arrays.test_images, arrays.test_labels, test_rng),
    ):
        n = counts[split]
        if n < len(labels):
            index = stratified_subset(labels, n, rng, NUM_CLASSES)
            images, labels = images[index], labels[index]
        splits[split] = (uint8_to_float(resize_batch(images, image_size)), labels)
    resized = f", resized to {image_size}x{image_size}" if image_size != SIDE else ""
    return Dataset(
        name="cifar10",
        train_images=splits["train"][0],
        train_labels=splits["train"][1],
        test_images=splits["test"][0],
        test_labels=splits["test"][1],
        class_names=arrays.class_names,
        description=(
            f"CIFAR-10 (real data from {batches_dir}): {len(splits['train'][1])} of "
            f"{len(arrays.train_labels)} train / {len(splits['test'][1])} of "
            f"{len(arrays.test_labels)} test images{resized}"
        ),
        is_standin=False,
    )


def verify_cifar10(batches_dir: str | Path) -> None:
    """Check every file of ``batches_dir`` against the official MD5 (``CIFAR10_FILE_MD5``).

    A directory with the right file names and format but other content (a fake, a subset, a
    modified copy) must not be labelled "CIFAR-10 (real data)" in a report.

    Raises:
      DataError: a file is missing, unreadable or has another MD5; the message names it.
    """
    batches_dir = Path(batches_dir)
    for name, expected in CIFAR10_FILE_MD5.items():
        path = batches_dir / name
        if not path.is_file():
            raise DataError(f"CIFAR-10 file {path} is missing{_redownload(path)}")
        actual = file_md5(path)
        if actual != expected:
            raise DataError(
                f"{path} is not the official CIFAR-10 file: MD5 {actual}, expected {expected}"
                f"{_redownload(path)}"
            )


def _read_meta(path: Path) -> tuple[str, ...]:
    meta = _unpickle(path)
    names = meta.get(b"label_names") if isinstance(meta, dict) else None
    if not isinstance(names, list) or len(names) != NUM_CLASSES:
        raise DataError(
            f"{path} is not a CIFAR-10 batches.meta: expected a dict whose b'label_names' is a "
            f"list of {NUM_CLASSES} names{_redownload(path)}"
        )
    try:
        return tuple(n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names)
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: class names are not valid UTF-8{_redownload(path)}") from exc


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    batch = _unpickle(path)
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        found = sorted(map(repr, batch)) if isinstance(batch, dict) else type(batch).__name__
        raise DataError(
            f"{path} is not a CIFAR-10 batch: expected a dict with keys b'data' and b'labels'; "
            f"got {found}{_redownload(path)}"
        )
    data = batch[b"data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
        what = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data)
        raise DataError(f"{path}: b'data' must be a 2-D uint8 array; got {what}{_redownload(path)}")
    if data.shape[1] != 3 * SIDE * SIDE or data.shape[0] == 0:
        raise DataError(
            f"{path}: b'data' must have shape (N, {3 * SIDE * SIDE}) with N > 0 (32x32 RGB "
            f"rows); got {data.shape}{_redownload(path)}"
        )
    labels = _labels(path, batch[b"labels"], len(data))
    images = data.reshape(-1, 3, SIDE, SIDE).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels


def _labels(path: Path, raw: Any, n: int) -> np.ndarray:
    try:
        labels = np.asarray(raw)
    except ValueError as exc:
        raise DataError(f"{path}: b'labels' is not a list of ints{_redownload(path)}") from exc
    if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(
            f"{path}: b'labels' must be {n} ints (one per image); got {labels.dtype} "
            f"{labels.shape}{_redownload(path)}"
        )
    if n and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise DataError(
            f"{path}: labels must lie in [0, {NUM_CLASSES}); got [{labels.min()}, "
            f"{labels.max()}]{_redownload(path)}"
        )
    return labels.astype(np.int32)


# The globals a pickled NumPy array needs; real CIFAR-10 files (NumPy 1.x, Python 2) name the
# reconstructor under ``numpy.core``, files written by NumPy 2 under ``numpy._core``.
_RECONSTRUCT = np.zeros(1).__reduce__()[0]
_SCALAR = np.uint8(0).__reduce__()[0]
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy.core.multiarray", "scalar"): _SCALAR,
    ("numpy._core.multiarray", "scalar"): _SCALAR,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    # Python 3 writes bytes as _codecs.encode(str, "latin1") under pickle protocol 2.
    ("_codecs", "encode"): codecs.encode,
}


class _RefusedGlobalError(pickle.UnpicklingError):
    pass


class _ArrayOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise _RefusedGlobalError(
                f"refusing to load global {module}.{name}: a CIFAR-10 batch holds only "
                "NumPy arrays, lists, bytes and ints"
            ) from None


def _unpickle(path: Path) -> Any:
    if not path.is_file():
        raise DataError(f"CIFAR-10 file {path} is missing{_redownload(path)}")
    try:
        with path.open("rb") as f:
            return _ArrayOnlyUnpickler(f, encoding="bytes").load()
    except OSError as exc:
        raise DataError(f"cannot read CIFAR-10 file {path}: {exc}") from exc
    except _RefusedGlobalError as exc:
        raise DataError(f"{path} is not a CIFAR-10 file: {exc}{_redownload(path)}") from exc
    # A corrupt pickle can fail with almost any exception type, depending on where the damage is.
    except Exception as exc:
        raise DataError(
            f"CIFAR-10 file {path} is corrupt ({type(exc).__name__}: {exc}){_redownload(path)}"
        ) from exc


def _redownload(path: Path) -> str:
    return (
        f"; replace {path.parent} with a fresh copy of the CIFAR-10 python version "
        "(e.g. move it away and call load_dataset('cifar10', download=True))"
    )
