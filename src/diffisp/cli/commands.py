"""The commands' bodies: each takes the parsed arguments and returns an exit status."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any

from diffisp.cli.args import config_from_args, config_overrides
from diffisp.errors import ConfigError


def cmd_export(args: argparse.Namespace) -> int:
    from diffisp.experiments.export import export_run
    from diffisp.util.io import check_output_path

    args.out = check_output_path(args.out, directory=False, what="export file")
    size = None
    if args.size is not None:
        try:
            size = tuple(int(v) for v in args.size.lower().split("x"))
        except ValueError:
            size = ()
        if len(size) != 2:
            raise ConfigError(f"--size must be HEIGHTxWIDTH; got {args.size!r}")
    for path in export_run(args.run, args.format, args.out, size=size, pattern=args.pattern):
        print(f"wrote {path} ({path.stat().st_size:,} bytes)")
    return 0


def cmd_scenes(args: argparse.Namespace) -> int:
    from diffisp.experiments.detection_commands import write_scenes

    write_scenes(args.out, args.num_train, args.num_test, args.image_size, args.seed)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from diffisp.experiments.bench import print_bench, run_bench
    from diffisp.util.io import atomic_write_json, check_output_file

    if args.num_train is None:
        args.num_train = 256 if args.task == "detect" else 2048
    if args.num_train < 64 or args.epochs < 1:
        raise ConfigError("bench needs --num-train >= 64 and --epochs >= 1")
    args.out = check_output_file(args.out, "bench.json", what="benchmark output")  # first
    if args.raw is not None:
        return _bench_raw(args)
    if args.stream is not None:
        return _bench_stream(args)
    if args.task == "detect":
        from diffisp.experiments.detection_commands import bench_detection

        return bench_detection(args)
    result = run_bench(num_train=args.num_train, epochs=args.epochs)
    print_bench(result)
    atomic_write_json(args.out, result)
    print(f"wrote {args.out}")
    return 0


def _bench_stream(args: argparse.Namespace) -> int:
    from diffisp.data.spec import DataSpec
    from diffisp.experiments.stream_bench import bench_streaming, print_stream_bench
    from diffisp.util.io import atomic_write_json

    try:
        sizes = [int(v) for v in (args.stream_sizes or str(args.num_train)).split(",")]
    except ValueError:
        raise ConfigError(
            f"--stream-sizes must be a comma list of ints; got {args.stream_sizes!r}"
        ) from None
    if min(sizes) < 64:
        raise ConfigError(f"--stream-sizes must be >= 64 each; got {sizes}")
    if args.stream == "generated":
        data = None
    elif args.stream.startswith(("coco:", "voc:", "folder:")):
        data = str(DataSpec.parse(args.stream))
    else:
        data = f"folder:{Path(args.stream).resolve()}"
    if data is not None and DataSpec.parse(data).detection != (args.task == "detect"):
        raise ConfigError(f"--stream {args.stream} needs --task detect for COCO/VOC, not others")
    result = bench_streaming(sizes, data=data, task=args.task, epochs=max(args.epochs, 2))
    print_stream_bench(result)
    atomic_write_json(args.out, result)
    print(f"wrote {args.out}")
    return 0


def _bench_raw(args: argparse.Namespace) -> int:
    from diffisp.experiments.raw_bench import bench_raw, print_raw_bench
    from diffisp.util.io import atomic_write_json

    try:
        height, width = (int(v) for v in args.raw_size.lower().split("x"))
    except ValueError:
        raise ConfigError(f"--raw-size must be HEIGHTxWIDTH; got {args.raw_size!r}") from None
    if height < 32 or width < 32 or height % 2 or width % 2:  # LibRaw refuses tiny images
        raise ConfigError(f"--raw-size needs even sides >= 32; got {args.raw_size!r}")
    if args.raw_files < 0:
        raise ConfigError(f"--raw-files must be >= 0; got {args.raw_files}")
    source = None if args.raw == "synthetic" else Path(args.raw)
    result = bench_raw(source, height=height, width=width)
    print_raw_bench(result)
    report: dict[str, Any] = {"schema": "diffisp.bench-raw/1", "raw": result}
    if args.raw_files:
        from diffisp.experiments.raw_bench import bench_raw_batch, print_raw_batch

        report["batch"] = bench_raw_batch(args.raw_files)
        print_raw_batch(report["batch"])
    atomic_write_json(args.out, report)
    print(f"wrote {args.out}")
    return 0


# Rows by what their model is (the results' "group"), as the table's sections name them.
_SECTIONS = {
    "frozen": "model as trained, frozen",
    "retrained": "model retrained on captures",
    "reference": "reference",
}


def _grouped_label(table: Any, row: dict[str, Any], group: str | None) -> tuple[str, str | None]:
    """A results row's label for ``table`` and the group it belongs to, starting the
    group's section (a rule and its name) when ``row`` is the first of a new group."""
    if row.get("group") not in _SECTIONS:
        return row["label"], group
    if row["group"] != group:
        if table.row_count:
            table.add_section()
        table.add_row(f"[italic]{_SECTIONS[row['group']]}:[/italic]")
    return "  " + row["label"], row["group"]


def _print_results(metrics: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    from diffisp.models.reporting import reporting_for

    ds, metric = metrics["dataset"], metrics.get("metric")
    reporting = reporting_for(metric)
    metric = reporting.metric
    conditions = metrics.get("config", {}).get("capture", {}).get("conditions")
    captures = "mixed captures" if conditions == "mixed" else "dark captures"
    table = Table(
        title=f"Test {metric} on {ds['name']}, {captures} ({ds['num_test']} test images, "
        f"seed {metrics['seed']})"
    )
    # Detection: mAP@[.5:.95] beside the headline mAP@0.5.
    columns = [metric, *reporting.secondary]
    table.add_column("method")
    table.add_column(columns[0], justify="right")
    table.caption = (
        "gap closed: the share of the gap from No ISP to the clean oracle a method closes "
        "(above 100 %: better than the oracle of equal budget). What goes into each row: "
        "metrics.json, or diffisp report RUN_DIR"
    )
    # An accuracy's binomial interval over the test images; an mAP's bootstrap one (the rows
    # carry it: the test images resampled, the same draws for every row).
    bootstrapped = any("low" in row for row in metrics["results"].values())
    interval = reporting.proportion or bootstrapped
    if bootstrapped:
        table.caption += "; 95 % interval: bootstrap over the test images"
    if interval:  # beside the headline, whose interval it is
        table.add_column("95 % interval", justify="right")
    for column in columns[1:]:
        table.add_column(column, justify="right")
    table.add_column("gap closed", justify="right")
    group = None
    for row in metrics["results"].values():
        label, group = _grouped_label(table, row, group)
        gap = "" if row.get("gap_closed") is None else f"{row['gap_closed']:.0%}"
        values = [_percent(row.get(metric))]
        if "low" in row:
            values.append(f"{_percent(row['low'])}-{_percent(row['high'])}")
        elif interval:
            values.append(interval_text(row.get(metric), row.get("num_samples")))
        values += [_percent(row.get(c)) for c in columns[1:]]
        table.add_row(label, *values, gap)
    Console().print(table)
    for line in reading(metrics):
        print(line)


def interval_text(value: Any, n: Any) -> str:
    """A proportion's 95 % Wilson interval over ``n`` samples as text (``-`` when unknown)."""
    from diffisp.util.stats import wilson_interval

    if not isinstance(value, (int, float)) or value != value or not n:
        return "-"
    low, high = wilson_interval(float(value), int(n))
    return f"{low:.0%}-{high:.0%}"


def reading(metrics: dict[str, Any]) -> list[str]:
    """Two lines under the results table (the run's ``comparisons``): the best learned ISP
    against retraining the model, and in front of the model left as it is against the best
    fixed pipeline, each with its paired interval where the task has one, and the test-set
    size and seed count that bound them. Empty when the rows are not there."""
    from diffisp.models.reporting import reporting_for

    reporting = reporting_for(metrics.get("metric"))
    rows, found = metrics["results"], metrics.get("comparisons") or {}
    points = f"{reporting.named()}points"
    seeds = "one seed"

    def line(question: str, answer: dict[str, Any], after: str = "") -> str:
        a, b = rows[answer["a"]], rows[answer["b"]]
        text = (
            f"{question}: {a['label']} {answer['a_value']:.1%} vs {b['label']} "
            f"{answer['b_value']:.1%}: {100 * answer['difference']:+.1f} {points}"
        )
        if "low" in answer:
            text += (
                f" (paired 95 % interval {100 * answer['low']:+.1f} to "
                f"{100 * answer['high']:+.1f}, {answer['num_samples']} test images, {seeds})"
            )
        else:
            text += f" ({a.get('num_samples', '?')} test images, {seeds}; no interval)"
        return text + after + "."

    lines = []
    if "retrained" in found:
        lines.append(line("Model retrained", found["retrained"]))
    if "frozen" in found:
        alone = rows.get("no_isp", {}).get(reporting.metric)
        shown = found["frozen"]["b"] != "no_isp" and isinstance(alone, float)
        after = f"; the model alone on these captures: {alone:.1%}" if shown else ""
        lines.append(line("Model left as it is", found["frozen"], after))
    return lines


def _percent(value: Any, digits: int = 1) -> str:
    """A metric in [0, 1] as a percentage; a dash for a missing or NaN value."""
    if value is None or value != value:
        return "-"
    return f"{value:.{digits}%}"


# Options that describe the run itself: with --resume they come from the run's config.json.
# Where and how a run executes, not what it computes: allowed with --resume.
_RESUME_KEEPS = frozenset(
    {"argv", "command", "debug", "func", "no_progress", "resume"}
    | {"coordinator", "num_processes", "process_id", "coordinator_timeout"}
)


def _ignored_by_resume(args: argparse.Namespace) -> list[str]:
    """The options given with ``--resume`` that would change the run (and so are refused)."""
    from diffisp.cli import build_parser  # the parser names these commands: import it late

    defaults = vars(build_parser().parse_args([args.command]))
    return [
        "--quick/--full" if key == "preset" else "--" + key.replace("_", "-")
        for key, value in vars(args).items()
        if key not in _RESUME_KEEPS and value != defaults.get(key)
    ]


def cmd_train(args: argparse.Namespace) -> int:
    from diffisp.experiments.run import default_run_dir, is_finished, run_experiment
    from diffisp.report.figures import FIGURES
    from diffisp.training.checkpoint import noting_kept_checkpoint

    command = "diffisp " + " ".join(shlex.quote(a) for a in args.argv)
    resume = getattr(args, "resume", None)
    if getattr(args, "frozen_model", None) is not None:
        return _train_frozen(args, command)
    if resume is not None:
        ignored = _ignored_by_resume(args)
        if ignored:
            raise ConfigError(
                f"--resume continues {resume} as configured in its config.json; it would ignore "
                f"{', '.join(ignored)} (start a new run with --out to change them)"
            )
        if is_finished(resume):
            print(f"{resume} is already finished (metrics.json written); nothing to resume")
            return 0
        with noting_kept_checkpoint(resume):
            metrics = run_experiment(
                None,
                resume,
                resume=True,
                command=command,
                progress=not args.no_progress,
                figures=FIGURES,
            ).metrics
        out = resume
    else:
        cfg = config_from_args(args)
        out = args.out or default_run_dir()
        with noting_kept_checkpoint(out):
            metrics = run_experiment(
                cfg,
                out,
                command=command,
                progress=not args.no_progress,
                figures=FIGURES,
                # The demo's minute has no room for compiling every adaptive gate pattern.
                time_isps=args.command != "demo",
            ).metrics
    _print_results(metrics)
    print(f"run directory: {out} (metrics.json, figures/, model/, checkpoints/)")
    print(
        f"train time {metrics['timing']['train_seconds']:.1f} s, "
        f"total {metrics['timing']['total_seconds']:.1f} s"
    )
    return 0


def _train_frozen(args: argparse.Namespace, command: str) -> int:
    from diffisp.experiments.frozen import run_frozen_model
    from diffisp.experiments.run import default_run_dir

    if args.resume is not None or args.config is not None:
        raise ConfigError("--frozen-model takes neither --resume nor --config")
    out = args.out or default_run_dir()
    overrides = config_overrides(args)
    result = run_frozen_model(args.frozen_model, overrides, out, command=command)
    key, rows = result["metric"], result["results"]
    print(f"ISP trained for the frozen model of {result['checkpoint']} ({key}, test set):")
    for name, label in (
        ("model_alone", "frozen model on dark images"),
        ("model_with_isp", "learned ISP + frozen model"),
        ("model_on_clean", "frozen model on clean images"),
    ):
        print(f"  {label:30s} {rows[name][key]:.1%}")
    print(f"output: {out} (model/: the ISP with the unchanged model; frozen.json)")
    return 0


def _model_dir(path: Path) -> Path:
    return path / "model" if (path / "model").is_dir() else path


def cmd_eval(args: argparse.Namespace) -> int:
    if args.checkpoint is None:
        return cmd_study(args)
    return cmd_eval_checkpoint(args)


def cmd_study(args: argparse.Namespace) -> int:
    from diffisp.experiments.study import headline, run_study
    from diffisp.report.figures import FIGURES

    if args.seeds is None or args.seeds < 1:
        raise ConfigError("diffisp eval needs --seeds N (N >= 1) or --checkpoint RUN_DIR")
    if args.out is None:
        raise ConfigError("diffisp eval --seeds needs --out DIR for the study")
    cfg = config_from_args(args)
    command = "diffisp " + " ".join(shlex.quote(a) for a in args.argv)
    study = run_study(
        cfg,
        range(args.seeds),
        args.out,
        resume=args.resume,
        command=command,
        progress=not args.no_progress,
        figures=FIGURES,
    )
    _print_study(study)
    for line in headline(study):
        print(line)
    from diffisp.report.build import build_report

    print(f"report: {build_report(args.out)}")
    return 0


def _print_study(study: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    ds, n = study["dataset"], len(study["seeds"])
    table = Table(
        title=f"{ds['name']}: mean ± std over {n} seed(s), {ds['num_test']} test images per seed"
    )
    metric = study.get("metric", "accuracy")
    secondary = sorted({k for row in study["methods"].values() for k in row.get("secondary", {})})
    for column in ("method", metric, *secondary, "gap closed"):
        table.add_column(column, justify="left" if column == "method" else "right")
    group = None
    for row in study["methods"].values():
        label, group = _grouped_label(table, row, group)
        gap = row["gap_closed"]
        extra = [row.get("secondary", {}).get(k) for k in secondary]
        table.add_row(
            label,
            f"{_percent(row['mean'])} ± {_percent(row['std'])}",
            *("" if e is None else f"{_percent(e['mean'])} ± {_percent(e['std'])}" for e in extra),
            "" if gap is None else f"{gap['mean']:.0%} ± {gap['std']:.0%}",
        )
    Console().print(table)
    for line in study_reading(study):
        print(line)


def study_reading(study: dict[str, Any]) -> list[str]:
    """A study's two questions read over its seeds: each pair's mean ± s.d., and the mean ±
    s.d. of their per-seed difference (paired: the same test images within a seed)."""
    from diffisp.models.reporting import reporting_for

    methods, n = study["methods"], len(study["seeds"])
    points = f"{reporting_for(study.get('metric')).named()}points"
    lines = []
    for group, question in (("retrained", "Model retrained"), ("frozen", "Model left as it is")):
        found = (study.get("comparisons") or {}).get(group)
        if not found:
            continue
        a, b = methods[found["a"]], methods[found["b"]]
        lines.append(
            f"{question}: {a['label']} {_percent(a['mean'])} ± {_percent(a['std'])} vs "
            f"{b['label']} {_percent(b['mean'])} ± {_percent(b['std'])}: paired difference "
            f"{100 * found['mean']:+.1f} ± {100 * found['std']:.1f} {points} over {n} seed(s) "
            f"({a.get('num_samples', '?')} test images each)."
        )
    return lines


def cmd_eval_checkpoint(args: argparse.Namespace) -> int:
    from diffisp.experiments.run import load_run_data, prepare_run_data
    from diffisp.isp.raw import conventional_pipeline
    from diffisp.models.evaluate import evaluate
    from diffisp.models.task import TASKS
    from diffisp.training.checkpoint import load_model
    from diffisp.training.config import TrainConfig, flatten_config

    isp, model, meta = load_model(_model_dir(args.checkpoint))
    values = flatten_config(meta["config"])
    if args.brightness is not None:
        values["brightness"] = list(args.brightness)
    if args.noise_sigma is not None:
        values["noise_sigma"] = args.noise_sigma
    cfg = TrainConfig.from_dict(values)
    run_dir = args.checkpoint if (args.checkpoint / "model").is_dir() else args.checkpoint.parent
    data = prepare_run_data(load_run_data(cfg, run_dir), cfg)
    n = int(data.test_clean.shape[0])
    task = TASKS[cfg.task.name]
    with_isp = evaluate(model, data.test_dark, data.test_labels, isp=isp, task=task)[task.headline]
    # RAW input: "without" is the conventional camera pipeline (a model cannot read a mosaic).
    transform = conventional_pipeline if data.raw else None
    without = evaluate(model, data.test_dark, data.test_labels, transform=transform, task=task)[
        task.headline
    ]
    print(
        f"{cfg.data.source} test set, {n} images, seed {cfg.seed}, "
        f"brightness {cfg.capture.brightness}, noise sigma {cfg.capture.noise_sigma}"
    )
    named, model_name = task.reporting.named(), task.reporting.model_name
    print(f"learned ISP + {model_name}: {named}{with_isp:.1%}")
    label = "conventional pipeline" if data.raw else "no ISP"
    print(f"same {model_name}, {label}:  {named}{without:.1%}")
    return 0


def cmd_apply(args: argparse.Namespace) -> int:
    """Exit status: 0 all rendered or skipped, 1 some files failed (listed), 2 usage errors."""
    from diffisp.experiments.render import (
        EXIT_SOME_FAILED,
        BatchOptions,
        apply_batch,
        failure_report,
        summary,
    )
    from diffisp.util.io import check_output_path

    if args.max_pixels < 1 or args.tile < 1 or args.workers < 1:
        raise ConfigError("apply needs --max-pixels >= 1, --tile >= 1 and --workers >= 1")
    if bool(args.images) == bool(args.raw):
        raise ConfigError("apply takes image files or --raw FILE..., one of the two")
    if args.conventional and (args.checkpoint is not None or not args.raw):
        raise ConfigError("--conventional goes with --raw FILE... and no --checkpoint")
    if args.checkpoint is None and not args.conventional:
        raise ConfigError("apply needs --checkpoint (or, with --raw, --conventional)")
    check_output_path(args.out, directory=True, what="output directory")
    isp = None
    if not args.conventional:
        from diffisp.training.checkpoint import load_model

        isp = load_model(_model_dir(args.checkpoint))[0]
    if args.raw:
        from diffisp.experiments.apply_raw import describe_pipeline

        print(f"rendering with the {describe_pipeline(isp)}")
    options = BatchOptions(
        raw=bool(args.raw),
        fmt=args.format,
        bits=args.bits,
        tile=args.tile,
        max_pixels=args.max_pixels,
        workers=args.workers,
        overwrite=args.overwrite,
        fail_fast=args.fail_fast,
        progress=not args.no_progress,
    )
    result = apply_batch(
        args.raw or args.images,
        args.out,
        isp,
        options,
        warn=lambda message: print(f"diffisp: warning: {message}", file=sys.stderr),
    )
    print(summary(result))
    if result.failed:
        for line in failure_report(result):
            print(line, file=sys.stderr)
        return EXIT_SOME_FAILED
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from diffisp.report.build import build_report
    from diffisp.util.io import check_output_file

    if args.out is not None:
        args.out = check_output_file(args.out, "report.html", what="report")

    print(f"report: {build_report(args.run_dir, args.out)}")
    return 0
