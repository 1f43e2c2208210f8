"""The sections of a report page, shared by run and evaluation reports.

Each function takes the (already schema-checked) JSON content and returns :class:`Markup`, or an
empty string when the input lacks what the section needs: older files may miss any field, and
the report then leaves that part out instead of failing.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from diffisp.report.html import (
    DASH,
    Markup,
    esc,
    figure,
    fmt,
    grid,
    join,
    key_value_table,
    number,
    pct,
    seconds,
    table,
    tag,
)
from diffisp.util.stats import wilson_interval

# Labels of the protocol rows written by diffisp.models.evaluate (run directories carry no labels).
METHOD_LABELS = {
    "no_isp": "No ISP",
    "fixed_gamma": "Fixed gamma 0.5",
    "learned_isp_phase1": "Learned ISP (phase 1)",
    "learned_isp_phase2": "Learned ISP (phase 2)",
    "clean_oracle": "Clean-image oracle",
}
REFERENCES = ("no_isp", "clean_oracle")  # the floor and ceiling every other row is judged by
HEADLINE = "learned_isp_phase2"

FIGURE_CAPTIONS = {
    "samples": "Low-light simulation: clean test images, the simulated dark captures, and the "
    "dark ones brightened ×4 for viewing only.",
    "before_after": "Dark test input, the same brightened ×4, and the output of the learned ISP.",
    "detections": "Detections on dark test scenes: what the clean-trained detector finds with "
    "no ISP and behind a fixed gamma, and what the jointly trained detector finds behind the "
    "learned ISP. Red: predicted class and score (score >= 0.3, at most 8 per scene); dashed "
    "green: ground truth.",
    "training_curves": "Loss and accuracy per epoch across the three phases. Test accuracy is "
    "measured in each phase's own condition: clean images in phase 0, dark images through the "
    "ISP in phases 1 and 2.",
    "learned_parameters": "Learned ISP parameters: tone curve against the identity, colour "
    "correction matrix, and every scalar parameter.",
}


def file_metric(data: Mapping[str, Any]) -> str:
    """The key of the metric that ranks a ``metrics.json``/``eval.json``'s rows; files written
    before the ``"metric"`` field existed are classification files (``"accuracy"``)."""
    metric = data.get("metric")
    return metric if isinstance(metric, str) and metric else "accuracy"


def as_dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def as_list(value: Any) -> list:
    return value if isinstance(value, list) else []


def method_label(key: str, row: Mapping[str, Any] | None = None) -> str:
    label = as_dict(row).get("label")
    return label if isinstance(label, str) and label else METHOD_LABELS.get(key, key)


def method_cell(key: str, row: Mapping[str, Any]) -> Markup:
    description = as_dict(row).get("description")
    desc = tag("span", description, class_="desc") if isinstance(description, str) else ""
    return join([tag("strong", method_label(key, row), class_="label"), desc], "")


def headline_key(means: Mapping[str, float | None]) -> str | None:
    """The row the summary leads with: the phase 2 learned ISP, else the best non-reference row."""
    if means.get(HEADLINE) is not None:
        return HEADLINE
    candidates = {k: v for k, v in means.items() if v is not None and k not in REFERENCES}
    return max(candidates, key=candidates.get) if candidates else None


def phase2_caveat(key: str | None, methods: Mapping[str, Any] | None = None) -> Markup | str:
    if key != HEADLINE:
        return ""
    if methods and "dark_cnn" in methods:
        text = (
            "Phase 2 fine-tunes the CNN on dark images together with the ISP, while the no-ISP, "
            "fixed-gamma, classical and phase 1 rows use the CNN trained on clean images. The "
            "like-for-like comparison is with \u201cCNN fine-tuned on dark\u201d and \u201cFixed "
            "gamma + fine-tuned CNN\u201d, which get the same number of fine-tuning epochs."
        )
    else:
        text = (
            "Read the phase 2 row with care: phase 2 fine-tunes the CNN on dark images together "
            "with the ISP, while the no-ISP, fixed-gamma and phase 1 rows use the CNN trained on "
            "clean images. Part of its gain can come from the CNN adapting, not from the ISP."
        )
    return tag("p", text, class_="note")


def header(title: str, data: Mapping[str, Any], source: str) -> Markup:
    created = data.get("created")
    meta = [f"Created {created}" if isinstance(created, str) else None, f"from {source}"]
    return join([tag("h1", title), tag("p", " · ".join(m for m in meta if m), class_="meta")])


def standin_notice(dataset: Mapping[str, Any]) -> Markup | str:
    """The prominent warning that the numbers are not CIFAR-10 (or real detection) numbers."""
    if not dataset.get("is_standin"):
        return ""
    description = dataset.get("description")
    if dataset.get("name") == "scenes":
        lead = [
            tag("strong", "Stand-in data: generated scenes, NOT a real detection benchmark."),
            "These mAPs say whether the pipeline works; they are not comparable with COCO, "
            "VOC or LOD results.",
        ]
    else:
        lead = [
            tag("strong", "Stand-in data: built-in stand-in data set, NOT CIFAR-10."),
            "These accuracies say whether the pipeline works; they are not comparable with "
            "CIFAR-10 results.",
        ]
    text = join(
        [
            *lead,
            Markup("<br>") if isinstance(description, str) else "",
            esc(description[:1].upper() + description[1:]) if isinstance(description, str) else "",
        ],
        " ",
    )
    return tag("div", text, class_="notice", role="note")


def sampling_note(p: float | None, n: Any) -> Markup | str:
    """How much one accuracy on ``n`` test images can move by chance alone."""
    n = number(n)
    if p is None or n is None or n < 1:
        return ""
    low, high = wilson_interval(p, int(n))
    return tag(
        "p",
        f"Sampling error: an accuracy of {pct(p)} measured on {int(n)} test images has a 95 % "
        f"interval of {pct(low)} to {pct(high)} from the choice of test images alone.",
        class_="note",
    )


def figures_block(paths: Sequence[Path], base: Path, prefix: str = "") -> Markup:
    return join(figure(p, prefix + caption_for(p), base) for p in paths)


def caption_for(path: Path) -> str:
    stem = path.stem
    if stem in FIGURE_CAPTIONS:
        return FIGURE_CAPTIONS[stem]
    if stem.startswith("sweep_"):
        return (
            f"Accuracy against {stem.removeprefix('sweep_').replace('_', ' ')}, "
            "mean ± s.d. across seeds."
        )
    return stem.replace("_", " ").capitalize() + "."


def history_section(history: list[Any]) -> Markup | str:
    """The per-epoch records of history.json as a table."""
    records = [r for r in history if isinstance(r, dict)]
    if not records:
        return ""
    rows = []
    for r in records:
        phase = r.get("phase")
        condition = "clean" if phase == 0 else ("dark → ISP" if number(phase) else DASH)
        name = r.get("phase_name")
        rows.append(
            [
                f"{fmt(phase)} ({name})" if isinstance(name, str) else fmt(phase),
                fmt(r.get("epoch")),
                condition,
                fmt(r.get("loss"), ".3f"),
                pct(r.get("train_acc")),
                pct(r.get("test_acc")),
                seconds(r.get("seconds")),
            ]
        )
    headers = ["Phase", "Epoch", "Test input", "Loss", "Train acc.", "Test acc.", "Time"]
    note = tag(
        "p",
        "Train accuracy is the running accuracy over the epoch's batches while the weights "
        "change; test accuracy is measured after the epoch on the test images in the phase's "
        "condition, so phase 0 and phases 1–2 are not directly comparable.",
        class_="note",
    )
    return join([table(headers, rows, numeric=(1, 3, 4, 5, 6)), note])


def parameters_section(learned: Mapping[str, Any]) -> Markup | str:
    """Learned ISP parameters, one row per (stage, parameter); arrays printed compactly."""
    rows = []
    for stage, values in learned.items():
        for name, value in as_dict(values).items():
            rows.append([stage, name, _array_text(value)])
    if not rows:
        return ""
    return table(["Stage", "Parameter", "Value"], rows, col_classes={2: "params"})


def _array_text(value: Any, per_line: int = 8) -> str:
    if isinstance(value, list) and value and all(isinstance(v, list) for v in value):
        return "\n".join(_array_text(v, per_line) for v in value)  # a matrix: one row a line
    if isinstance(value, list):
        cells = [_fixed(v) for v in value]
        lines = ["  ".join(cells[i : i + per_line]) for i in range(0, len(cells), per_line)]
        return "\n".join(lines)
    return _fixed(value)


def _fixed(value: Any) -> str:
    # A space in place of the plus sign keeps columns of mixed-sign numbers aligned.
    x = number(value)
    return fmt(value) if x is None else (f"{x: .4f}" if abs(x) >= 1e-3 or x == 0 else f"{x: .3e}")


def reproducibility_section(
    data: Mapping[str, Any], *, sources: Sequence[str], generated: str, timing: list[tuple]
) -> Markup:
    """Command, seeds, data set, timing, config, environment: what a rerun needs."""
    command = data.get("command")
    dataset = as_dict(data.get("dataset"))
    parts: list[Any] = [tag("h2", "Reproducibility")]
    parts.append(tag("h3", "Command"))
    if isinstance(command, str) and command:
        parts.append(tag("pre", tag("code", _command_lines(command))))
    else:
        parts.append(tag("p", "Not recorded (the run was started from Python).", class_="note"))
    seeds = data.get("seeds", data.get("seed"))
    facts = [
        ("Seed(s)", ", ".join(map(str, seeds)) if isinstance(seeds, list) else seeds),
        ("Created", data.get("created")),
        *timing,
    ]
    if dataset:
        get = dataset.get
        names = ", ".join(map(str, as_list(get("class_names"))))
        facts += [
            ("Data set", get("name")),
            ("Description", get("description")),
            ("Stand-in data", {True: "yes — not CIFAR-10", False: "no"}.get(get("is_standin"))),
            ("Train / test images", f"{fmt(get('num_train'))} / {fmt(get('num_test'))}"),
            ("Image size", f"{fmt(get('image_size'))} px"),
            ("Classes", f"{fmt(get('num_classes'))}: {names}" if names else get("num_classes")),
        ]
    parts.append(key_value_table([(k, v) for k, v in facts if v is not None]))
    config = as_dict(data.get("config"))
    if config:
        parts.append(tag("h3", "Training configuration"))
        # A sectioned config (docs/configuration.md) by "section.setting"; a flat one as is.
        rows = [
            (f"{k}.{sub}" if isinstance(v, dict) else k, _json_text(item))
            for k, v in config.items()
            for sub, item in (v.items() if isinstance(v, dict) else [(None, v)])
        ]
        parts.append(grid(rows))
    parts.append(environment_section(as_dict(data.get("environment"))))
    parts.append(
        tag(
            "p",
            f"Report generated {generated} from: {', '.join(sources)}.",
            class_="note",
        )
    )
    return join(parts)


def environment_section(env: Mapping[str, Any]) -> Markup | str:
    if not env:
        return ""
    devices = env.get("devices")
    facts = [
        ("Python", env.get("python")),
        ("Platform", env.get("platform")),
        ("Processor", env.get("processor")),
        ("Devices", ", ".join(map(str, devices)) if isinstance(devices, list) else devices),
    ]
    packages = [
        (k, v if v is not None else "not installed")
        for k, v in as_dict(env.get("packages")).items()
    ]
    parts = [tag("h3", "Environment"), key_value_table([(k, v) for k, v in facts if v])]
    if packages:
        parts += [tag("h3", "Package versions"), grid(packages)]
    return join(parts)


def _command_lines(command: str, width: int = 88) -> str:
    """Lines broken only between options, with shell continuations: the browser never wraps
    inside a token (``--epochs-`` / ``joint``), and the text still pastes as the same command.
    """
    try:
        tokens = shlex.split(command)
    except ValueError:
        return command  # unbalanced quotes: show it as recorded
    groups: list[list[str]] = []  # an option with its values
    for token in tokens:
        if not groups or token.startswith("-"):
            groups.append([])
        groups[-1].append(shlex.quote(token))
    lines = [""]
    for group in map(" ".join, groups):
        if lines[-1] and len(lines[-1]) + len(group) + 1 > width:
            lines.append("")
        lines[-1] = f"{lines[-1]} {group}" if lines[-1] else group
    return " \\\n    ".join(lines)


def _json_text(value: Any) -> str:
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return ", ".join(value)  # e.g. the ISP stage list
    return value if isinstance(value, str) else json.dumps(value)
