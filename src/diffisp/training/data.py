"""A run's data on the device: the training set as an epoch source, the captured test set.

The captures are what the config's capture model (:meth:`TrainConfig.capture_model`) records:
darkened sRGB images, mixed conditions, or simulated RAW captures (:mod:`diffisp.capture`),
image ``i`` of each split drawn from its own key. Whether the training set is in memory or
streamed from disk is the data set's business (its ``train_source``); training reads both as
an :class:`~diffisp.data.source.EpochSource`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from diffisp.capture.base import Captured, CaptureModel, capture
from diffisp.data.download import default_cache_dir
from diffisp.data.source import EpochSource, StreamOptions
from diffisp.errors import DataError
from diffisp.training import keys
from diffisp.training.config import STREAM_SAMPLE, TrainConfig


@dataclass
class RunData:
    """The training set (``train``, an epoch source), the test set on the device and what
    captured them.

    ``test_clean`` ``(N, H, W, 3)`` float32 in [0, 1]; ``test_dark`` its captures (images of
    the same shape, or a :class:`~diffisp.capture.raw_capture.RawCapture`); ``test_labels``
    the task's targets (any pytree of arrays with a leading axis of N: class indices for
    classification). ``test_conditions``: each test image's recorded capture conditions
    (``(N,)`` host arrays) when the capture model bins them (mixed conditions), to split
    results by condition; ``None`` otherwise.
    """

    train: EpochSource
    test_clean: jax.Array
    test_dark: Captured
    test_labels: Any
    num_classes: int
    capture_model: CaptureModel
    test_conditions: dict[str, np.ndarray] | None = None

    @property
    def num_train(self) -> int:
        return len(self.train)

    @property
    def raw(self) -> bool:
        return bool(self.capture_model.raw)


def capture_test_set(
    model: CaptureModel, key: jax.Array, clean: jax.Array
) -> tuple[Captured, dict[str, np.ndarray] | None]:
    """The test images' captures, and their recorded conditions when ``model`` bins them."""
    captured, conditions = capture(model, key, clean)
    return captured, conditions if model.bins(conditions) is not None else None


def stream_cache_dir(setting: str) -> str | None:
    """The folder of decoded caches a ``stream_cache`` setting names (``None``: "off")."""
    if setting == "off":
        return None
    if setting == "auto":
        return str(default_cache_dir() / "decoded")
    return str(Path(setting).expanduser())


def prepare_data(
    dataset: Any,
    cfg: TrainConfig,
    *,
    process_index: int | None = None,
    process_count: int | None = None,
) -> RunData:
    """Capture the data set deterministically from ``cfg.seed`` and put it on the device
    (the training set as its ``train_source`` gives it: in memory, or streamed in chunks of
    ``stream_chunk_batches`` batches, this host's share of each).

    Raises:
      DataError: the training set is smaller than one batch per host.
    """
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
    if dataset.num_train < cfg.optim.batch_size * process_count:
        raise DataError(
            f"the training set has {dataset.num_train} images, fewer than one batch "
            f"({cfg.optim.batch_size}) on each of {process_count} host(s)"
        )
    model = cfg.capture.model()
    key = jax.random.key(cfg.seed)
    options = StreamOptions(
        chunk_size=cfg.data.stream_chunk_batches * cfg.optim.batch_size,
        sample_count=max(cfg.optim.bn_calibration, STREAM_SAMPLE),
        num_threads=cfg.data.stream_workers,
        process_index=process_index,
        process_count=process_count,
        cache_dir=stream_cache_dir(cfg.data.stream_cache),
    )
    train = dataset.train_source(model, jax.random.fold_in(key, keys.DARKEN_TRAIN), options)
    test_clean = jnp.asarray(dataset.test_images, jnp.float32)
    test_dark, test_conditions = capture_test_set(
        model, jax.random.fold_in(key, keys.DARKEN_TEST), test_clean
    )
    return RunData(
        train=train,
        test_clean=test_clean,
        test_dark=test_dark,
        test_labels=jax.tree.map(jnp.asarray, dataset.targets("test")),
        num_classes=dataset.num_classes,
        capture_model=model,
        test_conditions=test_conditions,
    )
