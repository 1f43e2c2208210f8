"""Detection wired through config, data, state, files, report and CLI (fast parts; the slow
end-to-end runs are in test_detection_e2e.py)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from diffisp.cli import _print_results, build_parser, config_from_args
from diffisp.data.scenes import load_scenes
from diffisp.errors import ConfigError, DataError
from diffisp.experiments.run import annotation_notes
from diffisp.experiments.schemas import validate_eval, validate_metrics
from diffisp.experiments.study import _aggregate_methods
from diffisp.models.detector import SmallCenterNet
from diffisp.models.task import CLASSIFY, DETECT
from diffisp.report.build import build_report
from diffisp.report.detection_figures import detections_figure
from diffisp.training.config import TrainConfig
from diffisp.training.data import prepare_data
from diffisp.training.state import TrainState
from diffisp.util.io import atomic_write_json

REPO = Path(__file__).resolve().parents[2]


def test_config_checks_the_task_against_the_data():
    cfg = TrainConfig.of(task="detect", data="scenes", image_size=64)
    assert cfg.task.name == "detect" and TrainConfig.from_dict(cfg.to_dict()) == cfg
    assert (
        TrainConfig.from_dict(
            {k: v for k, v in cfg.to_dict().items() if k != "task"} | {"data": "builtin"}
        ).task.name
        == "classify"
    )  # configs saved before the field: classification
    with pytest.raises(ConfigError, match=r"task must be one of classify, detect; got 'segment'"):
        TrainConfig.of(task="segment")
    with pytest.raises(ConfigError, match=r"--task detect needs detection data .*got 'builtin'"):
        TrainConfig.of(task="detect", data="builtin")
    with pytest.raises(ConfigError, match="add --task detect"):
        TrainConfig.of(data="voc:/x")
    with pytest.raises(ConfigError, match="multiple of 16"):
        TrainConfig.of(task="detect", data="scenes", image_size=40)


def test_config_makes_detection_paths_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = TrainConfig.of(task="detect", data="coco:mine", image_size=32)
    assert str(cfg.data.source) == f"coco:{tmp_path / 'mine'}"


def test_cli_task_flag_and_detection_defaults():
    def cfg(*argv):
        return config_from_args(build_parser().parse_args(["train", *argv]))

    detect = cfg("--task", "detect")
    assert (detect.task.name, str(detect.data.source), detect.data.image_size) == (
        "detect",
        "scenes",
        64,
    )
    assert cfg("--task", "detect", "--image-size", "32").data.image_size == 32
    assert cfg().task.name == "classify" and cfg().data.image_size == 32
    with pytest.raises(ConfigError, match="add --task detect"):
        cfg("--data", "scenes")


def test_prepare_data_gives_detection_targets_and_the_state_the_detector():
    dataset = load_scenes(8, 4, 32, seed=0)
    cfg = TrainConfig.of(task="detect", data="scenes", num_train=8, num_test=4, batch_size=4)
    data = prepare_data(dataset, cfg)
    assert set(data.train.targets) == {"boxes", "labels", "difficult"}
    assert data.train.targets["boxes"].shape == (8, 8, 4)
    assert data.test_labels["labels"].dtype == jnp.int32
    assert data.test_labels["difficult"].dtype == jnp.bool_
    np.testing.assert_array_equal(data.test_labels["labels"], dataset.test_labels)
    state = TrainState.create(cfg, data.num_classes)
    assert state.task is DETECT and isinstance(state.model, SmallCenterNet)
    assert TrainConfig().task.name == "classify" and CLASSIFY.name == "classify"


def test_json_files_write_nan_as_null(tmp_path):
    path = atomic_write_json(
        tmp_path / "m.json", {"a": float("nan"), "b": [1.0, float("inf")], "c": (np.float64(2),)}
    )
    assert json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(c)) == {
        "a": None,
        "b": [1.0, None],
        "c": [2.0],
    }


def _metrics(metric: str | None, rows: dict) -> dict:
    base = {
        "schema": "diffisp.metrics/1",
        "created": "now",
        "command": None,
        "seed": 0,
        "dataset": {
            "name": "scenes",
            "description": "d",
            "is_standin": True,
            "num_train": 8,
            "num_test": 4,
            "num_classes": 2,
            "class_names": ["a", "b"],
            "image_size": 32,
        },
        "config": {},
        "results": rows,
        "learned_parameters": {},
        "timing": {"train_seconds": 1, "total_seconds": 2},
        "figures": [],
        "environment": {"python": "3", "packages": {}},
    }
    if metric is not None:
        base["metric"] = metric
    return base


def _row(**values) -> dict:
    return {"label": "L", "num_samples": 4, "description": "d", "gap_closed": None, **values}


def test_metrics_validator_requires_the_files_metric_in_every_row():
    validate_metrics(_metrics("map50", {"no_isp": _row(map50=0.5, map=None)}))
    validate_metrics(_metrics(None, {"no_isp": _row(accuracy=0.5)}))  # old file: accuracy
    with pytest.raises(DataError, match=r"\$.results.no_isp has no 'map50' field"):
        validate_metrics(_metrics("map50", {"no_isp": _row(accuracy=0.5)}))
    with pytest.raises(DataError, match=r"has no 'accuracy' field"):
        validate_metrics(_metrics(None, {"no_isp": _row(map50=0.5)}))


def test_study_aggregates_the_headline_and_map():
    runs = [
        {"results": {"no_isp": _row(map50=m50, map=m, gap_closed=None)}}
        for m50, m in ((0.4, 0.2), (0.6, 0.3))
    ]
    row = _aggregate_methods(runs, "map50")["no_isp"]
    assert row["map50"] == [0.4, 0.6] and math.isclose(row["mean"], 0.5)
    assert math.isclose(row["std"], math.sqrt(0.02))
    assert row["secondary"]["map"]["values"] == [0.2, 0.3]
    assert math.isclose(row["secondary"]["map"]["mean"], 0.25)
    assert (
        "secondary"
        not in _aggregate_methods([{"results": {"k": _row(accuracy=0.5)}}], "accuracy")["k"]
    )


def test_an_eval_json_without_metric_still_validates_and_renders(tmp_path):
    source = REPO / "docs" / "results" / "study-full"
    data = json.loads((source / "eval.json").read_text())
    assert "metric" not in data  # written before detection: its rows are accuracies
    validate_eval(data)
    copy = tmp_path / "study"
    shutil.copytree(source, copy, ignore=shutil.ignore_patterns("report.html"))
    html = build_report(copy).read_text()
    assert "<th>Accuracy</th>" in html.replace(' class="num"', "")
    assert "mAP@" not in html


def test_detection_run_report_names_the_metric(tmp_path):
    rows = {
        "no_isp": _row(map50=0.25, map=0.1, map_medium=None, description="floor"),
        "learned_isp_phase2": _row(map50=0.5, map=0.2, map_medium=None),
        "clean_oracle": _row(map50=0.75, map=0.4, map_medium=None),
    }
    atomic_write_json(tmp_path / "metrics.json", _metrics("map50", rows))
    html = build_report(tmp_path).read_text()
    assert "mAP@0.5" in html and "mAP@[.5:.95]" in html
    assert "50.0\u00a0%" in html  # the phase 2 row's mAP@0.5
    assert "generated scenes, NOT a real detection benchmark" in html
    assert "Wilson" not in html  # no binomial interval for mAP


def test_cli_results_table_shows_map_and_a_dash_for_nan(capsys):
    rows = {"no_isp": _row(label="No ISP", map50=0.5, map=float("nan"))}
    _print_results(_metrics("map50", rows))
    out = capsys.readouterr().out
    assert "map50" in out and "50.0%" in out and " - " in out


def test_detections_figure_draws_predictions_and_ground_truth(tmp_path):
    images = np.full((2, 32, 32, 3), 0.5, np.float32)
    found = {
        "boxes": np.array([[[4, 4, 20, 20], [0, 0, 8, 8]]] * 2, np.float32),
        "scores": np.array([[0.9, 0.1]] * 2, np.float32),
        "classes": np.zeros((2, 2), np.int32),
        "valid": np.ones((2, 2), bool),
    }
    gt = np.array([[[5, 5, 21, 21]]] * 2, np.float32)
    path = detections_figure(
        tmp_path / "d.png", [("dark", images, found)], gt, np.zeros((2, 1), np.int32), ["thing"]
    )
    from PIL import Image

    pixels = np.asarray(Image.open(path).convert("RGB")).astype(int)
    red = (pixels[..., 0] > 200) & (pixels[..., 1] < 60) & (pixels[..., 2] < 60)
    green = (pixels[..., 1] > 200) & (pixels[..., 0] < 100) & (pixels[..., 2] < 100)
    assert red.sum() > 50 and green.sum() > 50  # a prediction and a ground-truth box drawn


def test_annotation_notes_report_skips_and_clips():
    class Data:
        def __init__(self) -> None:
            self.name, self.clipped = "coco:x", 3
            self.skipped = {"crowd": 2, "zero_area": 0, "outside_image": 1}

    assert annotation_notes(Data()) == [
        "note: skipped 3 annotation(s) of coco:x: 2 crowd, 1 outside image",
        "note: clipped 3 box(es) of coco:x to their image",
    ]
    assert annotation_notes(load_scenes(2, 1, 16)) == []
