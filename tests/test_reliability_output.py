"""A full disk or an unwritable output at every writer (issue 27, case 1).

Before: a 200 KB file system as ``train --out`` ended with exit 1, seven orbax tracebacks and
473 lines of stderr. Now every writer's failure is one ``diffisp: error:`` line (exit 2) that
names the path and the last intact checkpoint, and nothing half-written is left for
``--resume`` to trip on. The failures are injected (a real tiny file system needs a root mount):
orbax's writer threads wrap ``OSError(ENOSPC)`` in TensorStore ``ValueError``s, as below.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import orbax.checkpoint as ocp
import pytest
from flax import nnx
from helpers import TINY_CLI_ARGS, randomize, toy_dataset

from diffisp.cli import main
from diffisp.errors import OutputError
from diffisp.isp.chain import ISP
from diffisp.models.classifier import SmallCNN
from diffisp.training.checkpoint import (
    TrainingCheckpoints,
    kept_checkpoint_note,
    load_model,
    save_model,
)
from diffisp.training.config import TrainConfig
from diffisp.training.data import prepare_data
from diffisp.training.state import PHASES, EpochRecord, TrainState

ENOSPC_TEXT = os.strerror(errno.ENOSPC)
# What orbax's wait_until_finished raised on the 200 KB file system (shortened).
ORBAX_ENOSPC = (
    'RESOURCE_EXHAUSTED: Error writing "model.head.kernel/0.0" in OCDBT database at local file '
    '"{dir}/ocdbt.process_0/": Failed to write 2785796 bytes to file 8: No space left on device '
    "[os_error_code='28']"
)
TINY = dict(num_train=64, num_test=32, image_size=16, batch_size=16, data="builtin")


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1, err
    assert err.startswith("diffisp: error: "), err
    return err


@pytest.fixture
def trainer():
    cfg = TrainConfig.of(**TINY)
    run_data = prepare_data(toy_dataset(), cfg)
    state = TrainState.create(cfg, run_data.num_classes)
    state.optimizer = state.new_optimizer(PHASES[0], run_data.num_train)
    return state, run_data


def _at_epoch(state: TrainState, epoch: int) -> None:
    state.history = [EpochRecord(0, "clean", e + 1, 1.0, 0.5, 0.5, 0.1) for e in range(epoch)]
    state.position = (0, epoch)


def _leftovers(checkpoints: Path) -> list[str]:
    return sorted(p.name for p in checkpoints.iterdir())


def test_a_full_disk_in_orbax_writer_threads_is_one_error_naming_the_kept_step(
    trainer, tmp_path, monkeypatch
):
    state, run_data = trainer
    checkpoints = TrainingCheckpoints(tmp_path)
    _at_epoch(state, 1)
    checkpoints.save(state)  # step 1: intact
    real_wait = ocp.CheckpointManager.wait_until_finished

    def fail_after_writing(manager):
        real_wait(manager)  # orbax finished step 2 (renamed into place), then the disk fills
        raise ValueError(ORBAX_ENOSPC.format(dir=tmp_path))

    monkeypatch.setattr(ocp.CheckpointManager, "wait_until_finished", fail_after_writing)
    _at_epoch(state, 2)
    with pytest.raises(OutputError) as info:
        checkpoints.save(state)
    message = str(info.value)
    assert info.value.errno == errno.ENOSPC
    assert f"cannot save checkpoint 2 in {tmp_path / 'checkpoints'}: {ENOSPC_TEXT}" in message
    assert f"kept: checkpoint 1 ({tmp_path / 'checkpoints' / '1'}), the last intact" in message
    assert f"diffisp train --resume {tmp_path}" in message
    assert _leftovers(tmp_path / "checkpoints") == ["1"]  # the unfinished step 2 is gone

    monkeypatch.undo()  # space again: the same step saves and the run resumes from it
    checkpoints.save(state)
    fresh = TrainState.create(state.cfg, run_data.num_classes)
    TrainingCheckpoints(tmp_path).restore_into(fresh, run_data.num_train)
    assert fresh.position == (0, 2)


def test_a_save_that_fails_before_orbax_finishes_leaves_no_temporary_step(
    trainer, tmp_path, monkeypatch
):
    state, _ = trainer
    checkpoints = TrainingCheckpoints(tmp_path)
    real_save = ocp.CheckpointManager.save

    def fail_while_writing(manager, step, *args, **kwargs):
        (tmp_path / "checkpoints" / f"{step}.orbax-checkpoint-tmp" / "state").mkdir(parents=True)
        raise OSError(errno.ENOSPC, ENOSPC_TEXT)

    monkeypatch.setattr(ocp.CheckpointManager, "save", fail_while_writing)
    _at_epoch(state, 1)
    with pytest.raises(OutputError, match=r"kept: no checkpoint yet in .*checkpoints$"):
        checkpoints.save(state)
    assert _leftovers(tmp_path / "checkpoints") == []
    monkeypatch.setattr(ocp.CheckpointManager, "save", real_save)
    checkpoints.save(state)
    assert checkpoints.latest_step() == 1


def test_a_full_disk_while_writing_the_manifest_discards_the_step(trainer, tmp_path, monkeypatch):
    import diffisp.training.checkpoint as checkpoint

    state, _ = trainer
    checkpoints = TrainingCheckpoints(tmp_path)
    _at_epoch(state, 1)
    checkpoints.save(state)

    def fail(step_dir):
        raise OSError(errno.ENOSPC, ENOSPC_TEXT, str(Path(step_dir) / "diffisp-sha256.json"))

    monkeypatch.setattr(checkpoint, "write_manifest", fail)
    _at_epoch(state, 2)
    with pytest.raises(OutputError, match=r"sha256.json; kept: checkpoint 1 "):
        checkpoints.save(state)
    assert _leftovers(tmp_path / "checkpoints") == ["1"]


def test_a_full_disk_while_saving_the_model_keeps_the_earlier_model(tmp_path, monkeypatch):
    isp, model = randomize(ISP("seed"), seed=1, scale=0.3), SmallCNN(4, rngs=nnx.Rngs(0))
    target = save_model(tmp_path / "model", isp, model, {"note": "v1"})

    def fail(manager):
        raise ValueError(ORBAX_ENOSPC.format(dir=tmp_path))

    monkeypatch.setattr(ocp.CheckpointManager, "wait_until_finished", fail)
    with pytest.raises(OutputError, match=r"cannot save the model in .*model: No space left"):
        save_model(target, isp, model, {"note": "v2"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no staging directory
    monkeypatch.undo()
    assert load_model(target)[2]["note"] == "v1"


def test_atomic_writes_name_the_file_a_full_disk_refused(tmp_path, monkeypatch):
    import diffisp.util.io as io

    def full(fd):
        raise OSError(errno.ENOSPC, ENOSPC_TEXT)  # what fsync says: no file name

    monkeypatch.setattr(io.os, "fsync", full)
    with pytest.raises(OSError) as info:
        io.atomic_write_json(tmp_path / "metrics.json", {"a": 1})
    assert io.describe_os_error(info.value) == f"{ENOSPC_TEXT}: {tmp_path / 'metrics.json'}"
    assert list(tmp_path.iterdir()) == []  # the temporary file is gone too


def test_atomic_writes_never_replace_a_device_or_fifo(tmp_path):
    """``--out /dev/null`` as root once swapped the device for a regular file (the rename
    replaces whatever the name points at); a FIFO stands in for the device here."""
    import diffisp.util.io as io
    from diffisp.errors import InputError

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(InputError, match=r"refusing to replace .*fifo: .*not a regular file"):
        io.atomic_write_json(fifo, {"a": 1})
    with pytest.raises(InputError, match="not a regular file"):
        io.check_output_file(fifo, "x.json")
    assert fifo.is_fifo() and sorted(p.name for p in tmp_path.iterdir()) == ["fifo"]
    assert io.atomic_write_json(tmp_path / "ok.json", {"a": 1}).read_text().strip()


def _failing_writes(monkeypatch, matches):
    """``atomic_write_bytes`` fails with ENOSPC for the paths ``matches`` accepts."""
    import diffisp.util.io as io

    real = io.atomic_write_bytes

    def write(path, data):
        if matches(Path(path)):
            raise OSError(errno.ENOSPC, ENOSPC_TEXT, str(path))
        return real(path, data)

    monkeypatch.setattr(io, "atomic_write_bytes", write)


@pytest.mark.slow  # each redoes a run's final stage (baselines, evaluation): ~20 s idle
@pytest.mark.parametrize("writer", ["metrics.json", "history.json", "figures"])
def test_train_names_the_path_and_the_kept_checkpoint_when_a_final_write_fails(
    demo_run, writer, tmp_path, monkeypatch, capsys
):
    """The writes after training, through the CLI (the training itself is replayed from a
    finished run's checkpoints: ``--resume`` redoes only the final stage)."""
    run = Path(shutil.copytree(demo_run, tmp_path / "run"))
    (run / "metrics.json").unlink()  # an interrupted final stage: --resume redoes it
    matches = {
        "metrics.json": lambda p: p.name == "metrics.json",
        "history.json": lambda p: p.name == "history.json",
        "figures": lambda p: p.parent.name == "figures",
    }[writer]
    _failing_writes(monkeypatch, matches)
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--no-progress"]) == 2
    err = one_line_error(capsys)
    assert f"{ENOSPC_TEXT}: {run}" in err
    assert f"; kept: checkpoint 3 ({run / 'checkpoints' / '3'}), the last intact one" in err


def test_report_names_the_file_a_full_disk_refused(demo_run, tmp_path, monkeypatch, capsys):
    _failing_writes(monkeypatch, lambda p: p.suffix == ".html")
    out = tmp_path / "report.html"
    assert main(["report", str(demo_run), "--out", str(out)]) == 2
    assert f"{ENOSPC_TEXT}: {out}" in one_line_error(capsys)


def test_kept_checkpoint_note_skips_a_damaged_newest_step(demo_run, tmp_path):
    run = Path(shutil.copytree(demo_run, tmp_path / "run"))
    (run / "checkpoints" / "3" / "diffisp-sha256.json").unlink()
    assert kept_checkpoint_note(run).startswith(f"kept: checkpoint 2 ({run / 'checkpoints'}/2)")


@pytest.mark.slow
def test_train_into_a_full_disk_is_one_line_and_resumes_once_there_is_space(
    tmp_path, monkeypatch, capsys
):
    """A whole training run whose second checkpoint meets a full disk, then ``--resume``."""
    real_save, real_wait = ocp.CheckpointManager.save, ocp.CheckpointManager.wait_until_finished
    steps = []

    def save(manager, step, *args, **kwargs):
        steps.append(step)
        return real_save(manager, step, *args, **kwargs)

    def fill_up(manager):
        real_wait(manager)
        if steps and steps[-1] == 2:  # the disk fills while step 2 is written
            raise ValueError(ORBAX_ENOSPC.format(dir=tmp_path))

    monkeypatch.setattr(ocp.CheckpointManager, "save", save)
    monkeypatch.setattr(ocp.CheckpointManager, "wait_until_finished", fill_up)
    out = tmp_path / "run"
    assert main(["train", *TINY_CLI_ARGS, "--out", str(out)]) == 2
    err = one_line_error(capsys)
    assert f"cannot save checkpoint 2 in {out / 'checkpoints'}: {ENOSPC_TEXT}; kept: " in err
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["1"]
    monkeypatch.undo()
    assert main(["train", "--resume", str(out), "--no-progress"]) == 0
    assert (out / "metrics.json").is_file()


def test_a_full_disk_when_taking_the_run_lock_names_the_lock_file(tmp_path, monkeypatch):
    import diffisp.util.io as io

    def full(fd, data, offset):
        raise OSError(errno.ENOSPC, ENOSPC_TEXT)

    monkeypatch.setattr(io.os, "pwrite", full)
    with pytest.raises(OSError) as info, io.DirectoryLock(tmp_path):
        pass
    assert io.describe_os_error(info.value) == f"{ENOSPC_TEXT}: {tmp_path / io.LOCK_NAME}"
    assert list(tmp_path.iterdir()) == []
