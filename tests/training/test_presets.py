"""Presets: the protocols they apply, and their sizes fitted to a data set smaller than asked."""

from __future__ import annotations

import pytest
from PIL import Image

from diffisp.cli import build_parser
from diffisp.cli.args import config_from_args
from diffisp.errors import ConfigError
from diffisp.training.config import FITTABLE, TrainConfig


def _cfg(*argv: str) -> TrainConfig:
    return config_from_args(build_parser().parse_args(list(argv)))


def test_the_demo_runs_the_deployed_protocol_and_seed_gives_the_reference_table():
    demo = _cfg("demo")
    assert demo.preset == "demo" and demo.capture.conditions == "mixed"
    assert demo.isp.variants == ("adaptive",) and not demo.isp.adaptive
    assert (demo.data.num_train, demo.data.num_test) == (1024, 256)
    seed = _cfg("demo", "--protocol", "seed")
    assert seed == TrainConfig.preset_config("quick")  # the table the README showed before
    assert _cfg("train", "--protocol", "deployed").preset == "full"  # sizes: the command's
    assert _cfg("demo", "--conditions", "uniform").capture.conditions == "uniform"  # user wins
    with pytest.raises(ConfigError, match="unknown protocol 'x'"):
        TrainConfig.preset_config("quick", protocol="x")


def test_full_keeps_its_steps_on_a_229_image_folder():
    cfg = TrainConfig.preset_config("full").replace(fit=list(FITTABLE))
    fitted, line = cfg.fitted(183, 46)
    assert (fitted.data.num_train, fitted.data.num_test, fitted.optim.batch_size) == (183, 46, 32)
    # 62 batches an epoch asked, 5 had: each phase keeps its 15 x 62, 5 x 62, 10 x 62 steps.
    optim = fitted.optim
    assert (optim.epochs_clean, optim.epochs_isp, optim.epochs_joint) == (186, 62, 124)
    assert fitted.fit == () and fitted.fitted(183, 46) == (fitted, None)
    assert line == (
        "the full preset fitted to auto: 183 train / 46 test images (it asks 2000 / 500), "
        "epochs 186 + 62 + 124 (the preset's 930 + 310 + 620 steps)"
    )


def test_a_few_dozen_scenes_get_a_smaller_batch_and_what_the_user_set_stays():
    cfg = TrainConfig.preset_config("full").replace(fit=list(FITTABLE))
    fitted, line = cfg.fitted(64, 16)
    assert fitted.optim.batch_size == 16 and "batch 16" in line
    assert fitted.optim.epochs_clean == round(15 * 62 / 4)
    # Given by the user: never changed (here the batch and phase 1's epochs).
    kept = cfg.replace(fit=[n for n in FITTABLE if n not in ("batch_size", "epochs_isp")])
    fitted, _ = kept.fitted(64, 16)
    assert fitted.optim.batch_size == 32 and fitted.optim.epochs_isp == 5
    assert fitted.optim.epochs_clean == round(15 * 62 / 2)
    # A set at least as large as asked: nothing changes.
    assert cfg.fitted(5000, 900)[1] is None
    with pytest.raises(ConfigError, match="fit must be a list of settings among"):
        TrainConfig.of(fit=["lr_isp"])


def test_only_folder_coco_and_voc_data_are_fitted_and_only_what_the_user_left(tmp_path):
    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        Image.new("RGB", (8, 8)).save(tmp_path / c / "0.png")
    assert _cfg("train", "--full").fit == ()  # the stand-in set has any size asked for
    cfg = _cfg("train", "--full", "--data", f"folder:{tmp_path}", "--batch-size", "16")
    assert set(cfg.fit) == set(FITTABLE) - {"batch_size"}
    detect = _cfg("train", "--task", "detect", "--data", f"coco:{tmp_path}", "--num-test", "9")
    assert "num_test" not in detect.fit and "num_train" in detect.fit
