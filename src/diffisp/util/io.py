"""Atomic file writes (a reader or a crash never sees a half-written file), output-path checks
and the run-directory lock."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to a temporary file beside ``path``, fsync it, then rename over ``path``."""
    path = Path(path)
    _refuse_special(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise _naming(exc, path) from None
    try:
        # mkstemp creates 0600 files; results are meant to be shared like any other file.
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise _naming(exc, path) from None
        raise
    return path


def _refuse_special(path: Path) -> None:
    """Refuse to replace a device, FIFO or socket (``--out /dev/null`` as root would swap the
    device for a regular file: the rename replaces whatever the name points at)."""
    import stat

    from diffisp.errors import InputError

    try:
        mode = path.stat().st_mode
    except OSError:
        return  # absent (or unreadable: the write reports it)
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise InputError(f"refusing to replace {path}: it exists and is not a regular file")


def _naming(exc: OSError, path: Path) -> OSError:
    """``exc`` with ``path`` as its file name if it names none (a failed ``write`` or
    ``fsync`` of a full disk says only "No space left on device")."""
    if exc.filename is not None or exc.errno is None:
        return exc
    return OSError(exc.errno, exc.strerror or os.strerror(exc.errno), str(path))


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as JSON; NaN and infinite floats become ``null`` (JSON has no NaN: a
    metric with nothing to measure, e.g. AP of medium objects when there are none)."""
    text = json.dumps(json_safe(obj), indent=2, sort_keys=False, allow_nan=False)
    return atomic_write_text(path, text + "\n")


def json_safe(obj: Any) -> Any:
    """``obj`` with every non-finite float (NaN, +-inf) replaced by ``None``, recursively
    through dicts, lists and tuples (tuples become lists, as JSON writes them)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def atomic_savefig(fig: Any, path: str | Path, **kwargs: Any) -> Path:
    """``fig.savefig`` through a temporary file (PNG by default)."""
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format=kwargs.pop("format", "png"), **kwargs)
    return atomic_write_bytes(path, buffer.getvalue())


# -- output paths: checked before any work, so a bad --out fails in a second, not after an hour --

# The longest file name most file systems accept (bytes, per path component).
_NAME_MAX = 255


def _first_existing(path: Path) -> Path:
    """``path`` itself if it exists, else its nearest existing ancestor."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path(".")


def _check_name(path: str | Path, what: str) -> Path:
    """Refuse names no file system accepts (before any system call sees them)."""
    from diffisp.errors import InputError

    text = str(os.fspath(path))
    if not text.strip():
        raise InputError(f"the {what} path is empty")
    if "\0" in text:
        raise InputError(f"the {what} path {text!r} contains a NUL byte")
    for part in Path(text).parts:
        if len(os.fsencode(part)) > _NAME_MAX:
            raise InputError(f"the {what} path has a name longer than {_NAME_MAX} bytes: {part}")
    return Path(text)


def check_output_file(path: str | Path, default_name: str, *, what: str = "output") -> Path:
    """The file to write for ``--out path``: ``path/default_name`` if ``path`` is a directory.

    Raises:
      InputError: as :func:`check_output_path`.
    """
    path = _check_name(path, what)
    if path.is_dir():
        path = path / default_name
    return check_output_path(path, directory=False, what=what)


def check_output_path(path: str | Path, *, directory: bool, what: str = "output") -> Path:
    """Refuse an output path that cannot be written, before anything is computed.

    Args:
      path: the file or directory a command is about to write (it need not exist yet; the
        directories above it are created later).
      directory: True if ``path`` names a directory (``train --out``), False for a file.
      what: what the path is for, used in the message (``"run directory"``, ``"report"``).

    Returns:
      ``path`` as a :class:`Path`.

    Raises:
      InputError: an empty name, a NUL byte, a name longer than 255 bytes, a path under an
        existing file, a file where a directory is wanted (or the reverse), an existing device,
        FIFO or socket where a file is wanted (the write would replace it), or a location that
        is read-only / not writable. The message names the path. Failures only the write can
        reveal (a full disk) still raise ``OSError``, which the CLI reports in one line.
    """
    from diffisp.errors import InputError

    path = _check_name(path, what)
    existing = _first_existing(path)
    if existing == path:
        if directory and not path.is_dir():
            raise InputError(f"the {what} {path} exists and is not a directory")
        if not directory and path.is_dir():
            raise InputError(f"the {what} {path} is a directory, not a file")
        if not directory:
            _refuse_special(path)
        parent = path if directory else path.parent
    else:
        if not existing.is_dir():
            raise InputError(f"cannot create the {what} {path}: {existing} is a file")
        parent = existing
    # Creating a file is the only honest test: permission bits say nothing to root, and
    # read-only mounts, /proc and /sys refuse writes that os.access allows.
    try:
        with tempfile.TemporaryFile(dir=parent, prefix=".diffisp-probe-"):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise InputError(f"cannot write the {what} {path}: {parent}: {reason}") from None
    return path


def describe_os_error(exc: OSError) -> str:
    """One line for an ``OSError``: what failed and the path, without a traceback."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    paths = [p for p in (exc.filename, exc.filename2) if p is not None]
    where = " -> ".join(os.fsdecode(p) if isinstance(p, bytes) else str(p) for p in paths)
    return f"{reason}: {where}" if where else reason


# -- the run-directory lock ---------------------------------------------------------------------

LOCK_NAME = ".diffisp.lock"


class DirectoryLock:
    """An exclusive ``fcntl.flock`` on ``directory/.diffisp.lock``, held while a run writes there.

    The kernel drops a flock when its process dies (even by SIGKILL), so a stale lock file never
    blocks a later run; the pid written inside only names the holder in the error message.

    Raises (on ``__enter__``):
      InputError: another live process holds the lock; the message names the directory and
        that process' pid.
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.path = self.directory / LOCK_NAME
        self._fd: int | None = None

    def __enter__(self) -> DirectoryLock:
        import fcntl

        from diffisp.errors import InputError

        self.directory.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
                os.close(fd)
                raise InputError(
                    f"{self.directory} is in use by another diffisp run (pid {holder}); wait "
                    "for it to finish or choose another --out"
                ) from None
            # The holder unlinks the file as it lets go; a lock on that unlinked file is void.
            try:
                if os.stat(self.path).st_ino == os.fstat(fd).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError as exc:  # a full disk: name the lock file
            os.close(fd)
            self.path.unlink(missing_ok=True)
            raise _naming(exc, self.path) from None
        self._fd = fd
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._fd is not None:
            # Unlink while still holding the lock (see the inode check in __enter__).
            self.path.unlink(missing_ok=True)
            os.close(self._fd)
            self._fd = None
