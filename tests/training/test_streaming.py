"""Training on a streamed training set: the same run as in memory (identical losses), the
config's checks, and a short streamed run."""

from __future__ import annotations

import numpy as np
import pytest

from diffisp.data.detection_stream import StreamedDetection
from diffisp.data.folder import load_folder
from diffisp.data.generate import write_image_folder
from diffisp.data.scenes import write_scenes_coco
from diffisp.data.stream import stream_folder
from diffisp.errors import ConfigError
from diffisp.experiments.run import load_run_data
from diffisp.training.config import TrainConfig
from diffisp.training.data import prepare_data
from diffisp.training.loop import train
from diffisp.training.state import TrainState


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_image_folder(tmp_path_factory.mktemp("stream") / "images", 200, num_classes=4)


def test_stream_needs_folder_data():
    with pytest.raises(ConfigError, match="--stream reads image folders"):
        TrainConfig.of(data="builtin", stream=True)


def test_a_streamed_run_trains_phase_0(folder):
    # 96 images, chunks of 3 batches of 16: two whole chunks an epoch (one compiled shape).
    cfg = TrainConfig.of(
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
    data = prepare_data(streamed, cfg)
    head = data.train.head(96, captured=False)
    assert head.shape == (96, 16, 16, 3)  # the sample: at most the whole set
    np.testing.assert_array_equal(head[5], streamed.train[5][0])
    state = train(TrainState.create(cfg, data.num_classes), data)
    assert [(r.phase, r.epoch) for r in state.history] == [(0, 1)]
    assert all(np.isfinite(r.loss) and 0 <= r.train_acc <= 1 for r in state.history)
    assert state.history[0].test_acc > 0.5  # four easy classes: far above chance after one epoch


@pytest.mark.parametrize(
    "capture",
    [
        {},
        {"stream_cache": "off"},
        pytest.param(
            {"conditions": "mixed", "input": "raw", "isp": ("exposure", "gamma"), "adaptive": True},
            marks=pytest.mark.slow,
        ),
    ],
    ids=["srgb", "srgb-decoded-while-training", "raw-mixed-adaptive"],
)
def test_streamed_and_in_memory_training_give_identical_losses(folder, capture):
    # Every phase, the warm-up and batch-norm re-estimation; three chunks an epoch streamed
    # (the last one shorter; from the decoded cache, or decoded from the files), one in
    # memory. The same images, captures, order, gate samples and statistics: the same losses
    # to the last bit.
    common = dict(
        data=f"folder:{folder}",
        num_train=80,
        num_test=16,
        image_size=16,
        batch_size=16,
        epochs_clean=1,
        epochs_isp=1,
        epochs_joint=1,
        bn_calibration=32,
        stream_chunk_batches=2,
        **capture,
    )
    histories = {}
    for stream in (False, True):
        cfg = TrainConfig.of(stream=stream, **common)
        kwargs = dict(num_train=80, num_test=16, seed=0, image_size=16)
        dataset = (stream_folder if stream else load_folder)(folder, **kwargs)
        data = prepare_data(dataset, cfg)
        state = train(TrainState.create(cfg, data.num_classes), data)
        histories[stream] = [(r.phase, r.loss, r.train_acc, r.test_acc) for r in state.history]
    assert [h[0] for h in histories[False]] == [0, 1, 2]
    assert histories[True] == histories[False]


@pytest.mark.slow
def test_a_streamed_coco_set_trains_as_in_memory(tmp_path):
    # The detector through every phase: images from the decoded cache, padded boxes from
    # memory, two chunks an epoch; the same losses, train scores and mAP as in memory.
    write_scenes_coco(tmp_path / "coco", num_train=24, num_test=8, image_size=32, seed=1)
    common = dict(
        task="detect",
        data=f"coco:{tmp_path / 'coco'}",
        num_train=24,
        num_test=8,
        image_size=32,
        batch_size=8,
        epochs_clean=1,
        epochs_isp=1,
        epochs_joint=1,
        isp=("exposure", "gamma"),
        bn_calibration=8,
        stream_chunk_batches=2,
    )
    histories = {}
    for stream in (False, True):
        cfg = TrainConfig.of(stream=stream, **common)
        dataset = load_run_data(cfg)
        assert isinstance(dataset, StreamedDetection) == stream
        data = prepare_data(dataset, cfg)
        state = train(TrainState.create(cfg, data.num_classes), data)
        histories[stream] = [(r.phase, r.loss, r.train_acc, r.test_acc) for r in state.history]
    assert [h[0] for h in histories[False]] == [0, 1, 2]
    assert histories[True] == histories[False]


def test_what_cannot_stream_is_refused():
    with pytest.raises(ConfigError, match="--stream-cache off streams image folders only"):
        TrainConfig.of(task="detect", data="coco:/x", stream=True, stream_cache="off")
    with pytest.raises(ConfigError, match="stream_cache must be"):
        TrainConfig.of(data="folder:/x", stream=True, stream_cache=" ")
    with pytest.raises(ConfigError, match="--stream reads image folders, COCO and VOC"):
        TrainConfig.of(task="detect", data="scenes", stream=True)


def test_cli_stream_options_reach_the_config(folder, capsys):
    from diffisp.cli import build_parser, config_from_args, main

    args = build_parser().parse_args(
        ["train", "--data", f"folder:{folder}", "--stream", "--stream-chunk-batches", "8"]
    )
    cfg = config_from_args(args)
    assert (cfg.data.stream, cfg.data.stream_chunk_batches, cfg.data.stream_workers) == (True, 8, 1)
    assert main(["train", "--data", "builtin", "--stream"]) == 2
    assert "--stream reads image folders" in capsys.readouterr().err
