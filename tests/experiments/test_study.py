"""Multi-seed study: schema of eval.json/metrics.json, single-point sweeps, headline."""

from __future__ import annotations

import json

import pytest

from diffisp.errors import ConfigError, DataError
from diffisp.experiments.schemas import EVAL, METRICS, validate
from diffisp.experiments.study import headline, run_study
from diffisp.report.figures import FIGURES
from diffisp.training.config import TrainConfig

TINY = dict(
    data="builtin",
    num_train=64,
    num_test=32,
    image_size=16,
    batch_size=16,
    epochs_clean=1,
    epochs_isp=1,
    epochs_joint=1,
)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("study")
    result = run_study(
        TrainConfig(**TINY),
        [0],
        out,
        progress=False,
        log=lambda m: None,
        brightness_values=(0.2,),
        noise_values=(0.05,),
        figures=FIGURES,
    )
    return out, result


def test_eval_json_has_the_documented_schema(study):
    out, result = study
    on_disk = json.loads((out / "eval.json").read_text())
    assert on_disk == json.loads(json.dumps(result))
    validate(on_disk, EVAL)
    assert on_disk["schema"] == "diffisp.eval/1" and on_disk["seeds"] == [0]
    validate(json.loads((out / "seed0" / "metrics.json").read_text()), METRICS)


def test_single_point_sweeps(study):
    out, result = study
    for kind, value in (("brightness", 0.2), ("noise_sigma", 0.05)):
        sweep = result["sweeps"][kind]
        assert sweep["values"] == [value]
        for curve in sweep["methods"].values():
            assert len(curve["mean"]) == 1 and curve["std"] == [0.0]
    assert (out / "figures" / "sweep_brightness.png").stat().st_size > 1000
    assert len(headline(result)) == 2


def test_one_seed_has_zero_std_and_gap_closed_bounds(study):
    _, result = study
    rows = result["methods"]
    assert all(row["std"] == 0.0 and len(row["accuracy"]) == 1 for row in rows.values())
    if rows["no_isp"]["gap_closed"] is not None:
        assert rows["no_isp"]["gap_closed"]["mean"] == 0.0


def test_study_refuses_to_overwrite_and_bad_seeds(study):
    out, _ = study
    with pytest.raises(ConfigError, match="already holds a study"):
        run_study(TrainConfig(**TINY), [0], out, progress=False)
    with pytest.raises(ConfigError, match="distinct non-negative"):
        run_study(TrainConfig(**TINY), [1, 1], out / "other", progress=False)


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
