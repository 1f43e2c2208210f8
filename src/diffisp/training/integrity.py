"""Checkpoint integrity: a SHA-256 manifest per finished step, verified before anything loads.

Orbax does not checksum array data (only the OCDBT shard index carries a crc32c), so one flipped
bit in a weight file would load silently. Every finished step therefore gets a manifest,
``diffisp-sha256.json``, listing the SHA-256 and size of each of its files; a step is loaded only
if every file matches, and a step without a manifest (an older diffisp, or a save killed between
orbax's rename and the manifest) is not trusted either. These functions take paths only.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from diffisp.errors import CheckpointError
from diffisp.util.io import atomic_write_json

MANIFEST_NAME = "diffisp-sha256.json"
_GIST_CHARS = 200  # orbax/TensorStore errors carry kilobytes of JSON specs


def gist(exc: BaseException) -> str:
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
        raise CheckpointError(f"checkpoint {step_dir}: unreadable manifest: {gist(exc)}") from exc
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
