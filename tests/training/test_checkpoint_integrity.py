"""Damaged checkpoints are named and refused; training resumes from the last intact epoch.

Orbax checksums no array data, so these cases loaded silently (a flipped bit became a weight
of 2.9e30) or failed with a 140-line traceback before the SHA-256 manifests.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from flax import nnx
from helpers import randomize, tiny, toy_dataset

from diffisp.errors import CheckpointError
from diffisp.isp.chain import ISP
from diffisp.models.classifier import SmallCNN
from diffisp.training.checkpoint import TrainingCheckpoints, load_model, save_model
from diffisp.training.config import TrainConfig
from diffisp.training.data import prepare_data
from diffisp.training.integrity import (
    MANIFEST_NAME,
    newest_intact_step,
    verify_manifest,
    write_manifest,
)
from diffisp.training.state import PHASES, EpochRecord, TrainState


def _files(step_dir: Path) -> list[Path]:
    return sorted(p for p in step_dir.rglob("*") if p.is_file() and p.name != MANIFEST_NAME)


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory) -> Path:
    isp = randomize(ISP("seed"), seed=1, scale=0.3)
    model = SmallCNN(4, rngs=nnx.Rngs(0))
    return save_model(tmp_path_factory.mktemp("model") / "model", isp, model, {"note": "v1"})


@pytest.fixture
def model_copy(saved_model, tmp_path) -> Path:
    return Path(shutil.copytree(saved_model, tmp_path / "model"))


def test_an_intact_model_loads_and_saving_again_replaces_it(saved_model, tmp_path):
    isp, _, meta = load_model(saved_model)
    assert meta["note"] == "v1"
    target = Path(shutil.copytree(saved_model, tmp_path / "model"))
    save_model(target, isp, SmallCNN(4, rngs=nnx.Rngs(1)), {"note": "v2"})  # no StepExists
    assert load_model(target)[2]["note"] == "v2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no staging dirs left


def test_a_flipped_byte_in_any_file_is_refused_and_named(saved_model, tmp_path):
    files = _files(saved_model / "0")
    assert len(files) >= 5  # orbax's metadata, the OCDBT manifest, data files
    for i, original in enumerate(files):
        damaged = Path(shutil.copytree(saved_model, tmp_path / f"m{i}"))
        path = damaged / original.relative_to(saved_model)
        data = bytearray(path.read_bytes())
        if not data:  # an empty marker file: any content is a change
            data = bytearray(b"x")
        else:
            data[len(data) // 2] ^= 0x01
        path.write_bytes(bytes(data))
        with pytest.raises(CheckpointError, match="damaged") as info:
            load_model(damaged)
        assert path.relative_to(damaged / "0").as_posix() in str(info.value)


def test_a_truncated_weight_file_is_refused(model_copy):
    biggest = max(_files(model_copy / "0"), key=lambda p: p.stat().st_size)
    biggest.write_bytes(biggest.read_bytes()[: biggest.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"bytes, .* were saved"):
        load_model(model_copy)


def test_a_missing_manifest_or_a_missing_file_is_refused(model_copy, tmp_path):
    other = Path(shutil.copytree(model_copy, tmp_path / "other"))
    (model_copy / "0" / MANIFEST_NAME).unlink()
    with pytest.raises(CheckpointError, match="no checksum manifest"):
        load_model(model_copy)
    _files(other / "0")[0].unlink()
    with pytest.raises(CheckpointError, match="is missing"):
        load_model(other)


def _rewrite_metadata(model_dir: Path, text: str) -> None:
    """Change the JSON metadata *and* its manifest: what a buggy tool (not bit rot) would do."""
    (model_dir / "0" / "meta" / "metadata").write_text(text)
    (model_dir / "0" / MANIFEST_NAME).unlink()
    write_manifest(model_dir / "0")


def test_garbage_metadata_is_one_clean_error(model_copy):
    _rewrite_metadata(model_copy, "{not json" + "x" * 3000)
    with pytest.raises(CheckpointError, match="unreadable model metadata") as info:
        load_model(model_copy)
    assert len(str(info.value)) < 500  # the gist, not the whole payload


def test_an_unknown_format_version_is_refused(model_copy):
    meta = json.loads((model_copy / "0" / "meta" / "metadata").read_text())
    _rewrite_metadata(model_copy, json.dumps({**meta, "format": 99}))
    with pytest.raises(CheckpointError, match="format 99; this diffisp reads format 1"):
        load_model(model_copy)


def test_a_manifest_that_is_not_json_is_refused(model_copy):
    (model_copy / "0" / MANIFEST_NAME).write_text("garbage")
    with pytest.raises(CheckpointError, match="unreadable manifest"):
        verify_manifest(model_copy / "0")


TINY = {k: v for k, v in tiny().items() if not k.startswith("epochs_")}


def test_resume_falls_back_past_a_damaged_epoch(tmp_path):
    cfg = TrainConfig.of(**TINY)
    run_data = prepare_data(toy_dataset(), cfg)
    trainer = TrainState.create(cfg, run_data.num_classes)
    checkpoints = TrainingCheckpoints(tmp_path)
    record = EpochRecord(0, "clean", 1, 1.0, 0.5, 0.5, 0.1)
    trainer.optimizer = trainer.new_optimizer(PHASES[0], run_data.num_train)  # mid phase 0
    trainer.history, trainer.position = [record], (0, 1)
    checkpoints.save(trainer)  # step 1
    trainer.history, trainer.position = [record, record], (0, 2)
    checkpoints.save(trainer)  # step 2, then damaged
    weights = max(_files(tmp_path / "checkpoints" / "2"), key=lambda p: p.stat().st_size)
    data = bytearray(weights.read_bytes())
    data[-100] ^= 0xFF
    weights.write_bytes(bytes(data))

    assert newest_intact_step(tmp_path / "checkpoints", [1, 2])[0] == 1
    damaged = checkpoints.discard_damaged()
    assert [step for step, _ in damaged] == [2] and "fails its checksum" in damaged[0][1]
    assert checkpoints.latest_step() == 1
    assert (tmp_path / "checkpoints-damaged").is_dir()  # kept for inspection

    fresh = TrainState.create(cfg, run_data.num_classes)
    checkpoints.restore_into(fresh, run_data.num_train)
    assert fresh.position == (0, 1) and len(fresh.history) == 1
    trainer.history = [record, record]
    checkpoints.save(trainer)  # step 2 again: no collision with the damaged one
    assert checkpoints.latest_step() == 2


def test_restore_refuses_a_damaged_latest_step_if_not_discarded(tmp_path):
    cfg = TrainConfig.of(**TINY)
    trainer = TrainState.create(cfg, 10)
    checkpoints = TrainingCheckpoints(tmp_path)
    checkpoints.save(trainer)  # step 0
    meta = tmp_path / "checkpoints" / "0" / "meta" / "metadata"
    meta.write_text("garbage")
    with pytest.raises(CheckpointError, match=r"checkpoints/0 is damaged: meta/metadata"):
        checkpoints.restore_into(trainer, 64)
    assert np.isfinite(float(np.asarray(trainer.model.head.kernel).sum()))
