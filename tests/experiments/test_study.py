"""Multi-seed study: schema of eval.json/metrics.json, single-point sweeps, headline."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import tiny

from diffisp.errors import ConfigError, DataError
from diffisp.experiments.schemas import EVAL, METRICS, validate
from diffisp.experiments.study import _aggregate_methods, _aggregate_sweep, headline, run_study
from diffisp.report.figures import FIGURES
from diffisp.training.config import TrainConfig
from diffisp.util.stats import gap_closed

TINY = tiny()


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("study")
    result = run_study(
        TrainConfig.of(**TINY),
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
def test_eval_json_has_the_documented_schema(study):
    out, result = study
    on_disk = json.loads((out / "eval.json").read_text())
    assert on_disk == json.loads(json.dumps(result))
    validate(on_disk, EVAL)
    assert on_disk["schema"] == "diffisp.eval/1" and on_disk["seeds"] == [0]
    validate(json.loads((out / "seed0" / "metrics.json").read_text()), METRICS)


@pytest.mark.slow
def test_single_point_sweeps(study):
    out, result = study
    for kind, value in (("brightness", 0.2), ("noise_sigma", 0.05)):
        sweep = result["sweeps"][kind]
        assert sweep["values"] == [value]
        for curve in sweep["methods"].values():
            # One seed: the mean is that seed's accuracy on the 32 test images, k / 32.
            (mean,) = curve["mean"]
            assert mean * 32 == pytest.approx(round(mean * 32)) and curve["std"] == [0.0]
    assert (out / "figures" / "sweep_brightness.png").stat().st_size > 1000
    assert len(headline(result)) == 2


@pytest.mark.slow
def test_one_seed_rows_are_that_seeds_metrics(study):
    out, result = study
    seed = json.loads((out / "seed0" / "metrics.json").read_text())["results"]
    rows = result["methods"]
    assert list(rows) == list(seed)
    for key, row in rows.items():
        acc = seed[key]["accuracy"]
        assert row["accuracy"] == [acc] and row["mean"] == acc and row["std"] == 0.0
        assert row["num_samples"] == 32 and acc * 32 == pytest.approx(round(acc * 32))
        expected_gap = gap_closed(acc, seed["no_isp"]["accuracy"], seed["clean_oracle"]["accuracy"])
        if expected_gap is None:  # no-ISP and the oracle tie on this tiny run: no gap to close
            assert row["gap_closed"] is None
        else:
            assert row["gap_closed"] == {"mean": pytest.approx(expected_gap), "std": 0.0}


def run_metrics(accuracies: dict[str, float]) -> dict:
    """A seed's metrics.json results as the study reads them (gap from no_isp to clean_oracle)."""
    floor, ceiling = accuracies["no_isp"], accuracies["clean_oracle"]
    return {
        "results": {
            key: {
                "description": key,
                "accuracy": acc,
                "num_samples": 100,
                "gap_closed": gap_closed(acc, floor, ceiling),
            }
            for key, acc in accuracies.items()
        }
    }


def test_seeds_aggregate_to_mean_and_sample_std():
    runs = [
        run_metrics({"no_isp": 0.2, "learned": 0.5, "clean_oracle": 0.8}),
        run_metrics({"no_isp": 0.4, "learned": 0.7, "clean_oracle": 0.8}),
        run_metrics({"no_isp": 0.3, "learned": 0.9, "clean_oracle": 0.8}),
    ]
    rows = _aggregate_methods(runs)
    learned = rows["learned"]
    assert learned["accuracy"] == [0.5, 0.7, 0.9]
    assert learned["mean"] == pytest.approx(0.7) and learned["std"] == pytest.approx(0.2)  # ddof=1
    gaps = [0.3 / 0.6, 0.3 / 0.4, 0.6 / 0.5]  # (acc - no_isp) / (oracle - no_isp) per seed
    assert learned["gap_closed"]["mean"] == pytest.approx(np.mean(gaps))
    assert learned["gap_closed"]["std"] == pytest.approx(np.std(gaps, ddof=1))
    assert rows["no_isp"]["gap_closed"] == {"mean": 0.0, "std": 0.0}
    sweep = _aggregate_sweep(
        [{"noise": {"m": [0.1, 0.5]}}, {"noise": {"m": [0.3, 0.5]}}],
        "noise",
        "noise sigma",
        [0.0, 0.1],
        fixed={},
        trained=[0.02, 0.02],
    )
    assert sweep["methods"]["m"]["mean"] == pytest.approx([0.2, 0.5])
    assert sweep["methods"]["m"]["std"] == pytest.approx([np.sqrt(0.02), 0.0])


@pytest.mark.slow
def test_study_refuses_to_overwrite_and_bad_seeds(study):
    out, _ = study
    with pytest.raises(ConfigError, match="already holds a study"):
        run_study(TrainConfig.of(**TINY), [0], out, progress=False)
    with pytest.raises(ConfigError, match="distinct non-negative"):
        run_study(TrainConfig.of(**TINY), [1, 1], out / "other", progress=False)


@pytest.mark.slow
def test_resuming_a_finished_study_reproduces_it_without_training(study, tmp_path, monkeypatch):
    import shutil

    import diffisp.experiments.study as study_module

    def no_training(*args, **kwargs):
        raise AssertionError("a finished seed was run again")

    out, result = study
    shutil.copytree(out, tmp_path / "study")
    assert json.loads((tmp_path / "study" / "seed0" / "sweeps.json").read_text())["values"] == {
        "brightness": [0.2],
        "noise_sigma": [0.05],
    }
    monkeypatch.setattr(study_module, "run_experiment", no_training)
    again = run_study(
        TrainConfig.of(**TINY),
        [0],
        tmp_path / "study",
        resume=True,
        progress=False,
        log=lambda m: None,
        brightness_values=(0.2,),
        noise_values=(0.05,),
    )
    for key, row in result["methods"].items():
        assert again["methods"][key]["accuracy"] == row["accuracy"], key
    assert again["sweeps"] == result["sweeps"]


def test_an_interrupted_study_is_resumed_with_its_own_command():
    from pathlib import Path

    from diffisp.experiments.study import _resume_command

    command = "diffisp eval --full --seeds 3 --out runs/s"
    assert _resume_command(command, Path("runs/s")) == command + " --resume"
    assert _resume_command(command + " --resume", Path("runs/s")) == command + " --resume"
    assert "--out runs/s --resume" in _resume_command(None, Path("runs/s"))


def test_resumed_study_refuses_other_settings_naming_them(tmp_path):
    # A seed already run with other settings: resuming the study with these must not train the
    # missing seeds one way and aggregate them with runs done another way.
    saved = TrainConfig.of(**{**TINY, "conditions": "mixed"}, seed=0)
    (tmp_path / "seed0").mkdir()
    (tmp_path / "seed0" / "config.json").write_text(json.dumps(saved.to_dict()))
    with pytest.raises(ConfigError, match=r"differ in conditions: 'mixed' -> 'uniform'"):
        run_study(TrainConfig.of(**TINY), [0, 1], tmp_path, resume=True, progress=False)
    assert not (tmp_path / "seed1").exists()


def test_validate_names_the_offending_field():
    with pytest.raises(DataError, match=r"\$.dataset has no 'name' field"):
        validate({"dataset": {}}, {"dataset": {"name": str}})
    with pytest.raises(DataError, match=r"\$.x must be int/float; got str"):
        validate({"x": "1"}, {"x": (int, float)})


def test_sweep_figure_gives_every_curve_its_own_colour_and_band(tmp_path, saved_figures):
    from matplotlib.collections import PolyCollection
    from matplotlib.colors import to_rgb

    from diffisp.report import figures

    keys = [*figures._SWEEP_STYLE, "global_full", "adaptive_params", "adaptive_l0", "adaptive_l2"]
    curve = {"mean": [0.2, 0.5], "std": [0.01, 0.02]}
    data = {
        "parameter": "brightness factor",
        "values": [0.1, 0.3],
        "fixed": {"noise_sigma": 0.02},
        "trained_range": [0.1, 0.3],
        "methods": {key: curve for key in keys},
    }
    figures.sweep_figure(tmp_path / "s.png", data, {})
    (fig,) = saved_figures
    ax = fig.axes[0]
    line_colours = [to_rgb(line.get_color()) for line in ax.get_lines()]
    assert len(line_colours) == len(keys) and len(set(line_colours)) == len(keys)
    bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
    band_colours = [tuple(b.get_facecolor()[0][:3]) for b in bands[-len(keys) :]]
    assert band_colours == line_colours


def test_a_study_reads_its_two_questions_as_paired_differences_over_seeds():
    from diffisp.cli.commands import study_reading
    from diffisp.experiments.study import seed_comparisons

    def run(gamma_cnn, adaptive, gamma, frozen):
        def row(group, learned, value, label):
            return {"group": group, "learned": learned, "accuracy": value, "label": label}

        return {
            "results": {
                "no_isp": row("frozen", False, 0.2, "No ISP"),
                "fixed_gamma": row("frozen", False, gamma, "Fixed gamma 0.5"),
                "adaptive_frozen": row("frozen", True, frozen, "Adaptive ISP, frozen CNN"),
                "fixed_gamma_cnn": row("retrained", False, gamma_cnn, "Fixed gamma + CNN"),
                "adaptive": row("retrained", True, adaptive, "Adaptive ISP"),
                "clean_oracle": row("reference", False, 0.9, "Clean oracle"),
            }
        }

    # Seed to seed both methods move together; their difference hardly does.
    runs = [run(0.60, 0.66, 0.30, 0.40), run(0.50, 0.57, 0.28, 0.41), run(0.55, 0.60, 0.29, 0.45)]
    found = seed_comparisons(runs, "accuracy")
    assert (found["retrained"]["a"], found["retrained"]["b"]) == ("adaptive", "fixed_gamma_cnn")
    np.testing.assert_allclose(found["retrained"]["differences"], [0.06, 0.07, 0.05])
    assert found["retrained"]["mean"] == pytest.approx(0.06)
    assert found["retrained"]["std"] == pytest.approx(0.01)
    assert found["frozen"]["b"] == "fixed_gamma"
    methods = _aggregate_methods(
        [
            {
                "results": {
                    k: {**r, "num_samples": 500, "description": ""} for k, r in x["results"].items()
                }
            }
            for x in runs
        ]
    )
    assert methods["adaptive"]["group"] == "retrained" and methods["adaptive"]["learned"]
    lines = study_reading({"methods": methods, "seeds": [0, 1, 2], "comparisons": found})
    assert lines[0] == (
        "Model retrained: Adaptive ISP 61.0% ± 4.6% vs Fixed gamma + CNN 55.0% ± 5.0%: paired "
        "difference +6.0 ± 1.0 points over 3 seed(s) (500 test images each)."
    )
    assert lines[1].startswith("Model left as it is: Adaptive ISP, frozen CNN")
    # Runs of an older version have no groups: no reading, no error.
    assert seed_comparisons([{"results": {"no_isp": {"accuracy": 0.2}}}], "accuracy") == {}
