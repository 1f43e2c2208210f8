"""``diffisp export`` (diffisp.experiments.export): a saved run's ISP to JSON and ONNX files."""

from __future__ import annotations

import json

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from helpers import randomize

from diffisp.cli import main
from diffisp.errors import ConfigError, DataError
from diffisp.isp import tuning_file
from diffisp.models.task import TASKS
from diffisp.training.checkpoint import save_model
from diffisp.training.config import TrainConfig
from diffisp.training.state import build_isp


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run directory holding a saved (randomised) seed-preset ISP and a classifier."""
    cfg = TrainConfig.of(isp=("ccm", "desaturation", "tone_curve", "gamma", "sharpen"))
    isp = build_isp(cfg)
    randomize(isp, seed=5, scale=0.5)
    model = TASKS["classify"].build_model(10, rngs=nnx.Rngs(0))
    run_dir = tmp_path_factory.mktemp("run")
    save_model(run_dir / "model", isp, model, {"config": cfg.to_dict()})
    return run_dir, isp, cfg


def test_json_export_reloads_to_identical_output(run, tmp_path, capsys):
    run_dir, isp, cfg = run
    out = tmp_path / "isp.json"
    assert main(["export", str(run_dir), "--format", "json", "--out", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    doc = json.loads(out.read_text())
    from diffisp.experiments.export import config_digest

    assert doc["config_sha256"] == config_digest(cfg.to_dict())
    assert [s["name"] for s in doc["chain"]["stages"]] == list(cfg.isp.stages)
    images = jnp.asarray(np.random.default_rng(0).uniform(size=(2, 16, 16, 3)), jnp.float32)
    again = tuning_file.load(out)
    np.testing.assert_array_equal(np.asarray(again(images)), np.asarray(isp(images)))


def test_export_refuses_an_out_it_cannot_write_before_loading(run, tmp_path, capsys):
    import os

    run_dir, _, _ = run
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for out, message in [
        ("/", "the export file / is a directory, not a file"),  # was a ValueError traceback
        (str(tmp_path), "is a directory, not a file"),
        (str(fifo), "not a regular file"),  # --out /dev/null as root replaced the device
    ]:
        assert main(["export", str(run_dir), "--format", "json", "--out", out]) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err and err.startswith("diffisp: error: "), err
        assert message in err, err
    assert fifo.is_fifo()


def test_onnx_export_and_damaged_files(run, tmp_path):
    pytest.importorskip("jax2onnx")
    from diffisp.experiments.export import read_onnx

    run_dir, _, _ = run
    out = tmp_path / "isp.onnx"
    assert main(["export", str(run_dir), "--format", "onnx", "--out", str(out)]) == 0
    blob, props = read_onnx(out)
    assert props["kind"] == "global" and len(props["config_sha256"]) == 64
    out.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DataError, match="truncated or edited"):
        read_onnx(out)
    import onnx

    model = onnx.load_from_string(blob)
    for prop in model.metadata_props:
        if prop.key == "format":
            prop.value = "diffisp.isp-onnx/9"
    out.write_bytes(model.SerializeToString())
    with pytest.raises(ConfigError, match=r"format .diffisp\.isp-onnx/9."):
        read_onnx(out)


def test_cli_errors_are_one_line(run, tmp_path, capsys):
    run_dir, _, _ = run
    bad = tmp_path / "isp.json"
    tuning_file.write(bad, build_isp(TrainConfig()))
    doc = json.loads(bad.read_text())
    doc["chain"]["stages"][3]["values"]["gamma"] = 20.0
    bad.write_text(json.dumps(doc))
    with pytest.raises(ConfigError, match=r"chain\.stages\[3\]\.values\.gamma = 20"):
        tuning_file.load(bad)
    code = main(["export", str(tmp_path / "nothing"), "--format", "json", "--out", str(bad)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("diffisp: error:") and err.count("\n") == 1
    args = ["export", str(run_dir), "--format", "onnx", "--out", str(bad), "--size", "big"]
    assert main(args) == 2
