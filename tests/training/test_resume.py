"""A run killed with SIGKILL mid-way and resumed ends exactly where an uninterrupted run ends."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ARGS = [
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
    "3",
    "--epochs-isp",
    "3",
    "--epochs-joint",
    "2",
    "--seed",
    "3",
    "--no-progress",
]


def diffisp(*args: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "diffisp.cli", *args]
    return subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs
    )


def finished_epochs(run_dir: Path) -> int:
    checkpoints = run_dir / "checkpoints"
    if not checkpoints.is_dir():
        return 0
    return max((int(p.name) for p in checkpoints.iterdir() if p.name.isdigit()), default=0)


@pytest.mark.slow
def test_sigkilled_run_resumes_to_the_uninterrupted_result(tmp_path):
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    full = diffisp("train", *ARGS, "--out", str(reference))
    victim = diffisp("train", *ARGS, "--out", str(killed))
    deadline = time.time() + 240
    while finished_epochs(killed) < 4:  # inside phase 1
        assert victim.poll() is None, victim.stdout.read()
        assert time.time() < deadline, "the run never reached epoch 4"
        time.sleep(0.2)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert not (killed / "metrics.json").exists()
    resumed = diffisp("train", "--resume", str(killed), "--no-progress")
    out, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, out
    assert "resuming" in out
    full_out, _ = full.communicate(timeout=300)
    assert full.returncode == 0, full_out
    a = json.loads((reference / "metrics.json").read_text())
    b = json.loads((killed / "metrics.json").read_text())
    for key, row in a["results"].items():
        assert b["results"][key]["accuracy"] == pytest.approx(row["accuracy"], abs=1e-6), key
    for stage, params in a["learned_parameters"].items():
        for name, value in params.items():
            got = np.asarray(b["learned_parameters"][stage][name])
            np.testing.assert_allclose(got, np.asarray(value), atol=1e-5, err_msg=f"{stage}.{name}")
    history_a = json.loads((reference / "history.json").read_text())
    history_b = json.loads((killed / "history.json").read_text())
    assert [r["loss"] for r in history_b] == pytest.approx([r["loss"] for r in history_a], abs=1e-5)


@pytest.mark.slow
def test_second_ctrl_c_exits_130_at_once_keeping_an_intact_checkpoint(tmp_path):
    """Issue 12: a second Ctrl-C (there: during a checkpoint write) hung 300 s in orbax threads.

    Epochs of a few seconds make the timing deterministic: the second SIGINT is sent as soon as
    the first one is acknowledged, well inside the epoch the first one lets finish.
    """
    from diffisp.training.integrity import newest_intact_step

    run = tmp_path / "run"
    args = [*ARGS, "--num-train", "2048", "--epochs-clean", "5"]  # later values win in argparse
    victim = diffisp("train", *args, "--out", str(run))
    lines = []
    for line in victim.stdout:
        lines.append(line)
        if "epoch 1:" in line:  # one checkpoint on disk
            victim.send_signal(signal.SIGINT)
        if line.startswith("interrupt: finishing"):
            victim.send_signal(signal.SIGINT)
            sent = time.time()
            break
    else:
        pytest.fail("".join(lines))
    out = "".join(lines) + victim.stdout.read()
    victim.wait(timeout=60)
    assert time.time() - sent < 30, out
    assert victim.returncode == 130, out
    assert "interrupted again" in out and "Traceback" not in out, out
    assert "epoch 2:" not in out  # it did not wait for the epoch to finish
    steps = [int(p.name) for p in (run / "checkpoints").iterdir() if p.name.isdigit()]
    assert newest_intact_step(run / "checkpoints", steps)[0] == 1
