"""Checkpoints (orbax): the training state after every epoch, and the final ISP + task model.

Orbax writes each checkpoint into a temporary directory and renames it when complete, so an
interrupted write never leaves a half checkpoint that looks valid; ``latest`` only ever sees
finished ones. Array trees are stored by orbax; small metadata (position, history, config,
model layout) as JSON inside the same checkpoint. Every finished step is checksummed and
verified before it loads (:mod:`diffisp.training.integrity`); damaged training steps are moved
to ``run_dir/checkpoints-damaged/`` so ``--resume`` continues from the newest intact one.

A save that fails (a full disk, a folder made read-only) removes what it half wrote and raises
one :class:`~diffisp.errors.OutputError` naming the directory and the last intact step, instead
of orbax's own exception types and the tracebacks its writer threads log.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno as _errno
import gc
import json
import logging
import os
import re
import shutil
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from diffisp.errors import CheckpointError, ConfigError, DiffispError, OutputError
from diffisp.isp.chain import ISP
from diffisp.models.task import TASKS
from diffisp.training.config import TrainConfig, config_differences
from diffisp.training.integrity import (
    MANIFEST_NAME,
    gist,
    newest_intact_step,
    quarantine_steps,
    replace_directory,
    verify_manifest,
    write_manifest,
)
from diffisp.training.state import PHASES, EpochRecord, TrainState, build_isp
from diffisp.util.io import describe_os_error

# Training checkpoints: format 2 since one optimiser per phase (1 had one per ISP and model).
FORMAT_VERSION = 2
MODEL_FORMAT_VERSION = 1


def _check_format(meta: Any, where: Path, expected: int) -> None:
    version = meta.get("format") if isinstance(meta, dict) else None
    if version != expected:
        raise CheckpointError(
            f"{where} is in checkpoint format {version!r}; this diffisp reads format "
            f"{expected} only"
        )


def _pure(module: Any) -> dict:
    pure = nnx.to_pure_dict(nnx.state(module))
    if jax.process_count() == 1:
        return pure
    # orbax refuses host-local jax.Arrays when there are several processes; process 0 saves
    # its own full copy, so plain numpy arrays are what it writes.
    return jax.tree.map(_host_array, pure)


def _host_array(leaf: Any) -> Any:
    if isinstance(leaf, jax.Array) and not jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
        return np.asarray(leaf)
    return leaf


def _abstract(tree: Any) -> Any:
    if jax.process_count() > 1:
        return tree  # numpy leaves: restored as numpy arrays, on this process only
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


def _fill(module: Any, pure: dict) -> None:
    state = nnx.state(module)
    nnx.replace_by_pure_dict(state, pure)
    nnx.update(module, state)


def _manager(directory: Path, max_to_keep: int | None = 2) -> ocp.CheckpointManager:
    directory = directory.absolute()
    if jax.process_count() == 1:
        options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
        return ocp.CheckpointManager(directory, options=options)
    # A multi-process run: process 0 alone writes (the others return before saving), from its
    # local copy of the replicated state, so its manager is a one-process one, with no barriers.
    directory.mkdir(parents=True, exist_ok=True)
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep,
        create=False,  # orbax refuses to create it with active_processes set
        multiprocessing_options=ocp.options.MultiprocessingOptions(
            primary_host=0, active_processes={0}
        ),
    )
    return ocp.CheckpointManager(directory, options=options)


def _training_modules(state: TrainState) -> dict[str, Any]:
    modules = {"isp": state.isp, "model": state.model, "optimizer": state.optimizer}
    modules.update(state.snapshots)
    return {k: v for k, v in modules.items() if v is not None}


class TrainingCheckpoints:
    """The training state of one run, saved after every epoch under ``run_dir/checkpoints``.

    In a multi-process run only process 0 keeps checkpoints; the others hold none (and so
    have nothing to resume from).
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.directory = Path(run_dir) / "checkpoints"
        self.damaged_directory = Path(run_dir) / "checkpoints-damaged"
        self.writes = jax.process_index() == 0
        self.manager = _manager(self.directory) if self.writes else None

    def step_dir(self, step: int) -> Path:
        return self.directory / str(step)

    def discard_damaged(self) -> list[tuple[int, str]]:
        """Move steps newer than the newest intact one to ``checkpoints-damaged/``.

        Call before :meth:`restore_into` (``--resume``) so training continues from the last
        intact epoch and later saves do not collide with the damaged steps.

        Returns:
          ``[(step, reason), ...]`` of the steps moved, newest first (empty if all are intact).
        """
        if not self.writes:
            return []
        _, damaged = newest_intact_step(self.directory, self.manager.all_steps())
        if damaged:
            quarantine_steps(self.directory, [s for s, _ in damaged], self.damaged_directory)
            self.manager.close()
            self.manager = _manager(self.directory)
        return damaged

    def save(self, state: TrainState) -> None:
        """Save ``state`` as the next step (process 0 only, in a multi-process run)."""
        if not self.writes:
            return
        modules = _training_modules(state)
        meta = {
            "format": FORMAT_VERSION,
            "position": list(state.position),
            "history": [dataclasses.asdict(r) for r in state.history],
            "config": state.cfg.to_dict(),
            "modules": sorted(modules),
        }
        trees = {k: _pure(m) for k, m in modules.items()}
        step = len(state.history)
        try:
            with _quiet_writer_threads():
                self.manager.save(
                    step,
                    args=ocp.args.Composite(
                        state=ocp.args.StandardSave(trees), meta=ocp.args.JsonSave(meta)
                    ),
                    force=True,
                )
                self.manager.wait_until_finished()
                write_manifest(self.step_dir(step))
        except Exception as exc:
            reason, code = _failure_reason(exc)
            del exc  # its traceback holds orbax's writer coroutines (noise when collected)
            self._discard_unfinished(step)
            raise OutputError(
                f"cannot save checkpoint {step} in {self.directory}: {reason}; "
                f"{kept_checkpoint_note(self.directory.parent)}",
                code,
            ) from None

    def _discard_unfinished(self, step: int) -> None:
        """Remove what a failed save of ``step`` left (orbax's temporary directory, or a step
        with no manifest), freeing its space, and start a fresh manager (orbax's keeps the
        failed save's state)."""
        with _quiet_writer_threads(), contextlib.suppress(Exception):
            self.manager.close()
        for leftover in self.directory.glob(f"{step}.orbax-checkpoint-tmp*"):
            shutil.rmtree(leftover, ignore_errors=True)
        if not (self.step_dir(step) / MANIFEST_NAME).is_file():
            shutil.rmtree(self.step_dir(step), ignore_errors=True)
        with contextlib.suppress(Exception):
            self.manager = _manager(self.directory)

    def latest_step(self) -> int | None:
        return self.manager.latest_step() if self.writes else None

    def restore_into(self, state: TrainState, num_train: int) -> None:
        """Load the latest checkpoint into a fresh ``state`` of the same config.

        ``num_train`` (the run's training-set size) sizes the restored optimiser's schedule.
        """
        step = self.latest_step()
        if step is None:
            raise CheckpointError(f"no finished checkpoint in {self.directory}")
        verify_manifest(self.step_dir(step))
        try:
            meta = self.manager.restore(
                step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())
            ).meta
        except Exception as exc:  # orbax raises assorted types on unreadable metadata
            raise CheckpointError(
                f"checkpoint {self.step_dir(step)}: unreadable metadata: {gist(exc)}"
            ) from exc
        _check_format(meta, self.step_dir(step), FORMAT_VERSION)
        if not _same_config(meta["config"], state.cfg):
            changed = "; ".join(config_differences(meta["config"], state.cfg.to_dict()))
            raise CheckpointError(
                f"the checkpoint was written by a run with a different config ({changed})"
            )
        state.position = tuple(meta["position"])
        state.history = [EpochRecord(**r) for r in meta["history"]]
        phase_index, epoch = state.position
        if phase_index < len(PHASES) and epoch > 0:
            state.optimizer = state.new_optimizer(PHASES[phase_index], num_train)
        for name in ("cnn_clean", "isp_phase1"):
            if name in meta["modules"]:
                state.snapshots[name] = state.blank_snapshot(name)
        modules = _training_modules(state)
        if sorted(modules) != meta["modules"]:
            raise CheckpointError(
                f"checkpoint holds {meta['modules']}, expected {sorted(modules)} at this position"
            )
        target = {k: _abstract(_pure(m)) for k, m in modules.items()}
        try:
            restored = self.manager.restore(
                step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target))
            ).state
        except Exception as exc:  # layout mismatch or unreadable arrays (TensorStore errors)
            raise CheckpointError(
                f"checkpoint {self.step_dir(step)} does not match: {gist(exc)}"
            ) from exc
        for key, module in modules.items():
            _fill(module, restored[key])
        phase = PHASES[min(phase_index, len(PHASES) - 1)]
        state.model.train() if (epoch > 0 and phase.train_cnn) else state.model.eval()


def save_model(
    directory: str | Path, isp: nnx.Module, model: nnx.Module, meta: dict[str, Any]
) -> Path:
    """Save a trained ISP and task model (and what is needed to rebuild them) for eval/apply.

    The model is written beside ``directory`` under a temporary name, checksummed, then renamed
    into place, replacing an earlier save: an interrupted save never leaves a half model, and
    saving again (a resumed run whose final stage was interrupted) simply overwrites.
    """
    directory = Path(directory).absolute()
    if jax.process_index() != 0:  # a multi-process run: process 0 writes the model
        return directory
    layout = {
        "format": MODEL_FORMAT_VERSION,
        "task": meta.get("task", "classify"),
        "isp_stages": list(isp.stage_names),
        "num_classes": int(model.head.out_features),
        **meta,
    }
    trees = {"isp": _pure(isp), "model": _pure(model)}
    staging = directory.with_name(f".{directory.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    manager = None
    try:
        with _quiet_writer_threads():
            manager = _manager(staging, max_to_keep=1)
            manager.save(
                0,
                args=ocp.args.Composite(
                    state=ocp.args.StandardSave(trees), meta=ocp.args.JsonSave(layout)
                ),
                force=True,
            )
            manager.wait_until_finished()
            manager.close()
            write_manifest(staging / "0")
            replace_directory(staging, directory)
    except Exception as exc:
        reason, code = _failure_reason(exc)
        del exc
        with _quiet_writer_threads(), contextlib.suppress(Exception):
            if manager is not None:
                manager.close()
        shutil.rmtree(staging, ignore_errors=True)
        previous = " (the earlier model there is unchanged)" if directory.is_dir() else ""
        message = f"cannot save the model in {directory}: {reason}{previous}"
        raise OutputError(message, code) from None
    return directory


# -- failed writes ------------------------------------------------------------------------------

_OS_ERROR_CODE = re.compile(r"os_error_code='?(\d+)")  # TensorStore's way of citing errno


def _failure_reason(exc: BaseException) -> tuple[str, int | None]:
    """Why a save failed, in a few words, and the errno behind it if one is known.

    Orbax wraps the ``OSError`` of its writer threads in ``ValueError``s of TensorStore text
    (``RESOURCE_EXHAUSTED: ... [os_error_code='28']``); the code is taken from there.
    """
    seen: set[int] = set()
    error: BaseException | None = exc
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and not isinstance(error, DiffispError) and error.errno:
            return describe_os_error(error), error.errno
        error = error.__cause__ or error.__context__
    match = _OS_ERROR_CODE.search(str(exc))
    if match:
        code = int(match.group(1))
        return os.strerror(code), code
    if "RESOURCE_EXHAUSTED" in str(exc):
        return os.strerror(_errno.ENOSPC), _errno.ENOSPC
    return gist(exc), None


class _DropErrors(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.ERROR


@contextlib.contextmanager
def _quiet_writer_threads() -> Iterator[None]:
    """Silence what orbax's writer threads log about a failed write (absl ERROR records with
    tracebacks, asyncio's "Future exception was never retrieved", coroutines collected with an
    exception): the failure reaches the caller as one exception instead. Everything below
    ERROR is let through."""
    drop = _DropErrors()
    loggers = [logging.getLogger(name) for name in ("absl", "asyncio")]
    for logger in loggers:
        logger.addFilter(drop)
    hook = sys.unraisablehook
    sys.unraisablehook = lambda unraisable: None
    failed = True
    try:
        yield
        failed = False
    finally:
        gc.collect()  # collect the failed save's futures and coroutines while still quiet
        sys.unraisablehook = hook
        for logger in loggers:
            logger.removeFilter(drop)
        if failed:
            _silence_leftovers()


class _DropLeftovers(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "never retrieved" not in record.getMessage()


def _silence_leftovers() -> None:
    """After a failed save, for the rest of the process: drop what the failed save's orbax
    tasks report when they are collected later or at exit (asyncio's "exception was never
    retrieved", coroutines closed while Python shuts down). Idempotent."""
    asyncio_logger = logging.getLogger("asyncio")
    if not any(isinstance(f, _DropLeftovers) for f in asyncio_logger.filters):
        asyncio_logger.addFilter(_DropLeftovers())
    previous = sys.unraisablehook
    if getattr(previous, "_diffisp_leftovers", False):
        return

    def hook(unraisable: Any) -> None:
        frames = traceback.extract_tb(unraisable.exc_traceback) if unraisable.exc_traceback else []
        if any("orbax" in frame.filename for frame in frames):
            return
        previous(unraisable)

    hook._diffisp_leftovers = True  # type: ignore[attr-defined]
    sys.unraisablehook = hook


def kept_checkpoint_note(run_dir: str | Path) -> str:
    """What a failed run kept: ``"kept: checkpoint 3 (RUN/checkpoints/3), the last intact one;
    resume with diffisp train --resume RUN after freeing space"``, or that it kept none."""
    run_dir = Path(run_dir)
    directory = run_dir / "checkpoints"
    steps = [int(p.name) for p in directory.glob("*") if p.name.isdigit() and p.is_dir()]
    step, _ = newest_intact_step(directory, steps)
    if step is None:
        return f"kept: no checkpoint yet in {directory}"
    return (
        f"kept: checkpoint {step} ({directory / str(step)}), the last intact one; resume with "
        f"diffisp train --resume {run_dir} once there is space"
    )


@contextlib.contextmanager
def noting_kept_checkpoint(run_dir: str | Path) -> Iterator[None]:
    """Turn a failed write during a training run into one :class:`OutputError` that names the
    path and the last intact checkpoint (the model, figures and metrics come after training;
    a checkpoint save already says it)."""
    try:
        yield
    except OSError as exc:
        if isinstance(exc, OutputError) and "kept: " in str(exc):
            raise
        what = str(exc) if isinstance(exc, DiffispError) else describe_os_error(exc)
        raise OutputError(f"{what}; {kept_checkpoint_note(run_dir)}", exc.errno) from exc


def load_model(directory: str | Path) -> tuple[nnx.Module, nnx.Module, dict[str, Any]]:
    """Rebuild the ISP and task model saved by :func:`save_model`.

    Raises:
      CheckpointError: missing, unreadable, or not a diffisp model checkpoint.
    """
    directory = Path(directory).absolute()
    if not directory.is_dir():
        raise CheckpointError(f"checkpoint directory not found: {directory}")
    try:
        manager = _manager(directory, max_to_keep=1)
        step = manager.latest_step()
    except Exception as exc:  # orbax raises assorted errors on foreign directories
        raise CheckpointError(f"{directory} is not a diffisp checkpoint: {gist(exc)}") from exc
    if step is None:
        raise CheckpointError(f"{directory} holds no finished diffisp checkpoint")
    verify_manifest(directory / str(step))
    try:
        meta = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
    except Exception as exc:  # orbax raises assorted types on unreadable metadata
        raise CheckpointError(f"{directory}: unreadable model metadata: {gist(exc)}") from exc
    _check_format(meta, directory, MODEL_FORMAT_VERSION)
    try:
        if "config" in meta:
            isp = build_isp(TrainConfig.from_dict(meta["config"]))
        else:
            isp = ISP(meta["isp_stages"])
        task = TASKS[meta.get("task", "classify")]
        model = task.build_model(int(meta["num_classes"]), rngs=nnx.Rngs(0))
    except (KeyError, TypeError, ValueError, json.JSONDecodeError) as exc:
        raise CheckpointError(
            f"{directory} has no valid diffisp model metadata: {gist(exc)}"
        ) from exc
    target = {"isp": _abstract(_pure(isp)), "model": _abstract(_pure(model))}
    try:
        trees = manager.restore(
            step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target))
        ).state
    except Exception as exc:  # layout mismatch or unreadable arrays (TensorStore errors)
        raise CheckpointError(
            f"checkpoint {directory} does not match an ISP with stages "
            f"{meta.get('isp_stages')}: {gist(exc)}"
        ) from exc
    _fill(isp, trees["isp"])
    _fill(model, trees["model"])
    model.eval()
    return isp, model, meta


def _same_config(saved: Any, cfg: TrainConfig) -> bool:
    """Whether a checkpoint's recorded config (either format) is ``cfg``."""
    try:
        return TrainConfig.from_dict(saved) == cfg
    except ConfigError:
        return False
