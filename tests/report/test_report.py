"""``diffisp report``: a self-contained, well-formed HTML page from a run or an eval directory."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from html.parser import HTMLParser

import pytest
from PIL import Image

from diffisp.cli import main
from diffisp.errors import DataError
from diffisp.report.build import build_report
from diffisp.report.sections import _command_lines
from diffisp.util.stats import wilson_interval

NBSP = "\u00a0"
VOID = {"meta", "img", "br", "hr", "link", "input", "col", "wbr", "source"}


class StrictParser(HTMLParser):
    """Fails on any unclosed, stray or mis-nested tag (html.parser itself never complains)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.images: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs)["src"])
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes {self.stack[-1:]}"
        self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def parse(html: str) -> StrictParser:
    parser = StrictParser()
    parser.feed(html)
    parser.close()
    assert parser.stack == [], f"unclosed tags: {parser.stack}"
    return parser


def assert_self_contained(html: str, parser: StrictParser) -> None:
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", html)
    assert "<script" not in html and "<link" not in html and "@import" not in html
    assert parser.images and all(s.startswith("data:image/png;base64,") for s in parser.images)


def png(path, color=(200, 30, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (1, 1), color).save(path)


@pytest.fixture
def run_dir(demo_run, tmp_path):
    """A copy of the session's shared tiny demo run (tests/conftest.py): the report writes here."""
    return shutil.copytree(demo_run, tmp_path / "demo")


def eval_json(**changes):
    methods = {
        "no_isp": {
            "label": "No ISP",
            "description": "dark images, clean CNN",
            "accuracy": [0.2, 0.22, 0.214],
            "mean": 0.2113,
            "std": 0.0101,
            "num_samples": 500,
            "gap_closed": None,
        },
        "learned_isp_phase2": {
            "label": "Learned ISP (phase 2)",
            "description": "joint",
            "accuracy": [0.75, 0.77, 0.76],
            "mean": 0.76,
            "std": 0.012,
            "num_samples": 500,
            "gap_closed": {"mean": 0.93, "std": 0.02},
        },
        "adaptive": {
            "label": "Adaptive <gated> ISP",
            "description": "per-image stages",
            "accuracy": [0.7, 0.71, 0.72],
            "mean": 0.71,
            "std": 0.01,
            "num_samples": 500,
            "gap_closed": {"mean": 0.85, "std": 0.03},
            "active_stages": {"mean": 3.25, "std": 0.5},
            "isp_ms_per_image": {"mean": 0.125, "std": 0.01},
        },
        "clean_oracle": {
            "label": "Clean-image oracle",
            "description": "clean images",
            "accuracy": [0.8, 0.81, 0.79],
            "mean": 0.8,
            "std": 0.01,
            "num_samples": 500,
            "gap_closed": None,
        },
    }
    data = {
        "schema": "diffisp.eval/1",
        "created": "2025-01-02T03:04:05",
        "command": "diffisp evaluate --seeds 0 1 2 --data builtin --out 'my evals/x'",
        "wall_seconds": 754.3,
        "dataset": {
            "name": "builtin",
            "description": "built-in stand-in",
            "is_standin": True,
            "num_train": 2000,
            "num_test": 500,
            "num_classes": 10,
            "class_names": ["a", "b"],
            "image_size": 32,
        },
        "config": {"num_train": 2000, "isp": ["ccm", "gamma"], "brightness": [0.1, 0.3]},
        "seeds": [0, 1, 2],
        "methods": methods,
        "sweeps": {
            "brightness": {
                "parameter": "brightness factor",
                "values": [0.02, 0.1, 0.2, 0.3, 0.6],
                "fixed": {"noise_sigma": 0.02},
                "trained_range": [0.1, 0.3],
                "methods": {
                    "no_isp": {"mean": [0.1, 0.2, 0.25, 0.3, 0.35], "std": [0.01] * 5},
                    "learned_isp_phase2": {"mean": [0.5, 0.7, 0.75, 0.76, 0.6], "std": [0.02] * 5},
                },
            }
        },
        "runs": ["seed0"],
        "figures": ["figures/sweep_brightness.png", "figures/extra.png", "../outside.png"],
        "environment": {
            "python": "3.12.1",
            "platform": "Linux",
            "devices": ["cpu:0"],
            "packages": {"jax": "0.11.1", "datarax": None},
        },
    }
    data.update(changes)
    return data


def seed_metrics(seed=0, phase2=0.75):
    return {
        "schema": "diffisp.metrics/1",
        "seed": seed,
        "results": {
            "no_isp": {"accuracy": 0.2, "num_samples": 500},
            "learned_isp_phase2": {"accuracy": phase2, "num_samples": 500},
        },
        "timing": {"train_seconds": 200.0, "total_seconds": 250.5},
        "figures": ["figures/samples.png"],
    }


@pytest.fixture
def eval_dir(tmp_path):
    d = tmp_path / "evals"
    (d / "seed0").mkdir(parents=True)
    (d / "eval.json").write_text(json.dumps(eval_json()))
    (d / "seed0" / "metrics.json").write_text(json.dumps(seed_metrics()))
    png(d / "figures" / "sweep_brightness.png")
    png(d / "figures" / "extra.png", (0, 0, 255))
    png(d / "seed0" / "figures" / "samples.png")
    png(tmp_path / "outside.png")
    return d


def test_run_report_is_self_contained_and_shows_the_results(run_dir):
    path = build_report(run_dir)
    assert path == run_dir / "report.html"
    html = path.read_text()
    parser = parse(html)
    assert_self_contained(html, parser)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert len(parser.images) == len(metrics["figures"]) == 4
    text = "".join(parser.text)
    assert "NOT CIFAR-10" in text  # the stand-in notice
    for row in metrics["results"].values():
        assert f"{row['accuracy']:.1%}".replace("%", f"{NBSP}%") in text
    for record in json.loads((run_dir / "history.json").read_text()):
        assert f"{record['loss']:.3f}" in text
    assert "Learned ISP (phase 2): " in text and "32 test images" in text
    assert "Learned ISP parameters" in text and "tone_curve" in text
    assert metrics["environment"]["packages"]["jax"] in text
    assert "--epochs-joint 1" in text  # the command, not broken inside an option


def test_eval_report_tables_sweeps_and_seed_runs(eval_dir):
    path = build_report(eval_dir)
    html = path.read_text()
    parser = parse(html)
    assert_self_contained(html, parser)
    text = "".join(parser.text)
    assert "NOT CIFAR-10" in text
    assert f"Learned ISP (phase 2): 76.0 ± 1.2{NBSP}% vs no ISP 21.1 ± 1.0{NBSP}%" in text
    assert "over 3 seeds, 500 test images each" in text
    assert f"93 ± 2{NBSP}%" in text  # gap closed
    assert "Active stages" in text and "3.2 ± 0.5" in text and f"125 ± 10{NBSP}µs" in text
    assert text.count("(trained)") == 3  # 0.1, 0.2, 0.3 lie in the trained range
    assert 'href="seed0/metrics.json"' in html
    assert "&lt;gated&gt;" in html and "<gated>" not in html  # escaped label
    # sweep figure, other figure, the first seed's figure; not the one outside the directory
    assert len(parser.images) == 3
    assert "12.6 min" in text and "--out 'my evals/x'" in text


def test_eval_report_flags_a_seed_that_disagrees_with_eval_json(eval_dir):
    (eval_dir / "seed0" / "metrics.json").write_text(json.dumps(seed_metrics(phase2=0.5)))
    text = "".join(parse(build_report(eval_dir).read_text()).text)
    assert "differ from eval.json: seed0 Learned ISP (phase 2)" in text


def test_old_or_sparse_files_leave_sections_out(tmp_path):
    (tmp_path / "eval.json").write_text(json.dumps({"schema": "diffisp.eval/1"}))
    html = build_report(tmp_path).read_text()
    parse(html)
    assert "<h2>Results</h2>" not in html and "Robustness sweeps" not in html
    assert "NOT CIFAR-10" not in html and "Not recorded" in html
    # methods without summary, gap or sweeps; runs and figures that do not exist
    sparse = {
        "schema": "diffisp.eval/1",
        "methods": {"x": {"accuracy": [0.5, "bad", 0.7]}, "y": "not a dict"},
        "sweeps": {"s": {"values": [1, 2], "methods": {"x": {}}}},
        "runs": ["missing", 3],
        "figures": ["figures/none.png"],
        "dataset": [1],
    }
    (tmp_path / "eval.json").write_text(json.dumps(sparse))
    text = "".join(parse(build_report(tmp_path).read_text()).text)
    assert f"60.0 ± 14.1{NBSP}%" in text  # recomputed from the valid per-seed values
    assert "figures/none.png is missing" in text and "missing" in text


def test_run_dir_without_history_or_figures(tmp_path):
    metrics = {"schema": "diffisp.metrics/1", "results": {"no_isp": {"accuracy": 0.25}}}
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    out = build_report(tmp_path, tmp_path / "elsewhere" / "r.html")
    text = "".join(parse(out.read_text()).text)
    assert f"25.0{NBSP}%" in text and "Training history" not in text


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("eval.json", '{"schema": "diffisp.eval/9"}', "has schema 'diffisp.eval/9'"),
        ("eval.json", "[1, 2]", "has schema None"),
        ("eval.json", '{"schema": "diffisp.eval/1",', "eval.json is not valid JSON"),
        ("metrics.json", '{"schema": "diffisp.eval/1"}', "expected 'diffisp.metrics/1'"),
        ("metrics.json", "not json", "metrics.json is not valid JSON"),
    ],
)
def test_bad_files_raise_data_error_naming_the_file(tmp_path, name, content, message):
    (tmp_path / name).write_text(content)
    with pytest.raises(DataError, match=re.escape(message)):
        build_report(tmp_path)
    assert not (tmp_path / "report.html").exists()


def test_bad_seed_run_metrics_raise(eval_dir):
    (eval_dir / "seed0" / "metrics.json").write_text("{")
    with pytest.raises(DataError, match=r"seed0.metrics\.json is not valid JSON"):
        build_report(eval_dir)


def test_missing_or_foreign_directory_raises(tmp_path):
    with pytest.raises(DataError, match="is not a directory"):
        build_report(tmp_path / "nope")
    with pytest.raises(DataError, match=r"neither eval\.json nor metrics\.json"):
        build_report(tmp_path)


def test_cli_writes_the_report_and_exits_2_on_a_missing_directory(eval_dir, tmp_path, capsys):
    out = tmp_path / "out.html"
    assert main(["report", str(eval_dir), "--out", str(out)]) == 0
    assert out.is_file() and str(out) in capsys.readouterr().out
    assert 'href="evals/seed0/metrics.json"' in out.read_text()  # relative to where it lies
    assert main(["report", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert "is not a directory" in err and err.count("\n") == 1 and "Traceback" not in err


def test_python_dash_m_runs_the_cli(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    cmd = [sys.executable, "-m", "diffisp.cli", "report", str(tmp_path / "missing")]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 2 and "is not a directory" in done.stderr


def test_command_lines_paste_back_as_the_same_command():
    command = "diffisp demo " + " ".join(f"--option-{i} {i}" for i in range(20)) + " --x 'a b'"
    text = _command_lines(command)
    assert all(len(line) < 100 for line in text.splitlines())
    assert shlex.split(text.replace("\\\n", " ")) == shlex.split(command)
    assert _command_lines("unbalanced 'quote") == "unbalanced 'quote"


def test_wilson_interval_reference_values():
    low, high = wilson_interval(0.5, 100)
    assert low == pytest.approx(0.4038, abs=1e-4) and high == pytest.approx(0.5962, abs=1e-4)
    assert wilson_interval(0.0, 10)[0] == 0.0 and wilson_interval(1.0, 10)[1] == 1.0
