"""Data-parallel training: 8 CPU devices and 2 processes train the model one device trains.

The device count and ``jax.distributed`` are fixed when JAX starts, so the runs happen in fresh
processes (tests/training/parallel_worker.py: two epochs of phase 2, ISP and model jointly).

Tolerance: the data-parallel step sums the same gradients in another order (an all-reduce over
devices), so values agree to float32 rounding, which training then amplifies a little: losses
to 1e-4 relative; parameters to 2e-2 absolute at worst and 1e-3 on average (Adam's normalised
steps turn rounding-level differences of near-zero gradients into full-size steps of either
sign). Parameters are O(1); a wrong all-reduce (a per-device mean, a missing sum) moves them
by far more.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from diffisp.errors import ConfigError
from diffisp.training.parallel import check_batch_split, data_parallel, initialize_distributed

WORKER = Path(__file__).with_name("parallel_worker.py")
ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 600


def _env(devices_per_process: int) -> dict[str, str]:
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices_per_process}"
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    env.pop("JAX_COORDINATOR_ADDRESS", None)
    return env


def _worker(*args: str, devices_per_process: int) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(WORKER), *args],
        env=_env(devices_per_process),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _finish(process: subprocess.Popen) -> None:
    output, _ = process.communicate(timeout=TIMEOUT)
    assert process.returncode == 0, output[-4000:]


def _assert_same_training(a: dict, b: dict) -> None:
    np.testing.assert_allclose(a["losses"], b["losses"], rtol=1e-4)
    assert a["losses"][-1] < a["losses"][0]  # it did train
    diff = np.abs(a["params"] - b["params"])
    assert diff.max() < 2e-2 and diff.mean() < 1e-3, (diff.max(), diff.mean())


def _result(npz: Path, devices: str) -> dict:
    data = np.load(npz)
    return {"losses": data[f"losses_{devices}"], "params": data[f"params_{devices}"]}


# The classifier in the fast suite; the adaptive ISP and the detector (2-2.5 min each on two
# busy cores) and two processes in the slow one.
@pytest.mark.parametrize(
    "case",
    [
        "classify",
        pytest.param("adaptive", marks=pytest.mark.slow),
        pytest.param("detect", marks=pytest.mark.slow),
    ],
)
def test_eight_cpu_devices_train_what_one_device_trains(tmp_path, case):
    out = tmp_path / f"{case}.npz"
    _finish(_worker(case, str(out), "--devices", "1", "8", devices_per_process=8))
    _assert_same_training(_result(out, "8"), _result(out, "1"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_two_processes_train_what_one_process_trains(tmp_path):
    coordinator = f"localhost:{_free_port()}"
    workers = [
        _worker(
            "classify",
            str(tmp_path / f"process{i}.npz"),
            "--coordinator",
            coordinator,
            "--num-processes",
            "2",
            "--process-id",
            str(i),
            devices_per_process=2,
        )
        for i in range(2)
    ]
    single = _worker("classify", str(tmp_path / "single.npz"), devices_per_process=1)
    for process in [*workers, single]:
        _finish(process)
    reference = _result(tmp_path / "single.npz", "all")
    first, second = (_result(tmp_path / f"process{i}.npz", "all") for i in range(2))
    for name in ("losses", "params"):  # the processes hold one replicated state
        np.testing.assert_array_equal(first[name], second[name])
    _assert_same_training(first, reference)


# ------------------------------------------------------------------ in this process (1 device)


def test_one_device_mesh_places_without_copying():
    import jax.numpy as jnp

    parallel = data_parallel(1)
    images = jnp.ones((4, 2, 2, 3))
    placed = parallel.replicate_data(images)
    assert parallel.num_devices == 1
    assert placed.unsafe_buffer_pointer() == images.unsafe_buffer_pointer()
    assert parallel.local(placed) is placed


@pytest.mark.parametrize("devices", [0, -1, True, 1.5, "2"])
def test_bad_device_counts_are_named(devices):
    with pytest.raises(ConfigError, match="devices"):
        data_parallel(devices)


def test_more_devices_than_there_are_is_an_error():
    with pytest.raises(ConfigError, match="JAX sees"):
        data_parallel(10_000)


def test_a_batch_that_does_not_split_over_the_devices_is_an_error():
    data_parallel(1).check_batch_size(7)  # one device takes any batch
    check_batch_split(32, 8)
    with pytest.raises(ConfigError, match="batch size 32 does not split over 3 devices"):
        check_batch_split(32, 3)


@pytest.mark.parametrize(
    "args, match",
    [
        (("localhost:1234", None, None), "together"),
        (("localhost:1234", 2, 2), r"process_id must be in \[0, 2\)"),
        (("localhost:1234", 0, 0), "num_processes"),
        (("localhost", 2, 0), "HOST:PORT"),
    ],
)
def test_bad_distributed_arguments_are_named(args, match):
    with pytest.raises(ConfigError, match=match):
        initialize_distributed(*args)


def test_cli_names_bad_parallel_options(tmp_path, capsys):
    from diffisp.cli import main

    base = ["train", "--data", "builtin", "--out", str(tmp_path / "run"), "--no-progress"]
    assert main([*base, "--devices", "0"]) == 2
    assert "devices must be a positive integer" in capsys.readouterr().err
    assert main([*base, "--coordinator", "localhost:1234"]) == 2
    assert "--num-processes and --process-id together" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_two_hosts_streaming_their_slices_train_what_one_process_trains(tmp_path):
    from diffisp.data.generate import write_image_folder

    folder = write_image_folder(tmp_path / "folder", 96, num_classes=4, image_size=16)
    case = f"stream:{folder}"
    coordinator = f"localhost:{_free_port()}"
    args = ["--coordinator", coordinator, "--num-processes", "2", "--process-id"]
    workers = [
        _worker(case, str(tmp_path / f"p{i}.npz"), *args, str(i), devices_per_process=2)
        for i in range(2)
    ]
    single = _worker(case, str(tmp_path / "single.npz"), devices_per_process=1)
    for process in [*workers, single]:
        _finish(process)
    first, second = (_result(tmp_path / f"p{i}.npz", "all") for i in range(2))
    np.testing.assert_array_equal(first["params"], second["params"])
    _assert_same_training(first, _result(tmp_path / "single.npz", "all"))
