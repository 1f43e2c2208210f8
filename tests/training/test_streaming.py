"""Training on a streamed training set: chunk-invariant captures, the config's checks, and
short streamed runs (against the in-memory path in the slow test)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffisp.data.folder import load_folder
from diffisp.data.generate import write_image_folder
from diffisp.data.stream import stream_folder
from diffisp.errors import ConfigError
from diffisp.training.config import TrainConfig
from diffisp.training.data import prepare_data
from diffisp.training.loop import train
from diffisp.training.state import TrainState
from diffisp.training.streaming import capture_per_image, prepare_stream_data


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_image_folder(tmp_path_factory.mktemp("stream") / "images", 200, num_classes=4)


def test_capture_is_the_same_however_images_are_chunked():
    cfg = TrainConfig(num_train=64, num_test=8)
    images = jax.random.uniform(jax.random.key(1), (8, 16, 16, 3))
    key, numbers = jax.random.key(0), jnp.arange(100, 108)
    whole = capture_per_image(key, images, numbers, cfg)
    halves = [
        capture_per_image(key, images[s], numbers[s], cfg) for s in (slice(0, 3), slice(3, 8))
    ]
    np.testing.assert_allclose(np.concatenate(halves), whole, atol=1e-6)
    reordered = capture_per_image(key, images[::-1], numbers[::-1], cfg)
    np.testing.assert_allclose(reordered[::-1], whole, atol=1e-6)
    assert float(jnp.mean(whole)) < 0.5 * float(jnp.mean(images))  # darkened


def test_raw_capture_per_image_is_chunking_invariant_too():
    cfg = TrainConfig(num_train=64, num_test=8, input="raw")
    images = jax.random.uniform(jax.random.key(1), (4, 16, 16, 3))
    whole = capture_per_image(jax.random.key(0), images, jnp.arange(4), cfg)
    tail = capture_per_image(jax.random.key(0), images[2:], jnp.arange(2, 4), cfg)
    assert whole.mosaic.shape[0] == 4  # a RawCapture of four
    for a, b in zip(jax.tree.leaves(whole), jax.tree.leaves(tail), strict=True):
        np.testing.assert_allclose(a[2:], b, atol=1e-6)


def test_stream_needs_folder_data():
    with pytest.raises(ConfigError, match="--stream reads image folders"):
        TrainConfig(data="builtin", stream=True)


def test_a_streamed_run_trains_phase_0(folder):
    # 96 images, chunks of 3 batches of 16: two whole chunks an epoch (one compiled shape).
    cfg = TrainConfig(
        data=f"folder:{folder}",
        num_train=96,
        num_test=16,
        image_size=16,
        batch_size=16,
        epochs_clean=1,
        epochs_isp=0,
        epochs_joint=0,
        isp=("exposure", "gamma"),
        bn_calibration=32,
        stream=True,
        stream_chunk_batches=3,
    )
    streamed = stream_folder(folder, num_train=96, num_test=16, seed=0, image_size=16)
    data = prepare_stream_data(streamed, cfg)
    assert data.sample_clean.shape == (96, 16, 16, 3)  # the sample: at most the whole set
    np.testing.assert_array_equal(data.sample_clean[5], streamed.train[5][0])
    state = train(TrainState.create(cfg, data.num_classes), data)
    assert [(r.phase, r.epoch) for r in state.history] == [(0, 1)]
    assert all(np.isfinite(r.loss) and 0 <= r.train_acc <= 1 for r in state.history)
    assert state.history[0].test_acc > 0.5  # four easy classes: far above chance after one epoch


@pytest.mark.slow
def test_streamed_training_learns_like_in_memory(folder):
    # Phase 1 with its warm-up runs on the streamed dark captures here (statistics from the
    # in-memory sample).
    common = dict(
        data=f"folder:{folder}",
        num_train=128,
        num_test=32,
        batch_size=16,
        epochs_clean=2,
        epochs_isp=1,
        epochs_joint=0,
        bn_calibration=64,
        stream_chunk_batches=3,
    )
    accuracy = {}
    for stream in (False, True):
        cfg = TrainConfig(stream=stream, **common)
        kwargs = dict(num_train=128, num_test=32, seed=0, image_size=32)
        if stream:
            data = prepare_stream_data(stream_folder(folder, **kwargs), cfg)
        else:
            data = prepare_data(load_folder(folder, **kwargs), cfg)
        state = train(TrainState.create(cfg, data.num_classes), data)
        assert [r.phase for r in state.history] == [0, 0, 1]
        assert all(np.isfinite(r.loss) for r in state.history)
        accuracy[stream] = state.history[1].test_acc
    # The generated classes are easy: both paths learn them after two clean epochs.
    assert accuracy[False] >= 0.9 and accuracy[True] >= 0.9


def test_cli_stream_options_reach_the_config(folder, capsys):
    from diffisp.cli import build_parser, config_from_args, main

    args = build_parser().parse_args(
        ["train", "--data", f"folder:{folder}", "--stream", "--stream-chunk-batches", "8"]
    )
    cfg = config_from_args(args)
    assert (cfg.stream, cfg.stream_chunk_batches, cfg.stream_workers) == (True, 8, 1)
    assert main(["train", "--data", "builtin", "--stream"]) == 2
    assert "--stream reads image folders" in capsys.readouterr().err
