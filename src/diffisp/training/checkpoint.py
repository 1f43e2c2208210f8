"""Checkpoints (orbax): the training state after every epoch, and the final ISP + CNN.

Orbax writes each checkpoint into a temporary directory and renames it when complete, so an
interrupted write never leaves a half checkpoint that looks valid; ``latest`` only ever sees
finished ones. Array trees are stored by orbax; small metadata (position, history, config,
model layout) as JSON inside the same checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp
from flax import nnx

from diffisp.errors import CheckpointError
from diffisp.isp.chain import ISP
from diffisp.models.task import TASKS
from diffisp.training.config import TrainConfig
from diffisp.training.state import PHASES, EpochRecord, TrainState, build_isp

# Training checkpoints: 2 since one optimiser per phase (1 had one per ISP and model).
FORMAT_VERSION = 2
MODEL_FORMAT_VERSION = 1


def _pure(module: Any) -> dict:
    return nnx.to_pure_dict(nnx.state(module))


def _abstract(tree: Any) -> Any:
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


def _fill(module: Any, pure: dict) -> None:
    state = nnx.state(module)
    nnx.replace_by_pure_dict(state, pure)
    nnx.update(module, state)


def _manager(directory: Path, max_to_keep: int | None = 2) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
    return ocp.CheckpointManager(directory.absolute(), options=options)


def _training_modules(state: TrainState) -> dict[str, Any]:
    modules = {"isp": state.isp, "model": state.model, "optimizer": state.optimizer}
    modules.update(state.snapshots)
    return {k: v for k, v in modules.items() if v is not None}


class TrainingCheckpoints:
    """The training state of one run, saved after every epoch under ``run_dir/checkpoints``."""

    def __init__(self, run_dir: str | Path) -> None:
        self.directory = Path(run_dir) / "checkpoints"
        self.manager = _manager(self.directory)

    def save(self, state: TrainState) -> None:
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
        self.manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(trees), meta=ocp.args.JsonSave(meta)
            ),
            force=True,
        )
        self.manager.wait_until_finished()

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def restore_into(self, state: TrainState, num_train: int) -> None:
        """Load the latest checkpoint into a fresh ``state`` of the same config.

        ``num_train`` (the run's training-set size) sizes the restored optimiser's schedule.
        """
        step = self.latest_step()
        if step is None:
            raise CheckpointError(f"no finished checkpoint in {self.directory}")
        meta = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
        if meta.get("format") != FORMAT_VERSION:
            raise CheckpointError(f"checkpoint format {meta.get('format')} is not supported")
        if meta["config"] != state.cfg.to_dict():
            raise CheckpointError("the checkpoint was written by a run with a different config")
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
        except (ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(
                f"checkpoint {self.directory}/{step} does not match: {exc}"
            ) from exc
        for key, module in modules.items():
            _fill(module, restored[key])
        phase = PHASES[min(phase_index, len(PHASES) - 1)]
        state.model.train() if (epoch > 0 and phase.train_cnn) else state.model.eval()


def save_model(
    directory: str | Path, isp: nnx.Module, model: nnx.Module, meta: dict[str, Any]
) -> Path:
    """Save a trained ISP and CNN (and what is needed to rebuild them) for eval/apply."""
    directory = Path(directory).absolute()
    layout = {
        "format": MODEL_FORMAT_VERSION,
        "task": meta.get("task", "classify"),
        "isp_stages": list(isp.stage_names),
        "num_classes": int(model.head.out_features),
        **meta,
    }
    trees = {"isp": _pure(isp), "model": _pure(model)}
    manager = _manager(directory, max_to_keep=1)
    manager.save(
        0,
        args=ocp.args.Composite(state=ocp.args.StandardSave(trees), meta=ocp.args.JsonSave(layout)),
        force=True,
    )
    manager.wait_until_finished()
    return directory


def load_model(directory: str | Path) -> tuple[nnx.Module, nnx.Module, dict[str, Any]]:
    """Rebuild the ISP and CNN saved by :func:`save_model`.

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
        raise CheckpointError(f"{directory} is not a diffisp checkpoint: {exc}") from exc
    if step is None:
        raise CheckpointError(f"{directory} holds no finished diffisp checkpoint")
    try:
        meta = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
        if "config" in meta:
            isp = build_isp(TrainConfig.from_dict(meta["config"]))
        else:
            isp = ISP(meta["isp_stages"])
        task = TASKS[meta.get("task", "classify")]
        model = task.build_model(int(meta["num_classes"]), rngs=nnx.Rngs(0))
    except (KeyError, TypeError, ValueError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{directory} has no valid diffisp model metadata: {exc}") from exc
    target = {"isp": _abstract(_pure(isp)), "model": _abstract(_pure(model))}
    try:
        trees = manager.restore(
            step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target))
        ).state
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(
            f"checkpoint {directory} does not match an ISP with stages {meta['isp_stages']}: {exc}"
        ) from exc
    _fill(isp, trees["isp"])
    _fill(model, trees["model"])
    model.eval()
    return isp, model, meta
