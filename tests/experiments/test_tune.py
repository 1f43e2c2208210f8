"""``diffisp tune`` and :func:`tune_isp_for`: an ISP for a frozen PyTorch classifier."""

from __future__ import annotations

import json

import numpy as np
import pytest

from diffisp.cli import main
from diffisp.errors import ConfigError
from diffisp.experiments.tune import consistency_data, make_task, tune_isp_for
from diffisp.training.config import TrainConfig

torch = pytest.importorskip("torch")
pytest.importorskip("torchax")

TRAIN, TEST = 128, 64


def test_make_task_refuses_an_unknown_loss():
    with pytest.raises(ConfigError, match="--loss"):
        make_task("mse")


def test_cli_refuses_weights_with_onnx(tmp_path, capsys):
    rc = main(["tune", "--model", str(tmp_path / "m.onnx"), "--weights", str(tmp_path / "w.pt")])
    assert rc == 2 and "drop --weights" in capsys.readouterr().err


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny torchvision ResNet trained in PyTorch on clean built-in crops, its weights file."""
    from diffisp.data import load_dataset
    from diffisp.models.torch_reference import resnet10, train_classifier

    path = tmp_path_factory.mktemp("torch") / "resnet10.pt"
    ds = load_dataset("builtin", num_train=TRAIN, num_test=TEST, seed=0, image_size=32)
    train_classifier(
        resnet10(ds.num_classes), ds.train_images, ds.train_labels, epochs=2, save=path
    )
    return path


@pytest.mark.slow
@pytest.mark.parametrize("loss", ["labels", "consistency"])
def test_tune_cli_writes_metrics_and_leaves_the_model(trained, tmp_path, loss, capsys):
    out = tmp_path / "run"
    rc = main(
        [
            "tune",
            "--model",
            "torch:diffisp.models.torch_reference:resnet10",
            "--weights",
            str(trained),
            "--loss",
            loss,
            "--num-train",
            str(TRAIN),
            "--num-test",
            str(TEST),
            "--epochs",
            "1",
            "--out",
            str(out),
        ]
    )
    printed = capsys.readouterr()
    assert rc == 0, printed.err
    assert "Learned ISP" in printed.out and "95 % interval" in printed.out
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["labels_used_in_training"] == (loss == "labels")
    assert {"no_isp", "fixed_gamma", "auto_isp", "learned_isp", "clean"} <= set(metrics["results"])
    assert [r["phase"] for r in metrics["history"]] == [1]
    assert np.load(out / "isp.npz").files
    assert metrics["figures"] == ["figures/before_after.png", "figures/learned_parameters.png"]
    report = (out / "report.html").read_text()
    assert "Learned ISP" in report and "the model&#x27;s weights never changed" in report


@pytest.mark.slow
def test_tune_isp_for_consistency_trains_only_the_isp(trained):
    from diffisp.experiments.run import load_run_data, prepare_run_data
    from diffisp.models.external import load_model

    cfg = TrainConfig.preset_config(
        "quick", data="builtin", num_train=TRAIN, num_test=TEST, epochs_isp=1
    )
    model = load_model("torch:diffisp.models.torch_reference:resnet10", weights=trained)
    data = consistency_data(model, prepare_run_data(load_run_data(cfg), cfg), labelled=False)
    assert data.train.targets.shape == (TRAIN, 10)  # the clean outputs are the targets
    state = tune_isp_for(model, data, cfg, make_task("consistency"))  # checks weights unchanged
    assert state.history[-1].phase == 1 and np.isfinite(state.history[-1].loss)


@pytest.fixture(scope="module")
def trained_detector(tmp_path_factory):
    """The reference CenterNet-head detector trained briefly in PyTorch on clean scenes."""
    from diffisp.data.detection_loader import load_detection
    from diffisp.data.spec import DataSpec
    from diffisp.models.torch_reference import centernet_resnet, train_detector

    path = tmp_path_factory.mktemp("torch") / "detector.pt"
    ds = load_detection(DataSpec.parse("scenes"), num_train=TRAIN, num_test=8, seed=0)
    torch.manual_seed(0)
    train_detector(centernet_resnet(), ds.train_images, ds.train_boxes, ds.train_labels,
                   epochs=2, save=path)  # fmt: skip
    return path


@pytest.mark.slow
@pytest.mark.parametrize("loss", ["labels", "consistency"])
def test_tune_cli_tunes_for_a_pytorch_detector(trained_detector, tmp_path, loss, capsys):
    out = tmp_path / "run"
    rc = main(
        ["tune", "--model", "torch:diffisp.models.torch_reference:centernet_resnet",
         "--weights", str(trained_detector), "--task", "detect", "--loss", loss,
         "--num-train", "64", "--num-test", "32", "--epochs", "1", "--out", str(out)]
    )  # fmt: skip
    printed = capsys.readouterr().out
    assert rc == 0 and "map50 on the test set" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["task"] == "detect" and metrics["metric"] == "map50"
    assert metrics["consistency"] == (None if loss == "labels" else "centernet")
    rows = metrics["results"]
    assert {"no_isp", "fixed_gamma", "learned_isp", "clean"} <= set(rows)
    assert all(0.0 <= row["map50"] <= 1.0 and row["num_samples"] == 32 for row in rows.values())
    assert (out / "figures" / "before_after.png").stat().st_size > 0
    assert "mAP" in (out / "report.html").read_text()


@pytest.mark.slow
def test_tune_cli_tunes_for_an_onnx_classifier(trained, tmp_path, capsys):
    from diffisp.models.torch_reference import resnet10

    module = resnet10(10)
    module.load_state_dict(torch.load(trained))
    path = tmp_path / "resnet10.onnx"
    torch.onnx.export(
        module.eval(),
        (torch.zeros(1, 3, 32, 32),),
        str(path),
        dynamo=False,
        opset_version=17,
        input_names=["x"],
        dynamic_axes={"x": {0: "n"}},
    )
    out = tmp_path / "run"
    rc = main(
        ["tune", "--model", str(path), "--isp", "adaptive", "--num-train", str(TRAIN),
         "--num-test", str(TEST), "--epochs", "1", "--out", str(out)]
    )  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["model"] == str(path) and metrics["config"]["isp"]["adaptive"] is True
    assert 0.0 <= metrics["results"]["learned_isp"]["accuracy"] <= 1.0
    assert "figures/adaptive_decisions.png" in metrics["figures"]
