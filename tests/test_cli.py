"""The command line: a tiny demo run, eval and apply on its checkpoint, clean errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import TINY_CLI_ARGS
from PIL import Image

from diffisp.cli import main

TINY_ARGS = TINY_CLI_ARGS


@pytest.fixture
def run_dir(demo_run):
    """The session's shared tiny demo run (tests/conftest.py); these tests only read it."""
    return demo_run


def test_demo_writes_metrics_figures_and_checkpoint(run_dir):
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["schema"] == "diffisp.metrics/1"
    assert metrics["dataset"]["name"] == "builtin" and metrics["dataset"]["is_standin"]
    assert {"no_isp", "fixed_gamma", "dark_cnn", "learned_isp_phase2", "clean_oracle"} <= set(
        metrics["results"]
    )
    assert all(r["num_samples"] == 32 for r in metrics["results"].values())
    assert metrics["command"].startswith("diffisp demo")
    assert metrics["environment"]["packages"]["jax"]
    for name in ("samples", "training_curves", "learned_parameters", "before_after"):
        png = run_dir / "figures" / f"{name}.png"
        assert Image.open(png).size[0] > 300
    assert (run_dir / "model").is_dir() and (run_dir / "config.json").is_file()


def test_eval_on_the_saved_model(run_dir, capsys):
    assert main(["eval", "--checkpoint", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "learned ISP + CNN" in out and "32 images" in out


def test_apply_writes_processed_pngs(run_dir, tmp_path, capsys):
    rng = np.random.default_rng(0)
    src = tmp_path / "dark.png"
    Image.fromarray((rng.uniform(0, 0.2, (40, 50, 3)) * 255).astype(np.uint8)).save(src)
    out_dir = tmp_path / "out"
    assert main(["apply", str(src), "--checkpoint", str(run_dir), "--out", str(out_dir)]) == 0
    result = np.asarray(Image.open(out_dir / "dark_isp.png"))
    assert result.shape == (40, 50, 3) and result.dtype == np.uint8


def test_existing_run_dir_is_not_overwritten(run_dir, capsys):
    before = (run_dir / "metrics.json").read_bytes()
    assert main(["demo", *TINY_ARGS, "--out", str(run_dir)]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert (run_dir / "metrics.json").read_bytes() == before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["demo", "--batch-size", "0"], "batch_size must be a positive integer"),
        (["demo", "--lr-isp", "-1"], "lr_isp must be a learning rate"),
        (["demo", "--brightness", "0.5", "1.5"], "0 < low <= high <= 1"),
        (["demo", "--isp", "gamma,blur"], "unknown ISP stage 'blur'"),
        (["demo", "--data", "cifar100"], "cifar100"),
        (["eval", "--checkpoint", "/nonexistent/run"], "not found"),
    ],
)
def test_bad_input_exits_2_with_one_line(args, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # where a default run directory would go
    assert main([*args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert err.count("\n") == 1
    assert not (tmp_path / "runs").exists()  # a run that cannot start leaves nothing behind


def test_config_file_sits_between_the_preset_and_the_command_line(tmp_path):
    from diffisp.cli import build_parser, config_from_args

    path = tmp_path / "partial.json"
    path.write_text(json.dumps({"schedule": "constant", "num_test": 300}))

    def cfg(*args):
        return config_from_args(build_parser().parse_args(["train", "--config", str(path), *args]))

    full = cfg("--full")  # the preset's sizes where the file is silent
    assert (full.data.num_train, full.data.num_test, full.optim.epochs_joint) == (2000, 300, 10)
    assert full.optim.schedule == "constant"
    assert cfg("--quick").data.num_train == 512
    assert cfg("--quick", "--num-test", "64").data.num_test == 64  # the command line wins


def test_the_results_table_is_read_in_two_lines_with_paired_intervals():
    from diffisp.cli.commands import reading

    def row(label, acc):
        return {"label": label, "accuracy": acc, "num_samples": 100}

    metrics = {
        "metric": "accuracy",
        "dataset": {"num_test": 100},
        "results": {
            "no_isp": row("No ISP", 0.20),
            "fixed_gamma": row("Fixed gamma 0.5", 0.30),
            "adaptive_l0_frozen": row("Adaptive ISP, frozen CNN", 0.45),
            "fixed_gamma_cnn": row("Fixed gamma + fine-tuned CNN", 0.55),
            "learned_isp_phase2": row("Learned ISP (phase 2)", 0.60),
        },
        "comparisons": {
            "retrained": {
                "a": "learned_isp_phase2",
                "b": "fixed_gamma_cnn",
                "a_value": 0.60,
                "b_value": 0.55,
                "difference": 0.05,
                "low": -0.02,
                "high": 0.12,
                "num_samples": 100,
            },
            "frozen": {
                "a": "adaptive_l0_frozen",
                "b": "fixed_gamma",
                "a_value": 0.45,
                "b_value": 0.30,
                "difference": 0.15,
            },
        },
    }
    retrain, frozen = reading(metrics)
    assert retrain == (
        "Model retrained: Learned ISP (phase 2) 60.0% vs Fixed gamma + fine-tuned CNN 55.0%: "
        "+5.0 points (paired 95 % interval -2.0 to +12.0, 100 test images, one seed)."
    )
    assert frozen.startswith("Model left as it is: Adaptive ISP, frozen CNN 45.0% vs Fixed gamma")
    assert "+15.0 points (100 test images, one seed; no interval)" in frozen
    assert frozen.endswith("the model alone on these captures: 20.0%.")
    del metrics["comparisons"]["retrained"]
    assert reading(metrics) == [frozen]
    assert reading({**metrics, "comparisons": {}}) == []  # an older run's metrics: no reading
