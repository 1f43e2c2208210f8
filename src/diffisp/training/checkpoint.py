"""Checkpoints (orbax): the training state after every epoch, and the final ISP + CNN.

Orbax writes each checkpoint into a temporary directory and renames it when complete, so an
interrupted write never leaves a half checkpoint that looks valid; ``latest`` only ever sees
finished ones. Array trees are stored by orbax; small metadata (position, history, config,
model layout) as JSON inside the same checkpoint.

Orbax does not checksum array data (only the OCDBT shard index carries a crc32c), so one flipped
bit in a weight file would load silently. Every finished step therefore gets a manifest,
``diffisp-sha256.json``, listing the SHA-256 and size of each of its files; a step is loaded only
if every file matches, and a step without a manifest (an older diffisp, or a save killed between
orbax's rename and the manifest) is not trusted either. Damaged training steps are moved to
``run_dir/checkpoints-damaged/`` so ``--resume`` continues from the newest intact one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp
from flax import nnx

from diffisp.errors import CheckpointError
from diffisp.isp.chain import ISP
from diffisp.models.classifier import SmallCNN
from diffisp.training.config import TrainConfig
from diffisp.training.loop import PHASES, EpochRecord, Trainer, build_isp
from diffisp.util.io import atomic_write_json

FORMAT_VERSION = 1
MANIFEST_NAME = "diffisp-sha256.json"
_GIST_CHARS = 200  # orbax/TensorStore errors carry kilobytes of JSON specs


def _gist(exc: BaseException) -> str:
    """The first line of an exception, capped: the reason without TensorStore's spec dumps."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    if len(text) > _GIST_CHARS:
        text = text[:_GIST_CHARS] + " ..."
    return f"{type(exc).__name__}: {text}"


# -- checksums: one manifest per finished step -------------------------------------------------


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _step_files(step_dir: Path) -> list[Path]:
    return sorted(p for p in step_dir.rglob("*") if p.is_file() and p.name != MANIFEST_NAME)


def write_manifest(step_dir: str | Path) -> Path:
    """Record the SHA-256 and size of every file of a finished checkpoint step.

    Call after orbax has finished writing ``step_dir`` (``wait_until_finished``). The manifest is
    itself written atomically; until it exists the step counts as unfinished.
    """
    step_dir = Path(step_dir)
    files = {
        p.relative_to(step_dir).as_posix(): {"sha256": _sha256(p), "bytes": p.stat().st_size}
        for p in _step_files(step_dir)
    }
    return atomic_write_json(step_dir / MANIFEST_NAME, {"format": 1, "files": files})


def verify_manifest(step_dir: str | Path) -> None:
    """Check every file of a checkpoint step against its manifest.

    Raises:
      CheckpointError: no manifest, an unreadable manifest, or a file missing, truncated,
        changed or added; the message names the step and the file.
    """
    step_dir = Path(step_dir)
    manifest = step_dir / MANIFEST_NAME
    if not manifest.is_file():
        raise CheckpointError(
            f"checkpoint {step_dir} has no checksum manifest ({MANIFEST_NAME}): its save did "
            "not finish, or an older diffisp wrote it"
        )
    try:
        files = json.loads(manifest.read_text())["files"]
        expected = {name: (entry["sha256"], int(entry["bytes"])) for name, entry in files.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"checkpoint {step_dir}: unreadable manifest: {_gist(exc)}") from exc
    present = {p.relative_to(step_dir).as_posix(): p for p in _step_files(step_dir)}
    for name in sorted(expected.keys() | present.keys()):
        if name not in present:
            raise CheckpointError(f"checkpoint {step_dir} is damaged: {name} is missing")
        if name not in expected:
            raise CheckpointError(f"checkpoint {step_dir} is damaged: unexpected file {name}")
        digest, size = expected[name]
        actual = present[name].stat().st_size
        if actual != size:
            raise CheckpointError(
                f"checkpoint {step_dir} is damaged: {name} has {actual} bytes, {size} were saved"
            )
        if _sha256(present[name]) != digest:
            raise CheckpointError(f"checkpoint {step_dir} is damaged: {name} fails its checksum")


def newest_intact_step(
    directory: str | Path, steps: Iterable[int]
) -> tuple[int | None, list[tuple[int, str]]]:
    """The newest of ``steps`` (orbax step dirs under ``directory``) that passes its manifest.

    Returns:
      ``(step or None, [(newer damaged step, reason), ...])``, the damaged ones newest first.
    """
    damaged = []
    for step in sorted(steps, reverse=True):
        try:
            verify_manifest(Path(directory) / str(step))
        except CheckpointError as exc:
            damaged.append((step, str(exc)))
            continue
        return step, damaged
    return None, damaged


def quarantine_steps(directory: str | Path, steps: Iterable[int], into: str | Path) -> list[Path]:
    """Move checkpoint steps out of orbax's sight (kept for inspection, never loaded again)."""
    into = Path(into)
    moved = []
    for step in steps:
        source = Path(directory) / str(step)
        if source.exists():
            into.mkdir(parents=True, exist_ok=True)
            target = into / f"{step}-{os.getpid()}"
            source.rename(target)
            moved.append(target)
    return moved


def _check_format(meta: Any, where: Path) -> None:
    version = meta.get("format") if isinstance(meta, dict) else None
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{where} is in checkpoint format {version!r}; this diffisp reads format "
            f"{FORMAT_VERSION} only"
        )


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


def _training_modules(trainer: Trainer) -> dict[str, Any]:
    isp_opt, cnn_opt = trainer.optimizers
    modules = {"isp": trainer.isp, "model": trainer.model, "isp_opt": isp_opt, "cnn_opt": cnn_opt}
    modules.update(trainer.snapshots)
    return {k: v for k, v in modules.items() if v is not None}


class TrainingCheckpoints:
    """The training state of one run, saved after every epoch under ``run_dir/checkpoints``."""

    def __init__(self, run_dir: str | Path) -> None:
        self.directory = Path(run_dir) / "checkpoints"
        self.damaged_directory = Path(run_dir) / "checkpoints-damaged"
        self.manager = _manager(self.directory)

    def step_dir(self, step: int) -> Path:
        return self.directory / str(step)

    def discard_damaged(self) -> list[tuple[int, str]]:
        """Move steps newer than the newest intact one to ``checkpoints-damaged/``.

        Call before :meth:`restore_into` (``--resume``) so training continues from the last
        intact epoch and later saves do not collide with the damaged steps.

        Returns:
          ``[(step, reason), ...]`` of the steps moved, newest first (empty if all are intact).
        """
        _, damaged = newest_intact_step(self.directory, self.manager.all_steps())
        if damaged:
            quarantine_steps(self.directory, [s for s, _ in damaged], self.damaged_directory)
            self.manager.close()
            self.manager = _manager(self.directory)
        return damaged

    def save(self, trainer: Trainer) -> None:
        modules = _training_modules(trainer)
        meta = {
            "format": FORMAT_VERSION,
            "position": list(trainer.position),
            "history": [dataclasses.asdict(r) for r in trainer.history],
            "config": trainer.cfg.to_dict(),
            "modules": sorted(modules),
        }
        trees = {k: _pure(m) for k, m in modules.items()}
        step = len(trainer.history)
        self.manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(trees), meta=ocp.args.JsonSave(meta)
            ),
            force=True,
        )
        self.manager.wait_until_finished()
        write_manifest(self.step_dir(step))

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def restore_into(self, trainer: Trainer) -> None:
        """Load the latest checkpoint into a freshly built ``trainer`` (same config and data)."""
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
                f"checkpoint {self.step_dir(step)}: unreadable metadata: {_gist(exc)}"
            ) from exc
        _check_format(meta, self.step_dir(step))
        if meta["config"] != trainer.cfg.to_dict():
            raise CheckpointError("the checkpoint was written by a run with a different config")
        trainer.position = tuple(meta["position"])
        trainer.history = [EpochRecord(**r) for r in meta["history"]]
        phase_index, epoch = trainer.position
        if phase_index < len(PHASES) and epoch > 0:
            trainer.optimizers = trainer.new_optimizers(PHASES[phase_index])
        if "cnn_clean" in meta["modules"]:
            trainer.snapshots["cnn_clean"] = SmallCNN(trainer.data.num_classes, rngs=nnx.Rngs(0))
        if "isp_phase1" in meta["modules"]:
            trainer.snapshots["isp_phase1"] = build_isp(trainer.cfg)
        modules = _training_modules(trainer)
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
                f"checkpoint {self.step_dir(step)} does not match: {_gist(exc)}"
            ) from exc
        for key, module in modules.items():
            _fill(module, restored[key])
        phase = PHASES[min(phase_index, len(PHASES) - 1)]
        trainer.model.train() if (epoch > 0 and phase.train_cnn) else trainer.model.eval()


def save_model(
    directory: str | Path, isp: nnx.Module, model: SmallCNN, meta: dict[str, Any]
) -> Path:
    """Save a trained ISP and CNN (and what is needed to rebuild them) for eval/apply.

    The model is written beside ``directory`` under a temporary name, checksummed, then renamed
    into place, replacing an earlier save: an interrupted save never leaves a half model, and
    saving again (a resumed run whose final stage was interrupted) simply overwrites.
    """
    directory = Path(directory).absolute()
    layout = {
        "format": FORMAT_VERSION,
        "isp_stages": list(isp.stage_names),
        "num_classes": int(model.head.out_features),
        **meta,
    }
    trees = {"isp": _pure(isp), "model": _pure(model)}
    staging = directory.with_name(f".{directory.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    manager = _manager(staging, max_to_keep=1)
    manager.save(
        0,
        args=ocp.args.Composite(state=ocp.args.StandardSave(trees), meta=ocp.args.JsonSave(layout)),
        force=True,
    )
    manager.wait_until_finished()
    manager.close()
    write_manifest(staging / "0")
    replace_directory(staging, directory)
    return directory


def replace_directory(source: Path, target: Path) -> None:
    """Rename ``source`` to ``target``, replacing an existing ``target`` directory.

    Two renames (the old one aside, the new one in) with the old one deleted last: a crash in
    between leaves ``target`` missing but both copies on disk, never a mixture of the two.
    """
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        shutil.rmtree(old, ignore_errors=True)
        target.rename(old)
        source.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        source.rename(target)


def load_model(directory: str | Path) -> tuple[nnx.Module, SmallCNN, dict[str, Any]]:
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
        raise CheckpointError(f"{directory} is not a diffisp checkpoint: {_gist(exc)}") from exc
    if step is None:
        raise CheckpointError(f"{directory} holds no finished diffisp checkpoint")
    verify_manifest(directory / str(step))
    try:
        meta = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
    except Exception as exc:  # orbax raises assorted types on unreadable metadata
        raise CheckpointError(f"{directory}: unreadable model metadata: {_gist(exc)}") from exc
    _check_format(meta, directory)
    try:
        if "config" in meta:
            isp = build_isp(TrainConfig.from_dict(meta["config"]))
        else:
            isp = ISP(meta["isp_stages"])
        model = SmallCNN(int(meta["num_classes"]), rngs=nnx.Rngs(0))
    except (KeyError, TypeError, ValueError, json.JSONDecodeError) as exc:
        raise CheckpointError(
            f"{directory} has no valid diffisp model metadata: {_gist(exc)}"
        ) from exc
    target = {"isp": _abstract(_pure(isp)), "model": _abstract(_pure(model))}
    try:
        trees = manager.restore(
            step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target))
        ).state
    except Exception as exc:  # layout mismatch or unreadable arrays (TensorStore errors)
        raise CheckpointError(
            f"checkpoint {directory} does not match an ISP with stages "
            f"{meta.get('isp_stages')}: {_gist(exc)}"
        ) from exc
    _fill(isp, trees["isp"])
    _fill(model, trees["model"])
    model.eval()
    return isp, model, meta
