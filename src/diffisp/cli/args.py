"""Command-line options shared by the commands, and the run configuration they give."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any


def _path(text: str) -> Path:
    """argparse type for paths: an empty name or a NUL byte is a usage error, not a traceback."""
    if not text.strip():
        raise argparse.ArgumentTypeError("empty path")
    if "\0" in text:
        raise argparse.ArgumentTypeError(f"path {text!r} contains a NUL byte")
    return Path(text)


def int_like(text: str) -> int:
    """argparse type for whole numbers written as the help writes them: ``64000000``,
    ``64_000_000`` or ``64e6``; ``4.5``, ``nan``, ``inf`` and other text are usage errors."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value != math.floor(value):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a whole number (write e.g. 64000000, 64_000_000 or 64e6)"
        )
    return int(value)


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
    p.add_argument("--num-train", type=int_like)
    p.add_argument("--num-test", type=int_like)
    p.add_argument("--image-size", type=int_like)
    p.add_argument("--batch-size", type=int_like)
    p.add_argument("--epochs-clean", type=int_like, help="phase 0: CNN on clean images")
    p.add_argument("--epochs-isp", type=int_like, help="phase 1: ISP only, CNN frozen")
    p.add_argument("--epochs-joint", type=int_like, help="phase 2: ISP and CNN jointly")
    p.add_argument("--lr-clean", type=float, help="phase 0 CNN learning rate")
    p.add_argument("--lr-isp", type=float, help="ISP learning rate (phases 1, 2)")
    p.add_argument("--lr-cnn", type=float, help="CNN learning rate in phase 2")
    p.add_argument("--lr-predictor", type=float, help="adaptive ISP predictor learning rate")
    p.add_argument(
        "--lr-stats-map",
        type=float,
        help="learning rate of the adaptive predictor's statistics-to-parameter map",
    )
    p.add_argument("--schedule", choices=("constant", "cosine"), help="CNN learning-rate schedule")
    p.add_argument("--isp-schedule", choices=("constant", "cosine"), help="ISP lr schedule")
    p.add_argument(
        "--isp-warmup-epochs",
        type=int_like,
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
    p.add_argument(
        "--stream",
        action="store_const",
        const=True,
        help="folder:PATH data: read the training images from disk while training (memory "
        "does not grow with --num-train) instead of loading them all first",
    )
    p.add_argument("--stream-chunk-batches", type=int_like, help="--stream: batches per chunk (32)")
    p.add_argument("--stream-workers", type=int_like, help="--stream: decoding threads (1)")
    p.add_argument("--seed", type=int_like)
    p.add_argument(
        "--devices",
        type=int_like,
        help="devices each batch is split over (data parallel; default: all JAX sees)",
    )
    _add_distributed_options(p)
    p.add_argument("--out", type=_path, help="run directory (default runs/<timestamp>)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _add_distributed_options(p: argparse.ArgumentParser) -> None:
    group = p.add_argument_group(
        "multi-process (jax.distributed)",
        "run the same command once per process, each with its --process-id; each process writes "
        "its own --out (give process 0 the shared run directory). Without these options JAX reads "
        "a cluster's environment when JAX_COORDINATOR_ADDRESS is set.",
    )
    group.add_argument("--coordinator", metavar="HOST:PORT", help="process 0's address")
    group.add_argument("--num-processes", type=int_like, help="processes in the run")
    group.add_argument("--process-id", type=int_like, help="this process's index, 0..N-1")
    group.add_argument(
        "--coordinator-timeout",
        type=float,
        metavar="SECONDS",
        help="how long to wait for every process to join before giving up (default 60)",
    )


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
    "lr_stats_map",
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
    "devices",
    "stream",
    "stream_chunk_batches",
    "stream_workers",
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
