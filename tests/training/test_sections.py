"""The sectioned config: sections validated alone, both file formats, flat names, and the
command-line options generated from the fields' declarations."""

from __future__ import annotations

import dataclasses
import json

import pytest

from diffisp.cli import build_parser
from diffisp.cli.args import config_dests, config_from_args, option_flag
from diffisp.data.spec import DataSpec
from diffisp.errors import ConfigError
from diffisp.training.config import FLAT_NAMES, FORMAT, TrainConfig, flatten_config
from diffisp.training.sections import (
    SECTIONS,
    CaptureSection,
    DataSection,
    ISPSection,
    OptimSection,
)


def test_each_section_checks_its_own_values():
    with pytest.raises(ConfigError, match="lr_isp must be a learning rate"):
        OptimSection(lr_isp=0.0)
    with pytest.raises(ConfigError, match="conditions must be 'uniform' or 'mixed'"):
        CaptureSection(conditions="foggy")
    with pytest.raises(ConfigError, match="cost_weight needs the adaptive ISP"):
        ISPSection(cost_weight=0.5)
    with pytest.raises(ConfigError, match="unknown data spec"):
        DataSection(source="imagenet")
    with pytest.raises(ConfigError, match="--stream reads image folders"):
        DataSection(source="builtin", stream=True)
    assert DataSection(source="folder:~/x").source == DataSpec.parse("folder:~/x")


def test_what_spans_two_sections_is_checked_by_the_config():
    with pytest.raises(ConfigError, match=r"batch_size .* larger than the training set"):
        TrainConfig(data=DataSection(num_train=16), optim=OptimSection(batch_size=32))
    with pytest.raises(ConfigError, match="needs detection data"):
        TrainConfig.of(task="detect", data="builtin")
    with pytest.raises(ConfigError, match="section 'optim' must be a OptimSection"):
        TrainConfig(optim={"batch_size": 8})
    raw = TrainConfig.of(input="raw", isp="seed")
    assert raw.isp.stages[:3] == ("raw_wb", "demosaic", "raw_ccm")  # the RAW front added


def test_sectioned_round_trip_and_the_flat_names():
    cfg = TrainConfig.of(num_train=64, lr_isp=5e-3, conditions="mixed", isp="seed", seed=7)
    saved = cfg.to_dict()
    assert saved["format"] == FORMAT and saved["optim"]["lr_isp"] == 5e-3
    assert set(saved) == {"format", "seed", "preset", *SECTIONS}
    assert TrainConfig.from_dict(json.loads(json.dumps(saved))) == cfg
    assert TrainConfig.from_dict(cfg.flat_dict()) == cfg
    assert cfg.replace(seed=8).seed == 8 and cfg.replace(seed=8).optim == cfg.optim
    # every field has exactly one flat name
    fields = [(s, f.name) for s, c in SECTIONS.items() for f in dataclasses.fields(c)]
    assert sorted(FLAT_NAMES.values()) == sorted(fields)


def test_the_previous_flat_format_loads_and_mixes():
    legacy = {"data": "builtin", "num_train": 64, "isp": ["exposure", "gamma"], "task": "classify"}
    cfg = TrainConfig.from_dict(legacy)
    assert (cfg.data.source.kind, cfg.data.num_train, cfg.isp.stages) == (
        "builtin",
        64,
        ("exposure", "gamma"),
    )
    mixed = {"optim": {"batch_size": 16}, "num_train": 32}
    assert TrainConfig.from_dict(mixed).optim.batch_size == 16
    assert flatten_config(mixed) == {"batch_size": 16, "num_train": 32}


@pytest.mark.parametrize(
    "values, match",
    [
        ({"optim": {"learning_rate": 1}}, "unknown key.*section 'optim': learning_rate"),
        ({"num_trains": 5}, "unknown config key.*num_trains"),
        ({"format": 3}, "config format 3"),
        ([1, 2], "must be a JSON object"),
    ],
)
def test_bad_config_dicts_are_refused_by_name(values, match):
    with pytest.raises(ConfigError, match=match):
        TrainConfig.from_dict(values)


def test_train_help_is_generated_from_the_config():
    parser = build_parser()
    train = parser._subparsers._group_actions[0].choices["train"]
    text = train.format_help()
    for section, cls in SECTIONS.items():
        assert f"{section} ({cls.__name__})" in text
        for f in dataclasses.fields(cls):
            option = option_flag(f)
            if option is not None:
                assert option in text, option
    assert "images per training step (default 32)" in " ".join(text.split())
    assert "(default 512; --full: 2000)" in " ".join(text.split())
    # every generated option reaches its setting
    assert set(config_dests().values()) <= set(FLAT_NAMES)


def test_generated_options_reach_the_config():
    def cfg(*argv):
        return config_from_args(build_parser().parse_args(["train", *argv]))

    got = cfg("--lr-stats-map", "2e-3", "--no-gates", "--isp", "adaptive", "--raw-residual")
    assert got.optim.lr_stats_map == 2e-3 and not got.isp.gates and got.isp.adaptive
    assert got.isp.raw_residual and got.isp.stages == TrainConfig.of(isp="full").isp.stages
    assert cfg("--brightness", "0.2", "0.4").capture.brightness == (0.2, 0.4)
    assert cfg("--devices", "1").devices.count == 1
    assert cfg("--stages", "exposure,gamma").isp.stages == ("exposure", "gamma")
    with pytest.raises(ConfigError, match="give the stages once"):
        cfg("--isp", "seed", "--stages", "gamma")
