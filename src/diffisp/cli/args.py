"""Command-line options shared by the commands, and the run configuration they give."""

from __future__ import annotations

import argparse
import dataclasses
import math
import typing
from pathlib import Path
from typing import Any

from diffisp.errors import ConfigError


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


def _add_run_options(
    p: argparse.ArgumentParser, *, default_preset: str | None, default_protocol: str = "seed"
) -> None:
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
    deployed = default_protocol == "deployed"
    p.add_argument(
        "--protocol",
        choices=("deployed", "seed"),
        default=default_protocol,
        help="deployed: mixed captures; global and adaptive ISPs in front of the model left "
        "as it is and trained with it, against retraining the model; seed: the reference's "
        "comparison (uniform darkening, five-stage ISP)"
        + (
            " (default deployed, at the demo preset's sizes: 1024 train / 256 test, 8+6+3 "
            "epochs; seed: at --quick's)"
            if deployed
            else " (default seed)"
        ),
    )
    p.add_argument(
        "--config",
        type=_path,
        help="JSON config file: replaces the preset's values; command-line options win over both",
    )
    p.add_argument(
        "--download",
        action="store_true",
        help="download CIFAR-10 (MD5-checked) into --data-dir or the cache first",
    )
    add_config_options(p)
    p.add_argument("--seed", type=int_like, help="the run's seed (data split, captures, init)")
    _add_distributed_options(p)
    p.add_argument("--out", type=_path, help="run directory (default runs/<timestamp>)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def option_flag(field: dataclasses.Field) -> str | None:
    """The option of a config field (``None``: it has none), from its declaration."""
    flag = field.metadata["flag"]
    return None if flag is None else flag or "--" + field.name.replace("_", "-")


def config_dests() -> dict[str, str]:
    """``dest`` of every generated option -> the flat config name it sets."""
    from diffisp.training.config import FLAT_NAMES
    from diffisp.training.sections import SECTIONS

    flat_of = {v: k for k, v in FLAT_NAMES.items()}
    return {
        flag.removeprefix("--").replace("-", "_"): flat_of[(section, f.name)]
        for section, cls in SECTIONS.items()
        for f in dataclasses.fields(cls)
        if (flag := option_flag(f)) is not None
    }


def add_config_options(
    p: argparse.ArgumentParser,
    sections: tuple[str, ...] | None = None,
    *,
    only: dict[str, tuple[str, ...]] | None = None,
    aliases: dict[str, str] | None = None,
    defaults: dict[str, Any] | None = None,
) -> None:
    """Add one option per setting of the config ``sections`` (all: ``None``), one argument
    group per section, generated from the fields' declarations
    (:func:`diffisp.training.sections.setting`): name, type, choices and help with the
    default (and the ``--full`` preset's value where it differs). Every option defaults to
    ``None``, so :func:`config_overrides` sees only what was given.

    ``only``: for a section, the fields to offer (the others are left out); ``aliases``: flat
    name -> another option name for the same setting; ``defaults``: flat name -> the default
    this command uses instead of the config's (shown in the help; the command applies it).
    """
    from diffisp.training.config import FLAT_NAMES, PRESETS
    from diffisp.training.sections import SECTIONS

    flat_of = {v: k for k, v in FLAT_NAMES.items()}
    for section in sections or tuple(SECTIONS):
        cls = SECTIONS[section]
        group = p.add_argument_group(f"{section} ({cls.__name__})", cls.__doc__.split("\n\n")[0])
        hints = typing.get_type_hints(cls)
        if section == "isp":
            group.add_argument(
                "--isp",
                dest="isp_shorthand",
                metavar="ISP",
                help="seed | full | a comma list of stages (the global ISP, as --stages), or "
                "'adaptive' (per-image parameters and stage gates; stages from --stages, "
                "default full)",
            )
        for f in dataclasses.fields(cls):
            name, flag = flat_of[(section, f.name)], option_flag(f)
            if flag is None or (only and section in only and f.name not in only[section]):
                continue
            flags = [flag, *([aliases[name]] if aliases and name in aliases else [])]
            dest = flag.removeprefix("--").replace("-", "_")
            default = (defaults or {}).get(name, f.default)
            kwargs = _option_kwargs(f, default, hints[f.name], PRESETS, name)
            group.add_argument(*flags, dest=dest, **kwargs)


def _option_kwargs(
    f: dataclasses.Field, default: Any, hint: Any, presets: dict, name: str
) -> dict[str, Any]:
    meta = f.metadata
    shown = _shown(default)
    full = presets.get("full", {}).get(name)
    help_text = meta["help"]
    if shown is not None:
        help_text += f" (default {shown}" + ("" if full is None else f"; --full: {full}") + ")"
    kwargs: dict[str, Any] = {"help": help_text, "default": None}
    if isinstance(default, bool):  # a switch that sets the other value
        return {**kwargs, "action": "store_const", "const": not default}
    if meta["choices"]:
        kwargs["choices"] = meta["choices"]
    if meta["metavar"]:
        kwargs["metavar"] = meta["metavar"]
    if isinstance(default, tuple) and len(default) == 2 and isinstance(default[0], float):
        return {**kwargs, "type": float, "nargs": 2}
    kind = type(default) if default is not None else _first_type(hint)
    kwargs["type"] = {int: int_like, float: float}.get(kind, str)
    return kwargs


def _shown(default: Any) -> str | None:
    if default is None or isinstance(default, bool):
        return None
    if isinstance(default, tuple):
        return ",".join(map(str, default)) if default else "none"
    return str(default)


def _first_type(hint: Any) -> type:
    """``int`` of ``int | None``."""
    return next((a for a in typing.get_args(hint) if a is not type(None)), str)


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


# Data sources with a size of their own: a preset's counts are fitted to them.
FINITE_SOURCES = ("folder", "coco", "voc")


def config_from_args(args: argparse.Namespace) -> Any:
    from diffisp.training.config import FITTABLE, TrainConfig

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
    protocol = getattr(args, "protocol", "seed")
    preset = args.preset or ("demo" if protocol == "deployed" else "quick")
    cfg = TrainConfig.preset_config(preset, protocol=protocol, **values)
    if cfg.data.source.kind in FINITE_SOURCES:  # the run fits what the user left to the preset
        cfg = cfg.replace(fit=[name for name in FITTABLE if name not in values])
    return cfg


def config_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The config values given on the command line (and only those), by flat name."""
    overrides = {
        name: getattr(args, dest)
        for dest, name in config_dests().items()
        if getattr(args, dest, None) is not None
    }
    if getattr(args, "seed", None) is not None:
        overrides["seed"] = args.seed
    isp = getattr(args, "isp_shorthand", None)
    if isp is not None:
        if isp.strip().lower() == "adaptive":  # stages from --stages
            overrides["adaptive"] = True
            overrides.setdefault("isp", "full")
        elif "isp" in overrides:
            raise ConfigError("give the stages once: --isp STAGES or --stages STAGES")
        else:
            overrides["isp"] = isp
    return overrides
