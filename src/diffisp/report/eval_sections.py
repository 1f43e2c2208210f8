"""Sections of a multi-seed evaluation report (``eval.json``, schema ``diffisp.eval/1``)."""

from __future__ import annotations

import math
import os
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from diffisp.models.reporting import metric_label, reporting_for
from diffisp.report.html import (
    DASH,
    Markup,
    fmt,
    join,
    number,
    pct,
    pct_pm,
    seconds,
    table,
    tag,
    value_pm,
)
from diffisp.report.sections import (
    REFERENCES,
    as_dict,
    as_list,
    figures_block,
    headline_key,
    method_cell,
    method_label,
    phase2_caveat,
    sampling_note,
)

# Keys of a method row that are not extra {"mean", "std"} columns.
_CORE_KEYS = {"label", "description", "accuracy", "mean", "std", "num_samples", "gap_closed"}
# Aggregated metrics beside the headline (eval.json's "secondary"), shown as their own columns.
_SECONDARY_ORDER = ("map",)
# Known extra columns: (header, number format, unit, scale). Unknown ones get a header from their
# key.
_EXTRA_COLUMNS = {
    "active_stages": ("Active stages", ".1f", "", 1.0),
    "isp_ms_per_image": ("ISP time / image", ".0f", "µs", 1000.0),  # stored in ms
}


@dataclass
class SeedRun:
    """One per-seed training run listed in ``eval.json``, as the report loads it."""

    name: str
    path: Path
    metrics: dict[str, Any] | None  # None when the run directory or its metrics.json is missing
    figures: list[Path]


@dataclass
class MethodStats:
    key: str
    row: dict[str, Any]
    accuracies: list[float]
    mean: float | None
    std: float | None

    @classmethod
    def of(cls, key: str, row: Any, metric: str = "accuracy") -> MethodStats:
        """``row``'s per-seed values of ``metric`` (the file's headline) and their summary."""
        row = as_dict(row)
        accs = [a for a in map(number, as_list(row.get(metric))) if a is not None]
        mean = number(row.get("mean"))
        std = number(row.get("std"))
        # Older files may lack the summary; recompute it (sample s.d.) from the per-seed values.
        if mean is None and accs:
            mean = statistics.fmean(accs)
        if std is None and len(accs) > 1:
            std = statistics.stdev(accs)
        if len(accs) == 1:
            std = None  # one seed has no spread to show
        return cls(key, row, accs, mean, std)

    @property
    def text(self) -> str:
        return pct_pm(self.mean, self.std)


def method_stats(methods: Mapping[str, Any], metric: str = "accuracy") -> dict[str, MethodStats]:
    return {key: MethodStats.of(key, row, metric) for key, row in methods.items()}


def summary(
    stats: Mapping[str, MethodStats], dataset: Mapping[str, Any], metric: str = "accuracy"
) -> Markup | str:
    """The headline in words: the main row against no ISP, seeds, test images, gap closed."""
    key = headline_key({k: s.mean for k, s in stats.items()})
    if key is None:
        return ""
    head = stats[key]
    reporting = reporting_for(metric)
    text = f"{method_label(key, head.row)}: {reporting.named()}{head.text}"
    if "no_isp" in stats and key != "no_isp":
        text += f" vs no ISP {stats['no_isp'].text}"
    n_seeds = len(head.accuracies)
    n_images = number(head.row.get("num_samples"))
    if n_seeds:
        text += f", over {n_seeds} seed{'s' if n_seeds != 1 else ''}"
    if n_images is not None:
        text += f", {int(n_images)} test images each"
    if dataset.get("is_standin"):
        text += f" ({reporting.standin_note})"
    text += "."
    sentences = [text]
    if "clean_oracle" in stats:
        sentences.append(f"Clean-image oracle: {stats['clean_oracle'].text}.")
    gap = as_dict(head.row.get("gap_closed"))
    if number(gap.get("mean")) is not None:
        sentences.append(
            f"{method_label(key, head.row)} closes {pct_pm(gap.get('mean'), gap.get('std'), 0)} "
            "of the gap between no ISP and the clean-image oracle."
        )
    others = {k: s for k, s in stats.items() if k not in (key, *REFERENCES) and s.mean is not None}
    if others and head.mean is not None:
        best = max(others.values(), key=lambda s: s.mean)
        if best.mean > head.mean:
            sentences.append(
                f"Highest mean of the other rows: {method_label(best.key, best.row)}, {best.text}."
            )
    if n_seeds:
        sentences.append("Values are mean ± standard deviation across seeds.")
    parts = [tag("p", " ".join(sentences), class_="summary"), phase2_caveat(key, stats)]
    if reporting.proportion:  # a binomial interval; mAP has none
        parts.append(sampling_note(head.mean, n_images))
    return join(parts)


def results_section(
    stats: Mapping[str, MethodStats], headline: str | None, metric: str = "accuracy"
) -> Markup | str:
    """One row per method; optional columns appear only when some method has them."""
    if not stats:
        return ""
    secondary = [
        name
        for name in _SECONDARY_ORDER
        if any(name in as_dict(s.row.get("secondary")) for s in stats.values())
    ]
    extras: list[str] = []
    for s in stats.values():
        for k, v in s.row.items():
            if k not in _CORE_KEYS and isinstance(v, dict) and "mean" in v and k not in extras:
                extras.append(k)
    label = metric_label(metric)
    headers = ["Method", label, "Per seed (%)", *(metric_label(n) for n in secondary)]
    headers += ["Seeds", "Test images / seed", "Gap closed"]
    headers += [_EXTRA_COLUMNS.get(k, (k.replace("_", " ").capitalize(),))[0] for k in extras]
    rows, classes = [], []
    for key, s in stats.items():
        gap = as_dict(s.row.get("gap_closed"))
        row = [
            method_cell(key, s.row),
            s.text,
            " ".join(f"{100 * a:.1f}" for a in s.accuracies) or DASH,
            *(_secondary_text(s.row, n) for n in secondary),
            len(s.accuracies) or DASH,
            fmt(s.row.get("num_samples")),
            pct_pm(gap.get("mean"), gap.get("std"), 0),
        ]
        for k in extras:
            _, spec, unit, scale = _EXTRA_COLUMNS.get(k, ("", ".3g", "", 1.0))
            row.append(value_pm(s.row.get(k), spec, unit, scale))
        rows.append(row)
        classes.append("head" if key == headline else ("ref" if key in REFERENCES else None))
    note = tag(
        "p",
        f"{label}: mean ± s.d. across seeds; per seed in %. Gap closed: share of the gap "
        "between no ISP and the clean-image oracle that the row closes (100 % = as good as "
        "clean images; it can be negative or exceed 100 %). Shaded rows are the references.",
        class_="note",
    )
    numeric = range(1, len(headers))
    return join([table(headers, rows, numeric=numeric, row_classes=classes), note])


def _secondary_text(row: Mapping[str, Any], name: str) -> str:
    stat = as_dict(as_dict(row.get("secondary")).get(name))
    return pct_pm(stat.get("mean"), stat.get("std"))


def sweeps_section(
    sweeps: Mapping[str, Any],
    labels: Mapping[str, str],
    figures: Sequence[Path],
    base: Path,
    metric: str = "accuracy",
) -> Markup | str:
    """One table per sweep (rows: parameter values; columns: methods), trained range shaded."""
    sections = []
    for name, sweep in sweeps.items():
        sweep = as_dict(sweep)
        values, methods = as_list(sweep.get("values")), as_dict(sweep.get("methods"))
        if not values or not methods:
            continue
        parameter = sweep.get("parameter") or name.replace("_", " ")
        parts = [tag("h3", f"Sweep over {parameter}")]
        trained = _range(sweep.get("trained_range"))
        lines = []
        fixed = as_dict(sweep.get("fixed"))
        if fixed:
            held = "; ".join(f"{k.replace('_', ' ')} = {_value_text(v)}" for k, v in fixed.items())
            lines.append(f"Held fixed: {held}.")
        if trained:
            where = "at that value" if trained[0] == trained[1] else "in that range"
            lines.append(
                f"Training used {parameter} {_value_text(list(trained))}; rows {where} are "
                "shaded and marked “trained”, the others test generalisation."
            )
        if lines:
            parts.append(tag("p", " ".join(lines)))
        rows, classes = [], []
        for i, v in enumerate(values):
            inside = trained is not None and _within(v, trained)
            cells = [f"{fmt(v, '.3g')}{' (trained)' if inside else ''}"]
            for stat in methods.values():
                stat = as_dict(stat)
                cells.append(pct_pm(_at(stat.get("mean"), i), _at(stat.get("std"), i)))
            rows.append(cells)
            classes.append("trained" if inside else None)
        headers = [parameter[:1].upper() + parameter[1:], *(labels.get(k, k) for k in methods)]
        caption = f"{metric_label(metric)}, mean ± s.d. across seeds"
        parts.append(
            table(headers, rows, numeric=range(len(headers)), row_classes=classes, caption=caption)
        )
        parts.append(figures_block([p for p in figures if p.stem == f"sweep_{name}"], base))
        sections.append(tag("div", join(parts), class_="keep"))  # printed on one page
    if not sections:
        return ""
    return join([tag("h2", "Robustness sweeps"), *sections])


def seed_runs_section(
    runs: Sequence[SeedRun],
    stats: Mapping[str, MethodStats],
    seeds: list,
    out: Path,
    base: Path,
    metric: str = "accuracy",
) -> Markup | str:
    """Each seed's own metrics.json, checked against the per-seed values in eval.json."""
    if not runs:
        return ""
    keys = [k for k in stats if any(k in as_dict((r.metrics or {}).get("results")) for r in runs)]
    headers = ["Run", "Seed", *(method_label(k, stats[k].row) for k in keys)]
    headers += ["Train time", "Total time"]
    rows, mismatches = [], []
    for index, run in enumerate(runs):
        href = Path(os.path.relpath(run.path / "metrics.json", out.parent)).as_posix()
        if run.metrics is None:
            rows.append([run.name, DASH, *[DASH] * len(keys), DASH, "missing"])
            continue
        seed = run.metrics.get("seed")
        position = seeds.index(seed) if seed in seeds else index
        results, timing = as_dict(run.metrics.get("results")), as_dict(run.metrics.get("timing"))
        cells: list[Any] = [tag("a", run.name, href=href), fmt(seed)]
        for k in keys:
            acc = number(as_dict(results.get(k)).get(metric))
            listed = _at(stats[k].accuracies, position)
            if None not in (acc, listed) and not math.isclose(acc, listed, abs_tol=1e-6):
                mismatches.append(f"{run.name} {method_label(k, stats[k].row)}")
                cells.append(tag("span", f"{pct(acc)} ≠ {pct(listed)}", class_="warn"))
            else:
                cells.append(pct(acc))
        cells += [seconds(timing.get("train_seconds")), seconds(timing.get("total_seconds"))]
        rows.append(cells)
    parts = [
        tag("h2", "Per-seed runs"),
        tag(
            "p",
            f"{metric_label(metric)} as recorded in each run's own metrics.json (links open it).",
        ),
        table(headers, rows, numeric=range(1, len(headers))),
    ]
    if mismatches:
        parts.append(
            tag(
                "p",
                "These per-seed values differ from eval.json: " + ", ".join(mismatches) + ".",
                class_="warn",
            )
        )
    first = next((r for r in runs if r.metrics is not None and r.figures), None)
    if first is not None:
        parts.append(tag("h3", f"Figures of the first seed's run ({first.name})"))
        parts.append(figures_block(first.figures, base, prefix=f"{first.name}: "))
    return join(parts)


def _range(value: Any) -> tuple[float, float] | None:
    pair = [number(v) for v in as_list(value)]
    if len(pair) != 2 or None in pair:
        return None
    return min(pair), max(pair)


def _within(value: Any, bounds: tuple[float, float]) -> bool:
    x = number(value)
    tol = 1e-9 * max(1.0, abs(bounds[1]))
    return x is not None and bounds[0] - tol <= x <= bounds[1] + tol


def _value_text(value: Any) -> str:
    pair = _range(value)
    if pair is not None:
        return fmt(pair[0]) if pair[0] == pair[1] else f"{fmt(pair[0])}–{fmt(pair[1])}"
    return fmt(value) if number(value) is not None else str(value)


def _at(values: Any, i: int) -> float | None:
    values = as_list(values)
    return number(values[i]) if 0 <= i < len(values) else None
