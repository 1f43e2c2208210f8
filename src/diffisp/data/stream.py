"""Training images read lazily from disk, for data sets larger than memory.

An image folder (``root/<class_name>/*``, the layout of :mod:`diffisp.data.folder`) is split
exactly as :func:`~diffisp.data.folder.load_folder` splits it (same files, same seed), but only
the small test set is decoded up front; the training split stays a list of files
(:class:`FolderSource`) whose records are decoded and resized one at a time, on demand.

:class:`StreamedSource` is the training loop's view of it (an
:class:`~diffisp.data.source.EpochSource`): an epoch visits the training images in an order
drawn on the host (:func:`~diffisp.data.source.epoch_order`), cut into global chunks of
``chunk_size * process_count`` images (:func:`~diffisp.data.source.chunk_plan`): every host
(``jax.process_index()`` of ``jax.process_count()``) takes its own contiguous slice of every
chunk (:func:`host_chunk`), so the hosts' slices are disjoint and together cover the
chunk. :func:`iter_chunks` decodes a host's records on worker threads and keeps the next
chunk(s) decoding in the background while the current one trains; at most
``prefetch_chunks + 1`` chunks of decoded images exist at once, whatever the data set's size.

Why grain and not datarax: datarax (0.1.17) offers eager sources that load everything into
JAX arrays, streaming wrappers for TFDS/Hugging Face iterators, and a memory-mapped ``.npy``
source that needs the whole set converted to one array file first; none reads an image folder
record by record. Its streaming helpers are themselves built on grain. grain's ``MapDataset``
(random access: a lazy ``source[i]`` per record, ``map``) turned into an ``IterDataset`` with
``ReadOptions(num_threads, prefetch_buffer_size)`` is exactly the decode-on-threads-with-
bounded-prefetch we need, with no extra layer; so this module uses grain directly. Threads, not
processes: decoding (Pillow, libpng) releases the GIL, and records need no pickling.

Where the training images come from (``StreamOptions.cache_dir``): by default a decoded cache
(:mod:`diffisp.data.decoded`: every image decoded once, by worker processes, into ``.npy``
shards, then read from them at memory speed); without one, the grain pipeline above decodes
them from their files while training. COCO/VOC sets stream through the same
:class:`StreamedSource` (:mod:`diffisp.data.detection_stream`); RAW files are not streamed yet.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import grain
import jax
import jax.numpy as jnp
import numpy as np

from diffisp.capture.base import CaptureModel, capture
from diffisp.data._common import check_image_size
from diffisp.data.decoded import EIGHT_BIT_VALUES, DecodeRecipe, decoded_cache
from diffisp.data.folder import (
    DEFAULT_TEST_FRACTION,
    choose_files,
    load_images_with_sources,
)
from diffisp.data.images import DEFAULT_MAX_PIXELS, load_image
from diffisp.data.source import Chunk, StreamOptions
from diffisp.errors import ConfigError, DataError


class FolderSource:
    """Random access to image files: ``source[i]`` decodes file ``i`` (resized and
    centre-cropped to ``image_size`` as :func:`~diffisp.data.images.load_image` does) and gives
    ``(image (S, S, 3) float32 in [0, 1], label int32)``. Nothing is read before it is asked
    for; a corrupt file raises :class:`DataError` naming it when it is read. :meth:`stream`
    decodes on ``num_threads`` threads."""

    def __init__(
        self, files: Sequence[Path], labels: np.ndarray, image_size: int, num_threads: int = 1
    ) -> None:
        if len(files) != len(labels):
            raise DataError(f"{len(files)} files but {len(labels)} labels")
        if not len(files):
            raise DataError("the streamed training set is empty")
        self.files = tuple(Path(f) for f in files)
        self.labels = np.asarray(labels, np.int32)
        self.image_size = check_image_size(image_size)
        self.num_threads = num_threads

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.int32]:
        image = load_image(self.files[index], self.image_size, max_pixels=DEFAULT_MAX_PIXELS)
        return image, self.labels[index]

    def read(self, indices: Sequence[int]) -> np.ndarray:
        """Images ``indices`` decoded at once, ``(K, S, S, 3)`` float32 (a bounded sample)."""
        return read_records(self, indices)[0]

    def stream(self, shares: Sequence[np.ndarray]) -> Iterator[np.ndarray]:
        """The images of every array of ``shares``, in order, decoded on ``num_threads``
        threads while the previous one is used (:func:`iter_chunks`)."""
        for chunk in iter_chunks(self, shares, num_threads=self.num_threads):
            yield chunk.images


@dataclass(frozen=True)
class StreamedFolder:
    """An image folder split like :func:`~diffisp.data.folder.load_folder`: the training split
    as a lazy :class:`FolderSource`, the test split decoded in memory.

    ``test_images`` ``(M, S, S, 3)`` float32, ``test_labels`` ``(M,)`` int32."""

    name: str
    description: str
    root: str
    class_names: tuple[str, ...]
    train: FolderSource
    test_images: np.ndarray
    test_labels: np.ndarray
    is_standin: bool = False

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def num_train(self) -> int:
        return len(self.train)

    @property
    def image_size(self) -> int:
        return self.train.image_size

    def targets(self, split: str) -> np.ndarray:
        if split != "test":
            raise DataError("a streamed training set's targets come with its chunks")
        return self.test_labels

    def train_source(
        self, model: CaptureModel, capture_key: jax.Array, options: StreamOptions | None = None
    ) -> StreamedSource:
        """The training split as the loop reads it: streamed from disk, captured by ``model``."""
        options = StreamOptions() if options is None else options
        train = self.train
        images: ImageRecords
        if options.cache_dir is not None:
            recipe = DecodeRecipe("crop", self.image_size)
            images = decoded_cache(train.files, recipe, options.cache_dir, log=options.log)
        else:
            images = FolderSource(train.files, train.labels, train.image_size, options.num_threads)
        return StreamedSource(images, train.labels, model, capture_key, options)


def stream_folder(
    root: str | Path,
    *,
    num_train: int | None = None,
    num_test: int | None = None,
    seed: int = 0,
    image_size: int = 32,
    test_fraction: float = DEFAULT_TEST_FRACTION,
    up_to: Collection[str] = (),
) -> StreamedFolder:
    """``root/<class_name>/*`` as a :class:`StreamedFolder`.

    The split and the subsets are :func:`~diffisp.data.folder.load_folder`'s (the same random
    streams from ``seed``): ``stream_folder(...).train[i]`` is image ``i`` of
    ``load_folder(...)`` with the same arguments. Only the ``num_test`` test images are decoded
    here; the files are listed (names only) to split them. ``up_to``: as ``load_folder``'s.

    Raises:
      DataError: as :func:`~diffisp.data.folder.load_folder` (layout, too few images); a corrupt
        test image (named). Corrupt training images are found when they are read.
    """
    image_size = check_image_size(image_size)
    root, names, chosen = choose_files(
        root,
        num_train=num_train,
        num_test=num_test,
        seed=seed,
        test_fraction=test_fraction,
        up_to=up_to,
    )
    test_images, _ = load_images_with_sources(root, chosen["test"][0], image_size)
    train = FolderSource(*chosen["train"], image_size)
    return StreamedFolder(
        name=f"folder:{root}",
        description=(
            f"user images from {root}: {len(names)} classes, {len(train)} train (streamed from "
            f"disk) / {len(test_images)} test (seeded stratified split, test_fraction="
            f"{test_fraction:g}), resized and centre-cropped to {image_size}x{image_size}"
        ),
        root=str(root),
        class_names=names,
        train=train,
        test_images=test_images,
        test_labels=chosen["test"][1],
    )


def host_chunk(
    global_chunk: np.ndarray, process_index: int = 0, process_count: int = 1
) -> np.ndarray:
    """This host's contiguous share of a global chunk of indices (its length must divide by
    ``process_count``)."""
    if not 0 <= process_index < process_count:
        raise ConfigError(f"process_index {process_index} is not in [0, {process_count})")
    if len(global_chunk) % process_count:
        raise ConfigError(f"a chunk of {len(global_chunk)} does not split over {process_count}")
    share = len(global_chunk) // process_count
    return global_chunk[process_index * share : (process_index + 1) * share]


@dataclass(frozen=True)
class HostChunk:
    """One host's share of a global chunk: ``indices`` ``(K,)`` int64 into the source (the
    images' global numbers), ``images`` ``(K, S, S, 3)`` float32, ``labels`` ``(K,)`` int32."""

    indices: np.ndarray
    images: np.ndarray
    labels: np.ndarray


def iter_chunks(
    source: FolderSource,
    chunks: Sequence[np.ndarray],
    *,
    process_index: int = 0,
    process_count: int = 1,
    num_threads: int = 2,
    prefetch_chunks: int = 1,
    group: int = 32,
) -> Iterator[HostChunk]:
    """Decode this host's share of every global chunk, in order, on ``num_threads`` threads
    with up to ``prefetch_chunks`` further chunks decoding in the background.

    A worker decodes ``group`` records at a time: with small images the per-element cost of
    the pipeline, not the decoding, was the limit (32x32 PNGs on 2 cores: 2,400 img/s one
    record per element, 3,600 with 32, one thread each).

    Raises:
      DataError: a record cannot be read (the message names the file).
    """
    shares = [host_chunk(c, process_index, process_count) for c in chunks]
    pieces = [share[i : i + group] for share in shares for i in range(0, len(share), group)]
    if not pieces:
        return
    per_chunk = max(math.ceil(len(share) / group) for share in shares)
    options = grain.ReadOptions(
        num_threads=max(1, num_threads),
        prefetch_buffer_size=max(1, prefetch_chunks) * per_chunk,
    )
    decoded = grain.MapDataset.source(pieces).map(partial(_decode_group, source))
    iterator = iter(decoded.to_iter_dataset(options))
    for share in shares:
        got = [next(iterator) for _ in range(math.ceil(len(share) / group))]
        yield HostChunk(
            indices=np.concatenate([g[0] for g in got]),
            images=np.concatenate([g[1] for g in got]),
            labels=np.concatenate([g[2] for g in got]),
        )


def _decode_group(
    source: FolderSource, indices: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    records = [source[int(i)] for i in indices]
    images = np.stack([r[0] for r in records])
    return np.asarray(indices, np.int64), images, np.asarray([r[1] for r in records], np.int32)


def read_records(source: FolderSource, indices: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Records ``indices`` decoded at once (a bounded sample: batch-norm, statistics)."""
    chunk = next(iter_chunks(source, [np.asarray(indices, np.int64)], prefetch_chunks=1))
    return chunk.images, chunk.labels


class ImageRecords(Protocol):
    """Training images read by number: decoded from their files (:class:`FolderSource`) or
    from a decoded cache (:class:`~diffisp.data.decoded.DecodedCache`)."""

    def __len__(self) -> int: ...

    def read(self, indices: Sequence[int]) -> np.ndarray:
        """``(K, S, S, 3)`` images: float32, or uint8 codes of ``EIGHT_BIT_VALUES``."""
        ...

    def stream(self, shares: Sequence[np.ndarray]) -> Iterator[np.ndarray]:
        """:meth:`read` of every array of ``shares``, in order, prefetching the next."""
        ...


@jax.jit
def _as_float(codes: jax.Array) -> jax.Array:
    return jnp.asarray(EIGHT_BIT_VALUES)[codes]


def device_images(images: np.ndarray) -> jax.Array:
    """Images on the device as float32: uint8 codes become the exact values the image readers
    give (a table, not a division, so no platform can round them differently)."""
    return _as_float(jnp.asarray(images)) if images.dtype == np.uint8 else jnp.asarray(images)


class StreamedSource:
    """A streamed training set as an :class:`~diffisp.data.source.EpochSource`.

    ``images`` are read chunk by chunk (the next one while the current one trains), this
    host's share of each, and captured on the device with one key per image number
    (:func:`~diffisp.capture.base.capture`), so every image gets the capture it gets in memory.
    ``targets`` (a pytree of host arrays with a leading axis of N: labels, padded boxes) are
    small and stay in memory. The first ``options.sample_count`` images stay in memory, clean
    and captured: :meth:`head`'s images (batch-norm re-estimation, the warm-up's statistics).
    """

    def __init__(
        self,
        images: ImageRecords,
        targets: Any,
        model: CaptureModel,
        capture_key: jax.Array,
        options: StreamOptions,
    ) -> None:
        self.images = images
        self.targets = jax.tree.map(np.asarray, targets)
        if jax.tree.leaves(self.targets)[0].shape[0] != len(images):
            raise DataError(f"targets must have a leading axis of {len(images)} images")
        self.model = model
        self.capture_key = capture_key
        self.chunk_size = options.chunk_size
        self.options = options
        self.process_count = options.process_count
        count = min(len(images), options.sample_count)
        self.sample_clean = device_images(images.read(np.arange(count)))
        self.sample_captured, _ = capture(model, capture_key, self.sample_clean)

    def __len__(self) -> int:
        return len(self.images)

    def chunks(self, plan: Sequence[np.ndarray], *, captured: bool) -> Iterator[Chunk]:
        where = self.options.process_index, self.process_count
        shares = [host_chunk(c, *where) for c in plan]
        for share, host_images in zip(shares, self.images.stream(shares), strict=True):
            clean = device_images(host_images)
            images = capture(self.model, self.capture_key, clean, share)[0] if captured else None
            yield Chunk(
                clean,
                images,
                jax.tree.map(lambda a, s=share: jnp.asarray(a[s]), self.targets),
                # Into the chunk the hosts' slices join to, not this host's slice.
                jnp.arange(clean.shape[0] * self.process_count, dtype=jnp.int32),
                host_local=self.process_count > 1,
            )

    def head(self, count: int, *, captured: bool) -> Any:
        # As in memory, asking for more than the whole set gives the whole set.
        if count > self.sample_clean.shape[0] < len(self):
            raise DataError(
                f"a streamed training set keeps its first {self.sample_clean.shape[0]} images "
                f"in memory; {count} were asked for"
            )
        images = self.sample_captured if captured else self.sample_clean
        return jax.tree.map(lambda a: a[:count], images)
