"""Run configuration: one validated dataclass, presets, and a strict JSON round-trip."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from diffisp.capture.base import CaptureModel
from diffisp.capture.low_light import LowLight
from diffisp.capture.mixed import MixedConditions
from diffisp.capture.raw_camera import RawCamera
from diffisp.capture.unprocess import UnprocessConfig
from diffisp.data.detection_loader import absolute_detection_spec, is_detection_spec
from diffisp.data.folder import absolute_root
from diffisp.data.memory import check_fits_in_memory
from diffisp.errors import ConfigError
from diffisp.isp.chain import RAW_FRONT, parse_stage_list, split_raw_front
from diffisp.models.task import TASKS
from diffisp.ops.raw import BAYER_PATTERNS
from diffisp.training.variants import parse_variant


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a run. Validated on construction (``ConfigError``).

    The protocol (a fair version of the reference's):

    * phase 0: train the CNN on clean images (``epochs_clean``, ``lr_clean``);
    * phase 1: CNN frozen in eval mode, optimise only the ISP on dark images (``epochs_isp``,
      ``lr_isp``);
    * phase 2: joint fine-tuning, ISP at ``lr_isp`` and CNN at ``lr_cnn`` (``epochs_joint``).
    """

    data: str = "auto"
    # The downstream task (a key of diffisp.models.task.TASKS): "classify" takes classification
    # data (auto, cifar10, builtin, folder:PATH), "detect" detection data (scenes, coco:PATH,
    # voc:ROOT).
    task: str = "classify"
    data_dir: str | None = None
    num_train: int = 512
    num_test: int = 128
    image_size: int = 32
    batch_size: int = 32
    epochs_clean: int = 5
    epochs_isp: int = 1
    epochs_joint: int = 1
    lr_clean: float = 1e-3
    lr_isp: float = 1e-2
    # The adaptive ISP's parameter predictor is a neural network: it takes smaller, decaying
    # steps than the global ISP's handful of parameters (cosine schedule, clipped gradients).
    # At 1e-2, or 2e-3 without decay, its outputs ran to the bounds of every parameter in some
    # runs (exposure +8 EV, gamma 0.1), where the bounded maps are flat and training stalls.
    lr_predictor: float = 1e-3
    # The predictor's map from image statistics (stops, |f| up to ~7, four nearly collinear
    # features) to the parameters: one step of each weight moves a dark image's parameters up
    # to ~20x as far as a step of the shared offset, so phases 1-2 give it a tenth of lr_isp
    # (the warm-up, which sets it up, uses lr_isp). Measured, mixed conditions, seeds 0-2:
    # at 1e-2 phase 1 ended at 29.0-43.2 % and one seed of phase 2 fell to 66.0 %; at 1e-3,
    # 44.0-52.8 % and 67.8-68.2 % (docs/experiments.md).
    lr_stats_map: float = 1e-3
    lr_cnn: float = 1e-3
    # Learning-rate schedules. The CNN's decays (cosine) within each phase, which settles its
    # weights; the ISP's stays constant, since it has to travel far from the identity (measured:
    # docs/experiments.md).
    schedule: str = "cosine"
    isp_schedule: str = "constant"
    # Phase 1's warm-up (diffisp.training.warmup): epochs in which the ISP first learns to
    # match the clean training images' per-channel mean and std, before the task loss. One
    # epoch took phase 1 over 5 seeds from 50.4 +- 18.6 % to 65.6 +- 2.6 % (docs/results/phase1).
    isp_warmup_epochs: int = 1
    # Images used to re-estimate batch-norm statistics after each CNN-training epoch (0: off).
    bn_calibration: int = 512
    # Devices each batch is split over (data parallel, diffisp.training.parallel): None = all
    # of them (on every host of a multi-process run). The batch size must split evenly.
    devices: int | None = None
    isp: tuple[str, ...] = ("ccm", "desaturation", "tone_curve", "gamma", "sharpen")
    # Adaptive ISP (per-image parameters from a small CNN, optional per-image stage gates with
    # a cost penalty cost_weight * expected share of the chain's measured run time).
    adaptive: bool = False
    gates: bool = True
    cost_weight: float = 0.0
    # Other ISPs trained (phases 1-2) against the same clean-trained CNN and compared.
    variants: tuple[str, ...] = ()
    # "srgb": darkened sRGB images in; "raw": every image is unprocessed into a dark Bayer RAW
    # capture (Brooks et al. 2019, diffisp.capture.unprocess) and the ISP starts with the RAW front
    # (added in front of the chosen stages when they have none). With RAW input the sensor noise
    # is the paper's shot + read model, drawn per image; noise_sigma and noise are not used.
    input: str = "srgb"
    raw_demosaic: str = "malvar"
    # The learned demosaic residual is off by default: on the built-in data (1000 train, 10+3+5
    # epochs, seed 0) it cost phase 1 16 points (36.7 vs 52.3 %), gained nothing in phase 2
    # (69.7 vs 70.0 %) and painted a CFA-periodic stripe pattern the classifier can exploit.
    raw_residual: bool = False
    cfa_pattern: str = "RGGB"
    brightness: tuple[float, float] = (0.1, 0.3)
    noise_sigma: float = 0.02
    noise: str = "gaussian"
    # "uniform": every image darkened by the model above (brightness, noise_sigma, noise);
    # "mixed": per-image brightness, ISO-like gain and noise, colour cast and blur
    # (diffisp.capture.mixed; in RAW, diffisp.capture.raw_camera), with these ranges and
    # MixedConditions' others.
    conditions: str = "uniform"
    mixed_brightness: tuple[float, float] = (0.02, 1.0)
    mixed_shot_noise: float = 1e-4
    mixed_blur: float = 0.2
    seed: int = 0
    preset: str = "custom"
    # Stream the training images from disk instead of loading them (folder:PATH data only;
    # diffisp.data.stream.StreamedSource): chunks of stream_chunk_batches batches, decoded on
    # stream_workers threads while the previous chunk trains. Memory then does not grow with
    # num_train; the test set (num_test) stays in memory. One thread: 32x32 PNGs on this 2-core
    # machine decoded fastest so (2,090 img/s trained against 1,210 with two, phase 0; the
    # decoding holds the GIL and shares the cores with XLA); large JPEGs may want more.
    stream: bool = False
    stream_chunk_batches: int = 32
    stream_workers: int = 1

    def __post_init__(self) -> None:
        for name in (
            "num_train",
            "num_test",
            "image_size",
            "batch_size",
            "stream_chunk_batches",
            "stream_workers",
        ):
            _positive_int(name, getattr(self, name))
        for name in (
            "epochs_clean",
            "epochs_isp",
            "epochs_joint",
            "seed",
            "bn_calibration",
            "isp_warmup_epochs",
        ):
            _non_negative_int(name, getattr(self, name))
        if self.seed > MAX_SEED:
            raise ConfigError(f"seed must be in [0, 2**32 - 1 = {MAX_SEED}]; got {self.seed}")
        if self.image_size < 8:
            raise ConfigError(f"image_size must be >= 8 pixels; got {self.image_size}")
        if not isinstance(self.stream, bool):
            raise ConfigError(f"stream must be true or false; got {self.stream!r}")
        if self.devices is not None:
            _positive_int("devices", self.devices)
        if self.batch_size > self.num_train:
            raise ConfigError(
                f"batch_size ({self.batch_size}) is larger than the training set "
                f"({self.num_train}); lower --batch-size or raise --num-train"
            )
        for name in ("lr_clean", "lr_isp", "lr_cnn", "lr_predictor", "lr_stats_map"):
            value = _number(name, getattr(self, name))
            if not 0 < value <= 10:
                raise ConfigError(f"{name} must be a learning rate in (0, 10]; got {value!r}")
        for name in ("data", "preset"):
            if not isinstance(getattr(self, name), str):
                raise ConfigError(f"{name} must be a string; got {getattr(self, name)!r}")
        object.__setattr__(self, "data", _absolute_folder_spec(self.data))
        self._check_task()
        if self.data_dir is not None and not isinstance(self.data_dir, str):
            raise ConfigError(f"data_dir must be a path string; got {self.data_dir!r}")
        for name in ("adaptive", "gates"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be true or false; got {getattr(self, name)!r}")
        if not 0 <= _number("cost_weight", self.cost_weight) <= 100:
            raise ConfigError(f"cost_weight must be in [0, 100]; got {self.cost_weight!r}")
        if self.cost_weight and not (self.adaptive and self.gates):
            raise ConfigError("cost_weight needs the adaptive ISP with gates (--isp adaptive)")
        variants = _names("variants", self.variants)
        object.__setattr__(self, "variants", variants)
        keys = [parse_variant(v)[0] for v in variants]
        if len(set(keys)) != len(keys):
            raise ConfigError(f"ISP variants must differ; got {list(variants)}")
        for name in ("schedule", "isp_schedule"):
            if getattr(self, name) not in ("constant", "cosine"):
                raise ConfigError(
                    f"{name} must be 'constant' or 'cosine'; got {getattr(self, name)!r}"
                )
        stages = parse_stage_list(_names("isp", self.isp, preset=True))
        self._check_input(stages)
        if self.input == "raw" and not split_raw_front(stages)[0]:
            stages = RAW_FRONT + stages
        object.__setattr__(self, "isp", stages)
        # LowLight validates brightness, noise_sigma and noise; keep its normalised pair.
        object.__setattr__(self, "brightness", self.low_light().brightness)
        self._check_conditions()

    def _check_conditions(self) -> None:
        if self.conditions not in ("uniform", "mixed"):
            raise ConfigError(f"conditions must be 'uniform' or 'mixed'; got {self.conditions!r}")
        # MixedConditions validates the mixed_* values; keep its normalised pair.
        try:
            mixed = self.mixed_conditions()
        except ConfigError as exc:
            raise ConfigError(f"mixed conditions (mixed_* keys): {exc}") from None
        object.__setattr__(self, "mixed_brightness", mixed.brightness)

    def _check_task(self) -> None:
        if not isinstance(self.task, str) or self.task not in TASKS:
            raise ConfigError(f"task must be one of {', '.join(TASKS)}; got {self.task!r}")
        detection_data = is_detection_spec(self.data)
        if self.task == "detect" and not detection_data:
            raise ConfigError(
                f"--task detect needs detection data (--data scenes | coco:PATH | voc:ROOT); "
                f"got {self.data!r}"
            )
        if self.task != "detect" and detection_data:
            raise ConfigError(
                f"data {self.data!r} is a detection data set: add --task detect, or give "
                "classification data (--data auto | cifar10 | builtin | folder:PATH)"
            )
        if self.task == "detect" and self.image_size % DETECTOR_MULTIPLE:
            raise ConfigError(
                f"--task detect needs an image_size that is a multiple of {DETECTOR_MULTIPLE} "
                f"(the detector's backbone stride); got {self.image_size}"
            )
        object.__setattr__(self, "data", absolute_detection_spec(self.data))
        if self.stream and not self.data.lower().startswith("folder:"):
            raise ConfigError(
                f"--stream reads image folders (--data folder:PATH); got {self.data!r} (COCO, "
                "VOC and RAW files are not streamed yet)"
            )

    def _check_input(self, stages: tuple[str, ...]) -> None:
        if self.input not in ("srgb", "raw"):
            raise ConfigError(f"input must be 'srgb' or 'raw'; got {self.input!r}")
        if self.input == "srgb" and split_raw_front(stages)[0]:
            raise ConfigError(
                f"RAW stages ({', '.join(RAW_FRONT)}) need RAW input: add --input raw"
            )
        if self.input == "raw" and self.image_size % 2:
            raise ConfigError(
                f"RAW input needs an even image_size (whole 2x2 Bayer tiles); got {self.image_size}"
            )
        if self.raw_demosaic not in ("bilinear", "malvar"):
            raise ConfigError(
                f"raw_demosaic must be 'bilinear' or 'malvar'; got {self.raw_demosaic!r}"
            )
        if not isinstance(self.raw_residual, bool):
            raise ConfigError(f"raw_residual must be true or false; got {self.raw_residual!r}")
        if self.cfa_pattern not in BAYER_PATTERNS:
            raise ConfigError(
                f"cfa_pattern must be one of {', '.join(BAYER_PATTERNS)}; got {self.cfa_pattern!r}"
            )

    def check_resources(self) -> None:
        """Refuse a run whose images cannot fit in this machine's memory (naming the options
        that set their number and size). A run calls it when it starts, not the config's
        construction: a saved config loads on any machine.

        Raises:
          ConfigError: the estimate is above the available memory.
        """
        # Streamed, only the test set and a bounded sample of the training set are held.
        held = (
            min(self.num_train, max(self.bn_calibration, STREAM_SAMPLE))
            if self.stream
            else self.num_train
        )
        check_fits_in_memory(
            held + self.num_test,
            self.image_size,
            copies=RUN_COPIES,
            options="num_train + num_test (--num-train, --num-test) and image_size (--image-size)"
            + ("" if self.stream else ", or stream the training set (--stream)"),
        )

    def capture_model(self) -> CaptureModel:
        """How the run's images are captured: the light (uniform low light or mixed
        conditions), recorded as sRGB or, with ``input="raw"``, by a random RAW camera."""
        light = self.mixed_conditions() if self.conditions == "mixed" else self.low_light()
        if self.input == "raw":
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

    @classmethod
    def preset_config(cls, name: str, **overrides: Any) -> TrainConfig:
        """``quick`` (the reference's QUICK_MODE sizes) or ``full`` (its full sizes)."""
        if name not in PRESETS:
            raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
        values = {**PRESETS[name], "preset": name}
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls.from_dict(values)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["isp"] = list(self.isp)
        out["brightness"] = list(self.brightness)
        out["mixed_brightness"] = list(self.mixed_brightness)
        out["variants"] = list(self.variants)
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        if not isinstance(values, dict):
            raise ConfigError(f"a config must be a JSON object; got {type(values).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(
                f"unknown config key(s): {', '.join(unknown)}; "
                f"valid keys: {', '.join(sorted(known))}"
            )
        values = dict(values)
        for key in ("isp", "brightness", "variants", "mixed_brightness"):
            if isinstance(values.get(key), list):
                values[key] = tuple(values[key])
        return cls(**values)

    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        return cls.from_dict(_read_json(path))

    @classmethod
    def load_dict(cls, path: str | Path) -> dict[str, Any]:
        """The values of a JSON config file, checked for unknown keys and bad values."""
        values = _read_json(path)
        cls.from_dict(values)  # raises on unknown keys and bad values, naming them
        return values


def config_differences(saved: dict[str, Any], asked: dict[str, Any]) -> list[str]:
    """``"key: saved -> asked"`` for every key in which two config dicts differ (``<absent>``
    for a key one of them lacks, e.g. a setting newer than a saved run)."""
    absent = object()

    def shown(values: dict[str, Any], key: str) -> str:
        return repr(values[key]) if key in values else "<absent>"

    keys = [*saved, *(k for k in asked if k not in saved)]
    return [
        f"{k}: {shown(saved, k)} -> {shown(asked, k)}"
        for k in keys
        if saved.get(k, absent) != asked.get(k, absent)
    ]


def _read_json(path: str | Path) -> Any:
    """Parse a config file, refusing anything that is not a small, sane JSON document."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            # One byte more than allowed tells "too large" apart from "exactly the limit"
            # without reading an endless file (/dev/zero, a FIFO fed forever) to its end.
            raw = f.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except IsADirectoryError:
        raise ConfigError(f"config path {path} is a directory, not a JSON file") from None
    except OSError as exc:  # name too long, permission denied, a dangling device, ...
        # The reason first: the CLI caps long messages, and a long path must not hide it.
        raise ConfigError(f"cannot read config file ({exc.strerror or exc}): {path}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"config file {path} is larger than {MAX_CONFIG_BYTES // 1024} KiB; a config is a "
            "small JSON object of the keys of TrainConfig"
        )
    try:
        return json.loads(raw.decode("utf-8"))
    # ValueError also covers integers longer than Python's int-digit limit.
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} is not valid JSON: {exc}") from None
    except RecursionError:
        raise ConfigError(
            f"config file {path} nests arrays or objects too deeply to be a config"
        ) from None


# jax.random.key takes at most a signed 64-bit seed; 32 bits are plenty of distinct runs, are
# the same with and without jax_enable_x64, and leave room for seed arithmetic in studies.
MAX_SEED = 2**32 - 1
# A config is a few hundred bytes; the cap stops a wrong path from being read into memory.
MAX_CONFIG_BYTES = 1 << 20
# Float32 image copies a run holds at once: the loaded data set, and clean and darkened
# copies on the device (on a CPU backend, also host memory).
RUN_COPIES = 3
# Training images a streamed run keeps in memory for the warm-up's clean statistics
# (diffisp.data.stream; batch norm takes the first bn_calibration, if more). The in-memory
# path takes the same first images, so both give the same run.
STREAM_SAMPLE = 1024
# The detector's deepest stride: its input side must be a multiple of it.
DETECTOR_MULTIPLE = 16

PRESETS: dict[str, dict[str, Any]] = {
    # The reference's QUICK_MODE: 512 train / 128 test, 1 + 1 epochs, plus a short phase 0.
    "quick": {
        "num_train": 512,
        "num_test": 128,
        "epochs_clean": 5,
        "epochs_isp": 1,
        "epochs_joint": 1,
    },
    # The reference's full run: 2000 / 500, 5 + 10 epochs, plus phase 0.
    "full": {
        "num_train": 2000,
        "num_test": 500,
        "epochs_clean": 15,
        "epochs_isp": 5,
        "epochs_joint": 10,
    },
}


def _absolute_folder_spec(data: str) -> str:
    """``folder:PATH`` with PATH made absolute, so a saved run's config names the same folder
    when it is evaluated from another directory; other specs unchanged."""
    kind, sep, path = data.strip().partition(":")
    if kind.lower() != "folder" or not sep or not path.strip():
        return data
    return f"folder:{absolute_root(path.strip())}"


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number; got {value!r}")
    return float(value)


def _names(name: str, value: Any, *, preset: bool = False) -> Any:
    """A comma-separated string or a sequence of strings (a preset name when ``preset``)."""
    if isinstance(value, str):
        return value if preset else tuple(v.strip() for v in value.split(",") if v.strip())
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ConfigError(f"{name} must be a comma list or a list of names; got {value!r}")


def _positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{name} must be a positive integer; got {value!r}")


def _non_negative_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{name} must be a non-negative integer; got {value!r}")
