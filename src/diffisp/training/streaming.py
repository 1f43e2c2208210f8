"""Training on a streamed training set: epochs as a sequence of device-resident chunks.

With ``cfg.stream`` the training images are never all in memory. An epoch's order is drawn on
the host (:func:`diffisp.data.stream.epoch_order`), cut into chunks of
``cfg.stream_chunk_batches`` batches (each host its share, :func:`~diffisp.data.stream.host_chunk`),
and every chunk, decoded on worker threads while the previous one trains, goes through the same
compiled epoch as the in-memory path (:func:`diffisp.training.step.train_one_epoch` with
``order=arange``, the chunk being shuffled already). Its low-light capture is made on the device
with one key per image, ``fold_in(key(seed) / DARKEN_TRAIN, image number)``, so an image gets
the same capture in every epoch, whatever chunk it falls in. (The in-memory path draws one key
for the whole array, so the two paths draw different, equally distributed noise.)

What stays in memory: the test set (``--num-test`` images, clean and captured), and a bounded
sample of the training set (its first ``max(bn_calibration, STREAM_SAMPLE)`` images, the
same images the in-memory path recalibrates batch norm on): batch-norm re-estimation after
each CNN epoch, and the warm-up's clean statistics, use it.

:class:`StreamData` stands in for :class:`~diffisp.training.data.RunData`: its ``train_clean``
and ``train_dark`` are :class:`StreamView` objects, which :func:`train_epoch` (the one epoch
call of the loop, the warm-up and the fine-tuned baselines) streams instead of slicing.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from diffisp.capture.mixed import capture_mixed
from diffisp.capture.raw_capture import num_images
from diffisp.data.stream import (
    FolderSource,
    StreamedFolder,
    chunk_plan,
    epoch_order,
    iter_chunks,
    read_records,
)
from diffisp.errors import ConfigError
from diffisp.models.classifier import recalibrate_batch_norm
from diffisp.models.task import Task
from diffisp.training import keys
from diffisp.training.config import STREAM_SAMPLE, TrainConfig
from diffisp.training.data import Capture, capture_low_light, capture_with_conditions
from diffisp.training.parallel import data_parallel
from diffisp.training.state import Learner, Phase
from diffisp.training.step import train_one_epoch


@partial(jax.jit, static_argnames=("cfg",))
def capture_per_image(base_key: jax.Array, clean: jax.Array, indices: jax.Array, cfg: TrainConfig):
    """The low-light capture of every image of ``clean`` (``(K, S, S, 3)``) with its own key,
    ``fold_in(base_key, indices[k])``: the same image number gets the same capture however the
    images are grouped. Returns images ``(K, S, S, 3)`` or a :class:`RawCapture` of K."""

    def one(index: jax.Array, image: jax.Array) -> Capture:
        key = jax.random.fold_in(base_key, index)
        if cfg.conditions == "mixed":
            out = capture_mixed(key, image[None], cfg.mixed_conditions())[0]
        else:
            out = capture_low_light(key, image[None], cfg)
        return jax.tree.map(lambda a: a[0], out)

    return jax.vmap(one)(indices, clean)


@dataclass
class StreamData:
    """A run's data with a streamed training set (see the module docstring).

    ``source``: the training records; ``sample_*``: its first images, clean, captured and
    their labels; ``test_*``, ``num_classes``, ``test_conditions`` as in ``RunData``.
    ``process_index``/``process_count``: this host's share of every chunk."""

    cfg: TrainConfig
    source: FolderSource
    sample_clean: jax.Array
    sample_dark: Capture
    sample_labels: jax.Array
    test_clean: jax.Array
    test_dark: Capture
    test_labels: Any
    num_classes: int
    test_conditions: dict[str, np.ndarray] | None = None
    process_index: int = 0
    process_count: int = 1

    @property
    def num_train(self) -> int:
        return len(self.source)

    @property
    def raw(self) -> bool:
        return self.cfg.input == "raw"

    @property
    def train_clean(self) -> StreamView:
        return StreamView(self, dark=False)

    @property
    def train_dark(self) -> StreamView:
        return StreamView(self, dark=True)

    @property
    def train_labels(self) -> None:
        return None  # the labels come with the streamed records

    @property
    def capture_key(self) -> jax.Array:
        return jax.random.fold_in(jax.random.key(self.cfg.seed), keys.DARKEN_TRAIN)


@dataclass(frozen=True)
class StreamView:
    """The streamed training images, clean or as their low-light captures."""

    data: StreamData
    dark: bool

    def __len__(self) -> int:
        return self.data.num_train

    def sample(self, count: int) -> Any:
        """The first ``count`` images of the in-memory sample (clean or captured)."""
        images = self.data.sample_dark if self.dark else self.data.sample_clean
        return jax.tree.map(lambda a: a[:count], images)


def prepare_stream_data(
    folder: StreamedFolder,
    cfg: TrainConfig,
    *,
    process_index: int | None = None,
    process_count: int | None = None,
) -> StreamData:
    """The test set and the training sample on the device, the rest left on disk.

    Raises:
      ConfigError: the training set is smaller than one batch per host.
    """
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
    if folder.num_train < cfg.batch_size * process_count:
        raise ConfigError(
            f"the training set has {folder.num_train} images, fewer than one batch "
            f"({cfg.batch_size}) on each of {process_count} host(s)"
        )
    key = jax.random.key(cfg.seed)
    count = min(folder.num_train, max(cfg.bn_calibration, STREAM_SAMPLE))
    sample, sample_labels = read_records(folder.train, range(count))
    sample_clean = jnp.asarray(sample)
    base = jax.random.fold_in(key, keys.DARKEN_TRAIN)
    sample_dark = capture_per_image(base, sample_clean, jnp.arange(count), cfg)
    test_clean = jnp.asarray(folder.test_images, jnp.float32)
    test_dark, test_conditions = capture_with_conditions(
        jax.random.fold_in(key, keys.DARKEN_TEST), test_clean, cfg
    )
    return StreamData(
        cfg=cfg,
        source=folder.train,
        sample_clean=sample_clean,
        sample_dark=sample_dark,
        sample_labels=jnp.asarray(sample_labels),
        test_clean=test_clean,
        test_dark=test_dark,
        test_labels=jnp.asarray(folder.test_labels, jnp.int32),
        num_classes=folder.num_classes,
        test_conditions=test_conditions,
        process_index=process_index,
        process_count=process_count,
    )


def count_images(images: Any) -> int:
    """Images in an array, a RawCapture or a :class:`StreamView`."""
    return len(images) if isinstance(images, StreamView) else num_images(images)


def train_epoch(
    learner: Learner,
    optimizer: nnx.Optimizer,
    phase: Phase,
    images: Any,
    targets: Any,
    *,
    task: Task,
    seed: int,
    epoch: int,
    batch_size: int,
    bn_calibration: int = 0,
    devices: int | None = None,
) -> tuple[Learner, nnx.Optimizer, float, float]:
    """:func:`~diffisp.training.step.train_one_epoch` on device-resident ``images``, or
    :func:`train_streamed_epoch` on a :class:`StreamView` (``targets`` then unused), over
    ``devices`` devices (``None``: all)."""
    run = train_streamed_epoch if isinstance(images, StreamView) else train_one_epoch
    args = () if isinstance(images, StreamView) else (targets,)
    return run(
        learner,
        optimizer,
        phase,
        images,
        *args,
        task=task,
        seed=seed,
        epoch=epoch,
        batch_size=batch_size,
        bn_calibration=bn_calibration,
        devices=devices,
    )


def train_streamed_epoch(
    learner: Learner,
    optimizer: nnx.Optimizer,
    phase: Phase,
    view: StreamView,
    *,
    task: Task,
    seed: int,
    epoch: int,
    batch_size: int,
    bn_calibration: int = 0,
    devices: int | None = None,
) -> tuple[Learner, nnx.Optimizer, float, float]:
    """One epoch of ``phase`` over the streamed training set, chunk by chunk, over
    ``devices`` devices (``None``: all; with several hosts, each reads its slice of every chunk
    and the slices are joined into one global chunk on the mesh).

    Returns what :func:`~diffisp.training.step.train_one_epoch` returns; the loss and score
    are means over all the epoch's steps and images. Batch norm is re-estimated once, at the
    end, on the first ``bn_calibration`` images of the in-memory sample.

    Raises:
      TrainingDivergedError: as ``train_one_epoch``, for any chunk.
      DataError: a training file cannot be read (named).
    """
    data, cfg = view.data, view.data.cfg
    chunk_size = cfg.stream_chunk_batches * batch_size
    order = epoch_order(seed, phase.index * 100_000 + epoch, data.num_train)
    chunks = chunk_plan(order, chunk_size, batch_size, data.process_count)
    loss_sum, score_sum, steps, seen = 0.0, 0.0, 0, 0
    stream = iter_chunks(
        data.source,
        chunks,
        process_index=data.process_index,
        process_count=data.process_count,
        num_threads=cfg.stream_workers,
    )
    for number, chunk in enumerate(stream):
        clean = jnp.asarray(chunk.images)
        images = (
            capture_per_image(data.capture_key, clean, jnp.asarray(chunk.indices), cfg)
            if view.dark
            else clean
        )
        labels = jnp.asarray(chunk.labels)
        if data.process_count > 1:  # each host read its slice: one global chunk from them all
            images, labels = data_parallel(devices).from_hosts((images, labels))
        # Gate samples of an adaptive ISP are drawn from (seed, step): a seed per chunk keeps
        # the chunks' draws apart.
        chunk_seed = int(np.random.SeedSequence([seed, number]).generate_state(1)[0])
        learner, optimizer, loss, score = train_one_epoch(
            learner,
            optimizer,
            phase,
            images,
            labels,
            task=task,
            seed=chunk_seed,
            epoch=epoch,
            batch_size=batch_size,
            bn_calibration=0,
            order=jnp.arange(num_images(images)),
            devices=devices,
        )
        chunk_steps = num_images(images) // batch_size
        loss_sum += loss * chunk_steps
        score_sum += score * chunk_steps * batch_size
        steps += chunk_steps
        seen += chunk_steps * batch_size
    if phase.train_cnn and bn_calibration:
        calibration = phase.inputs(None, view.sample(bn_calibration))
        recalibrate_batch_norm(
            learner.model, calibration, isp=learner.isp if phase.use_isp else None
        )
    learner.model.eval()
    return learner, optimizer, loss_sum / steps, score_sum / seen
