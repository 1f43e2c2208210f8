"""`diffisp demo` as `make demo` runs it: the deployed protocol's table and its reading."""

from __future__ import annotations

import json

import pytest

from diffisp.cli import main

pytestmark = pytest.mark.slow  # the demo's own sizes: about two minutes on 2 cores


def test_the_demo_answers_frozen_or_retrained_on_mixed_captures(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--no-progress", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["preset"] == "demo"
    assert metrics["config"]["capture"]["conditions"] == "mixed"
    results = metrics["results"]
    groups = [row["group"] for row in results.values()]
    assert groups == sorted(groups, key=["frozen", "retrained", "reference"].index)
    # Global and adaptive ISP, each in front of the model as it is and trained with it.
    assert {"learned_isp_phase1", "adaptive_l0_frozen"} <= {
        k for k, r in results.items() if r["group"] == "frozen" and r["learned"]
    }
    assert {"learned_isp_phase2", "adaptive_l0"} <= {
        k for k, r in results.items() if r["group"] == "retrained" and r["learned"]
    }
    assert all(r["num_samples"] == 256 for r in results.values())
    assert "isp_ms_per_image" not in results["adaptive_l0"]  # the demo does not time ISPs
    for question, line in (("retrained", "Model retrained: "), ("frozen", "Model left as it is: ")):
        answer = metrics["comparisons"][question]
        assert answer["low"] <= answer["difference"] <= answer["high"]
        assert results[answer["a"]]["learned"] and not results[answer["b"]]["learned"]
        assert line + results[answer["a"]]["label"] in printed
    assert "paired 95 % interval" in printed and "256 test images, one seed" in printed
    assert "model as trained, frozen:" in printed and "model retrained on captures:" in printed
