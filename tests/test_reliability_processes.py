"""A multi-process start-up whose other processes never come (issue 27, case 2).

Before: ``--num-processes 2 --process-id 0`` alone was silent for 300 s, then died of SIGABRT
with an XLA "Check failure" stack. Now it says whom it waits for, and after
``--coordinator-timeout`` gives one error line and exit status 2. XLA's join cannot be
interrupted in-process, so the check runs the command as a subprocess.
"""

from __future__ import annotations

import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import diffisp
from diffisp.errors import ConfigError
from diffisp.training.parallel import initialize_distributed

SRC = Path(diffisp.__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("process_id", [0, 1])
def test_a_lone_process_says_whom_it_waits_for_then_gives_up(process_id, tmp_path):
    address = f"127.0.0.1:{_free_port()}"
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    env["JAX_PLATFORMS"] = "cpu"
    command = [
        *(sys.executable, "-m", "diffisp.cli", "train", "--coordinator", address),
        *("--num-processes", "2", "--process-id", str(process_id)),
        *("--coordinator-timeout", "1.5", "--out", str(tmp_path / "run"), "--no-progress"),
    ]
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr[-2000:]
    assert lines[0] == (
        f"waiting up to 1.5 s for 2 processes of the run to join at {address} (this is "
        f"process {process_id}) ..."
    )
    assert len(lines) == 2 and lines[1].startswith(
        f"diffisp: error: 2 processes of the run did not all join at {address} within 1.5 s"
    ), result.stderr[-2000:]
    assert "--coordinator-timeout" in lines[1] and "Check failure" not in result.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("timeout", [0, -1, math.nan, math.inf, True, "60"])
def test_the_coordinator_timeout_must_be_a_positive_number(timeout):
    with pytest.raises(ConfigError, match="coordinator timeout must be a positive number"):
        initialize_distributed("127.0.0.1:1", 2, 0, timeout=timeout)
