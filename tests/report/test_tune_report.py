"""The report of a ``diffisp tune`` run (its metrics.json, schema diffisp.tune/1)."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from diffisp.report.build import build_report


def _tune_dir(tmp_path, metric="accuracy"):
    (tmp_path / "figures").mkdir()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "figures" / "before_after.png")
    rows = {
        "no_isp": {metric: 0.1, "num_samples": 100, "label": "No ISP"},
        "fixed_gamma": {metric: 0.3, "num_samples": 100, "label": "Fixed gamma 0.5"},
        "learned_isp": {metric: 0.4, "num_samples": 100, "label": "Learned ISP"},
        "clean": {metric: 0.6, "num_samples": 100, "label": "The model on clean images"},
    }
    metrics = {
        "schema": "diffisp.tune/1",
        "command": "diffisp tune --model m.onnx",
        "model": "m.onnx",
        "loss": "consistency",
        "labels_used_in_training": False,
        "metric": metric,
        "results": rows,
        "figures": ["figures/before_after.png"],
        "seconds": 12.5,
    }
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    return tmp_path


def test_tune_report_reads_the_learned_isp_against_the_fixed_ones(tmp_path):
    text = build_report(_tune_dir(tmp_path)).read_text()
    assert "diffisp tune — m.onnx" in text
    assert (
        "40.0\xa0% against 10.0\xa0% with no ISP and 30.0\xa0% for the best fixed pipeline" in text
    )
    assert "(Fixed gamma 0.5)" in text and "no labels" in text
    # The model on clean images is the ceiling: the learned ISP closes (40-10)/(60-10) = 60 %.
    assert "60\xa0%" in text and "The model on clean images" in text
    assert "data:image/png;base64," in text and "12.5 s" in text


def test_a_detection_tune_report_shows_map(tmp_path):
    text = build_report(_tune_dir(tmp_path, metric="map50")).read_text()
    assert "mAP@0.5 40.0\xa0%" in text
