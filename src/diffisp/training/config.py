"""A run's configuration: the sections composed, cross-section checks, presets, and a strict
JSON round-trip that also reads the previous (flat) format.

``TrainConfig`` holds one frozen section per concern (:mod:`diffisp.training.sections`:
``data``, ``capture``, ``isp``, ``task``, ``optim``, ``devices``) and the run's ``seed`` and
``preset``. Where a run writes its output and how it shows progress are options of a command,
not configuration: they do not change what a run computes, and a saved config must reproduce
a run wherever it is loaded. Nothing here looks at the machine: :meth:`TrainConfig.check_resources`
does, when a run starts.

Every setting also has a flat name (its field name; ``data``, ``task``, ``isp`` and
``devices`` for ``data.source``, ``task.name``, ``isp.stages`` and ``devices.count``): the
command line's option names, :meth:`TrainConfig.of`, :meth:`TrainConfig.replace` and the
previous format's keys.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from diffisp.data.memory import check_fits_in_memory
from diffisp.data.spec import DataSpec
from diffisp.errors import ConfigError
from diffisp.isp.chain import RAW_FRONT, split_raw_front
from diffisp.training.sections import (
    SECTIONS,
    CaptureSection,
    DataSection,
    DevicesSection,
    ISPSection,
    OptimSection,
    TaskSection,
    non_negative_int,
)

#: The version of the sectioned format ``to_dict`` writes (``"format"``); a dict without it
#: is read as the previous, flat format.
FORMAT = 2
# Settings whose flat name is not their field's name.
_RENAMED = {
    ("data", "source"): "data",
    ("task", "name"): "task",
    ("isp", "stages"): "isp",
    ("devices", "count"): "devices",
}
#: flat name -> (section, field) for every sectioned setting.
FLAT_NAMES: dict[str, tuple[str, str]] = {
    _RENAMED.get((section, f.name), f.name): (section, f.name)
    for section, cls in SECTIONS.items()
    for f in dataclasses.fields(cls)
}
_TOP_LEVEL = ("seed", "preset", "fit")
#: The preset's settings a run may fit to a data set smaller than the preset asks for.
FITTABLE = ("num_train", "num_test", "batch_size", "epochs_clean", "epochs_isp", "epochs_joint")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a run, in sections. Validated on construction
    (``ConfigError``): each section checks its own values, this class what spans two.

    Build one from sections (``TrainConfig.of(data=DataSection(num_train=256))``) or from flat
    names (``TrainConfig.of(num_train=256, lr_isp=5e-3)``).
    """

    data: DataSection = field(default_factory=DataSection)
    capture: CaptureSection = field(default_factory=CaptureSection)
    isp: ISPSection = field(default_factory=ISPSection)
    task: TaskSection = field(default_factory=TaskSection)
    optim: OptimSection = field(default_factory=OptimSection)
    devices: DevicesSection = field(default_factory=DevicesSection)
    seed: int = 0
    preset: str = "custom"
    #: Settings the preset chose (not the user) that the run fits to its data set's size when
    #: the set is smaller than the preset asks (:meth:`fitted`); empty once fitted.
    fit: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name, cls in SECTIONS.items():
            if not isinstance(getattr(self, name), cls):
                raise ConfigError(
                    f"config section {name!r} must be a {cls.__name__}; "
                    f"got {type(getattr(self, name)).__name__}"
                )
        non_negative_int("seed", self.seed)
        if self.seed > MAX_SEED:
            raise ConfigError(f"seed must be in [0, 2**32 - 1 = {MAX_SEED}]; got {self.seed}")
        if not isinstance(self.preset, str):
            raise ConfigError(f"preset must be a string; got {self.preset!r}")
        fit = self.fit
        if not isinstance(fit, (tuple, list)) or any(name not in FITTABLE for name in fit):
            raise ConfigError(
                f"fit must be a list of settings among {', '.join(FITTABLE)}; got {fit!r}"
            )
        object.__setattr__(self, "fit", tuple(fit))
        if self.optim.batch_size > self.data.num_train:
            raise ConfigError(
                f"batch_size ({self.optim.batch_size}) is larger than the training set "
                f"({self.data.num_train}); lower --batch-size or raise --num-train"
            )
        self._check_task()
        self._check_input()

    def _check_task(self) -> None:
        source, detect = self.data.source, self.task.name == "detect"
        if detect and not source.detection:
            raise ConfigError(
                f"--task detect needs detection data (--data scenes | coco:PATH | voc:ROOT); "
                f"got {str(source)!r}"
            )
        if not detect and source.detection:
            raise ConfigError(
                f"data {str(source)!r} is a detection data set: add --task detect, or give "
                "classification data (--data auto | cifar10 | builtin | folder:PATH)"
            )
        if detect and self.data.image_size % DETECTOR_MULTIPLE:
            raise ConfigError(
                f"--task detect needs an image_size that is a multiple of {DETECTOR_MULTIPLE} "
                f"(the detector's backbone stride); got {self.data.image_size}"
            )

    def _check_input(self) -> None:
        has_front = bool(split_raw_front(self.isp.stages)[0])
        if not self.capture.raw and has_front:
            raise ConfigError(
                f"RAW stages ({', '.join(RAW_FRONT)}) need RAW input: add --input raw"
            )
        if self.capture.raw and self.data.image_size % 2:
            raise ConfigError(
                "RAW input needs an even image_size (whole 2x2 Bayer tiles); "
                f"got {self.data.image_size}"
            )
        if self.capture.raw and not has_front:
            isp = dataclasses.replace(self.isp, stages=RAW_FRONT + self.isp.stages)
            object.__setattr__(self, "isp", isp)

    # -- flat names -----------------------------------------------------------------------

    @classmethod
    def of(cls, **values: Any) -> TrainConfig:
        """A config from flat names (``num_train=256, isp="seed"``); the rest default."""
        return cls.from_dict(values)

    def replace(self, **values: Any) -> TrainConfig:
        """A copy with the settings of these flat names changed (validated again)."""
        return self.from_dict({**self.flat_dict(), **values})

    def flat_dict(self) -> dict[str, Any]:
        """Every setting by its flat name, as JSON values."""
        out = {name: _json(getattr(getattr(self, s), f)) for name, (s, f) in FLAT_NAMES.items()}
        return {**out, "seed": self.seed, "preset": self.preset, "fit": list(self.fit)}

    # -- the run's resources --------------------------------------------------------------

    def check_resources(self) -> None:
        """Refuse a run whose images cannot fit in this machine's memory (naming the options
        that set their number and size). A run calls it when it starts, not the config's
        construction: a saved config loads on any machine.

        Raises:
          ConfigError: the estimate is above the available memory.
        """
        data = self.data
        # Streamed, only the test set and a bounded sample of the training set are held.
        held = (
            min(data.num_train, max(self.optim.bn_calibration, STREAM_SAMPLE))
            if data.stream
            else data.num_train
        )
        check_fits_in_memory(
            held + data.num_test,
            data.image_size,
            copies=RUN_COPIES,
            options="num_train + num_test (--num-train, --num-test) and image_size (--image-size)"
            + ("" if data.stream else ", or stream the training set (--stream)"),
        )

    # -- presets and files ----------------------------------------------------------------

    def fitted(self, num_train: int, num_test: int) -> tuple[TrainConfig, str | None]:
        """This config fitted to a data set that has ``num_train``/``num_test`` images (at
        most what it asks for), and a line saying what changed (``None``: nothing did).

        Only the settings in :attr:`fit` change: the image counts become the set's; the batch
        shrinks to a quarter of the training set (a power of two, at least 8) when the set
        has fewer than four batches; and each phase keeps the preset's number of *steps*
        (epochs x batches per epoch), so a small set is not trained for a few dozen steps.
        """
        fit, data, optim = set(self.fit), self.data, self.optim
        changes: dict[str, Any] = {"fit": ()}
        if "num_train" in fit:
            changes["num_train"] = min(num_train, data.num_train)
        if "num_test" in fit:
            changes["num_test"] = min(num_test, data.num_test)
        train = changes.get("num_train", data.num_train)
        batch = optim.batch_size
        if "batch_size" in fit and train < 4 * batch:
            batch = min(batch, max(8, 1 << max((train // 4).bit_length() - 1, 0)), train)
            changes["batch_size"] = batch
        asked_steps, steps = data.num_train // optim.batch_size, max(train // batch, 1)
        epochs = {}
        for name in ("epochs_clean", "epochs_isp", "epochs_joint"):
            value = getattr(optim, name)
            if name in fit and value and steps < asked_steps:
                epochs[name] = max(1, round(value * asked_steps / steps))
        changes.update(epochs)
        new = self.replace(**changes)
        shrunk = (new.data.num_train, new.data.num_test) != (data.num_train, data.num_test)
        if not shrunk:
            return new, None
        line = (
            f"the {self.preset} preset fitted to {data.source}: {new.data.num_train} train / "
            f"{new.data.num_test} test images (it asks {data.num_train} / {data.num_test})"
        )
        if "batch_size" in changes:
            line += f", batch {batch}"
        if epochs:
            shown = " + ".join(str(getattr(new.optim, n)) for n in epochs)
            kept = " + ".join(str(getattr(optim, n) * asked_steps) for n in epochs)
            line += f", epochs {shown} (the preset's {kept} steps)"
        return new, line

    @classmethod
    def preset_config(cls, name: str, *, protocol: str = "seed", **overrides: Any) -> TrainConfig:
        """``quick`` (the reference's QUICK_MODE sizes), ``full`` (its full sizes) or ``demo``
        (the deployed protocol's one-minute sizes), the settings of ``protocol``
        (:data:`PROTOCOLS`), then flat-named ``overrides`` (``None`` values ignored)."""
        if name not in PRESETS:
            raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
        if protocol not in PROTOCOLS:
            raise ConfigError(
                f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}"
            )
        values = {**PRESETS[name], **PROTOCOLS[protocol], "preset": name}
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls.from_dict(values)

    def to_dict(self) -> dict[str, Any]:
        """The sectioned JSON form (``"format": 2``)."""
        out: dict[str, Any] = {"format": FORMAT, "seed": self.seed, "preset": self.preset}
        if self.fit:  # written only while unfitted: a fitted run's file is as before
            out["fit"] = list(self.fit)
        for name in SECTIONS:
            section = getattr(self, name)
            out[name] = {
                f.name: _json(getattr(section, f.name)) for f in dataclasses.fields(section)
            }
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """A config from its sectioned form, the previous flat form, or a mix (a section's
        dict beside flat names). Unknown keys are refused by name."""
        sections: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
        top: dict[str, Any] = {}
        for name, value in flatten_config(values).items():
            if name in _TOP_LEVEL:
                top[name] = value
            else:
                section, key = FLAT_NAMES[name]
                sections[section][key] = tuple(value) if isinstance(value, list) else value
        built = {}
        for name, cls_ in SECTIONS.items():
            try:
                built[name] = cls_(**sections[name])
            except TypeError as exc:  # cannot happen for known keys; named if it does
                raise ConfigError(f"config section {name!r}: {exc}") from None
        return cls(**built, **top)

    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        return cls.from_dict(_read_json(path))

    @classmethod
    def load_dict(cls, path: str | Path) -> dict[str, Any]:
        """The settings a JSON config file sets, by flat name (either format), checked for
        unknown keys and bad values."""
        values = _read_json(path)
        cls.from_dict(values)  # raises on unknown keys and bad values, naming them
        return flatten_config(values)


def flatten_config(values: Any) -> dict[str, Any]:
    """The settings in a config dict (sectioned, flat, or mixed) by flat name: only those it
    sets, no defaults filled in.

    Raises:
      ConfigError: not a JSON object, an unknown key or section key, another format version.
    """
    if not isinstance(values, dict):
        raise ConfigError(f"a config must be a JSON object; got {type(values).__name__}")
    version = values.get("format", FORMAT)
    if version != FORMAT:
        raise ConfigError(
            f"config format {version!r} is not one this diffisp reads (format {FORMAT}, or the "
            "previous flat format without a 'format' key)"
        )
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if key == "format":
            continue
        if key in SECTIONS and isinstance(value, dict):
            fields = {f.name for f in dataclasses.fields(SECTIONS[key])}
            unknown = sorted(set(value) - fields)
            if unknown:
                raise ConfigError(
                    f"unknown key(s) in config section {key!r}: {', '.join(unknown)}; "
                    f"valid keys: {', '.join(sorted(fields))}"
                )
            for name, item in value.items():
                flat[_RENAMED.get((key, name), name)] = item
        elif key in FLAT_NAMES or key in _TOP_LEVEL:
            flat[key] = value
        else:
            valid = sorted([*FLAT_NAMES, *_TOP_LEVEL])
            raise ConfigError(
                f"unknown config key(s): {key}; valid keys: {', '.join(valid)} "
                f"(or the sections {', '.join(SECTIONS)})"
            )
    return flat


def _json(value: Any) -> Any:
    if isinstance(value, DataSpec):
        return str(value)
    if isinstance(value, tuple):
        return list(value)
    return value


def config_differences(saved: dict[str, Any], asked: dict[str, Any]) -> list[str]:
    """``"name: saved -> asked"`` for every setting in which two config dicts (either format)
    differ, by flat name (``<absent>`` for one a dict lacks, e.g. a setting newer than a
    saved run)."""
    absent = object()
    saved, asked = flatten_config(saved), flatten_config(asked)

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
            "small JSON object of the settings of TrainConfig"
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
    # `diffisp demo`: the deployed protocol in about a minute of training on 2 CPU cores.
    # Phase 1 gets the most epochs: an adaptive ISP in front of a frozen model learns slowly.
    "demo": {
        "num_train": 1024,
        "num_test": 256,
        "epochs_clean": 8,
        "epochs_isp": 6,
        "epochs_joint": 3,
    },
}

#: What a run compares, as settings applied over the preset's sizes.
PROTOCOLS: dict[str, dict[str, Any]] = {
    # The reference's question: uniform darkening, its five-stage global ISP.
    "seed": {},
    # A deployed model's: every capture differs (light, gain and noise, colour cast, blur);
    # the global ISP and an adaptive one, each in front of the model left as it is and
    # trained with it, against the model retrained on the dark captures.
    "deployed": {"conditions": "mixed", "variants": ("adaptive",)},
}
