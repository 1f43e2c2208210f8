"""Numbers in flags accept the notation their help writes (issue 27): ``--max-pixels 4e9``."""

from __future__ import annotations

import argparse

import pytest

from diffisp.cli import build_parser
from diffisp.cli.args import int_like


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("64000000", 64_000_000),
        ("64_000_000", 64_000_000),
        ("64e6", 64_000_000),
        ("4e9", 4 * 10**9),
        ("-3", -3),
        ("1.5e1", 15),
        ("0", 0),
    ],
)
def test_int_like_accepts_what_the_help_writes(text, value):
    assert int_like(text) == value and isinstance(int_like(text), int)


@pytest.mark.parametrize("text", ["4.5", "nan", "inf", "-inf", "1e400", "", "12px", "0x10", "6__4"])
def test_int_like_refuses_fractions_non_finite_and_text(text):
    with pytest.raises(argparse.ArgumentTypeError, match="is not a whole number"):
        int_like(text)


def test_flags_take_the_notation_and_refuse_fractions_in_one_usage_line(capsys):
    parser = build_parser()
    args = parser.parse_args(["apply", "x.png", "--max-pixels", "4e9"])
    assert args.max_pixels == 4_000_000_000
    assert parser.parse_args(["train", "--num-train", "2e3"]).num_train == 2000
    assert parser.parse_args(["scenes", "out", "--num-test", "1_000"]).num_test == 1000
    with pytest.raises(SystemExit) as info:
        parser.parse_args(["train", "--batch-size", "4.5"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "argument --batch-size: '4.5' is not a whole number" in err and "Traceback" not in err
