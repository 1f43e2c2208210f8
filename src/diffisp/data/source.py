"""One epoch source: a training set as a sequence of device-resident chunks.

Training reads its images through one interface whatever holds them. An epoch is an order of
the images (drawn on the host), cut into chunks of ``chunk_size`` images; a source turns each
chunk of image numbers into a :class:`Chunk` on the device: the clean images, their captures
(when asked for) and their targets, with the positions to visit. An in-memory set is one chunk
(the whole arrays, visited in the epoch's order: nothing is copied); a streamed folder
(:class:`~diffisp.data.stream.StreamedSource`) decodes each chunk while the previous one trains.

Captures come from :func:`diffisp.capture.base.capture` with one key per image, so an image has
the same capture in memory, streamed or on any host.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np

from diffisp.capture.base import Captured, CaptureModel, capture
from diffisp.data._common import log_to_stderr
from diffisp.errors import ConfigError, DataError


@dataclass(frozen=True)
class Chunk:
    """Training images on the device: ``clean`` ``(K, S, S, 3)``, ``captured`` (their captures;
    ``None`` when not asked for), ``targets`` (a pytree with leading axis K) and ``order``
    ``(L,)`` int32, the positions in the chunk to visit, in order (``L`` a whole number of
    batches). ``host_local``: the arrays are this host's slice of a global chunk (multi-host
    streaming); the trainer joins the hosts' slices, and ``order`` indexes the joined chunk."""

    clean: jax.Array
    captured: Captured | None
    targets: Any
    order: jax.Array
    host_local: bool = False


class EpochSource(Protocol):
    """A training set that training reads chunk by chunk (see the module docstring)."""

    #: Images per chunk (``None``: the whole set is one chunk).
    chunk_size: int | None
    #: Processes that each read their slice of every chunk (1: one host reads everything).
    process_count: int

    def __len__(self) -> int: ...

    def chunks(self, plan: Sequence[np.ndarray], *, captured: bool) -> Iterator[Chunk]:
        """One :class:`Chunk` per array of global image numbers of ``plan``, in order."""
        ...

    def head(self, count: int, *, captured: bool) -> Captured:
        """The first ``count`` images (by image number), clean or captured: the images batch
        norm is re-estimated on, and the warm-up's clean statistics come from."""
        ...


class InMemorySource:
    """A training set held on the device: clean images, their captures and targets.

    Captures are made once, at construction, with :func:`~diffisp.capture.base.capture` (image
    ``i`` from ``fold_in(capture_key, i)``)."""

    chunk_size = None
    process_count = 1

    def __init__(
        self, clean: Any, targets: Any, model: CaptureModel, capture_key: jax.Array
    ) -> None:
        self.clean = jnp.asarray(clean, jnp.float32)
        if self.clean.ndim != 4 or not self.clean.shape[0]:
            raise DataError(f"a training set must be (N, S, S, 3) images; got {self.clean.shape}")
        self.targets = jax.tree.map(jnp.asarray, targets)
        self.captured, self.conditions = capture(model, capture_key, self.clean)

    def __len__(self) -> int:
        return int(self.clean.shape[0])

    def with_targets(self, targets: Any) -> InMemorySource:
        """The same images and captures with other targets (e.g. a frozen model's outputs on
        the clean images, for a label-free loss)."""
        out = copy.copy(self)  # shares the device arrays: nothing is captured again
        out.targets = jax.tree.map(jnp.asarray, targets)
        if jax.tree.leaves(out.targets)[0].shape[0] != len(self):
            raise DataError(f"targets must have a leading axis of {len(self)} images")
        return out

    def chunks(self, plan: Sequence[np.ndarray], *, captured: bool) -> Iterator[Chunk]:
        for indices in plan:
            yield Chunk(
                self.clean,
                self.captured if captured else None,
                self.targets,
                jnp.asarray(indices, jnp.int32),
            )

    def head(self, count: int, *, captured: bool) -> Captured:
        images = self.captured if captured else self.clean
        return jax.tree.map(lambda a: a[:count], images)


@dataclass(frozen=True)
class StreamOptions:
    """How a streamed set is read (an in-memory set ignores them): ``chunk_size`` images per
    chunk, ``sample_count`` first images kept in memory (:meth:`EpochSource.head`), this
    host's place among ``process_count``, and where the images come from: ``cache_dir``, the
    folder of decoded caches (:mod:`diffisp.data.decoded`; decoded once there, by worker
    processes, and read from it), or ``None``: decoded from their files while training, on
    ``num_threads`` threads. ``log``: where a cache's build reports."""

    chunk_size: int = 1024
    sample_count: int = 1024
    num_threads: int = 1
    process_index: int = 0
    process_count: int = 1
    cache_dir: str | None = None
    log: Callable[[str], None] = log_to_stderr


class InMemoryTrainSplit:
    """For data sets held in memory (``train_images``, ``test_images`` and
    ``targets(split)``): the training split as the loop reads it, on the device, captured by
    ``model``, and the sizes of the splits."""

    def train_source(
        self, model: CaptureModel, capture_key: jax.Array, options: StreamOptions | None = None
    ) -> InMemorySource:
        del options  # held in memory: nothing to stream
        return InMemorySource(self.train_images, self.targets("train"), model, capture_key)

    @property
    def image_size(self) -> int:
        """Side ``S`` of the square images."""
        return int(self.train_images.shape[1])

    @property
    def num_train(self) -> int:
        return int(self.train_images.shape[0])

    @property
    def num_test(self) -> int:
        return int(self.test_images.shape[0])


# A tag that keeps the epoch orders apart from every other seeded numpy stream.
_ORDER_TAG = 0x5354524D  # "STRM"


def epoch_order(seed: int, phase: int, epoch: int, n: int) -> np.ndarray:
    """``(n,)`` int64: the order of the ``n`` training images in one epoch of one phase, a
    permutation that depends only on ``(seed, phase, epoch)`` (the same on every host)."""
    return np.random.default_rng([_ORDER_TAG, seed, phase, epoch]).permutation(n)


def chunk_plan(
    order: np.ndarray, chunk_size: int | None, batch_size: int, process_count: int = 1
) -> list[np.ndarray]:
    """The global chunks of an epoch: ``order`` cut into pieces of ``chunk_size *
    process_count`` indices (``None``: one piece), the last one shorter; every piece a whole
    number of batches per host. The images past the last whole batch of every host are left
    out of this epoch (each epoch has its own order, so every image is seen).

    Raises:
      DataError: fewer images than one batch per host.
      ConfigError: ``chunk_size`` not a multiple of ``batch_size``.
    """
    unit = batch_size * process_count
    usable = len(order) // unit * unit
    if usable == 0:
        raise DataError(
            f"the training set has {len(order)} images, fewer than one batch of {batch_size} "
            f"on each of {process_count} host(s)"
        )
    if chunk_size is None:
        return [order[:usable]]
    if chunk_size % batch_size:
        raise ConfigError(f"chunk_size {chunk_size} is not a multiple of batch_size {batch_size}")
    step = chunk_size * process_count
    return [order[start : min(start + step, usable)] for start in range(0, usable, step)]
