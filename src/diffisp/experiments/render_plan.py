"""What a batch of ``diffisp apply`` will do, decided before any rendering: the input files,
their output names, and the resume journal in ``--out`` that says which outputs are done.

Steps 1 and 2 of the batch described in :mod:`diffisp.experiments.render`
(:func:`collect_inputs`, :func:`plan_batch`), the :class:`Journal` and its lines, and
:func:`isp_digest`, the renderer's identity that a journal line records.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import nnx

from diffisp.errors import InputError

RAW_EXTENSIONS = frozenset(
    {".dng", ".cr2", ".cr3", ".crw", ".nef", ".nrw", ".arw", ".srf", ".sr2", ".orf", ".rw2",
     ".raf", ".pef", ".srw", ".erf", ".kdc", ".dcr", ".mrw", ".3fr", ".iiq", ".rwl", ".raw"}
)  # fmt: skip
SRGB_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp"})
JOURNAL_NAME = ".diffisp-apply.jsonl"
JOURNAL_SCHEMA = "diffisp.apply/1"


# -- inputs ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Source:
    """One input file and the folder of its output, relative to ``--out``."""

    path: Path
    subdir: Path = Path()


def _hidden(relative: Path) -> bool:
    return any(part.startswith(".") for part in relative.parts)


def collect_inputs(
    paths: Sequence[Path], *, raw: bool, exclude: Path | None = None
) -> list[Source]:
    """The files to render, in order (see the module docstring).

    A path that is neither a file nor a folder is kept: it fails in its turn as "not found".
    Files a folder holds under ``exclude`` (``--out`` inside an input folder: earlier outputs)
    are left out.

    Raises:
      InputError: a folder holds no file with a known extension.
    """
    extensions = RAW_EXTENSIONS if raw else SRGB_EXTENSIONS
    sources: list[Source] = []
    for given in paths:
        given = Path(given)
        if not given.is_dir():
            sources.append(Source(given))
            continue
        skip = None if exclude is None else _resolved(exclude)
        found = sorted(
            p
            for p in given.rglob("*")
            if p.suffix.lower() in extensions
            and not _hidden(p.relative_to(given))
            and p.is_file()
            and not (skip is not None and _resolved(p).is_relative_to(skip))
        )
        if not found:
            kind = "RAW" if raw else "image"
            raise InputError(
                f"{given} is a folder with no {kind} files in it (searched recursively for "
                f"{', '.join(sorted(extensions))})"
            )
        sources.extend(Source(p, p.parent.relative_to(given)) for p in found)
    unique: dict[Path, Source] = {}
    for source in sources:
        unique.setdefault(_resolved(source.path), source)
    return list(unique.values())


def _resolved(path: Path) -> Path:
    try:
        return path.resolve()
    except OSError:  # a symlink loop: keep the name as given
        return path.absolute()


def _stat(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


# -- the renderer's identity -------------------------------------------------------------------


def isp_digest(isp: Any) -> str:
    """A short digest of what renders: the ISP's class, stages and every parameter's bytes
    (``"conventional"`` for no ISP). Two checkpoints with the same weights give the same one."""
    if isp is None:
        return "conventional"
    digest = hashlib.sha256(type(isp).__name__.encode())
    digest.update(repr(tuple(isp.stage_names)).encode())
    leaves = jax.tree_util.tree_flatten_with_path(nnx.to_pure_dict(nnx.state(isp)))[0]
    for path, leaf in leaves:
        value = np.asarray(leaf)
        digest.update(f"{jax.tree_util.keystr(path)}:{value.dtype}:{value.shape}".encode())
        digest.update(np.ascontiguousarray(value).tobytes())
    return digest.hexdigest()[:16]


# -- the journal -------------------------------------------------------------------------------


class Journal:
    """``OUT/.diffisp-apply.jsonl``: one JSON line per event, the last line per output wins.

    Lines are appended and fsynced as each output is started (``pending``) and written
    (``done``); a line cut short by a crash is ignored. :meth:`compact` rewrites the file
    atomically with one line per output.
    """

    def __init__(self, out_dir: Path) -> None:
        self.path = out_dir / JOURNAL_NAME
        self.entries: dict[str, dict[str, Any]] = {}
        try:
            text = self.path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            text = ""
        for line in text.splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue  # the last line of an interrupted append
            if isinstance(entry, dict) and isinstance(entry.get("output"), str):
                self.entries[entry["output"]] = entry

    def record(self, entry: dict[str, Any]) -> None:
        self.entries[entry["output"]] = entry
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(entry, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def compact(self) -> None:
        from diffisp.util.io import atomic_write_text

        if self.entries:
            lines = (json.dumps(e, sort_keys=True) for e in self.entries.values())
            try:
                atomic_write_text(self.path, "\n".join(lines) + "\n")
            except OSError as exc:
                exc.filename = exc.filename or str(self.path)
                raise


# -- planning ----------------------------------------------------------------------------------


@dataclasses.dataclass
class Job:
    """One input's output: ``action`` is ``"render"`` or ``"skip"`` (done earlier)."""

    source: Source
    target: Path
    name: str  # the target relative to --out, as the journal records it
    action: str
    previous: tuple[int, int] | None = None  # the file replaced (--overwrite), by size and time
    note: str = ""


def _source_record(path: Path) -> dict[str, Any]:
    stat = _stat(path)
    return {
        "source": str(_resolved(path)),
        "source_bytes": None if stat is None else stat[0],
        "source_mtime_ns": None if stat is None else stat[1],
    }


def _is_done(entry: dict[str, Any], target: Path) -> bool:
    """Whether ``target`` is the complete output the journal ``entry`` describes."""
    stat = _stat(target)
    if stat is None:
        return False
    if entry.get("state") == "done":
        return [entry.get("bytes"), entry.get("mtime_ns")] == list(stat)
    # Started but not recorded as written: an interrupted run renamed it into place (atomic, so
    # complete) unless what is there is still the file it was about to replace.
    previous = entry.get("previous")
    return entry.get("state") == "pending" and (previous is None or list(stat) != previous)


def plan_batch(
    sources: Sequence[Source],
    out_dir: Path,
    *,
    renderer: dict[str, Any],
    suffix: str,
    overwrite: bool = False,
    journal: Journal | None = None,
) -> list[Job]:
    """Every input's output and whether it is rendered or skipped (module docstring, step 2).

    Args:
      renderer: what renders (``{"isp": digest, "bits": 8}``); part of each journal line.
      suffix: the outputs' extension (``".png"``, ``".tif"``).

    Raises:
      InputError: an output would replace an input, or an output of the same input made by
        another renderer (or from an older version of it) exists and ``overwrite`` is off; the
        message names the output and the input.
    """
    journal = Journal(out_dir) if journal is None else journal
    inputs = {_resolved(s.path) for s in sources}
    recorded = {
        (e.get("source"), Path(name).suffix): name
        for name, e in journal.entries.items()
        if (out_dir / name).exists()
    }
    taken: set[str] = set()
    jobs, stale = [], []
    for source in sources:
        record = _source_record(source.path)
        name = None if overwrite else recorded.get((record["source"], suffix))
        stem = (source.subdir / f"{source.path.stem}_isp").as_posix()
        stem = stem[2:] if stem.startswith("./") else stem
        if name is None or name in taken:
            for n in range(len(sources) + len(journal.entries) + 1):
                name = f"{stem}{'' if n == 0 else f'-{n}'}{suffix}"
                entry = journal.entries.get(name, {})
                free = overwrite or not (out_dir / name).exists()
                if name not in taken and (free or entry.get("source") == record["source"]):
                    break
        target = out_dir / name
        taken.add(name)
        if _resolved(target) in inputs:
            raise InputError(
                f"the output {target} of {source.path} would overwrite an input image; choose "
                "another --out"
            )
        job = Job(source, target, name, "render")
        entry = journal.entries.get(name)
        exists = target.exists()
        if exists and entry is not None and entry.get("source") == record["source"]:
            same_input = all(entry.get(k) == v for k, v in record.items())
            same_renderer = entry.get("renderer") == renderer
            if same_input and same_renderer and _is_done(entry, target):
                job.action = "skip"
            elif not overwrite:
                if not same_renderer:
                    why = (
                        f"holds a render of {source.path} by another renderer "
                        f"({_describe(entry.get('renderer'))}; now {_describe(renderer)})"
                    )
                elif not same_input:
                    why = f"holds a render of an earlier version of {source.path} (changed since)"
                else:
                    why = f"was changed after it was rendered from {source.path}"
                stale.append(f"{target} {why}")
        if job.action == "render" and exists:
            job.previous = _stat(target)
        if name != f"{stem}{suffix}":
            job.note = f" ({stem}{suffix} is taken)"
        jobs.append(job)
    if stale:
        more = f" (and {len(stale) - 1} more)" if len(stale) > 1 else ""
        raise InputError(
            f"{stale[0]}{more}; --overwrite renders them again, or choose another --out"
        )
    return jobs


def _describe(renderer: Any) -> str:
    if not isinstance(renderer, dict):
        return "unknown"
    return f"isp {renderer.get('isp')}, {renderer.get('bits')}-bit"


def _pending_entry(job: Job, renderer_id: dict[str, Any]) -> dict[str, Any]:
    return {
        "schema": JOURNAL_SCHEMA,
        "output": job.name,
        **_source_record(job.source.path),
        "renderer": renderer_id,
        "state": "pending",
        "previous": None if job.previous is None else list(job.previous),
    }
