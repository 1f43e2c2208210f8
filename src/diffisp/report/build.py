"""``diffisp report``: one self-contained HTML page for a run or a multi-seed evaluation.

Give it a training run directory (``metrics.json``, ``history.json``, ``figures/``) or an
evaluation directory (``eval.json`` and one run directory per seed) and it writes
``report.html``: the headline result in words, the results table, sweeps, training history,
learned parameters, every figure (embedded as base64 PNG) and what is needed to reproduce it.
The page loads nothing from anywhere: inline CSS, no scripts, no external images.

Example::

    from diffisp.report.build import build_report
    path = build_report("runs/20250101-120000")   # -> runs/20250101-120000/report.html

Older files may lack any field; the report then leaves that part out. A file that is not valid
JSON or carries an unknown ``schema`` raises :class:`~diffisp.errors.DataError`.
"""

from __future__ import annotations

import datetime as _dt
import json
from importlib import metadata
from pathlib import Path
from typing import Any

from diffisp.errors import DataError
from diffisp.models.reporting import metric_label, reporting_for
from diffisp.report import eval_sections as ev
from diffisp.report.condition_sections import conditions_section
from diffisp.report.html import DASH, Markup, join, number, page, pct, seconds, table, tag
from diffisp.report.sections import (
    REFERENCES,
    as_dict,
    as_list,
    figures_block,
    file_metric,
    header,
    headline_key,
    history_section,
    method_cell,
    method_label,
    parameters_section,
    phase2_caveat,
    reproducibility_section,
    sampling_note,
    standin_notice,
)
from diffisp.util.io import atomic_write_text
from diffisp.util.stats import gap_closed
from diffisp.util.stats import wilson_interval as _wilson

# The schemas this module understands. Kept here rather than imported from diffisp.experiments.run,
# which pulls in JAX: building a report needs no accelerator and should start instantly.
METRICS_SCHEMA = "diffisp.metrics/1"
EVAL_SCHEMA = "diffisp.eval/1"
TUNE_SCHEMA = "diffisp.tune/1"


def build_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write the HTML report of ``run_dir`` to ``out`` (default ``run_dir/report.html``).

    ``run_dir`` is an evaluation directory when it holds ``eval.json``, otherwise a training run
    directory (``metrics.json``). Returns the path written. Raises :class:`DataError` when the
    directory is missing or holds neither file, or a file is unreadable or of an unknown schema.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise DataError(f"{run_dir} is not a directory (expected a diffisp run or eval directory)")
    out = run_dir / "report.html" if out is None else Path(out)
    if out.is_dir():
        out = out / "report.html"
    if (run_dir / "eval.json").is_file():
        text = _eval_page(run_dir, out)
    elif (run_dir / "metrics.json").is_file():
        metrics = read_json(run_dir / "metrics.json")
        tuned = isinstance(metrics, dict) and metrics.get("schema") == TUNE_SCHEMA
        text = _tune_page(run_dir, metrics) if tuned else _run_page(run_dir)
    else:
        raise DataError(
            f"{run_dir} holds neither eval.json nor metrics.json (not a diffisp run or eval dir)"
        )
    return atomic_write_text(out, text)


def read_json(path: Path, schema: str | None = None) -> Any:
    """The content of ``path``; with ``schema``, a dict whose ``"schema"`` must equal it."""
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path} is not valid JSON ({exc.msg}, line {exc.lineno})") from None
    if schema is not None:
        found = obj.get("schema") if isinstance(obj, dict) else None
        if found != schema:
            raise DataError(f"{path} has schema {found!r}, expected {schema!r}")
    return obj


def _run_page(run_dir: Path) -> str:
    metrics = read_json(run_dir / "metrics.json", METRICS_SCHEMA)
    sources = ["metrics.json"]
    history: list[Any] = []
    if (run_dir / "history.json").is_file():
        history = read_json(run_dir / "history.json")
        if not isinstance(history, list):
            raise DataError(f"{run_dir / 'history.json'} is not a list of epoch records")
        sources.append("history.json")
    dataset = as_dict(metrics.get("dataset"))
    results = {k: as_dict(v) for k, v in as_dict(metrics.get("results")).items()}
    figures = _figure_paths(run_dir, metrics.get("figures"))
    by_stem = {p.stem: p for p in figures}
    curves = [by_stem.pop(s) for s in ("training_curves",) if s in by_stem]
    param_fig = [by_stem.pop(s) for s in ("learned_parameters",) if s in by_stem]
    title = f"diffisp training run — {dataset.get('name') or run_dir.name}"
    timing = as_dict(metrics.get("timing"))
    history_html = history_section(history)
    params_html = parameters_section(as_dict(metrics.get("learned_parameters")))
    body = [
        header(title, metrics, str(run_dir)),
        standin_notice(dataset),
        _run_summary(metrics, results),
        _section("Results", _run_results(results, file_metric(metrics))),
        _section("Figures", figures_block(list(by_stem.values()), run_dir)),
        _section("Training history", join([history_html, figures_block(curves, run_dir)])),
        _section("Learned ISP parameters", join([params_html, figures_block(param_fig, run_dir)])),
        reproducibility_section(
            metrics,
            sources=sources,
            generated=_now(),
            timing=[
                ("Training time", seconds(timing.get("train_seconds")) if timing else None),
                ("Total time", seconds(timing.get("total_seconds")) if timing else None),
            ],
        ),
    ]
    return page(title, join(body))


def _tune_page(run_dir: Path, metrics: dict[str, Any]) -> str:
    """A ``diffisp tune`` run: an ISP learned in front of a user's frozen model."""
    metric = file_metric(metrics)
    # The model on clean images is this page's ceiling, as the clean oracle is a run's.
    results = {
        ("clean_oracle" if k == "clean" else k): as_dict(v)
        for k, v in as_dict(metrics.get("results")).items()
    }
    values = {k: number(r.get(metric)) for k, r in results.items()}
    model, loss = metrics.get("model"), metrics.get("loss")
    title = f"diffisp tune — {model}"
    fixed = {k: v for k, v in values.items() if k not in (*REFERENCES, "learned_isp")}
    summary = ""
    if values.get("learned_isp") is not None and fixed:
        best = max(fixed, key=lambda k: fixed[k] if fixed[k] is not None else -1.0)
        labels = "labels" if metrics.get("labels_used_in_training") else "no labels"
        n = number(results["learned_isp"].get("num_samples"))
        summary = tag(
            "p",
            f"Learned ISP ({loss} loss, {labels}) in front of the frozen model: "
            f"{reporting_for(metric).named()}{pct(values['learned_isp'])} against "
            f"{pct(values.get('no_isp'))} with no ISP and {pct(fixed[best])} for the best fixed "
            f"pipeline ({method_label(best, results[best])}); the model on clean images "
            f"{pct(values.get('clean_oracle'))}. One run"
            + (f", {int(n)} test images" if n is not None else "")
            + "; the model's weights never changed.",
            class_="summary",
        )
    figures = _figure_paths(run_dir, metrics.get("figures"))
    body = [
        header(title, metrics, str(run_dir)),
        summary,
        _section("Results", _run_results(results, metric)),
        _section("Figures", figures_block(figures, run_dir)),
        reproducibility_section(
            metrics,
            sources=["metrics.json"],
            generated=_now(),
            timing=[("Total time", seconds(metrics.get("seconds")))],
        ),
    ]
    return page(title, join(body))


def _run_summary(metrics: dict[str, Any], results: dict[str, dict]) -> Markup | str:
    metric = file_metric(metrics)
    accs = {k: number(r.get(metric)) for k, r in results.items()}
    key = headline_key(accs)
    if key is None:
        return ""
    reporting = reporting_for(metric)
    text = f"{method_label(key)}: {reporting.named()}{pct(accs[key])}"
    if accs.get("no_isp") is not None and key != "no_isp":
        text += f" vs no ISP {pct(accs['no_isp'])}"
    if accs.get("clean_oracle") is not None:
        text += f" (clean-image oracle {pct(accs['clean_oracle'])}"
        gap = gap_closed(accs[key], accs.get("no_isp"), accs["clean_oracle"])
        text += f"; {pct(gap, 0)} of the gap closed)" if gap is not None else ")"
    n = number(results[key].get("num_samples"))
    seed = metrics.get("seed")
    text += f". One training run{f', seed {seed}' if seed is not None else ''}"
    text += f", {int(n)} test images" if n is not None else ""
    if as_dict(metrics.get("dataset")).get("is_standin"):
        text += f", on the {reporting.standin_note}"
    text += "; the spread across seeds is unknown (a multi-seed evaluation measures it)."
    caveat = phase2_caveat(key, results)
    # The binomial sampling note is about an accuracy; mAP has no such closed form.
    note = sampling_note(accs[key], n) if reporting.proportion else ""
    return join([tag("p", text, class_="summary"), caveat, note])


def _run_results(results: dict[str, dict], metric: str = "accuracy") -> Markup | str:
    if not results:
        return ""
    if not reporting_for(metric).one_label_per_image:
        return _detection_results(results, metric)
    accs = {k: number(r.get(metric)) for k, r in results.items()}
    floor, ceiling = accs.get("no_isp"), accs.get("clean_oracle")
    headline = headline_key(accs)
    rows, classes = [], []
    for key, row in results.items():
        acc, n = accs[key], number(row.get("num_samples"))
        interval = DASH
        if acc is not None and n is not None and n >= 1 and 0 <= acc <= 1:
            low, high = _wilson(acc, int(n))
            interval = f"{100 * low:.0f}–{100 * high:.0f}\u00a0%"
        gap = gap_closed(acc, floor, ceiling) if key not in REFERENCES else None
        rows.append(
            [method_cell(key, row), pct(acc), interval, n if n is None else int(n), pct(gap, 0)]
        )
        classes.append("head" if key == headline else ("ref" if key in REFERENCES else None))
    headers = ["Method", "Accuracy", "95 % interval", "Test images", "Gap closed"]
    note = tag(
        "p",
        "95 % interval: Wilson score interval for the test-set sample alone (it ignores "
        "training randomness). Gap closed: share of the gap between no ISP and the clean-image "
        "oracle that the row closes. Shaded rows are the references.",
        class_="note",
    )
    return join([table(headers, rows, numeric=(1, 2, 3, 4), row_classes=classes), note])


# Columns of a detection run's table beside the headline, when the rows have them.
DETECTION_COLUMNS = ("map", "map75", "map_small", "map_medium", "map_large")


def _detection_results(results: dict[str, dict], metric: str) -> Markup | str:
    """The results table of a non-accuracy task: the headline with its bootstrap interval
    (where the rows carry one), the other COCO metrics, the gap closed."""
    values = {k: number(r.get(metric)) for k, r in results.items()}
    floor, ceiling = values.get("no_isp"), values.get("clean_oracle")
    headline = headline_key(values)
    extra = [c for c in DETECTION_COLUMNS if c != metric and any(c in r for r in results.values())]
    intervals = any("low" in r for r in results.values())
    rows, classes = [], []
    for key, row in results.items():
        gap = gap_closed(values[key], floor, ceiling) if key not in REFERENCES else None
        n = number(row.get("num_samples"))
        low, high = number(row.get("low")), number(row.get("high"))
        interval = DASH if low is None or high is None else f"{pct(low)}–{pct(high)}"
        rows.append(
            [
                method_cell(key, row),
                pct(values[key]),
                *([interval] if intervals else []),
                *(pct(row.get(c)) for c in extra),
                n if n is None else int(n),
                pct(gap, 0),
            ]
        )
        classes.append("head" if key == headline else ("ref" if key in REFERENCES else None))
    headers = ["Method", metric_label(metric), *(["95 % interval"] if intervals else [])]
    headers += [*map(metric_label, extra), "Test images", "Gap closed"]
    bootstrap = (
        "95 % interval: the test images resampled (bootstrap), the metric recomputed on each "
        "draw; it ignores training randomness. "
        if intervals
        else ""
    )
    note = tag(
        "p",
        f"COCO-style average precision (faster-coco-eval) on the test images; "
        f"{metric_label(metric)} ranks the rows. {bootstrap}A dash: nothing to measure (e.g. no "
        "objects of that size). Gap closed: share of the gap between no ISP and the "
        "clean-image oracle that the row closes. Shaded rows are the references.",
        class_="note",
    )
    numeric = range(1, len(headers))
    return join([table(headers, rows, numeric=numeric, row_classes=classes), note])


def _eval_page(eval_dir: Path, out: Path) -> str:
    data = read_json(eval_dir / "eval.json", EVAL_SCHEMA)
    dataset = as_dict(data.get("dataset"))
    metric = file_metric(data)
    stats = ev.method_stats(as_dict(data.get("methods")), metric)
    headline = headline_key({k: s.mean for k, s in stats.items()})
    seeds = as_list(data.get("seeds"))
    runs, sources = _seed_runs(eval_dir, as_list(data.get("runs")))
    figures = _figure_paths(eval_dir, data.get("figures"))
    sweeps = as_dict(data.get("sweeps"))
    swept = {f"sweep_{name}" for name in sweeps}
    labels = {k: method_label(k, s.row) for k, s in stats.items()}
    name = dataset.get("name") or eval_dir.name
    title = f"diffisp evaluation — {name}" + (f", {len(seeds)} seeds" if seeds else "")
    body = [
        header(title, data, str(eval_dir)),
        standin_notice(dataset),
        ev.summary(stats, dataset, metric),
        _section("Results", ev.results_section(stats, headline, metric)),
        ev.sweeps_section(sweeps, labels, figures, eval_dir, metric),
        conditions_section(data.get("by_condition"), labels),
        _section("Figures", figures_block([p for p in figures if p.stem not in swept], eval_dir)),
        ev.seed_runs_section(runs, stats, seeds, out, eval_dir, metric),
        reproducibility_section(
            data,
            sources=["eval.json", *sources],
            generated=_now(),
            timing=[("Wall time", seconds(data.get("wall_seconds")))],
        ),
    ]
    return page(title, join(body))


def _seed_runs(eval_dir: Path, names: list[Any]) -> tuple[list[ev.SeedRun], list[str]]:
    runs, sources = [], []
    for name in names:
        if not _is_inside(name):
            continue  # an absolute or ../ path is not one of this evaluation's runs
        path = eval_dir / name
        metrics = None
        if (path / "metrics.json").is_file():
            metrics = read_json(path / "metrics.json", METRICS_SCHEMA)
            sources.append(f"{name}/metrics.json")
        figures = _figure_paths(path, metrics.get("figures")) if metrics else []
        runs.append(ev.SeedRun(str(name), path, metrics, figures))
    return runs, sources


def _figure_paths(base: Path, listed: Any) -> list[Path]:
    """The figures a JSON file lists (relative paths inside ``base`` only), else figures/*.png."""
    if isinstance(listed, list):
        return [base / p for p in listed if _is_inside(p)]
    return sorted((base / "figures").glob("*.png"))


def _is_inside(relative: Any) -> bool:
    if not isinstance(relative, str) or not relative:
        return False
    path = Path(relative)
    return not path.is_absolute() and ".." not in path.parts


def _section(title: str, content: Markup | str) -> Markup | str:
    return join([tag("h2", title), content]) if content.strip() else ""


def _now() -> str:
    try:
        version = f" by diffisp {metadata.version('diffisp')}"
    except metadata.PackageNotFoundError:
        version = ""
    return f"{_dt.datetime.now().isoformat(timespec='seconds')}{version}"


__all__ = ["EVAL_SCHEMA", "METRICS_SCHEMA", "build_report", "read_json"]
