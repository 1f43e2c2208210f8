"""One run of the experiment: data -> three-phase training -> baselines -> figures, metrics, model.

A run directory holds ``config.json`` (written once the data are loaded, before any training, so
``--resume`` knows what to continue; a run that cannot start leaves no directory),
``checkpoints/`` (orbax, one per epoch), ``model/`` (final ISP + CNN for ``eval``/``apply``),
``metrics.json``, ``history.json`` and ``figures/``.

While a run writes, it holds an exclusive lock on ``.diffisp.lock`` in its directory, so a second
run into the same directory stops at once with the first one's pid. A run is finished once
``metrics.json`` is written (the CLI's ``train --resume`` then reports it as done).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import platform
import secrets
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol

import jax

from diffisp.data import Dataset, load_dataset, load_folder_split, split_record
from diffisp.data.detection import DetectionDataset
from diffisp.data.detection_loader import load_detection
from diffisp.data.detection_stream import StreamedDetection
from diffisp.data.split import SPLIT_FILE, read_split
from diffisp.data.stream import StreamedFolder, stream_folder
from diffisp.errors import ConfigError
from diffisp.experiments.by_condition import condition_report
from diffisp.experiments.console import DeferredInterrupt, PhaseProgress
from diffisp.experiments.protocol import (
    GROUPS,
    Method,
    evaluate_methods,
    protocol_methods,
    train_finetuned_baselines,
    variant_methods,
)
from diffisp.experiments.usage import parameter_summary
from diffisp.training.checkpoint import TrainingCheckpoints, save_model
from diffisp.training.config import TrainConfig, config_differences
from diffisp.training.data import RunData, prepare_data, stream_cache_dir
from diffisp.training.loop import train
from diffisp.training.state import TrainState
from diffisp.util.io import DirectoryLock, atomic_write_json, check_output_path

METRICS_SCHEMA = "diffisp.metrics/1"
PACKAGES = (
    "diffisp",
    "jax",
    "jaxlib",
    "flax",
    "optax",
    "datarax",
    "orbax-checkpoint",
    "numpy",
    "scikit-image",
    "scikit-learn",
    "pillow",
    "matplotlib",  # the stand-in data and the figures
)


def environment() -> dict[str, Any]:
    """Package versions and the machine, recorded in every run directory."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "devices": [str(d) for d in jax.devices()],
        "packages": versions,
    }


def default_run_dir(root: str | Path = "runs") -> Path:
    """``root/<timestamp>-<4 random hex digits>``: runs started in the same second differ."""
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    while True:
        path = Path(root) / f"{stamp}-{secrets.token_hex(2)}"
        if not path.exists():
            return path


def is_finished(run_dir: str | Path) -> bool:
    """A run is finished once its ``metrics.json`` is written (the last file a run writes)."""
    return (Path(run_dir) / "metrics.json").is_file()


def load_run_data(
    cfg: TrainConfig, run_dir: str | Path | None = None
) -> Dataset | DetectionDataset | StreamedDetection | StreamedFolder:
    """The run's data: the exact recorded split when ``run_dir`` holds one (folder data);
    detection data (``cfg.task.name == "detect"``) through
    :func:`~diffisp.data.detection_loader.load_detection`; with ``cfg.data.stream`` a
    :class:`~diffisp.data.stream.StreamedFolder` (split again from the seed: a streamed run
    records no per-file hashes, which would mean reading every file once more).

    Raises:
      ConfigError: the run's images cannot fit in this machine's memory
        (:meth:`~diffisp.training.config.TrainConfig.check_resources`), before any is read.
    """
    cfg.check_resources()
    # A preset's counts (not the user's) are upper bounds: a smaller set is used whole.
    up_to = [split for split in ("train", "test") if f"num_{split}" in cfg.fit]
    if cfg.task.name == "detect":
        return load_detection(
            cfg.data.source,
            num_train=cfg.data.num_train,
            num_test=cfg.data.num_test,
            seed=cfg.seed,
            image_size=cfg.data.image_size,
            up_to=up_to,
            stream_cache=stream_cache_dir(cfg.data.stream_cache) if cfg.data.stream else None,
        )
    if cfg.data.stream:  # the training files are listed, not read (decoded while training)
        return stream_folder(
            cfg.data.source.path,
            num_train=cfg.data.num_train,
            num_test=cfg.data.num_test,
            seed=cfg.seed,
            image_size=cfg.data.image_size,
            up_to=up_to,
        )
    split = None if run_dir is None else Path(run_dir) / SPLIT_FILE
    if split is not None and split.is_file():
        return load_folder_split(read_split(split), image_size=cfg.data.image_size)
    return load_dataset(
        cfg.data.source,
        num_train=cfg.data.num_train,
        num_test=cfg.data.num_test,
        seed=cfg.seed,
        image_size=cfg.data.image_size,
        data_dir=cfg.data.data_dir,
        up_to=up_to,
    )


def prepare_run_data(
    dataset: Dataset | DetectionDataset | StreamedDetection | StreamedFolder, cfg: TrainConfig
) -> RunData:
    """:func:`load_run_data`'s result on the device (the training set streamed if it is)."""
    return prepare_data(dataset, cfg)


class FigureWriter(Protocol):
    """Draws figures for runs and studies; implemented by the report layer, which sits above."""

    def run(
        self,
        directory: Path,
        outcome: RunOutcome,
        dataset: Dataset,
        results: dict[str, dict],
    ) -> list[Path]: ...

    def sweeps(
        self, directory: Path, sweeps: dict[str, Any], methods: dict[str, Any]
    ) -> list[Path]: ...


@dataclass
class RunOutcome:
    """What a run leaves in memory: its metrics, final state, data and methods (for sweeps)."""

    metrics: dict[str, Any]
    state: TrainState
    data: RunData
    methods: list[Method]


def run_experiment(
    cfg: TrainConfig | None,
    out_dir: str | Path,
    *,
    resume: bool = False,
    command: str | None = None,
    log: Callable[[str], None] = print,
    progress: bool = True,
    figures: FigureWriter | None = None,
    resume_command: str | None = None,
    time_isps: bool = True,
) -> RunOutcome:
    """Train, evaluate and write everything for one run.

    With ``resume=True`` the config is read from ``out_dir/config.json`` (``cfg`` must be None or
    equal) and training continues from the last intact epoch (damaged checkpoints are set aside
    and named). ``figures`` draws the run's figures (the report layer's
    :data:`diffisp.report.figures.FIGURES`; ``None``: no figures). ``resume_command``: what
    the interrupted-run hint tells the user to run (default ``diffisp train --resume OUT``;
    a study names its own command). ``time_isps``: measure each learned ISP's milliseconds
    per image (see :func:`~diffisp.experiments.protocol.evaluate_methods`).

    Raises:
      InputError: ``out_dir`` is not writable, or another run holds its lock.
      ConfigError: a new run into a directory that holds one, resuming a run that has none, or
        resuming with several processes (only process 0 writes checkpoints and the model).

    Resuming a finished run redoes its final stage (baselines, evaluation, ``model/``, metrics),
    as :func:`diffisp.experiments.study.run_study` does to get its methods back; the CLI's
    ``train --resume`` does not: it reports the run as finished (:func:`is_finished`).
    """
    if resume and jax.process_count() > 1:
        raise ConfigError(
            "resuming a multi-process run is not supported: only process 0 keeps checkpoints; "
            "resume it as one process (--resume without --coordinator)"
        )
    out_dir = check_output_path(out_dir, directory=True, what="run directory")
    created = [p for p in (out_dir, *out_dir.parents) if not p.exists()]  # deepest first
    try:
        with DirectoryLock(out_dir):
            return _run_locked(
                cfg,
                out_dir,
                resume,
                command=command,
                log=log,
                progress=progress,
                figures=figures,
                resume_command=resume_command or f"diffisp train --resume {out_dir}",
                time_isps=time_isps,
            )
    except BaseException:
        # A run that could not start leaves nothing behind (not even the lock's directory).
        if created and not (out_dir / "config.json").exists():
            _remove_created(out_dir, created[1:])
        raise


def _remove_created(out_dir: Path, parents: list[Path]) -> None:
    """Remove a run directory this call created, and the parents it created if still empty."""
    shutil.rmtree(out_dir, ignore_errors=True)
    for parent in parents:  # never rmtree a parent: another run may have started in it
        try:
            parent.rmdir()
        except OSError:
            break


def _run_locked(
    cfg: TrainConfig | None,
    out_dir: Path,
    resume: bool,
    *,
    command: str | None,
    log: Callable[[str], None],
    progress: bool,
    figures: FigureWriter | None,
    resume_command: str,
    time_isps: bool,
) -> RunOutcome:
    """:func:`run_experiment`'s work, with ``out_dir`` locked."""
    started = time.perf_counter()
    out_dir = Path(out_dir)
    cfg = _resolve_config(cfg, out_dir, resume)
    dataset = load_run_data(cfg, out_dir if resume else None)
    if cfg.fit:  # the preset's sizes, fitted to the set it was given (and saved so)
        cfg, fitted = cfg.fitted(dataset.num_train, len(dataset.test_images))
        if fitted:
            log(f"note: {fitted}")
    if dataset.is_standin:
        log(f"note: {dataset.description}")
    for line in annotation_notes(dataset):
        log(line)
    data = prepare_run_data(dataset, cfg)
    state = TrainState.create(cfg, data.num_classes)
    if not resume:  # only now: a run that cannot start leaves no directory behind
        atomic_write_json(out_dir / "config.json", cfg.to_dict())
        # Folder data: eval must not re-split it (detection data have no train_files).
        if getattr(dataset, "train_files", None) is not None:
            atomic_write_json(out_dir / SPLIT_FILE, split_record(dataset))
    checkpoints = TrainingCheckpoints(out_dir)
    if resume:
        _restore_for_resume(checkpoints, state, data.num_train, out_dir, log)
    atomic_write_json(out_dir / "environment.json", environment())

    train_name = state.task.reporting.train_score_name
    test_name = state.task.reporting.test_name

    def on_epoch(state: TrainState, record) -> None:
        checkpoints.save(state)
        log(
            f"phase {record.phase} ({record.phase_name}) epoch {record.epoch}: "
            f"loss {record.loss:.3f}, train {train_name} {record.train_acc:.1%}, "
            f"test {test_name} {record.test_acc:.1%} ({record.seconds:.1f} s)"
        )
        if bar:
            bar.show(record)
        if interrupt.requested:  # the checkpoint of this epoch is on disk: stop here
            raise KeyboardInterrupt

    train_started = time.perf_counter()
    with (
        PhaseProgress(state, data.num_train, enabled=progress) as bar,
        DeferredInterrupt(log) as interrupt,
    ):
        on_step = bar.on_step if bar else None
        if bar:
            log = bar.log
        try:
            train(state, data, on_epoch=on_epoch, on_step=on_step)
        except KeyboardInterrupt:
            log(f"interrupted; resume with: {resume_command}")
            raise
    train_seconds = time.perf_counter() - train_started

    log("training the fine-tuned baselines (same budget as the learned ISP after phase 0)")
    methods = protocol_methods(state, train_finetuned_baselines(state, data), data)
    if cfg.isp.variants:
        log(f"training ISP variants against the same CNN: {', '.join(cfg.isp.variants)}")
        clean = methods.pop()  # keep the clean oracle last
        methods += [*variant_methods(state, data, cfg.isp.variants), clean]
    # The table reads top to bottom: the model left as it is, retrained, the clean reference.
    methods.sort(key=lambda m: GROUPS.index(m.group))
    comparisons: dict[str, Any] = {}
    results = evaluate_methods(
        methods, data, state.task, time_isps=time_isps, comparisons=comparisons
    )
    save_model(out_dir / "model", state.isp, state.model, _model_meta(cfg, dataset))
    outcome = RunOutcome({}, state, data, methods)
    figure_paths = (
        [] if figures is None else figures.run(out_dir / "figures", outcome, dataset, results)
    )
    metrics = {
        "schema": METRICS_SCHEMA,
        "created": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": command,
        "task": cfg.task.name,
        # The key of every results row that ranks the methods (the task's headline metric).
        "metric": state.task.headline,
        "seed": cfg.seed,
        "dataset": dataset_summary(dataset),
        "config": cfg.to_dict(),
        "results": results,
        "comparisons": comparisons,
        "learned_parameters": parameter_summary(state.isp, data.test_dark),
        "timing": {
            "train_seconds": round(train_seconds, 2),
            "total_seconds": round(time.perf_counter() - started, 2),
        },
        "figures": [str(p.relative_to(out_dir)) for p in figure_paths],
        "environment": environment(),
    }
    if data.test_conditions is not None:  # mixed capture conditions: results per bin
        metrics["by_condition"] = condition_report(methods, data)
    atomic_write_json(out_dir / "history.json", [dataclasses.asdict(r) for r in state.history])
    atomic_write_json(out_dir / "metrics.json", metrics)
    outcome.metrics = metrics
    return outcome


def annotation_notes(dataset: Any) -> list[str]:
    """What a detection reader dropped or clipped (its ``skipped``/``clipped`` counts), as
    lines to print; nothing when all annotations were used as they are."""
    skipped = {k: v for k, v in (getattr(dataset, "skipped", None) or {}).items() if v}
    clipped = getattr(dataset, "clipped", 0)
    lines = []
    if skipped:
        what = ", ".join(f"{n} {reason.replace('_', ' ')}" for reason, n in skipped.items())
        total = sum(skipped.values())
        lines.append(f"note: skipped {total} annotation(s) of {dataset.name}: {what}")
    if clipped:
        lines.append(f"note: clipped {clipped} box(es) of {dataset.name} to their image")
    return lines


def _restore_for_resume(
    checkpoints: TrainingCheckpoints,
    state: TrainState,
    num_train: int,
    out_dir: Path,
    log: Callable[[str], None],
) -> None:
    """Load the newest intact checkpoint into ``state``, saying what was skipped (if any)."""
    for step, reason in checkpoints.discard_damaged():
        log(f"warning: {reason}; set aside in {checkpoints.damaged_directory} (epoch {step})")
    if checkpoints.latest_step() is None:
        log(f"no intact checkpoint in {checkpoints.directory}: training {out_dir} from the start")
        return
    checkpoints.restore_into(state, num_train)
    log(f"resuming {out_dir} at phase {state.position[0]}, epoch {state.position[1] + 1}")


def resumed_config(cfg: TrainConfig | None, out_dir: Path) -> TrainConfig:
    """The config saved in ``out_dir/config.json``, refused (naming the differences) when
    ``cfg`` is given and differs: a resumed run continues as it was configured."""
    config_path = out_dir / "config.json"
    if not config_path.exists():
        raise ConfigError(f"cannot resume: {config_path} does not exist")
    saved = TrainConfig.load(config_path)
    if cfg is not None and cfg.fit:  # saved fitted to its data: compare it so
        cfg = cfg.fitted(saved.data.num_train, saved.data.num_test)[0]
    if cfg is not None and cfg != saved:
        changed = config_differences(saved.to_dict(), cfg.to_dict())
        raise ConfigError(
            f"--resume continues the run as configured in {config_path}; the options given "
            f"differ in {'; '.join(changed)}"
        )
    return saved


def _resolve_config(cfg: TrainConfig | None, out_dir: Path, resume: bool) -> TrainConfig:
    config_path = out_dir / "config.json"
    if resume:
        return resumed_config(cfg, out_dir)
    if config_path.exists():
        raise ConfigError(
            f"{out_dir} already holds a run; use --resume to continue it or choose another --out"
        )
    return cfg


def dataset_summary(dataset: Dataset) -> dict[str, Any]:
    return {
        "name": dataset.name,
        "description": dataset.description,
        "is_standin": dataset.is_standin,
        "num_train": dataset.num_train,
        "num_test": len(dataset.test_images),
        "num_classes": dataset.num_classes,
        "class_names": list(dataset.class_names),
        "image_size": int(dataset.test_images.shape[1]),
    }


def _model_meta(cfg: TrainConfig, dataset: Dataset) -> dict[str, Any]:
    return {
        "task": cfg.task.name,
        # The class count, not read off the model: a detector's last layer is not a classifier.
        "num_classes": dataset.num_classes,
        "image_size": cfg.data.image_size,
        "class_names": list(dataset.class_names),
        "dataset": dataset.name,
        "config": cfg.to_dict(),
    }
