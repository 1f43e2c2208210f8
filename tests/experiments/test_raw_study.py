"""A RAW study end to end (tiny): every RAW row, sweeps, report, a saved RAW model re-evaluated."""

from __future__ import annotations

import json

import pytest

from diffisp.cli import main
from diffisp.experiments.schemas import EVAL, METRICS, validate
from diffisp.experiments.study import run_study
from diffisp.isp.chain import RAW_FRONT
from diffisp.report.build import build_report
from diffisp.report.figures import FIGURES
from diffisp.training.config import TrainConfig

TINY_RAW = dict(
    data="builtin",
    num_train=64,
    num_test=32,
    image_size=16,
    batch_size=16,
    epochs_clean=1,
    epochs_isp=1,
    epochs_joint=1,
    input="raw",
)
# In table order: the clean-trained model as it is, the retrained models, the reference.
RAW_ROWS = [
    "no_isp",
    "conventional",
    "fixed_gamma",
    "auto_isp",
    "histogram_eq",
    "learned_isp_phase1",
    "dark_cnn",
    "fixed_gamma_cnn",
    "packed_raw",
    "learned_isp_phase2",
    "clean_oracle",
]


@pytest.fixture(scope="module")
def raw_study(tmp_path_factory):
    out = tmp_path_factory.mktemp("raw_study")
    result = run_study(
        TrainConfig.of(**TINY_RAW),
        [0],
        out,
        progress=False,
        log=lambda m: None,
        brightness_values=(0.2,),
        noise_values=(0.05,),
        figures=FIGURES,
    )
    return out, result


@pytest.mark.slow
def test_raw_study_reports_every_raw_row(raw_study):
    out, result = raw_study
    validate(json.loads((out / "eval.json").read_text()), EVAL)
    metrics = json.loads((out / "seed0" / "metrics.json").read_text())
    validate(metrics, METRICS)
    assert list(result["methods"]) == RAW_ROWS
    assert metrics["config"]["capture"]["input"] == "raw"
    assert tuple(metrics["config"]["isp"]["stages"][:3]) == RAW_FRONT
    for kind in ("brightness", "noise_sigma"):
        assert set(result["sweeps"][kind]["methods"]) == set(RAW_ROWS)
    rows = metrics["results"]
    assert rows["learned_isp_phase2"]["active_stages"] == len(metrics["config"]["isp"]["stages"])
    assert "Conventional" in rows["conventional"]["label"]
    page = build_report(out)
    assert "Packed-RAW model" in page.read_text()


@pytest.mark.slow
def test_saved_raw_model_evaluates_against_the_conventional_pipeline(raw_study, capsys):
    out, _ = raw_study
    assert main(["eval", "--checkpoint", str(out / "seed0")]) == 0
    printed = capsys.readouterr().out
    assert "learned ISP + CNN" in printed and "conventional pipeline" in printed
