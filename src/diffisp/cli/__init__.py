"""The ``diffisp`` command.

Every deliberate error (bad input, bad config, corrupt file) and every failed file operation
(read-only or full disk, a path under a file) prints one line naming the problem and exits with
status 2; ``--debug`` shows the traceback and the full message instead. A write that fails in
``train`` (checkpoint, model, figures, metrics) also names the last intact checkpoint to resume
from. A multi-process start-up whose processes do not all join within
``--coordinator-timeout`` seconds also ends with one line and status 2. Ctrl-C exits with 130
after the last epoch's checkpoint is safely on disk; a second Ctrl-C exits with 130 at once.
``train --resume`` of a finished run says so and exits 0 (there is nothing left to do).

``apply`` renders a batch: it exits 0 when every file was rendered (or skipped, rendered earlier
into the same ``--out``), 1 when some files failed (each listed with its reason on stderr at the
end, after the others were rendered; ``--fail-fast`` stops at the first), and 2 as above: bad
options or checkpoint, an output it would have to replace (``--overwrite``), a failed write.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from diffisp.cli.args import (
    _add_run_options,
    _path,
    config_from_args,
    config_overrides,
    int_like,
)
from diffisp.cli.commands import (
    _print_results,
    cmd_apply,
    cmd_bench,
    cmd_eval,
    cmd_export,
    cmd_report,
    cmd_scenes,
    cmd_train,
)
from diffisp.cli.tune import add_tune_parser
from diffisp.errors import ConfigError, DiffispError

# Longer messages are cut at the CLI boundary (orbax errors carry kilobytes of TensorStore JSON).
MESSAGE_CHARS = 400


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="diffisp",
        description="Learn a camera ISP end to end for a downstream classifier or detector.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser(
        "demo",
        help="about a minute: what a learned ISP gives a model on mixed dark captures, "
        "frozen or retrained",
    )
    # No preset by default: the protocol picks one (deployed: demo; seed: quick).
    _add_run_options(demo, default_preset=None, default_protocol="deployed")
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
    ev.add_argument("--seeds", type=int_like, help="number of seeds (0..N-1) for the study")
    ev.add_argument("--resume", action="store_true", help="continue a study in --out")
    ev.add_argument("--checkpoint", type=_path, help="run dir or its model/ dir")
    ev.set_defaults(func=cmd_eval)

    apply = sub.add_parser(
        "apply",
        help="render image or RAW files and folders through a saved ISP (PNG or TIFF)",
        description="Render every file (folders: searched recursively, sorted) to --out. Files "
        "already rendered there by the same ISP and settings are skipped; a file that fails is "
        "listed at the end and the others are still rendered. Exit status: 0 all rendered or "
        "skipped, 1 some files failed, 2 usage errors, a bad checkpoint or a failed write.",
    )
    apply.add_argument(
        "images", nargs="*", type=_path, metavar="INPUT", help="sRGB image files or folders"
    )
    apply.add_argument(
        "--raw", nargs="+", type=_path, metavar="INPUT", help="Bayer RAW files or folders"
    )
    apply.add_argument("--checkpoint", type=_path, help="run dir or its model/ dir")
    apply.add_argument(
        "--conventional",
        action="store_true",
        help="with --raw and no checkpoint: the conventional camera pipeline alone",
    )
    apply.add_argument("--bits", type=int, choices=(8, 16), default=8, help="bits per sample")
    apply.add_argument(
        "--format", choices=("png", "tiff"), default="png", help="output format (default png)"
    )
    apply.add_argument("--out", type=_path, default=Path("isp_out"))
    apply.add_argument(
        "--max-pixels",
        type=int_like,
        default=64_000_000,
        help="refuse larger images before decoding them (default 64e6, about 8000x8000)",
    )
    apply.add_argument("--tile", type=int, default=1024, help="tile side for large images")
    apply.add_argument(
        "--workers", type=int, default=2, help="threads decoding the next files (default 2)"
    )
    apply.add_argument(
        "--overwrite",
        action="store_true",
        help="render every file again, replacing what --out holds under its name",
    )
    apply.add_argument("--fail-fast", action="store_true", help="stop at the first file that fails")
    apply.add_argument("--no-progress", action="store_true", help="no progress bar")
    apply.set_defaults(func=cmd_apply)

    export = sub.add_parser(
        "export",
        help="write a run's ISP as an ONNX graph or a JSON parameter file",
        description="--format onnx: the ISP's inference as one ONNX graph (onnxruntime, ...); "
        "--format json: every stage's physical values and ranges (docs/isp-file-format.md).",
    )
    export.add_argument("run", type=_path, metavar="RUN", help="run dir or its model/ dir")
    export.add_argument("--format", choices=("onnx", "json"), required=True)
    export.add_argument("--out", type=_path, required=True, help="file to write")
    export.add_argument(
        "--size",
        metavar="HxW",
        help="ONNX of an adaptive or RAW ISP: the fixed image size (default: the run's)",
    )
    export.add_argument(
        "--pattern", default="RGGB", help="ONNX of a RAW ISP: the CFA pattern (default RGGB)"
    )
    export.set_defaults(func=cmd_export)

    report = sub.add_parser("report", help="write a self-contained HTML report of a run or eval")
    report.add_argument("run_dir", type=_path, metavar="RUN_DIR", help="run or evaluation dir")
    report.add_argument("--out", type=_path, help="HTML file (default RUN_DIR/report.html)")
    report.set_defaults(func=cmd_report)
    bench = sub.add_parser("bench", help="training/inference throughput vs the reference loop")
    bench.add_argument(
        "--num-train", type=int_like, help="images per epoch (default 2048; --task detect 256)"
    )
    bench.add_argument(
        "--epochs", type=int_like, default=3, help="timed fast-path epochs per phase"
    )
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
        "--raw-files",
        type=int,
        default=0,
        metavar="N",
        help="with --raw: also files/s of N synthetic DNGs at 12 and 24 MP, rawpy vs diffisp "
        "apply, disk to disk",
    )
    bench.add_argument(
        "--stream",
        nargs="?",
        const="generated",
        metavar="FOLDER|coco:PATH|voc:ROOT",
        help="instead: in-memory vs streamed training (images/s, peak RSS; a fresh process "
        "each) on an image folder (with --task detect: a COCO or VOC set), or on generated "
        "folders (scenes written as COCO) of --stream-sizes",
    )
    bench.add_argument(
        "--stream-sizes", help="with --stream: comma list of training-set sizes (--num-train)"
    )
    bench.add_argument(
        "--task",
        choices=("classify", "detect"),
        default="classify",
        help="detect: detector training/inference throughput on the scenes (--image-size, "
        "default 64; --num-train, default here 256)",
    )
    bench.add_argument("--image-size", type=int_like, help="with --task detect (default 64)")
    bench.set_defaults(func=cmd_bench)

    scenes = sub.add_parser(
        "scenes", help="write the stand-in detection scenes as COCO (load with --data coco:OUT)"
    )
    scenes.add_argument("out", type=_path, metavar="OUT", help="folder to write")
    scenes.add_argument("--num-train", type=int_like, default=2000)
    scenes.add_argument("--num-test", type=int_like, default=500)
    scenes.add_argument("--image-size", type=int_like, default=64)
    scenes.add_argument("--seed", type=int_like, default=0)
    scenes.set_defaults(func=cmd_scenes)
    add_tune_parser(sub, _path)
    return parser


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
        use_compilation_cache()
        _join_processes(args)
        return int(args.func(args) or 0)
    except (DiffispError, OSError) as exc:
        if args.debug:
            raise
        print(f"diffisp: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("diffisp: interrupted", file=sys.stderr)
        return 130


#: Set to 0 to run without the persistent compilation cache.
XLA_CACHE_ENV = "DIFFISP_XLA_CACHE"


def use_compilation_cache() -> Path | None:
    """Turn on JAX's persistent compilation cache in ``xla/`` of the diffisp cache
    (``$DIFFISP_CACHE`` or ``~/.cache/diffisp``) and return it, so that a command run again
    skips most of XLA's compiling, which is most of a short run's time on a CPU (the demo on 2
    cores: ~130 s the first time, ~55 s after). ``JAX_COMPILATION_CACHE_DIR``, when set, is
    JAX's own choice and is left alone; ``DIFFISP_XLA_CACHE=0`` turns the cache off (``None``).
    """
    import jax

    if os.environ.get(XLA_CACHE_ENV, "1") == "0":
        return None
    if jax.config.jax_compilation_cache_dir:  # JAX read JAX_COMPILATION_CACHE_DIR at import
        return Path(jax.config.jax_compilation_cache_dir)
    from diffisp.data.download import default_cache_dir

    path = default_cache_dir() / "xla"
    jax.config.update("jax_compilation_cache_dir", str(path))
    # Every compiled call, not only those over JAX's default 1 s: a run compiles hundreds of
    # small ones (~10 s of the demo's minute); the demo's whole cache is ~5 MB.
    if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    if "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES" not in os.environ:
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path


def _join_processes(args: argparse.Namespace) -> None:
    """A multi-process run: ``jax.distributed.initialize`` before any JAX work."""
    given = [getattr(args, k, None) for k in ("coordinator", "num_processes", "process_id")]
    if any(v is not None for v in given) or os.environ.get("JAX_COORDINATOR_ADDRESS"):
        from diffisp.training.parallel import DEFAULT_COORDINATOR_TIMEOUT, initialize_distributed

        timeout = getattr(args, "coordinator_timeout", None)
        initialize_distributed(
            *given, timeout=DEFAULT_COORDINATOR_TIMEOUT if timeout is None else timeout
        )


__all__ = [
    "ConfigError",
    "_print_results",
    "build_parser",
    "config_from_args",
    "config_overrides",
    "main",
    "use_compilation_cache",
]
