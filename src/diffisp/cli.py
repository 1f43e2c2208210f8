"""The ``diffisp`` command.

Every deliberate error (bad input, bad config, corrupt file) and every failed file operation
(read-only or full disk, a path under a file) prints one line naming the problem and exits with
status 2; ``--debug`` shows the traceback and the full message instead. Ctrl-C exits with 130
after the last epoch's checkpoint is safely on disk; a second Ctrl-C exits with 130 at once.
``train --resume`` of a finished run says so and exits 0 (there is nothing left to do).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from diffisp.errors import ConfigError, DiffispError

# Longer messages are cut at the CLI boundary (orbax errors carry kilobytes of TensorStore JSON).
MESSAGE_CHARS = 400


def _path(text: str) -> Path:
    """argparse type for paths: an empty name or a NUL byte is a usage error, not a traceback."""
    if not text.strip():
        raise argparse.ArgumentTypeError("empty path")
    if "\0" in text:
        raise argparse.ArgumentTypeError(f"path {text!r} contains a NUL byte")
    return Path(text)


def _add_run_options(p: argparse.ArgumentParser, *, default_preset: str) -> None:
    size = p.add_mutually_exclusive_group()
    size.add_argument(
        "--quick",
        dest="preset",
        action="store_const",
        const="quick",
        help="the reference's QUICK_MODE sizes: 512 train / 128 test, 1+1 epochs",
    )
    size.add_argument(
        "--full",
        dest="preset",
        action="store_const",
        const="full",
        help="the reference's full sizes: 2000 train / 500 test, 5+10 epochs",
    )
    p.set_defaults(preset=default_preset)
    p.add_argument(
        "--config",
        type=_path,
        help="JSON config file: replaces the preset's values; command-line options win over both",
    )
    p.add_argument(
        "--task",
        choices=("classify", "detect"),
        help="downstream task (default classify); detect: CenterNet detector, mAP, detection "
        "data (default --data scenes --image-size 64)",
    )
    p.add_argument(
        "--data",
        help="classify: auto | cifar10 | builtin | folder:PATH (default auto); "
        "detect: scenes | coco:PATH | voc:ROOT (default scenes)",
    )
    p.add_argument("--data-dir", help="directory holding cifar-10-batches-py")
    p.add_argument(
        "--download",
        action="store_true",
        help="download CIFAR-10 (MD5-checked) into --data-dir or the cache first",
    )
    p.add_argument("--num-train", type=int)
    p.add_argument("--num-test", type=int)
    p.add_argument("--image-size", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--epochs-clean", type=int, help="phase 0: CNN on clean images")
    p.add_argument("--epochs-isp", type=int, help="phase 1: ISP only, CNN frozen")
    p.add_argument("--epochs-joint", type=int, help="phase 2: ISP and CNN jointly")
    p.add_argument("--lr-clean", type=float, help="phase 0 CNN learning rate")
    p.add_argument("--lr-isp", type=float, help="ISP learning rate (phases 1, 2)")
    p.add_argument("--lr-cnn", type=float, help="CNN learning rate in phase 2")
    p.add_argument("--lr-predictor", type=float, help="adaptive ISP predictor learning rate")
    p.add_argument("--schedule", choices=("constant", "cosine"), help="CNN learning-rate schedule")
    p.add_argument("--isp-schedule", choices=("constant", "cosine"), help="ISP lr schedule")
    p.add_argument(
        "--isp-warmup-epochs",
        type=int,
        help="phase 1 warm-up: epochs matching the clean images' channel statistics first",
    )
    p.add_argument(
        "--isp",
        help="seed | full | a comma list of stages (global ISP), or 'adaptive' (per-image "
        "parameters and stage gates; stages from --stages, default full)",
    )
    p.add_argument("--stages", help="ISP stages: seed | full | raw-seed | raw-full | comma list")
    p.add_argument("--cost-weight", type=float, help="adaptive ISP: lambda of the cost penalty")
    p.add_argument("--no-gates", action="store_true", help="adaptive ISP without stage gates")
    p.add_argument(
        "--variants",
        help="other ISPs to train against the same CNN and compare: "
        "comma list of global-full, adaptive, adaptive:LAMBDA, adaptive-params",
    )
    p.add_argument(
        "--brightness",
        type=float,
        nargs=2,
        metavar=("LOW", "HIGH"),
        help="per-image brightness factor range (default 0.1 0.3)",
    )
    p.add_argument("--noise-sigma", type=float, help="Gaussian read noise sigma (default 0.02)")
    p.add_argument("--noise", choices=("gaussian", "poisson_gaussian"))
    p.add_argument(
        "--conditions",
        choices=("uniform", "mixed"),
        help="uniform: every image darkened alike (--brightness, --noise-sigma); mixed: per-image "
        "brightness 0.02-1, ISO-like gain and noise, colour cast, blur (default uniform)",
    )
    p.add_argument(
        "--input",
        choices=("srgb", "raw"),
        help="srgb: darkened sRGB images; raw: each image unprocessed into a dark Bayer RAW "
        "capture (Brooks et al. 2019), learned RAW front in front of the ISP (default srgb)",
    )
    p.add_argument(
        "--raw-demosaic", choices=("bilinear", "malvar"), help="RAW front's fixed demosaic"
    )
    p.add_argument(
        "--raw-residual",
        action="store_true",
        help="RAW front with a learned demosaic residual (off by default)",
    )
    p.add_argument("--cfa-pattern", choices=("RGGB", "GRBG", "GBRG", "BGGR"))
    p.add_argument("--seed", type=int)
    p.add_argument("--out", type=_path, help="run directory (default runs/<timestamp>)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


_CONFIG_KEYS = (
    "task",
    "data",
    "data_dir",
    "num_train",
    "num_test",
    "image_size",
    "batch_size",
    "epochs_clean",
    "epochs_isp",
    "epochs_joint",
    "lr_clean",
    "lr_isp",
    "lr_cnn",
    "lr_predictor",
    "schedule",
    "isp_schedule",
    "isp_warmup_epochs",
    "isp",
    "brightness",
    "noise_sigma",
    "noise",
    "conditions",
    "seed",
    "cost_weight",
    "variants",
    "input",
    "raw_demosaic",
    "cfa_pattern",
)


def config_from_args(args: argparse.Namespace) -> Any:
    from diffisp.training.config import TrainConfig

    if getattr(args, "download", False):
        from diffisp.data import download_cifar10

        print(f"CIFAR-10 is in {download_cifar10(args.data_dir)}")

    overrides = config_overrides(args)
    # The preset's sizes, then what the file sets, then the options given on the command line.
    file_values = {} if args.config is None else TrainConfig.load_dict(args.config)
    values = {**file_values, **overrides}
    if values.get("task") == "detect":  # detection's defaults: the scenes at their own size
        values.setdefault("data", "scenes")
        values.setdefault("image_size", 64)
    return TrainConfig.preset_config(args.preset, **values)


def config_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The config values given on the command line (and only those)."""
    overrides = {k: getattr(args, k) for k in _CONFIG_KEYS if getattr(args, k, None) is not None}
    if overrides.get("isp", "").strip().lower() == "adaptive":
        overrides["adaptive"] = True
        overrides["isp"] = args.stages or "full"
    elif args.stages is not None:
        overrides["isp"] = args.stages
    if args.no_gates:
        overrides["gates"] = False
    if getattr(args, "raw_residual", False):
        overrides["raw_residual"] = True
    return overrides


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="diffisp",
        description="Learn a camera ISP end to end for a downstream classifier.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser("demo", help="train and evaluate on built-in data (quick by default)")
    _add_run_options(demo, default_preset="quick")
    demo.set_defaults(func=cmd_train)

    train = sub.add_parser("train", help="run the three-phase training protocol")
    _add_run_options(train, default_preset="full")
    train.add_argument("--resume", type=_path, metavar="RUN_DIR", help="continue a stopped run")
    train.add_argument(
        "--frozen-model",
        type=_path,
        metavar="CHECKPOINT",
        help="train only an ISP (phase 1 + warm-up) for the saved model of a run, left unchanged",
    )
    train.set_defaults(func=cmd_train)

    ev = sub.add_parser(
        "eval",
        help="multi-seed study (protocol + baselines + sweeps), or a saved model's accuracy",
        description="With --seeds N: train and evaluate the whole protocol for seeds 0..N-1 and "
        "write eval.json, sweep figures and report.html. With --checkpoint: the accuracy of a "
        "saved ISP + CNN on its run's test set.",
    )
    _add_run_options(ev, default_preset="full")
    ev.add_argument("--seeds", type=int, help="number of seeds (0..N-1) for the study")
    ev.add_argument("--resume", action="store_true", help="continue a study in --out")
    ev.add_argument("--checkpoint", type=_path, help="run dir or its model/ dir")
    ev.set_defaults(func=cmd_eval)

    apply = sub.add_parser("apply", help="run a saved ISP over image or RAW files, write PNGs")
    apply.add_argument("images", nargs="*", type=_path)
    apply.add_argument("--raw", nargs="+", type=_path, metavar="FILE", help="Bayer RAW files")
    apply.add_argument("--checkpoint", type=_path, help="run dir or its model/ dir")
    apply.add_argument(
        "--conventional",
        action="store_true",
        help="with --raw and no checkpoint: the conventional camera pipeline alone",
    )
    apply.add_argument("--bits", type=int, choices=(8, 16), default=8, help="PNG bits per sample")
    apply.add_argument("--out", type=_path, default=Path("isp_out"))
    apply.add_argument(
        "--max-pixels",
        type=int,
        default=64_000_000,
        help="refuse larger images before decoding them (default 64e6, about 8000x8000)",
    )
    apply.add_argument("--tile", type=int, default=1024, help="tile side for large images")
    apply.set_defaults(func=cmd_apply)

    report = sub.add_parser("report", help="write a self-contained HTML report of a run or eval")
    report.add_argument("run_dir", type=_path, metavar="RUN_DIR", help="run or evaluation dir")
    report.add_argument("--out", type=_path, help="HTML file (default RUN_DIR/report.html)")
    report.set_defaults(func=cmd_report)
    bench = sub.add_parser("bench", help="training/inference throughput vs the reference loop")
    bench.add_argument(
        "--num-train", type=int, help="images per epoch (default 2048; --task detect 256)"
    )
    bench.add_argument("--epochs", type=int, default=3, help="timed fast-path epochs per phase")
    bench.add_argument(
        "--out",
        type=_path,
        default=Path("bench.json"),
        help="JSON file, or a directory for DIR/bench.json",
    )
    bench.add_argument(
        "--raw",
        nargs="?",
        const="synthetic",
        metavar="FILE",
        help="instead: full-resolution RAW rendering, diffisp vs rawpy (FILE tiled up, or a "
        "synthetic mosaic)",
    )
    bench.add_argument("--raw-size", default="3000x4000", help="HEIGHTxWIDTH for --raw")
    bench.add_argument(
        "--task",
        choices=("classify", "detect"),
        default="classify",
        help="detect: detector training/inference throughput on the scenes (--image-size, "
        "default 64; --num-train, default here 256)",
    )
    bench.add_argument("--image-size", type=int, help="with --task detect (default 64)")
    bench.set_defaults(func=cmd_bench)

    scenes = sub.add_parser(
        "scenes", help="write the stand-in detection scenes as COCO (load with --data coco:OUT)"
    )
    scenes.add_argument("out", type=_path, metavar="OUT", help="folder to write")
    scenes.add_argument("--num-train", type=int, default=2000)
    scenes.add_argument("--num-test", type=int, default=500)
    scenes.add_argument("--image-size", type=int, default=64)
    scenes.add_argument("--seed", type=int, default=0)
    scenes.set_defaults(func=cmd_scenes)
    return parser


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
    if args.task == "detect":
        from diffisp.experiments.detection_commands import bench_detection

        return bench_detection(args)
    result = run_bench(num_train=args.num_train, epochs=args.epochs)
    print_bench(result)
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
    source = None if args.raw == "synthetic" else Path(args.raw)
    result = bench_raw(source, height=height, width=width)
    print_raw_bench(result)
    atomic_write_json(args.out, {"schema": "diffisp.bench-raw/1", "raw": result})
    print(f"wrote {args.out}")
    return 0


def _print_results(metrics: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    ds, metric = metrics["dataset"], metrics.get("metric", "accuracy")
    table = Table(
        title=f"Test {metric} on {ds['name']} ({ds['num_test']} test images, "
        f"seed {metrics['seed']})"
    )
    # Detection: mAP@[.5:.95] beside the headline mAP@0.5.
    columns = [metric, *(["map"] if metric != "accuracy" else [])]
    table.add_column("method")
    for column in columns:
        table.add_column(column, justify="right")
    table.add_column("gap closed", justify="right")
    table.add_column("what goes in")
    for row in metrics["results"].values():
        gap = "" if row.get("gap_closed") is None else f"{row['gap_closed']:.0%}"
        values = [_percent(row.get(c)) for c in columns]
        table.add_row(row["label"], *values, gap, row["description"])
    Console().print(table)


def _percent(value: Any, digits: int = 1) -> str:
    """A metric in [0, 1] as a percentage; a dash for a missing or NaN value."""
    if value is None or value != value:
        return "-"
    return f"{value:.{digits}%}"


# Options that describe the run itself: with --resume they come from the run's config.json.
_RESUME_KEEPS = frozenset({"argv", "command", "debug", "func", "no_progress", "resume"})


def _ignored_by_resume(args: argparse.Namespace) -> list[str]:
    """The options given with ``--resume`` that would change the run (and so are refused)."""
    defaults = vars(build_parser().parse_args([args.command]))
    return [
        "--quick/--full" if key == "preset" else "--" + key.replace("_", "-")
        for key, value in vars(args).items()
        if key not in _RESUME_KEEPS and value != defaults.get(key)
    ]


def cmd_train(args: argparse.Namespace) -> int:
    from diffisp.experiments.run import default_run_dir, is_finished, run_experiment
    from diffisp.report.figures import FIGURES

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
        metrics = run_experiment(
            cfg, out, command=command, progress=not args.no_progress, figures=FIGURES
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
    for row in study["methods"].values():
        gap = row["gap_closed"]
        extra = [row.get("secondary", {}).get(k) for k in secondary]
        table.add_row(
            row["label"],
            f"{_percent(row['mean'])} ± {_percent(row['std'])}",
            *("" if e is None else f"{_percent(e['mean'])} ± {_percent(e['std'])}" for e in extra),
            "" if gap is None else f"{gap['mean']:.0%} ± {gap['std']:.0%}",
        )
    Console().print(table)


def cmd_eval_checkpoint(args: argparse.Namespace) -> int:
    from diffisp.experiments.run import load_run_data
    from diffisp.isp.raw import conventional_pipeline
    from diffisp.models.evaluate import evaluate
    from diffisp.models.task import TASKS
    from diffisp.training.checkpoint import load_model
    from diffisp.training.config import TrainConfig
    from diffisp.training.data import prepare_data

    isp, model, meta = load_model(_model_dir(args.checkpoint))
    values = dict(meta["config"])
    if args.brightness is not None:
        values["brightness"] = list(args.brightness)
    if args.noise_sigma is not None:
        values["noise_sigma"] = args.noise_sigma
    cfg = TrainConfig.from_dict(values)
    run_dir = args.checkpoint if (args.checkpoint / "model").is_dir() else args.checkpoint.parent
    data = prepare_data(load_run_data(cfg, run_dir), cfg)
    n = int(data.test_clean.shape[0])
    task = TASKS[cfg.task]
    with_isp = evaluate(model, data.test_dark, data.test_labels, isp=isp, task=task)[task.headline]
    # RAW input: "without" is the conventional camera pipeline (a model cannot read a mosaic).
    transform = conventional_pipeline if data.raw else None
    without = evaluate(model, data.test_dark, data.test_labels, transform=transform, task=task)[
        task.headline
    ]
    print(
        f"{cfg.data} test set, {n} images, seed {cfg.seed}, brightness {cfg.brightness}, "
        f"noise sigma {cfg.noise_sigma}"
    )
    named = "" if task.headline == "accuracy" else f"{task.headline} "
    print(f"learned ISP + CNN: {named}{with_isp:.1%}")
    label = "conventional pipeline" if data.raw else "no ISP"
    print(f"same CNN, {label}:  {named}{without:.1%}")
    return 0


def cmd_apply(args: argparse.Namespace) -> int:
    from diffisp.data import load_image
    from diffisp.experiments.apply import check_pixel_count, plan_outputs, run_isp_tiled
    from diffisp.experiments.apply_raw import png_bytes
    from diffisp.training.checkpoint import load_model
    from diffisp.util.io import atomic_write_bytes, check_output_path

    if args.max_pixels < 1 or args.tile < 1:
        raise ConfigError("apply needs --max-pixels >= 1 and --tile >= 1")
    if bool(args.images) == bool(args.raw):
        raise ConfigError("apply takes image files or --raw FILE..., one of the two")
    if args.conventional and (args.checkpoint is not None or not args.raw):
        raise ConfigError("--conventional goes with --raw FILE... and no --checkpoint")
    if args.checkpoint is None and not args.conventional:
        raise ConfigError("apply needs --checkpoint (or, with --raw, --conventional)")
    check_output_path(args.out, directory=True, what="output directory")
    if args.raw:
        return _apply_raw(args)
    plan = plan_outputs(args.images, args.out)  # every name decided before any work
    for path in plan:
        check_pixel_count(path, args.max_pixels)
    isp, _, _ = load_model(_model_dir(args.checkpoint))
    args.out.mkdir(parents=True, exist_ok=True)  # only once every input passed its checks
    for path, target in plan.items():
        out = run_isp_tiled(isp, load_image(path), tile=args.tile)
        atomic_write_bytes(target, png_bytes(out, args.bits))
        print(f"{path} -> {target}")
    return 0


def _apply_raw(args: argparse.Namespace) -> int:
    from diffisp.experiments.apply_raw import apply_raw_files
    from diffisp.training.checkpoint import load_model

    isp = None if args.conventional else load_model(_model_dir(args.checkpoint))[0]
    apply_raw_files(
        args.raw,
        args.out,
        isp,
        bits=args.bits,
        tile=args.tile,
        max_pixels=args.max_pixels,
        warn=lambda message: print(f"diffisp: warning: {message}", file=sys.stderr),
    )
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from diffisp.report.build import build_report
    from diffisp.util.io import check_output_file

    if args.out is not None:
        args.out = check_output_file(args.out, "report.html", what="report")

    print(f"report: {build_report(args.run_dir, args.out)}")
    return 0


def _one_line(exc: BaseException) -> str:
    """The error as one line of at most :data:`MESSAGE_CHARS` characters."""
    if isinstance(exc, OSError) and not isinstance(exc, DiffispError):
        from diffisp.util.io import describe_os_error

        text = describe_os_error(exc)
    else:
        text = str(exc)
    text = " ".join(text.split()) or type(exc).__name__
    if len(text) > MESSAGE_CHARS:
        text = text[:MESSAGE_CHARS] + " ... (--debug shows the full message)"
    return text


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = argv
    try:
        return int(args.func(args) or 0)
    except (DiffispError, OSError) as exc:
        if args.debug:
            raise
        print(f"diffisp: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("diffisp: interrupted", file=sys.stderr)
        return 130


__all__ = ["ConfigError", "main"]

if __name__ == "__main__":  # `python -m diffisp.cli ...` ran nothing and exited 0 without this
    sys.exit(main())
