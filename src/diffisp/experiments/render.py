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

This module holds step 3's loop and the batch as a whole (:func:`apply_batch`, its options,
result and report). Steps 1 and 2 and the journal are in :mod:`~diffisp.experiments.render_plan`,
the compiled ISP in :mod:`~diffisp.experiments.render_compiled`, decoding and encoding files in
:mod:`~diffisp.experiments.render_files`; the public names of all three are importable from here.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from diffisp.errors import DiffispError, InputError
from diffisp.experiments.render_compiled import Renderer
from diffisp.experiments.render_files import BITS, FORMATS, _write, decode_raw, decode_srgb, encode
from diffisp.experiments.render_plan import (
    JOURNAL_NAME,
    RAW_EXTENSIONS,
    SRGB_EXTENSIONS,
    Job,
    Journal,
    _pending_entry,
    _stat,
    collect_inputs,
    isp_digest,
    plan_batch,
)

# Exit status of ``diffisp apply`` when some files failed (2: usage errors and failed writes).
EXIT_SOME_FAILED = 1
DEFAULT_WORKERS = 2


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
