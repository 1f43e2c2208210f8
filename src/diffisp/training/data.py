"""A run's data on the device: clean and darkened train/test images, with their targets."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp

from diffisp.data import Dataset
from diffisp.data.degrade import darken
from diffisp.errors import DataError
from diffisp.training import keys
from diffisp.training.config import TrainConfig


@dataclass
class RunData:
    """Device-resident images (``(N, H, W, 3)`` float32 in [0, 1]) and targets.

    ``*_labels`` are the task's targets: any pytree of arrays with a leading axis of N (class
    indices for classification).
    """

    train_clean: jax.Array
    train_dark: jax.Array
    train_labels: Any
    test_clean: jax.Array
    test_dark: jax.Array
    test_labels: Any
    num_classes: int

    @property
    def num_train(self) -> int:
        return int(self.train_clean.shape[0])


def prepare_data(dataset: Dataset, cfg: TrainConfig) -> RunData:
    """Darken the data set once, deterministically from ``cfg.seed``, and put it on the device."""
    if len(dataset.train_labels) < cfg.batch_size:
        raise DataError(
            f"the training set has {len(dataset.train_labels)} images, fewer than one batch "
            f"({cfg.batch_size})"
        )
    key = jax.random.key(cfg.seed)
    low_light = cfg.low_light()
    train_clean = jnp.asarray(dataset.train_images, jnp.float32)
    test_clean = jnp.asarray(dataset.test_images, jnp.float32)
    train_dark, _ = darken(jax.random.fold_in(key, keys.DARKEN_TRAIN), train_clean, low_light)
    test_dark, _ = darken(jax.random.fold_in(key, keys.DARKEN_TEST), test_clean, low_light)
    return RunData(
        train_clean=train_clean,
        train_dark=train_dark,
        train_labels=jnp.asarray(dataset.train_labels, jnp.int32),
        test_clean=test_clean,
        test_dark=test_dark,
        test_labels=jnp.asarray(dataset.test_labels, jnp.int32),
        num_classes=dataset.num_classes,
    )
