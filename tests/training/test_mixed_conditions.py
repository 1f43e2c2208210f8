"""``conditions="mixed"``: config, CLI flag, JSON round trip, and the conditions a run records."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from diffisp.capture.base import capture
from diffisp.capture.low_light import darken
from diffisp.capture.mixed import MixedConditions, condition_bins
from diffisp.cli import build_parser, config_from_args
from diffisp.data import load_dataset
from diffisp.errors import ConfigError
from diffisp.training import keys
from diffisp.training.config import TrainConfig
from diffisp.training.data import prepare_data

SMALL = {"data": "builtin", "num_train": 64, "num_test": 32, "image_size": 16, "batch_size": 16}


def test_cli_flag_reaches_the_config():
    args = build_parser().parse_args(["train", "--conditions", "mixed", "--num-train", "64"])
    cfg = config_from_args(args)
    assert cfg.capture.conditions == "mixed" and cfg.data.num_train == 64
    assert config_from_args(build_parser().parse_args(["train"])).capture.conditions == "uniform"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--conditions", "foggy"])


def test_config_validates_and_round_trips_the_mixed_fields():
    cfg = TrainConfig.of(**SMALL, conditions="mixed", mixed_brightness=[0.05, 0.5], mixed_blur=0.0)
    assert cfg.capture.mixed_brightness == (0.05, 0.5)
    assert cfg.capture.mixed_conditions() == MixedConditions(
        brightness=(0.05, 0.5), blur_probability=0.0
    )
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="conditions must be"):
        TrainConfig.of(**SMALL, conditions="foggy")
    with pytest.raises(ConfigError, match="0 < low <= high <= 1"):
        TrainConfig.of(**SMALL, mixed_brightness=(0.0, 1.0))
    with pytest.raises(ConfigError, match="shot_noise"):
        TrainConfig.of(**SMALL, mixed_shot_noise=-1.0)
    # Mixed conditions in RAW: the mixed light recorded by a random RAW camera.
    raw = TrainConfig.of(**SMALL, conditions="mixed", input="raw").capture.model()
    assert raw.raw and raw.light == MixedConditions()


def _dataset(cfg: TrainConfig):
    return load_dataset(
        cfg.data.source,
        num_train=cfg.data.num_train,
        num_test=cfg.data.num_test,
        image_size=cfg.data.image_size,
    )


def test_prepare_data_records_the_test_conditions():
    cfg = TrainConfig.of(**SMALL, conditions="mixed")
    data = prepare_data(_dataset(cfg), cfg)
    conditions = data.test_conditions
    assert set(conditions) >= {"brightness", "gain", "noise_std", "illuminant", "blur_sigma"}
    assert all(isinstance(v, np.ndarray) and v.shape == (32,) for v in conditions.values())
    assert all(labels.shape == (32,) for labels in condition_bins(conditions).values())
    # The recorded conditions are those of the test images the run evaluates.
    key = jax.random.fold_in(jax.random.key(cfg.seed), keys.DARKEN_TEST)
    np.testing.assert_array_equal(
        capture(cfg.capture.model(), key, data.test_clean)[0], data.test_dark
    )
    level = np.asarray(data.test_dark).mean(axis=(1, 2, 3)) / np.asarray(data.test_clean).mean(
        axis=(1, 2, 3)
    )
    # Mean level follows the drawn brightness (noise, clipping and blur move it a little).
    assert np.corrcoef(np.log(level), np.log(conditions["brightness"]))[0, 1] > 0.95


def test_uniform_conditions_are_unchanged_and_record_nothing():
    cfg = TrainConfig.of(**SMALL)
    data = prepare_data(_dataset(cfg), cfg)
    assert data.test_conditions is None
    key = jax.random.fold_in(jax.random.key(cfg.seed), keys.DARKEN_TEST)
    want = capture(cfg.capture.low_light(), key, data.test_clean)[0]  # one key per image
    np.testing.assert_array_equal(want, data.test_dark)
    assert not np.array_equal(darken(key, data.test_clean, cfg.capture.low_light())[0], want)
