"""``diffisp tune``: the sub-command's options and its body's call (the body is
:func:`diffisp.experiments.tune.run_tune`)."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from diffisp.cli.args import add_config_options, config_overrides, int_like
from diffisp.errors import ConfigError


def _floats(count: int):
    def parse(text: str) -> tuple[float, ...]:
        try:
            values = tuple(float(v) for v in text.split(","))
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {count} comma-separated numbers") from None
        if len(values) != count:
            raise argparse.ArgumentTypeError(f"expected {count} comma-separated numbers")
        return values

    return parse


def _size(text: str) -> tuple[int, int]:
    parts = text.lower().split("x")
    try:
        size = tuple(int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError("expected HxW, e.g. 224x224") from None
    return (size[0], size[0]) if len(size) == 1 else size  # type: ignore[return-value]


# Phase 1 only: the model is the user's and stays frozen.
_TUNE_OPTIM = (
    "batch_size",
    "epochs_isp",
    "isp_warmup_epochs",
    "lr_isp",
    "lr_predictor",
    "lr_stats_map",
    "isp_schedule",
)
_TUNE_ISP = ("stages", "adaptive", "gates", "cost_weight", "raw_demosaic", "raw_residual")
#: Where tune's defaults differ from the config's: offline data unless asked otherwise.
TUNE_DEFAULTS = {"data": "builtin"}


def add_tune_parser(sub: argparse._SubParsersAction, path_type) -> None:
    tune = sub.add_parser(
        "tune",
        help="learn an ISP for your own frozen PyTorch or ONNX model (labels or label-free)",
        description="Phase 1 + warm-up of an ISP in front of a frozen external model, then the "
        "model's accuracy on the dark test images with no ISP, the fixed pipelines and the "
        "learned ISP. --loss consistency needs no labels: the model's outputs on the processed "
        "captures are matched to its outputs on the clean images.",
    )
    tune.add_argument(
        "--model", required=True, help="torch:PKG.MODULE:FACTORY (with --weights) or FILE.onnx"
    )
    tune.add_argument("--weights", type=path_type, help="state-dict file (torch.save) of --model")
    tune.add_argument("--loss", choices=("labels", "consistency"), default="consistency")
    tune.add_argument(
        "--consistency",
        choices=("kl", "mse", "centernet"),
        help="with --loss consistency, how outputs are matched: kl (logits; classify's "
        "default), centernet (a CenterNet head's maps; detect's default), mse (any dense maps "
        "or features)",
    )
    tune.add_argument("--preset", choices=("quick", "full"), default="quick")
    tune.add_argument("--seed", type=int_like, help="the run's seed (data split, captures, init)")
    add_config_options(
        tune,
        ("data", "capture", "isp", "task", "optim"),
        only={"optim": _TUNE_OPTIM, "isp": _TUNE_ISP},
        aliases={"epochs_isp": "--epochs", "isp_warmup_epochs": "--warmup-epochs"},
        defaults=TUNE_DEFAULTS,
    )
    tune.add_argument("--layout", choices=("NCHW", "NHWC"), default="NCHW")
    tune.add_argument("--model-size", type=_size, help="HxW the model takes (resized to)")
    tune.add_argument("--value-range", type=_floats(2), default=(0.0, 1.0), metavar="LO,HI")
    tune.add_argument("--mean", type=_floats(3), default=(0.0, 0.0, 0.0), metavar="R,G,B")
    tune.add_argument("--std", type=_floats(3), default=(1.0, 1.0, 1.0), metavar="R,G,B")
    tune.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32")
    tune.add_argument("--output", help="which output to use: an index or a key")
    tune.add_argument("--out", type=path_type, default=Path("runs/tune"))
    tune.set_defaults(func=cmd_tune)


def cmd_tune(args: argparse.Namespace) -> int:
    from diffisp.cli.commands import interval_text
    from diffisp.experiments.tune import run_tune
    from diffisp.models.external import InputSpec
    from diffisp.report.build import build_report
    from diffisp.report.tune_figures import TUNE_FIGURES
    from diffisp.training.config import TrainConfig

    overrides = config_overrides(args)
    if overrides.get("task") == "detect":  # detection's defaults: the scenes at their own size
        overrides.setdefault("data", "scenes")
        overrides.setdefault("image_size", 64)
    overrides = {**TUNE_DEFAULTS, **overrides}
    cfg = TrainConfig.preset_config(args.preset, **overrides)
    output: int | str | None = args.output
    if output is not None and output.lstrip("-").isdigit():
        output = int(output)
    if args.model.endswith(".onnx") and args.weights is not None:
        raise ConfigError("an ONNX file holds its weights; drop --weights")
    spec = InputSpec(
        layout=args.layout,
        size=args.model_size,
        value_range=args.value_range,
        mean=args.mean,
        std=args.std,
        dtype=args.dtype,
        output=output,
    )
    command = "diffisp " + shlex.join(getattr(args, "argv", sys.argv[1:]))
    result = run_tune(
        args.model,
        cfg,
        args.out,
        weights=args.weights,
        input_spec=spec,
        loss=args.loss,
        consistency=args.consistency,
        command=command,
        figures=TUNE_FIGURES,
    )
    metric = result["metric"]
    print(f"ISP tuned for {args.model} (loss: {args.loss}; {metric} on the test set):")
    for key, row in result["results"].items():
        # An accuracy's 95 % Wilson interval over the test images (mAP has no closed form).
        interval = (
            f", 95 % interval {interval_text(row[metric], row['num_samples'])}"
            if metric == "accuracy"
            else ""
        )
        print(
            f"  {row.get('label', key):<28} {100 * row[metric]:5.1f} %  "
            f"({row['num_samples']} images{interval})"
        )
    print(f"output: {args.out} (metrics.json, isp.npz, figures/)")
    print(f"report: {build_report(args.out)}")
    return 0
