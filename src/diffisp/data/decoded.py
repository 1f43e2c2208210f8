"""A training set's images decoded once into ``.npy`` shards on disk, then read at memory speed.

Decoding is what makes a streamed epoch slow: a 32x32 PNG costs about 0.2 ms in Pillow, mostly
under the GIL, so on two cores decoding while training runs at about half the in-memory speed.
A :class:`DecodedCache` pays it once: every training image is decoded (resized, cropped or
letterboxed exactly as the in-memory loaders do) in worker processes and written into shards of
at most :data:`SHARD_BYTES` of float32; an epoch then reads its chunks from the memory-mapped
shards (the operating system's page cache keeps a set that fits; a larger one is read from
disk, a few KB per image). Each chunk maps the shards only while it gathers its rows, so the
process never holds more than one chunk of images whatever the set's size.

Storage is exact. A shard whose decoded values are all ``k / 255`` (8-bit files kept at their
size: nothing resized) is stored as uint8 and turned back into the very same float32 values
through a 256-entry table (on the device: a quarter of the bytes to move); any other shard
(resized or 16-bit images) is stored as float32. Training from the cache gives the in-memory
run's losses to the last bit.

The cache's folder is named after a SHA-256 of the decoding recipe (how images are fitted to
the side, the side, the pixel limit, this format's version) and of every file's path, size and
modification time: a changed, added or removed file gives another folder, so a stale cache is
never read (old folders are left for the user to delete). Every shard is written atomically,
and the manifest last: a build that is interrupted resumes from the shards it finished; a
damaged or missing shard is decoded again.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from subprocess import PIPE
from typing import Literal

import numpy as np

from diffisp.data._common import log_to_stderr
from diffisp.data.boxes import letterbox_image
from diffisp.data.images import DEFAULT_MAX_PIXELS, load_image
from diffisp.errors import DataError
from diffisp.util.io import atomic_write_bytes, atomic_write_json

CACHE_FORMAT = 1
MANIFEST = "manifest.json"
# Images per shard: at most this many bytes of float32 (a worker holds one shard while it
# decodes), and at most MAX_SHARD_IMAGES so that a small set still spreads over the workers.
SHARD_BYTES = 64 * 2**20
MAX_SHARD_IMAGES = 1024
# k / 255 exactly as the image readers compute it (float32 division).
EIGHT_BIT_VALUES = np.arange(256, dtype=np.float32) / np.float32(255)

Fit = Literal["crop", "letterbox"]


@dataclass(frozen=True)
class DecodeRecipe:
    """How a file becomes a training image: ``fit`` "crop" (short side to ``image_size``,
    centre square: :func:`~diffisp.data.images.load_image`, the classification folders) or
    "letterbox" (the whole image scaled into the square and padded:
    :func:`~diffisp.data.boxes.letterbox_image`, the detection sets)."""

    fit: Fit
    image_size: int
    max_pixels: int = DEFAULT_MAX_PIXELS

    def decode(self, path: str | Path) -> tuple[np.ndarray, tuple[int, int]]:
        """``(image (S, S, 3) float32, (width, height) of the decoded file)``; the file's size
        is only known (and only needed: box coordinates) when letterboxing, else ``(0, 0)``."""
        if self.fit == "crop":
            return load_image(path, self.image_size, max_pixels=self.max_pixels), (0, 0)
        pixels = load_image(path, max_pixels=self.max_pixels)
        image, _ = letterbox_image(pixels, self.image_size)
        return image, (pixels.shape[1], pixels.shape[0])


def shard_images(image_size: int) -> int:
    """Images per shard for ``image_size``-pixel images (see :data:`SHARD_BYTES`)."""
    return max(1, min(MAX_SHARD_IMAGES, SHARD_BYTES // (image_size * image_size * 3 * 4)))


def cache_key(recipe: DecodeRecipe, files: Sequence[str | Path]) -> str:
    """SHA-256 hex of the recipe, this format and every file's path, size and mtime.

    Raises:
      DataError: a file cannot be read (named).
    """
    digest = hashlib.sha256(
        json.dumps([CACHE_FORMAT, recipe.fit, recipe.image_size, recipe.max_pixels]).encode()
    )
    for file in files:
        try:
            stat = os.stat(file)
        except OSError as exc:
            raise DataError(f"cannot read image {file}: {exc.strerror or exc}") from None
        digest.update(f"{os.fspath(file)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


class DecodedCache:
    """The decoded images of a list of files, in that order (see the module docstring).

    ``len(cache)`` images of ``image_size``; ``sizes`` ``(N, 2)`` int32, each file's decoded
    ``(width, height)`` (zeros for the "crop" recipe). Open one with :func:`decoded_cache`.
    """

    def __init__(self, directory: Path, manifest: dict) -> None:
        self.directory = directory
        self.count = int(manifest["count"])
        self.image_size = int(manifest["image_size"])
        self.per_shard = int(manifest["shard_images"])
        self.dtypes = tuple(np.dtype(d) for d in manifest["dtypes"])
        # Where each shard's rows start (after its .npy header).
        self.offsets = tuple(_load(self._path(s)).offset for s in range(len(self.dtypes)))
        self.sizes = np.concatenate(
            [_load(self._path(s, "sizes"), mmap=False) for s in range(len(self.dtypes))]
        )
        if self.sizes.shape != (self.count, 2):
            raise DataError(f"decoded cache {directory}: its sizes do not match its manifest")

    def __len__(self) -> int:
        return self.count

    @property
    def exact_uint8(self) -> bool:
        """Every shard is uint8: :meth:`read` gives uint8 (see :data:`EIGHT_BIT_VALUES`)."""
        return all(d == np.uint8 for d in self.dtypes)

    def _path(self, shard: int, what: str = "images") -> Path:
        return self.directory / f"{what}-{shard:05d}.npy"

    def read(self, indices: np.ndarray) -> np.ndarray:
        """Images ``indices`` ``(K,)``, in that order: ``(K, S, S, 3)`` uint8 when
        :attr:`exact_uint8` (the values ``EIGHT_BIT_VALUES[u8]``), else float32.

        Each row is read with one ``preadv`` into its place: no mapping per chunk (a fresh
        mapping faults on every row) and nothing of the shards stays mapped, so resident memory
        holds this chunk only.

        Raises:
          DataError: an index out of range, or a shard missing or damaged (named).
        """
        indices = np.asarray(indices, np.int64)
        if indices.size and (indices.min() < 0 or indices.max() >= self.count):
            raise DataError(f"image index out of range for a cache of {self.count} images")
        dtype = np.uint8 if self.exact_uint8 else np.float32
        side = self.image_size
        out = np.empty((len(indices), side, side, 3), dtype)
        shard_of, row_of = np.divmod(indices, self.per_shard)
        for shard in np.unique(shard_of).tolist():
            where = np.flatnonzero(shard_of == shard)
            if self.dtypes[shard] == dtype:
                self._read_rows(shard, row_of[where], [out[i] for i in where.tolist()])
            else:  # an 8-bit shard in a set that is not all 8-bit
                codes = np.empty((len(where), side, side, 3), np.uint8)
                self._read_rows(shard, row_of[where], list(codes))
                out[where] = EIGHT_BIT_VALUES[codes]
        return out

    def _read_rows(self, shard: int, rows: np.ndarray, buffers: list[np.ndarray]) -> None:
        path = self._path(shard)
        size = self.image_size * self.image_size * 3 * self.dtypes[shard].itemsize
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError as exc:
            raise DataError(f"decoded cache shard {path} cannot be read: {exc.strerror}") from None
        try:
            for buffer, row in zip(buffers, rows.tolist(), strict=True):
                if os.preadv(fd, [buffer], self.offsets[shard] + row * size) != size:
                    raise DataError(f"decoded cache shard {path} is shorter than its manifest")
        except OSError as exc:
            raise DataError(f"decoded cache shard {path} cannot be read: {exc}") from None
        finally:
            os.close(fd)

    def stream(self, shares: Sequence[np.ndarray], prefetch: int = 1) -> Iterator[np.ndarray]:
        """:meth:`read` of every array of ``shares``, in order, the next ``prefetch`` read on a
        background thread while the current one is used."""
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="diffisp-cache") as pool:
            pending = [pool.submit(self.read, s) for s in shares[: prefetch + 1]]
            for position in range(len(shares)):
                images = pending.pop(0).result()
                if position + prefetch + 1 < len(shares):
                    pending.append(pool.submit(self.read, shares[position + prefetch + 1]))
                yield images


def decoded_cache(
    files: Sequence[str | Path],
    recipe: DecodeRecipe,
    root: str | Path,
    *,
    workers: int | None = None,
    log: Callable[[str], None] = log_to_stderr,
) -> DecodedCache:
    """The :class:`DecodedCache` of ``files`` under ``root``, decoding what is not there yet.

    Args:
      files: the image files, in the order their images are numbered.
      recipe: how each file is decoded and fitted to the side.
      root: the folder holding caches (one sub-folder per key, :func:`cache_key`).
      workers: decoding processes (default: the CPUs this process may use); 1 decodes here.
      log: where the build says what it does and how long it took (nothing when reused).

    Raises:
      DataError: no files; a file missing, corrupt or above the pixel limit (named).
    """
    if not len(files):
        raise DataError("there are no images to decode into a cache")
    key = cache_key(recipe, files)
    directory = Path(root).expanduser() / key[:32]
    manifest_path = directory / MANIFEST
    if manifest_path.is_file():
        try:
            return DecodedCache(directory, _read_manifest(manifest_path, key, len(files)))
        except DataError as exc:
            log(f"decoded cache {directory} is damaged ({exc}); decoding again")
    per_shard = shard_images(recipe.image_size)
    shards = [list(map(str, files[i : i + per_shard])) for i in range(0, len(files), per_shard)]
    dtypes: list[str | None] = [_finished(directory, s, len(f)) for s, f in enumerate(shards)]
    todo = [s for s, d in enumerate(dtypes) if d is None]
    if todo:
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DataError(
                f"cannot create the decoded cache {directory}: {exc.strerror or exc} (choose "
                "another folder with --stream-cache DIR)"
            ) from None
        workers = min(len(todo), workers or len(os.sched_getaffinity(0)))
        log(
            f"decoding {sum(len(shards[s]) for s in todo):,} training images into {directory} "
            f"({workers} process{'es' if workers > 1 else ''}; once: later runs read them)"
        )
        started = time.perf_counter()
        tasks = [(recipe, shards[s], str(directory), s) for s in todo]
        done = _decode_in_processes(tasks, workers) if workers > 1 else map(_decode_shard, tasks)
        for shard, dtype in done:
            dtypes[shard] = dtype
        log(f"decoded in {time.perf_counter() - started:.1f} s")
    manifest = {
        "format": CACHE_FORMAT,
        "key": key,
        "count": len(files),
        "image_size": recipe.image_size,
        "fit": recipe.fit,
        "shard_images": per_shard,
        "dtypes": dtypes,
    }
    atomic_write_json(manifest_path, manifest)
    return DecodedCache(directory, manifest)


ERROR_PREFIX = "diffisp.DataError: "  # how a worker reports a DataError on stderr


def _decode_in_processes(
    tasks: list[tuple[DecodeRecipe, list[str], str, int]], workers: int
) -> list[tuple[int, str]]:
    """:func:`_decode_shard` of every task, the tasks dealt over ``workers`` fresh Python
    processes (``python -m diffisp.data._decode_worker``). Not multiprocessing: its spawned
    workers import the caller's ``__main__`` again (a script without a main guard would run
    twice), and a fork would copy the parent's JAX threads.

    Raises:
      DataError: a worker failed (its error: a corrupt file is named).
    """
    with tempfile.TemporaryDirectory(prefix="diffisp-decode-") as tmp:
        running = []
        for k in range(workers):
            request = Path(tmp) / f"tasks-{k}.json"
            mine = [
                (r.fit, r.image_size, r.max_pixels, f, d, s) for r, f, d, s in tasks[k::workers]
            ]
            request.write_text(json.dumps(mine))
            command = [sys.executable, "-m", "diffisp.data._decode_worker", str(request)]
            running.append(subprocess.Popen(command, stdout=PIPE, stderr=PIPE, text=True))
        done, failure = [], None
        for process in running:
            out, err = process.communicate()
            if process.returncode and failure is None:
                last = err.strip().splitlines()[-1] if err.strip() else "no message"
                failure = (
                    last.removeprefix(ERROR_PREFIX)
                    if last.startswith(ERROR_PREFIX)
                    else f"a decoding process exited with status {process.returncode}: {last}"
                )
                for other in running:
                    other.kill()
            elif not process.returncode:
                done += [tuple(pair) for pair in json.loads(out)]
    if failure is not None:
        raise DataError(failure)
    return done


def _decode_shard(task: tuple[DecodeRecipe, list[str], str, int]) -> tuple[int, str]:
    """Decode one shard's files and write its images and sizes (run in a worker process)."""
    recipe, files, directory, shard = task
    side = recipe.image_size
    images = np.empty((len(files), side, side, 3), np.float32)
    sizes = np.empty((len(files), 2), np.int32)
    for i, file in enumerate(files):
        images[i], sizes[i] = recipe.decode(file)
    codes = np.rint(images * 255).astype(np.uint8)
    exact = np.array_equal(EIGHT_BIT_VALUES[codes], images)
    stored = codes if exact else images
    # Sizes first: a shard whose images file exists is complete (see _finished).
    try:
        _save(Path(directory) / f"sizes-{shard:05d}.npy", sizes)
        _save(Path(directory) / f"images-{shard:05d}.npy", stored)
    except OSError as exc:  # a full disk, a folder made read-only meanwhile
        raise DataError(
            f"cannot write the decoded cache {directory}: {exc} (free space, or choose "
            "another folder with --stream-cache DIR)"
        ) from None
    return shard, stored.dtype.name


def _save(path: Path, array: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    atomic_write_bytes(path, buffer.getvalue())


def _load(path: Path, mmap: bool = True) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"decoded cache file {path} cannot be read: {exc}") from exc


def _finished(directory: Path, shard: int, count: int) -> str | None:
    """The stored dtype of a shard an earlier (maybe interrupted) build wrote whole, or None."""
    try:
        images = _load(directory / f"images-{shard:05d}.npy")
        sizes = _load(directory / f"sizes-{shard:05d}.npy", mmap=False)
    except DataError:
        return None
    if (
        images.shape[0] != count
        or sizes.shape != (count, 2)
        or images.dtype.name
        not in (
            "uint8",
            "float32",
        )
    ):
        return None
    return images.dtype.name


def _read_manifest(path: Path, key: str, count: int) -> dict:
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"unreadable manifest: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != CACHE_FORMAT:
        raise DataError("another cache format")
    if manifest.get("key") != key or manifest.get("count") != count:
        raise DataError("its manifest is for other files")
    shards = math.ceil(count / int(manifest["shard_images"]))
    dtypes = manifest.get("dtypes")
    if not isinstance(dtypes, list) or len(dtypes) != shards:
        raise DataError("its manifest lists the wrong number of shards")
    for shard, dtype in enumerate(dtypes):
        expected = min(int(manifest["shard_images"]), count - shard * manifest["shard_images"])
        if _finished(path.parent, shard, expected) != dtype:
            raise DataError(f"shard {shard} is missing or damaged")
    return manifest
