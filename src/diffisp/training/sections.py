"""The sections of a run's configuration: small frozen dataclasses, each validated on its own.

Every setting is declared once, with :func:`setting`: its name, default and meaning (the help
text). :class:`~diffisp.training.config.TrainConfig` composes the sections and checks what
spans two of them; the command line's options are generated from these declarations
(``diffisp.cli.args``). Why each default is what it is, with the measurements:
docs/configuration.md.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from diffisp.capture.base import CaptureModel
from diffisp.capture.low_light import LowLight
from diffisp.capture.mixed import MixedConditions
from diffisp.capture.raw_camera import RawCamera
from diffisp.capture.unprocess import UnprocessConfig
from diffisp.data.spec import DataSpec
from diffisp.errors import ConfigError
from diffisp.isp.chain import parse_stage_list
from diffisp.models.task import TASKS
from diffisp.ops.raw import BAYER_PATTERNS
from diffisp.training.variants import VARIANT_HELP, parse_variant

SCHEDULES = ("constant", "cosine")


def setting(
    default: Any,
    help: str,
    *,
    flag: str | None = "",
    choices: tuple[str, ...] | None = None,
    metavar: str | tuple[str, ...] | None = None,
) -> Any:
    """A config field and its command-line option.

    Args:
      default: the value when nothing sets it.
      help: what it means (the CLI appends the default).
      flag: the option's name; ``""``: ``--`` and the field name with dashes; ``None``: no
        option (set through another one, or only from a config file).
      choices: the allowed values (checked by the section too).
      metavar: how the help names the value(s).
    """
    metadata = {"help": help, "flag": flag, "choices": choices, "metavar": metavar}
    return dataclasses.field(default=default, metadata=metadata)


@dataclass(frozen=True)
class DataSection:
    """Which images, how many, at what size, and whether they are streamed from disk."""

    # A str default, parsed into a DataSpec on construction.
    source: DataSpec | str = setting(  # noqa: RUF009 (setting() declares a field)
        "auto",
        "classify: auto | cifar10 | builtin | folder:PATH; detect: scenes | coco:PATH | "
        "voc:ROOT (with --task detect the default is scenes)",
        flag="--data",
    )
    data_dir: str | None = setting(None, "directory holding cifar-10-batches-py")
    num_train: int = setting(512, "training images")
    num_test: int = setting(128, "test images")
    image_size: int = setting(32, "image side in pixels (with --task detect the default is 64)")
    stream: bool = setting(
        False,
        "folder:PATH, coco:PATH and voc:ROOT data: read the training images from disk while "
        "training (memory does not grow with --num-train) instead of loading them all first",
    )
    stream_chunk_batches: int = setting(32, "--stream: batches per chunk")
    stream_workers: int = setting(1, "--stream --stream-cache off: decoding threads")
    stream_cache: str = setting(
        "auto",
        "--stream: folder the training images are decoded into once (by one process per "
        "CPU) and read from at memory speed; auto: $DIFFISP_CACHE/decoded (default "
        "~/.cache/diffisp/decoded); off: decode them while training",
        metavar="DIR|auto|off",
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "source", DataSpec.parse(self.source))
        for name in ("num_train", "num_test", "image_size", "stream_chunk_batches"):
            positive_int(name, getattr(self, name))
        positive_int("stream_workers", self.stream_workers)
        if self.image_size < 8:
            raise ConfigError(f"image_size must be >= 8 pixels; got {self.image_size}")
        flag("stream", self.stream)
        if not isinstance(self.stream_cache, str) or not self.stream_cache.strip():
            raise ConfigError(
                f"stream_cache must be a folder, 'auto' or 'off'; got {self.stream_cache!r}"
            )
        if self.data_dir is not None and not isinstance(self.data_dir, str):
            raise ConfigError(f"data_dir must be a path string; got {self.data_dir!r}")
        if self.stream and not self.source.streamable:
            raise ConfigError(
                "--stream reads image folders, COCO and VOC sets (--data folder:PATH, "
                f"coco:PATH, voc:ROOT); got {str(self.source)!r} (RAW files are not streamed yet)"
            )
        if self.stream and self.source.detection and self.stream_cache == "off":
            raise ConfigError(
                "a streamed COCO/VOC set is read from its decoded cache (its boxes need every "
                "image's decoded size); --stream-cache off streams image folders only"
            )


@dataclass(frozen=True)
class CaptureSection:
    """How the clean images are captured: the light, the noise, and sRGB or RAW recording."""

    input: str = setting(
        "srgb",
        "srgb: darkened sRGB images; raw: each image unprocessed into a dark Bayer RAW "
        "capture (Brooks et al. 2019) and a learned RAW front in front of the ISP",
        choices=("srgb", "raw"),
    )
    conditions: str = setting(
        "uniform",
        "uniform: every image darkened alike (--brightness, --noise-sigma); mixed: per-image "
        "brightness, ISO-like gain and noise, colour cast and blur",
        choices=("uniform", "mixed"),
    )
    brightness: tuple[float, float] = setting(
        (0.1, 0.3), "uniform: per-image brightness factor range", metavar=("LOW", "HIGH")
    )
    noise_sigma: float = setting(0.02, "uniform, sRGB: Gaussian read noise sigma")
    noise: str = setting(
        "gaussian", "uniform, sRGB: noise model", choices=("gaussian", "poisson_gaussian")
    )
    mixed_brightness: tuple[float, float] = setting(
        (0.02, 1.0), "mixed: brightness range", flag=None
    )
    mixed_shot_noise: float = setting(1e-4, "mixed: shot-noise scale at gain 1", flag=None)
    mixed_blur: float = setting(0.2, "mixed: share of blurred images", flag=None)
    cfa_pattern: str = setting("RGGB", "raw: Bayer pattern", choices=BAYER_PATTERNS)

    def __post_init__(self) -> None:
        one_of("input", self.input, ("srgb", "raw"))
        one_of("conditions", self.conditions, ("uniform", "mixed"))
        one_of("cfa_pattern", self.cfa_pattern, BAYER_PATTERNS)
        # The capture models validate their own values; keep their normalised pairs.
        object.__setattr__(self, "brightness", self.low_light().brightness)
        try:
            mixed = self.mixed_conditions()
        except ConfigError as exc:
            raise ConfigError(f"mixed conditions (mixed_* keys): {exc}") from None
        object.__setattr__(self, "mixed_brightness", mixed.brightness)

    @property
    def raw(self) -> bool:
        return self.input == "raw"

    def model(self) -> CaptureModel:
        """The capture model: the light (uniform low light or mixed conditions), recorded as
        sRGB or, with ``input="raw"``, by a random RAW camera."""
        light = self.mixed_conditions() if self.conditions == "mixed" else self.low_light()
        if self.raw:
            return RawCamera(light, UnprocessConfig(pattern=self.cfa_pattern))
        return light

    def low_light(self) -> LowLight:
        return LowLight(brightness=self.brightness, noise_sigma=self.noise_sigma, noise=self.noise)

    def mixed_conditions(self) -> MixedConditions:
        """The per-image conditions of ``conditions="mixed"`` (validated also when unused)."""
        return MixedConditions(
            brightness=self.mixed_brightness,
            shot_noise=self.mixed_shot_noise,
            blur_probability=self.mixed_blur,
        )


@dataclass(frozen=True)
class ISPSection:
    """The learned ISP: its stages, global or adaptive, the RAW front's settings, and the other
    ISPs compared against the same model."""

    stages: tuple[str, ...] | str = setting(
        ("ccm", "desaturation", "tone_curve", "gamma", "sharpen"),
        "ISP stages: seed | full | raw-seed | raw-full | a comma list (with --input raw the "
        "RAW front is added when they have none)",
    )
    adaptive: bool = setting(False, "per-image parameters from a small CNN", flag=None)
    gates: bool = setting(
        True, "adaptive ISP: per-image stage gates, on unless --no-gates", flag="--no-gates"
    )
    cost_weight: float = setting(
        0.0, "adaptive ISP: weight of the penalty on the chain's measured run time"
    )
    raw_demosaic: str = setting(
        "malvar", "raw: the RAW front's fixed demosaic", choices=("bilinear", "malvar")
    )
    raw_residual: bool = setting(False, "raw: a learned demosaic residual in the RAW front")
    variants: tuple[str, ...] | str = setting(
        (),
        f"other ISPs trained against the same model and compared: a comma list of {VARIANT_HELP}",
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "stages", parse_stage_list(names("isp", self.stages, True)))
        for name in ("adaptive", "gates", "raw_residual"):
            flag(name, getattr(self, name))
        if not 0 <= number("cost_weight", self.cost_weight) <= 100:
            raise ConfigError(f"cost_weight must be in [0, 100]; got {self.cost_weight!r}")
        if self.cost_weight and not (self.adaptive and self.gates):
            raise ConfigError("cost_weight needs the adaptive ISP with gates (--isp adaptive)")
        one_of("raw_demosaic", self.raw_demosaic, ("bilinear", "malvar"))
        variants = names("variants", self.variants)
        keys = [parse_variant(v)[0] for v in variants]
        if len(set(keys)) != len(keys):
            raise ConfigError(f"ISP variants must differ; got {list(variants)}")
        object.__setattr__(self, "variants", variants)


@dataclass(frozen=True)
class TaskSection:
    """The downstream task the ISP is learned for (a key of diffisp.models.task.TASKS)."""

    name: str = setting(
        "classify",
        "classify: a CNN, accuracy; detect: a CenterNet detector, mAP, detection data",
        flag="--task",
        choices=tuple(TASKS),
    )

    def __post_init__(self) -> None:
        one_of("task", self.name, tuple(TASKS), listed=True)


@dataclass(frozen=True)
class OptimSection:
    """The training protocol: phase 0 trains the model on clean images, phase 1 the ISP alone
    (model frozen, after a warm-up), phase 2 both; learning rates, schedules, batch norm."""

    batch_size: int = setting(32, "images per training step")
    epochs_clean: int = setting(5, "phase 0: model on clean images")
    epochs_isp: int = setting(1, "phase 1: ISP only, model frozen")
    epochs_joint: int = setting(1, "phase 2: ISP and model jointly")
    lr_clean: float = setting(1e-3, "phase 0 model learning rate")
    lr_isp: float = setting(1e-2, "ISP learning rate (phases 1, 2; the adaptive warm-up)")
    lr_predictor: float = setting(1e-3, "adaptive ISP: the parameter predictor's learning rate")
    lr_stats_map: float = setting(
        1e-3, "adaptive ISP: learning rate of the predictor's statistics-to-parameter map"
    )
    lr_cnn: float = setting(1e-3, "phase 2 model learning rate")
    schedule: str = setting("cosine", "model learning-rate schedule", choices=SCHEDULES)
    isp_schedule: str = setting("constant", "ISP learning-rate schedule", choices=SCHEDULES)
    isp_warmup_epochs: int = setting(
        1, "phase 1 warm-up: epochs matching the clean images' channel statistics first"
    )
    bn_calibration: int = setting(
        512, "images that re-estimate batch-norm statistics after each model epoch (0: off)"
    )

    def __post_init__(self) -> None:
        positive_int("batch_size", self.batch_size)
        for name in ("epochs_clean", "epochs_isp", "epochs_joint"):
            non_negative_int(name, getattr(self, name))
        non_negative_int("isp_warmup_epochs", self.isp_warmup_epochs)
        non_negative_int("bn_calibration", self.bn_calibration)
        for name in ("lr_clean", "lr_isp", "lr_cnn", "lr_predictor", "lr_stats_map"):
            value = number(name, getattr(self, name))
            if not 0 < value <= 10:
                raise ConfigError(f"{name} must be a learning rate in (0, 10]; got {value!r}")
        one_of("schedule", self.schedule, SCHEDULES)
        one_of("isp_schedule", self.isp_schedule, SCHEDULES)


@dataclass(frozen=True)
class DevicesSection:
    """Where a batch runs: split over ``count`` devices (data parallel; ``None``: all JAX sees,
    on every host of a multi-process run)."""

    count: int | None = setting(
        None,
        "devices each batch is split over (data parallel; default: all JAX sees)",
        flag="--devices",
    )

    def __post_init__(self) -> None:
        if self.count is not None:
            positive_int("devices", self.count)


SECTIONS: dict[str, type] = {
    "data": DataSection,
    "capture": CaptureSection,
    "isp": ISPSection,
    "task": TaskSection,
    "optim": OptimSection,
    "devices": DevicesSection,
}


# -- value checks, naming the setting ---------------------------------------------------------


def number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number; got {value!r}")
    return float(value)


def names(name: str, value: Any, preset: bool = False) -> Any:
    """A comma-separated string or a sequence of strings (a preset name when ``preset``)."""
    if isinstance(value, str):
        return value if preset else tuple(v.strip() for v in value.split(",") if v.strip())
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ConfigError(f"{name} must be a comma list or a list of names; got {value!r}")


def positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{name} must be a positive integer; got {value!r}")


def non_negative_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{name} must be a non-negative integer; got {value!r}")


def flag(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ConfigError(f"{name} must be true or false; got {value!r}")


def one_of(name: str, value: Any, allowed: tuple[str, ...], *, listed: bool = False) -> None:
    if value in allowed:
        return
    if listed or len(allowed) > 2:
        raise ConfigError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")
    raise ConfigError(f"{name} must be {' or '.join(map(repr, allowed))}; got {value!r}")
