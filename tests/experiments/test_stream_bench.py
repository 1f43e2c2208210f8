"""``diffisp bench --stream``: every mode runs and reports what the docs read; bad requests."""

from __future__ import annotations

import pytest

from diffisp.cli import main
from diffisp.errors import DataError
from diffisp.experiments.stream_bench import bench_streaming, measure

KEYS = {"mode", "task", "num_train", "load_seconds", "epoch_seconds", "images_per_s"}


@pytest.mark.slow
@pytest.mark.parametrize("task, modes", [
    ("classify", ["memory", "stream", "cache-build", "cache"]),
    ("detect", ["memory", "cache-build", "cache"]),
])  # fmt: skip
def test_every_mode_runs_on_generated_data(task, modes):
    result = bench_streaming([64], task=task, epochs=2, num_test=16, log=lambda _: None)
    runs = result["runs"]
    assert [r["mode"] for r in runs] == modes and result["task"] == task
    assert all(set(r) >= KEYS and r["images_per_s"] > 0 for r in runs)
    assert all(r["of_memory"] > 0 for r in runs[1:]) and "of_memory" not in runs[0]


def test_bad_requests_are_refused(tmp_path, capsys):
    with pytest.raises(DataError, match="unknown streaming mode"):
        measure("fast", f"folder:{tmp_path}", num_train=64)
    with pytest.raises(DataError, match="needs a cache_dir"):
        measure("cache", f"folder:{tmp_path}", num_train=64)
    assert main(["bench", "--stream", f"coco:{tmp_path}", "--out", str(tmp_path / "b.json")]) == 2
    assert "needs --task detect" in capsys.readouterr().err
