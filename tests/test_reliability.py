"""Bad configs and checkpoints give one-line errors and leave what is on disk intact."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from helpers import tiny, toy_dataset

from diffisp.cli import main
from diffisp.errors import CheckpointError, ConfigError
from diffisp.isp.chain import ISP
from diffisp.models.classifier import SmallCNN
from diffisp.training.checkpoint import TrainingCheckpoints, load_model, save_model
from diffisp.training.config import TrainConfig, config_differences
from diffisp.training.data import prepare_data
from diffisp.training.integrity import MANIFEST_NAME, write_manifest
from diffisp.training.loop import train
from diffisp.training.state import TrainState

TINY = tiny(data="auto", num_train=32, num_test=16)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"num_train": 64, "learning_rate": 0.1}, "unknown config key(s): learning_rate"),
        ({"lr_isp": -0.01}, "lr_isp must be a learning rate"),
        ({"lr_stats_map": 0}, "lr_stats_map must be a learning rate"),
        ({"batch_size": 0}, "batch_size must be a positive integer"),
        ({"brightness": [0.0, 0.3]}, "0 < low <= high <= 1"),
        ({"brightness": [0.2, 1.5]}, "0 < low <= high <= 1"),
        ({"isp": ["gamma", "fisheye"]}, "unknown ISP stage 'fisheye'"),
        ({"variants": "adaptive:-1"}, "must be in"),
        ({"cost_weight": 0.1}, "needs the adaptive ISP"),
        ({"noise_sigma": "loud"}, "noise_sigma"),
    ],
)
def test_bad_config_values(values, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        TrainConfig.from_dict(values)


def test_cli_config_file_errors(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text('{"num_train": 64, "epochz": 3}')
    assert main(["train", "--config", str(bad)]) == 2
    assert "unknown config key(s): epochz" in capsys.readouterr().err
    bad.write_text("{not json")
    assert main(["train", "--config", str(bad)]) == 2
    assert "not valid JSON" in capsys.readouterr().err
    assert main(["train", "--config", str(tmp_path / "missing.json")]) == 2
    assert "config file not found" in capsys.readouterr().err


def test_checkpoint_of_another_isp_layout_is_refused(tmp_path):
    import orbax.checkpoint as ocp
    from flax import nnx

    save_model(tmp_path / "m", ISP("seed"), SmallCNN(rngs=nnx.Rngs(0)), {"image_size": 32})
    # Rewrite the layout metadata as if another ISP had been saved there.
    manager = ocp.CheckpointManager((tmp_path / "m").absolute())
    meta_file = next((tmp_path / "m").glob("*/meta/*"))
    meta = json.loads(meta_file.read_text())
    meta["isp_stages"] = ["exposure", "gamma"]
    meta_file.write_text(json.dumps(meta))
    del manager
    # Re-sign the step: a consistent foreign layout, not a damaged file (that is refused earlier).
    (meta_file.parents[1] / MANIFEST_NAME).unlink()
    write_manifest(meta_file.parents[1])
    with pytest.raises(CheckpointError, match="does not match an ISP with stages"):
        load_model(tmp_path / "m")


@pytest.mark.slow
def test_resume_with_a_changed_config_is_refused(tmp_path):
    cfg = TrainConfig.of(**TINY)
    data = prepare_data(toy_dataset(), cfg)
    checkpoints = TrainingCheckpoints(tmp_path)
    train(TrainState.create(cfg, data.num_classes), data, on_epoch=lambda t, r: checkpoints.save(t))
    other = TrainConfig.of(**{**TINY, "isp": ("exposure", "gamma")})
    with pytest.raises(CheckpointError, match=r"different config \(isp: \["):
        checkpoints.restore_into(TrainState.create(other, data.num_classes), data.num_train)


def test_config_differences_name_changed_and_absent_keys():
    saved = {"isp": ["gamma"], "seed": 0}
    asked = {"isp": ["gamma"], "seed": 1, "lr_stats_map": 1e-3}
    assert config_differences(saved, asked) == ["seed: 0 -> 1", "lr_stats_map: <absent> -> 0.001"]


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_with_a_resumable_checkpoint(tmp_path):
    out = tmp_path / "run"
    args = [
        "--data",
        "builtin",
        "--num-train",
        "64",
        "--num-test",
        "32",
        "--image-size",
        "16",
        "--batch-size",
        "16",
        "--epochs-clean",
        "30",
        "--no-progress",
        "--out",
        str(out),
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "diffisp.cli", "train", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.time() + 180
    while not any(p.name.isdigit() for p in (out / "checkpoints").glob("*")):
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, output
    assert "resume with: diffisp train --resume" in output and "Traceback" not in output
    assert TrainingCheckpoints(out).latest_step() >= 1
