"""``diffisp apply`` as a batch renderer: folders of sRGB or RAW files through a trained ISP (or
the conventional RAW pipeline) to 8/16-bit PNG or TIFF, resumably, without one bad file stopping
the rest.

What a batch does, in order:

1. :func:`collect_inputs`: files and folders, in the order given; a folder is searched
   *recursively* for files with a known extension (:data:`RAW_EXTENSIONS` or
   :data:`SRGB_EXTENSIONS`, any case; hidden files and folders skipped), sorted by path. A file
   named explicitly is taken whatever its name (the content decides). The same file twice is
   rendered once.
2. :func:`plan_batch`: every output name is decided before any work. A file found in a folder
   keeps its sub-folder under ``--out`` (``shots/day1/a.dng`` -> ``OUT/day1/a_isp.png``); a file
   named explicitly goes to ``OUT/<stem>_isp.<ext>``; a name already taken (in this call, by a
   file already in ``OUT``, or by another input's earlier render) gets ``-1``, ``-2``, ...
   ``OUT`` holds a journal, :data:`JOURNAL_NAME`, with one line per output: the input it was
   rendered from (resolved path, size, modification time), the renderer (a digest of the ISP's
   parameters, or ``conventional``, and the bit depth) and the output's own size and time. An
   output whose journal line matches what this call would render is *done* and skipped (outputs
   are written atomically, so one that exists is complete). One rendered from the same input
   by another ISP, with other settings or from an input that has changed since, is refused
   before anything is rendered, naming it, unless ``--overwrite`` (which re-renders everything
   to the names this call picks, replacing what is there). A file in ``OUT`` that the journal
   does not know is never replaced without ``--overwrite``: the new output takes the next name.
3. :func:`run_batch`: worker threads decode the next files (and encode/write the finished
   ones) while the ISP renders the current one; at most ``workers + 1`` decoded files are in
   memory at a time. The ISP is compiled once per image size (:class:`Renderer`; ``traces``
   counts the compilations). A file that fails (not found, corrupt, truncated, not RAW, too
   large) is recorded with its reason and the batch goes on; the list is returned at the end
   (``fail_fast`` stops at the first). A failed *write* (full or read-only disk) stops the batch
   with an ``OSError`` naming the output: every later file would fail the same way.

Orientation: sRGB inputs are decoded upright (their EXIF orientation applied) and their EXIF is
copied to the output with the orientation reset to 1 (PNG ``eXIf`` chunk; 8-bit TIFF); 16-bit
TIFFs get no EXIF. RAW inputs are turned the way LibRaw's ``flip`` says and carry no EXIF (rawpy
does not expose it); the pixels are orientation-neutral either way.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import hashlib
import io
import json
import os
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from diffisp.errors import DiffispError, InputError

RAW_EXTENSIONS = frozenset(
    {".dng", ".cr2", ".cr3", ".crw", ".nef", ".nrw", ".arw", ".srf", ".sr2", ".orf", ".rw2",
     ".raf", ".pef", ".srw", ".erf", ".kdc", ".dcr", ".mrw", ".3fr", ".iiq", ".rwl", ".raw"}
)  # fmt: skip
SRGB_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp"})
FORMATS = {"png": ".png", "tiff": ".tif"}
BITS = (8, 16)
JOURNAL_NAME = ".diffisp-apply.jsonl"
JOURNAL_SCHEMA = "diffisp.apply/1"
# Exit status of ``diffisp apply`` when some files failed (2: usage errors and failed writes).
EXIT_SOME_FAILED = 1
DEFAULT_WORKERS = 2
# zlib level for PNGs: 1 is 3-4x faster than the usual 6 on photographs for files ~10 % larger.
PNG_LEVEL = 1
_EXIF_ORIENTATION = 0x0112


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


# -- rendering ---------------------------------------------------------------------------------


class CompiledRunner:
    """:class:`~diffisp.experiments.apply.ChainRunner` with each piece compiled once.

    ``jax.jit`` caches one compilation per input shape, so a tile shape (and with it an image
    size) is compiled once for the whole batch; ``traces`` counts the compilations by name.
    """

    def __init__(self, traces: collections.Counter) -> None:
        self.traces = traces
        self._decide: dict[int, Callable] = {}
        self._chains: dict[tuple, Callable] = {}

    def decide(self, isp: Any, batch: np.ndarray) -> tuple[list[str], list[dict], jax.Array]:
        names = list(isp.stage_names)
        key = id(isp)
        if key not in self._decide:
            graphdef, state = nnx.split(isp)

            def decide(state, images):
                self.traces["decisions"] += 1  # runs only while tracing
                decisions = nnx.merge(graphdef, state).decisions(images)
                values = [decisions["values"][name] for name in names]
                return values, decisions["active"].astype(bool)

            jitted = jax.jit(decide)
            self._decide[key] = lambda images: jitted(state, images)
        values, gates = self._decide[key](batch)
        return names, values, gates

    def chain(self, names: tuple[str, ...], *, clip: bool) -> Callable[..., jax.Array]:
        from diffisp.isp.chain import run_chain

        key = (names, clip)
        if key not in self._chains:

            def chain(images, values, gates):
                self.traces["chain"] += 1
                return run_chain(images, names, values, gates=gates, clip=clip)

            self._chains[key] = jax.jit(chain)
        return self._chains[key]


def _to_samples(x: jax.Array, bits: int) -> jax.Array:
    scaled = jnp.round(jnp.clip(x, 0, 1) * (2**bits - 1))
    return scaled.astype(jnp.uint8 if bits == 8 else jnp.uint16)


class Renderer:
    """Renders decoded inputs with one ISP, each piece compiled once per shape.

    Args:
      isp: an sRGB ISP, a :class:`~diffisp.isp.raw.RawISP` or ``None`` (the conventional RAW
        pipeline).
      raw: whether inputs are RAW captures (else ``(H, W, 3)`` sRGB images).
      tile: tile side for the chain ISP.
    """

    def __init__(self, isp: Any, *, raw: bool, tile: int) -> None:
        from diffisp.isp.raw import RawISP, conventional_linear, display_encode

        if isp is None and not raw:
            raise InputError("an sRGB batch needs an ISP (a checkpoint)")
        self.isp, self.raw, self.tile = isp, raw, tile
        self.traces: collections.Counter = collections.Counter()
        self._compiled: dict[tuple[str, int | None], Callable] = {}
        self.runner = CompiledRunner(self.traces)
        self.back = isp.back if isinstance(isp, RawISP) else isp
        if raw and isinstance(isp, RawISP):
            graphdef, self._state = nnx.split(isp.front)
            self._front_fn = lambda state, capture: nnx.merge(graphdef, state)(capture)
        else:
            self._state = None
            # No tone curve: real files are rendered as LibRaw renders them.
            self._front_fn = lambda state, capture: display_encode(
                conventional_linear(capture), tone=False
            )

    def _get(self, name: str, bits: int | None, fn: Callable) -> Callable:
        """``fn`` compiled, with the cast to ``bits``-bit samples fused in (None: float)."""
        key = (name, bits)
        if key not in self._compiled:

            def traced(*args):
                self.traces[name] += 1  # runs only while tracing
                out = fn(*args)
                return out if bits is None else _to_samples(out, bits)

            self._compiled[key] = jax.jit(traced)
        return self._compiled[key]

    def quantize(self, image: np.ndarray, bits: int) -> np.ndarray:
        """``image`` in [0, 1] as ``uint8``/``uint16`` samples (compiled: numpy's round and cast
        of a 12 MP image take as long as the whole conventional pipeline)."""
        return np.asarray(self._get("quantize", bits, lambda x: x)(image))

    def __call__(self, decoded: Any, bits: int | None = None) -> np.ndarray:
        """``(H, W, 3)`` float32 in [0, 1] for a capture (RAW) or an image (sRGB); with
        ``bits``, its ``uint8``/``uint16`` samples."""
        from diffisp.experiments.apply import run_isp_tiled

        if self.raw:
            fused = bits if self.back is None else None  # nothing follows: cast in the front
            rgb = np.asarray(self._get("front", fused, self._front_fn)(self._state, decoded))[0]
            if self.back is None:
                return rgb
        else:
            rgb = decoded
        out = run_isp_tiled(self.back, rgb, tile=self.tile, runner=self.runner)
        return out if bits is None else self.quantize(out, bits)


@dataclasses.dataclass
class Decoded:
    """A decoded input: what the renderer takes, and what the output needs besides pixels."""

    data: Any
    flip: int = 0
    exif: bytes | None = None
    warnings: tuple[str, ...] = ()


def decode_raw(path: Path, max_pixels: int | None) -> Decoded:
    from diffisp.data.raw_file import read_raw

    capture, info = read_raw(path, max_pixels=max_pixels)
    return Decoded(capture, flip=info.flip, warnings=info.warnings)


def decode_srgb(path: Path, max_pixels: int | None) -> Decoded:
    from diffisp.data import load_image
    from diffisp.experiments.apply import check_pixel_count

    if max_pixels is not None:
        check_pixel_count(path, max_pixels)
    return Decoded(load_image(path), exif=upright_exif(path))


def upright_exif(path: Path) -> bytes | None:
    """The file's EXIF as TIFF bytes (no ``Exif\\0\\0`` prefix), orientation set to 1 (the
    decoded pixels are already upright); ``None`` if it has none."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            exif = image.getexif()
    except Exception:  # the decode reports unreadable files; EXIF is only carried along
        return None
    if not exif:
        return None
    if _EXIF_ORIENTATION in exif:
        exif[_EXIF_ORIENTATION] = 1
    data = exif.tobytes()
    return data[6:] if data.startswith(b"Exif\x00\x00") else data


def _samples(image: np.ndarray, bits: int) -> np.ndarray:
    """Integer samples: ``image`` as it is if already ``uint8``/``uint16``, else scaled from
    [0, 1] and rounded."""
    image = np.asarray(image)
    if image.dtype == (np.uint8 if bits == 8 else np.uint16):
        return image
    dtype = np.uint8 if bits == 8 else np.uint16
    return np.round(np.clip(image, 0, 1) * (2**bits - 1)).astype(dtype)


def encode(image: np.ndarray, fmt: str = "png", bits: int = 8, exif: bytes | None = None) -> bytes:
    """An ``(H, W, 3)`` image in [0, 1] (or its integer samples, :meth:`Renderer.quantize`) as
    PNG or TIFF bytes, 8 or 16 bits per sample."""
    from diffisp.experiments.apply_raw import png_bytes

    if bits not in BITS:
        raise InputError(f"bits must be 8 or 16; got {bits}")
    if fmt == "png":
        return png_bytes(image, bits, exif=exif, level=PNG_LEVEL)
    if fmt != "tiff":
        raise InputError(f"unknown output format {fmt!r}; choose from {', '.join(FORMATS)}")
    scaled = _samples(image, bits)
    buffer = io.BytesIO()
    if bits == 8:
        from PIL import Image

        extra = {} if exif is None else {"exif": b"Exif\x00\x00" + exif}
        Image.fromarray(scaled).save(buffer, format="TIFF", **extra)
    else:
        import tifffile

        tifffile.imwrite(buffer, scaled, photometric="rgb", metadata=None)
    return buffer.getvalue()


# -- the batch ---------------------------------------------------------------------------------


@dataclasses.dataclass
class BatchResult:
    """What a batch did: outputs written, skipped (done earlier), failed (with the reason)."""

    written: dict[Path, Path] = dataclasses.field(default_factory=dict)
    skipped: dict[Path, Path] = dataclasses.field(default_factory=dict)
    failed: dict[Path, str] = dataclasses.field(default_factory=dict)
    not_processed: list[Path] = dataclasses.field(default_factory=list)
    seconds: float = 0.0


def _reason(exc: BaseException) -> str:
    from diffisp.util.io import describe_os_error

    if isinstance(exc, OSError) and not isinstance(exc, DiffispError):
        return describe_os_error(exc)
    return " ".join(str(exc).split()) or type(exc).__name__


def _write(job: Job, image: np.ndarray, fmt: str, bits: int, exif: bytes | None) -> None:
    from diffisp.util import io as io_util

    data = encode(image, fmt, bits, exif)
    try:
        io_util.atomic_write_bytes(job.target, data)
    except OSError as exc:
        if exc.filename is None:  # a full disk fails in write() or fsync(), without a name
            exc.filename = str(job.target)
        raise


def run_batch(
    jobs: Sequence[Job],
    renderer: Renderer,
    *,
    journal: Journal,
    renderer_id: dict[str, Any],
    fmt: str = "png",
    bits: int = 8,
    max_pixels: int | None = None,
    workers: int = DEFAULT_WORKERS,
    fail_fast: bool = False,
    log: Callable[[str], None] = print,
    warn: Callable[[str], None] = print,
    progress: Any = None,
) -> BatchResult:
    """Render ``jobs`` (module docstring, step 3).

    Args:
      progress: called with no argument after each job (a progress bar's advance), or None.

    Returns:
      A :class:`BatchResult`. Per-file failures are in ``failed``; the batch raises only for a
      failed write (``OSError`` naming the output) or Ctrl-C.
    """
    from diffisp.data.raw_file import RawMetadataWarning

    result, started = BatchResult(), time.perf_counter()
    todo = []
    for job in jobs:
        if job.action == "skip":
            result.skipped[job.source.path] = job.target
            log(f"{job.source.path} -> {job.target} (done earlier, skipped)")
            if progress is not None:
                progress()
        else:
            todo.append(job)
    decode = decode_raw if renderer.raw else decode_srgb
    workers = max(int(workers), 1)
    decoder = ThreadPoolExecutor(workers, thread_name_prefix="diffisp-decode")
    writer = ThreadPoolExecutor(1, thread_name_prefix="diffisp-write")
    decodes: collections.deque[tuple[Job, Future]] = collections.deque()
    writes: collections.deque[tuple[Job, Future, tuple[int, int]]] = collections.deque()
    queue = iter(todo)

    def refill() -> None:
        while len(decodes) < workers + 1:  # bounded: a few decoded files in memory at most
            job = next(queue, None)
            if job is None:
                return
            decodes.append((job, decoder.submit(decode, job.source.path, max_pixels)))

    def finish_write(block: bool) -> None:
        while writes and (block or writes[0][1].done()):
            job, future, shape = writes.popleft()
            future.result()  # a failed write raises here and stops the batch
            stat = _stat(job.target)
            journal.record(
                {**_pending_entry(job, renderer_id), "state": "done",
                 "bytes": stat[0], "mtime_ns": stat[1]}
            )  # fmt: skip
            result.written[job.source.path] = job.target
            log(f"{job.source.path} -> {job.target}{job.note} ({shape[1]}x{shape[0]}, {bits}-bit)")
            if progress is not None:
                progress()

    stop = False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RawMetadataWarning)  # reported through warn
            refill()
            while decodes and not stop:
                job, future = decodes.popleft()
                try:
                    decoded = future.result()
                    for message in decoded.warnings:
                        warn(message)
                    image = renderer(decoded.data, bits)
                    if decoded.flip:
                        from diffisp.data.raw_file import orient

                        image = np.ascontiguousarray(orient(image, decoded.flip))
                except (DiffispError, OSError, MemoryError) as exc:
                    finish_write(block=True)  # report in input order
                    result.failed[job.source.path] = _reason(exc)
                    log(f"{job.source.path}: FAILED: {result.failed[job.source.path]}")
                    if progress is not None:
                        progress()
                    stop = fail_fast
                    refill()
                    continue
                refill()
                journal.record(_pending_entry(job, renderer_id))
                finish_write(block=len(writes) >= 1)  # one write in flight at a time
                writes.append(
                    (job, writer.submit(_write, job, image, fmt, bits, decoded.exif), image.shape)
                )
                del image, decoded
            finish_write(block=True)
    finally:
        decoder.shutdown(wait=False, cancel_futures=True)
        writer.shutdown(wait=True)
    done = set(result.written) | set(result.failed)
    result.not_processed = [j.source.path for j in todo if j.source.path not in done]
    result.seconds = time.perf_counter() - started
    return result


def _pending_entry(job: Job, renderer_id: dict[str, Any]) -> dict[str, Any]:
    return {
        "schema": JOURNAL_SCHEMA,
        "output": job.name,
        **_source_record(job.source.path),
        "renderer": renderer_id,
        "state": "pending",
        "previous": None if job.previous is None else list(job.previous),
    }


@dataclasses.dataclass
class BatchOptions:
    """What ``diffisp apply`` was asked for (the CLI's options)."""

    raw: bool
    fmt: str = "png"
    bits: int = 8
    tile: int = 1024
    max_pixels: int | None = 64_000_000
    workers: int = DEFAULT_WORKERS
    overwrite: bool = False
    fail_fast: bool = False
    progress: bool = True


def apply_batch(
    paths: Sequence[Path],
    out_dir: Path,
    isp: Any,
    options: BatchOptions,
    *,
    log: Callable[[str], None] = print,
    warn: Callable[[str], None] = print,
    renderer: Renderer | None = None,
) -> BatchResult:
    """Collect, plan and render a batch into ``out_dir`` (the whole of ``diffisp apply``).

    Raises:
      InputError: as :func:`collect_inputs` and :func:`plan_batch` (before any output).
      OSError: a failed write (the batch stops; the message names the output).
    """
    from diffisp.util.io import DirectoryLock

    if options.bits not in BITS:
        raise InputError(f"--bits must be 8 or 16; got {options.bits}")
    if options.fmt not in FORMATS:
        raise InputError(f"unknown --format {options.fmt!r}; choose from {', '.join(FORMATS)}")
    sources = collect_inputs(paths, raw=options.raw, exclude=out_dir)
    renderer = renderer or Renderer(isp, raw=options.raw, tile=options.tile)
    renderer_id = {"isp": isp_digest(isp), "bits": options.bits}
    with DirectoryLock(out_dir):  # two applies into one --out would race on names
        journal = Journal(out_dir)
        jobs = plan_batch(
            sources,
            out_dir,
            renderer=renderer_id,
            suffix=FORMATS[options.fmt],
            overwrite=options.overwrite,
            journal=journal,
        )
        with _ProgressBar(len(jobs), enabled=options.progress, log=log) as (advance, say):
            try:
                result = run_batch(
                    jobs,
                    renderer,
                    journal=journal,
                    renderer_id=renderer_id,
                    fmt=options.fmt,
                    bits=options.bits,
                    max_pixels=options.max_pixels,
                    workers=options.workers,
                    fail_fast=options.fail_fast,
                    log=say,
                    warn=warn,
                    progress=advance,
                )
            except BaseException:
                with contextlib.suppress(OSError):  # the error in flight is the one to report
                    journal.compact()
                raise
        journal.compact()
        return result


class _ProgressBar:
    """A rich progress bar on stderr while it is a terminal (log lines print above it)."""

    def __init__(self, total: int, *, enabled: bool, log: Callable[[str], None]) -> None:
        self.total, self.log = total, log
        self.enabled = enabled and sys.stderr.isatty() and total > 0
        self.bar: Any = None

    def __enter__(self) -> tuple[Callable[[], None] | None, Callable[[str], None]]:
        if not self.enabled:
            return None, self.log
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        self.bar = Progress(
            TextColumn("rendering"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self.bar.start()
        task = self.bar.add_task("apply", total=self.total)
        lock = threading.Lock()

        def say(line: str) -> None:
            with lock:
                self.bar.console.print(line, markup=False, highlight=False)

        return (lambda: self.bar.advance(task)), say

    def __exit__(self, *exc: Any) -> None:
        if self.bar is not None:
            self.bar.stop()


def failure_report(result: BatchResult) -> Iterator[str]:
    """The lines ``diffisp apply`` prints at the end of a batch with failures."""
    yield f"{len(result.failed)} of {_total(result)} files failed:"
    for path, reason in result.failed.items():
        yield f"  {path}: {reason}"
    if result.not_processed:
        yield f"  not processed (--fail-fast): {len(result.not_processed)} files"


def _total(result: BatchResult) -> int:
    return (
        len(result.written) + len(result.skipped) + len(result.failed) + len(result.not_processed)
    )


def summary(result: BatchResult) -> str:
    """One line: how many files were written, skipped and failed, and how fast."""
    rate = len(result.written) / result.seconds if result.seconds > 0 else 0.0
    return (
        f"{len(result.written)} written, {len(result.skipped)} skipped (done earlier), "
        f"{len(result.failed)} failed, in {result.seconds:.1f} s ({rate:.2f} files/s)"
    )


__all__ = [
    "BITS",
    "EXIT_SOME_FAILED",
    "FORMATS",
    "JOURNAL_NAME",
    "RAW_EXTENSIONS",
    "SRGB_EXTENSIONS",
    "BatchOptions",
    "BatchResult",
    "Renderer",
    "apply_batch",
    "collect_inputs",
    "encode",
    "isp_digest",
    "plan_batch",
    "run_batch",
]
