"""A run's data on the device: clean and low-light train/test inputs, with their targets.

The low-light inputs are darkened sRGB images (``input="srgb"``) or simulated dark RAW
captures (``input="raw"``: each clean image unprocessed into a Bayer mosaic with camera
metadata, :mod:`diffisp.capture.unprocess`). Both are pytrees with a leading image axis, so
training and evaluation slice them the same way."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from diffisp.capture.low_light import LowLight, darken
from diffisp.capture.mixed import capture_mixed
from diffisp.capture.raw_capture import RawCapture
from diffisp.capture.unprocess import UnprocessConfig, unprocess
from diffisp.data import Dataset
from diffisp.data.detection import DetectionDataset
from diffisp.errors import ConfigError, DataError
from diffisp.training import keys
from diffisp.training.config import TrainConfig

Capture = jax.Array | RawCapture


@dataclass
class RunData:
    """Device-resident clean images (``(N, H, W, 3)`` float32 in [0, 1]), their low-light
    captures (images of the same shape, or a :class:`RawCapture`) and targets.

    ``*_labels`` are the task's targets: any pytree of arrays with a leading axis of N (class
    indices for classification). ``test_conditions``: with ``conditions="mixed"``, each test
    image's capture conditions (``(N,)`` host arrays from
    :func:`diffisp.capture.mixed.capture_mixed`), to split results by condition; ``None``
    otherwise.
    """

    train_clean: jax.Array
    train_dark: Capture
    train_labels: Any
    test_clean: jax.Array
    test_dark: Capture
    test_labels: Any
    num_classes: int
    test_conditions: dict[str, np.ndarray] | None = None

    @property
    def num_train(self) -> int:
        return int(self.train_clean.shape[0])

    @property
    def raw(self) -> bool:
        return isinstance(self.train_dark, RawCapture)


def capture_low_light(
    key: jax.Array,
    clean: jax.Array,
    cfg: TrainConfig,
    low_light: LowLight | None = None,
    *,
    raw_noise_at_white: float | None = None,
) -> Capture:
    """The low-light version of ``clean`` a run's ISP sees, deterministic for ``key``.

    sRGB input: :func:`~diffisp.capture.low_light.darken` with ``low_light`` (default the config's).
    RAW input: :func:`~diffisp.capture.unprocess.unprocess` with the brightness range of
    ``low_light``; the noise is the RAW model's, drawn per image, unless
    ``raw_noise_at_white`` fixes it: a shot-noise standard deviation of that value at a white
    sample (shot factor = value squared), with the read noise of Brooks et al.'s fit (no
    scatter). That is how a noise sweep sets RAW noise.
    """
    if low_light is None and cfg.conditions == "mixed":
        return capture_with_conditions(key, clean, cfg)[0]
    low_light = cfg.low_light() if low_light is None else low_light
    if cfg.input != "raw":
        dark, _ = darken(key, clean, low_light)
        return dark
    noise: dict = {}
    if raw_noise_at_white is not None:
        shot = max(float(raw_noise_at_white) ** 2, 1e-12)
        noise = {"shot_noise": (shot, shot), "read_noise_sigma": 0.0}
    raw_cfg = UnprocessConfig(brightness=low_light.brightness, pattern=cfg.cfa_pattern, **noise)
    capture, _ = unprocess(key, clean, raw_cfg)
    return capture


def capture_with_conditions(
    key: jax.Array, clean: jax.Array, cfg: TrainConfig
) -> tuple[Capture, dict[str, np.ndarray] | None]:
    """:func:`capture_low_light` with the config's model, and each image's recorded conditions
    (``conditions="mixed"``: :func:`~diffisp.capture.mixed.capture_mixed`'s, on the host;
    ``None`` for the uniform model)."""
    if cfg.conditions != "mixed":
        return capture_low_light(key, clean, cfg), None
    if cfg.input == "raw":
        raise ConfigError("mixed conditions with RAW input are not supported yet")
    dark, conditions = capture_mixed(key, clean, cfg.mixed_conditions())
    return dark, {name: np.asarray(values) for name, values in conditions.items()}


def dataset_targets(dataset: Dataset | DetectionDataset, split: str) -> Any:
    """The task targets of a split (``"train"`` or ``"test"``) as device arrays: int32 class
    indices ``(N,)`` for a :class:`Dataset`; for a :class:`DetectionDataset`
    ``{"boxes": (N, M, 4) float32, "labels": (N, M) int32 (-1 = padding), "difficult": (N, M)
    bool}``, what :class:`~diffisp.models.detection.Detection` takes."""
    if isinstance(dataset, DetectionDataset):
        return {
            "boxes": jnp.asarray(getattr(dataset, f"{split}_boxes"), jnp.float32),
            "labels": jnp.asarray(getattr(dataset, f"{split}_labels"), jnp.int32),
            "difficult": jnp.asarray(getattr(dataset, f"{split}_difficult"), bool),
        }
    return jnp.asarray(getattr(dataset, f"{split}_labels"), jnp.int32)


def prepare_data(dataset: Dataset | DetectionDataset, cfg: TrainConfig) -> RunData:
    """Darken the data set once, deterministically from ``cfg.seed``, and put it on the device
    (a detection data set's targets as :func:`dataset_targets` builds them)."""
    num_train = len(dataset.train_images)
    if num_train < cfg.batch_size:
        raise DataError(
            f"the training set has {num_train} images, fewer than one batch ({cfg.batch_size})"
        )
    key = jax.random.key(cfg.seed)
    train_clean = jnp.asarray(dataset.train_images, jnp.float32)
    test_clean = jnp.asarray(dataset.test_images, jnp.float32)
    train_dark = capture_low_light(jax.random.fold_in(key, keys.DARKEN_TRAIN), train_clean, cfg)
    test_dark, test_conditions = capture_with_conditions(
        jax.random.fold_in(key, keys.DARKEN_TEST), test_clean, cfg
    )
    return RunData(
        train_clean=train_clean,
        train_dark=train_dark,
        train_labels=dataset_targets(dataset, "train"),
        test_clean=test_clean,
        test_dark=test_dark,
        test_labels=dataset_targets(dataset, "test"),
        num_classes=dataset.num_classes,
        test_conditions=test_conditions,
    )
