"""Detection end to end through the CLI: the scenes, a COCO folder and a VOC folder each train,
evaluate and report with the same protocol as classification (tiny sizes; minutes on a CPU)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import write_voc_from_scenes

from diffisp.cli import main
from diffisp.data.scenes import write_scenes_coco
from diffisp.experiments.schemas import validate_eval, validate_metrics

pytestmark = pytest.mark.slow

TINY = [
    "--task", "detect", "--image-size", "32", "--batch-size", "8",
    "--epochs-clean", "1", "--epochs-isp", "1", "--epochs-joint", "1", "--no-progress",
]  # fmt: skip
PROTOCOL = {
    "no_isp",
    "fixed_gamma",
    "auto_isp",
    "histogram_eq",
    "dark_cnn",
    "fixed_gamma_cnn",
    "learned_isp_phase1",
    "learned_isp_phase2",
    "clean_oracle",
}


def _check_run(out: Path) -> dict:
    metrics = json.loads((out / "metrics.json").read_text())
    validate_metrics(metrics)
    assert (metrics["task"], metrics["metric"]) == ("detect", "map50")
    assert set(metrics["results"]) == PROTOCOL
    for key, row in metrics["results"].items():
        for name in ("map50", "map"):
            assert row[name] is None or 0.0 <= row[name] <= 1.0, (key, name)
        assert row["num_samples"] == metrics["dataset"]["num_test"]
        if row["map50"] is not None:  # its bootstrap interval over the test images
            assert 0.0 <= row["low"] <= row["high"] <= 1.0 and row["resamples"] > 0, key
        assert "CNN" not in row["label"] + row["description"], key  # the detector, named so
    assert metrics["results"]["dark_cnn"]["label"] == "Detector fine-tuned on dark"
    return metrics


def test_scenes_train_eval_report(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "--data", "scenes", "--num-train", "32", "--num-test", "16", *TINY]
    assert main([*argv, "--out", str(out)]) == 0
    metrics = _check_run(out)
    assert metrics["dataset"]["name"] == "scenes"
    assert "figures/detections.png" in metrics["figures"]
    printed = capsys.readouterr().out
    assert "Test map50 on scenes" in printed and "note: generated stand-in scenes" in printed
    assert "95 % interval" in printed
    assert main(["report", str(out)]) == 0
    html = (out / "report.html").read_text()
    assert "mAP@0.5" in html and "mAP@[.5:.95]" in html and "95 % interval" in html
    assert main(["eval", "--checkpoint", str(out)]) == 0
    assert "learned ISP + detector: mAP@0.5 " in capsys.readouterr().out


def test_coco_folder_trains_and_evaluates(tmp_path, capsys):
    folder = tmp_path / "coco"
    assert main(["scenes", str(folder), "--num-train", "24", "--num-test", "8", "--seed", "1",
                 "--image-size", "32"]) == 0  # fmt: skip
    out = tmp_path / "run"
    argv = ["train", "--data", f"coco:{folder}", "--num-train", "16", "--num-test", "8", *TINY]
    assert main([*argv, "--out", str(out)]) == 0
    metrics = _check_run(out)
    assert metrics["dataset"]["name"] == f"coco:{folder / 'instances.json'}"
    assert metrics["config"]["data"]["source"] == f"coco:{folder}"
    assert (metrics["dataset"]["num_train"], metrics["dataset"]["num_test"]) == (16, 8)
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(out)]) == 0
    assert "8 images" in capsys.readouterr().out


def test_voc_folder_study(tmp_path, capsys):
    coco = tmp_path / "coco"
    write_scenes_coco(coco, num_train=16, num_test=8, image_size=32, seed=2)
    root = write_voc_from_scenes(coco, tmp_path / "VOC")
    out = tmp_path / "study"
    argv = ["eval", "--seeds", "1", "--data", f"voc:{root}", "--num-train", "16", "--num-test"]
    assert main([*argv, "8", *TINY, "--out", str(out)]) == 0
    study = json.loads((out / "eval.json").read_text())
    validate_eval(study)
    assert (study["task"], study["metric"]) == ("detect", "map50")
    assert set(study["methods"]) == PROTOCOL
    for row in study["methods"].values():
        assert len(row["map50"]) == 1 and set(row["secondary"]["map"]) == {"values", "mean", "std"}
    assert study["sweeps"]["brightness"]["metric"] == "map50"
    _check_run(out / "seed0")
    html = (out / "report.html").read_text()
    assert "mAP@0.5" in html and "mAP@[.5:.95]" in html
    assert "map50" in capsys.readouterr().out


def test_detection_bench_times_every_phase_and_the_inference_path():
    from diffisp.experiments.detection_bench import run_detection_bench

    result = run_detection_bench(
        num_train=16,
        num_test=8,
        epochs=1,
        image_size=32,
        batch_size=8,
        bn_calibration=8,
        repeats=1,
        log=lambda _: None,
    )
    assert set(result["training"]) == {"phase0", "phase1", "phase2"}
    assert set(result["fraction_of_model_alone"]) == {"phase1", "phase2"}  # phase 0 is the bound
    for row in result["training"].values():
        assert row["images_per_s"] > 0 and row["epoch_s"] > 0
    peaks = [row["peak_memory_mib"] for row in result["training"].values()]
    assert 0 < peaks[0] <= peaks[1] <= peaks[2] <= result["peak_memory_mib"]  # only grows
    assert result["peak_memory_measured"] in ("process peak RSS", "device peak_bytes_in_use")
    inference = result["inference"]
    assert inference["num_images"] == 8
    assert inference["isp_only_images_per_s"] > inference["predict_images_per_s"] > 0
    assert result["detector_parameters"] == 417_754  # SmallCenterNet with the scenes' 6 classes
