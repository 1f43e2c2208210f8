"""Fetching and unpacking the CIFAR-10 tarball, all-or-nothing.

Both steps work in temporary names inside the destination directory and publish the result
with one ``os.replace``, so an interrupted or failed run leaves either the finished
``cifar-10-batches-py`` directory or nothing at all, never a half-written file that a later run
would mistake for data.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from diffisp.errors import DataError

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
BATCHES_DIR = "cifar-10-batches-py"
TARBALL_NAME = "cifar-10-python.tar.gz"
EXPECTED_FILES = (
    *(f"data_batch_{i}" for i in range(1, 6)),
    "test_batch",
    "batches.meta",
)
# MD5 of every file of the official tarball's cifar-10-batches-py/ (the same values
# torchvision checks). An extracted directory is verified against them on every load, so a
# directory that merely has the right names and format is never reported as real CIFAR-10.
CIFAR10_FILE_MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
    "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
}
CACHE_ENV = "DIFFISP_CACHE"

_CHUNK = 1 << 20


def default_cache_dir() -> Path:
    """``$DIFFISP_CACHE`` if set, else ``~/.cache/diffisp``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "diffisp"


def download_cifar10(
    cache_dir: str | Path | None = None,
    *,
    url: str = CIFAR10_URL,
    md5: str = CIFAR10_MD5,
    progress: bool | None = None,
) -> Path:
    """Download, verify and extract CIFAR-10 into ``cache_dir/cifar-10-batches-py``.

    Does nothing when that directory already exists. The tarball is streamed to a temporary
    file in ``cache_dir``, its MD5 checked, unpacked into a temporary directory there and moved
    into place atomically; the tarball is deleted afterwards.

    Args:
      cache_dir: where to put the data; default :func:`default_cache_dir`.
      url: any URL ``urllib`` opens, including ``file://`` (used by the tests).
      md5: expected hex MD5 of the tarball.
      progress: show a progress bar; default: only when stderr is a terminal.

    Returns:
      The ``cifar-10-batches-py`` directory.

    Raises:
      DataError: network failure, truncated download, checksum mismatch, corrupt or unsafe
        tarball, or an unwritable ``cache_dir``. Nothing partial is left behind.
    """
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = cache_dir / BATCHES_DIR
    if target.is_dir():
        return target
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=cache_dir, prefix=".cifar-10-", suffix=".tar.gz.part")
    except OSError as exc:
        raise DataError(
            f"cannot write to the cache directory {cache_dir}: {exc}; set ${CACHE_ENV} to a "
            "writable directory"
        ) from exc
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            _fetch(url, out, md5, _want_progress(progress), cache_dir)
        return _extract(tmp, cache_dir, source=url)
    finally:
        tmp.unlink(missing_ok=True)


def extract_cifar10(tarball: str | Path, dest_dir: str | Path, *, md5: str | None = None) -> Path:
    """Unpack a CIFAR-10 python tarball into ``dest_dir/cifar-10-batches-py``, atomically.

    Does nothing when that directory already exists.

    Args:
      tarball: path of ``cifar-10-python.tar.gz``.
      dest_dir: directory that receives ``cifar-10-batches-py``.
      md5: if given, the tarball's expected hex MD5, checked first.

    Returns:
      The ``cifar-10-batches-py`` directory.

    Raises:
      DataError: checksum mismatch, corrupt/truncated archive, a member outside
        ``cifar-10-batches-py/`` or with an unsafe path or type, or missing batch files.
    """
    tarball, dest_dir = Path(tarball), Path(dest_dir)
    if (dest_dir / BATCHES_DIR).is_dir():
        return dest_dir / BATCHES_DIR
    if md5 is not None:
        _check_md5(tarball, md5)
    return _extract(tarball, dest_dir, source=str(tarball))


def _extract(tarball: Path, dest_dir: Path, *, source: str) -> Path:
    target = dest_dir / BATCHES_DIR
    try:
        tmp_dir = Path(tempfile.mkdtemp(dir=dest_dir, prefix=".cifar-10-extract-"))
    except OSError as exc:
        raise DataError(f"cannot extract CIFAR-10 into {dest_dir}: {exc}") from exc
    try:
        with tarfile.open(tarball, "r:gz") as tar:
            members = tar.getmembers()
            _check_members(source, members)
            # The "data" filter refuses absolute paths, "..", links leaving the directory and
            # device files; _check_members above already limits names to one directory.
            tar.extractall(tmp_dir, members=members, filter="data")
        missing = [f for f in EXPECTED_FILES if not (tmp_dir / BATCHES_DIR / f).is_file()]
        if missing:
            raise DataError(
                f"{source} is not the CIFAR-10 python version: "
                f"{BATCHES_DIR}/ lacks {', '.join(missing)}"
            )
        try:
            os.replace(tmp_dir / BATCHES_DIR, target)
        except OSError:
            # Another process finished first; its copy is as good as ours.
            if not target.is_dir():
                raise
        return target
    except tarfile.FilterError as exc:
        raise DataError(f"refusing to extract {source}: unsafe member ({exc})") from exc
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise DataError(
            f"cannot extract {source}: it is corrupt or truncated ({exc}); download it again"
        ) from exc
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


def _check_members(source: str, members: list[tarfile.TarInfo]) -> None:
    for member in members:
        name = member.name.removeprefix("./")
        if name.startswith("/") or ".." in PurePosixPath(name).parts:
            raise DataError(
                f"refusing to extract {source}: member {member.name!r} has an unsafe path "
                "(absolute or with '..'); the file is corrupt or malicious"
            )
        if name != BATCHES_DIR and not name.startswith(f"{BATCHES_DIR}/"):
            raise DataError(
                f"refusing to extract {source}: member {member.name!r} is outside "
                f"{BATCHES_DIR}/, so this is not the CIFAR-10 tarball"
            )
        if not (member.isfile() or member.isdir()):
            raise DataError(
                f"refusing to extract {source}: member {member.name!r} is a link or "
                "special file; the CIFAR-10 tarball holds only regular files"
            )


def _fetch(url: str, out: BinaryIO, md5: str, progress: bool, cache_dir: Path) -> None:
    digest = hashlib.md5(usedforsecurity=False)
    received = 0
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            with _progress_bar(progress, total) as advance:
                while chunk := response.read(_CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    advance(len(chunk))
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DataError(
            f"could not download CIFAR-10 from {url}: {reason}. Without network access, "
            f"download {CIFAR10_URL} elsewhere and put it into {cache_dir} "
            f"(or extract it there so that {BATCHES_DIR}/ appears)"
        ) from exc
    if total is not None and received != total:
        raise DataError(
            f"download of {url} is truncated: got {received} of {total} bytes; try again"
        )
    if digest.hexdigest() != md5.lower():
        raise DataError(
            f"checksum mismatch for {url}: MD5 is {digest.hexdigest()}, expected {md5}; "
            "the download is corrupt or not the CIFAR-10 python tarball (nothing was kept)"
        )


def file_md5(path: Path) -> str:
    """Hex MD5 of a file, read in chunks.

    Raises:
      DataError: the file cannot be read.
    """
    digest = hashlib.md5(usedforsecurity=False)
    try:
        with path.open("rb") as f:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc
    return digest.hexdigest()


def _check_md5(path: Path, md5: str) -> None:
    actual = file_md5(path)
    if actual != md5.lower():
        raise DataError(
            f"checksum mismatch for {path}: MD5 is {actual}, expected {md5}; "
            "the file is corrupt or not the CIFAR-10 python tarball; delete it and download "
            "it again"
        )


def _want_progress(progress: bool | None) -> bool:
    return sys.stderr.isatty() if progress is None else progress


@contextlib.contextmanager
def _progress_bar(enabled: bool, total: int | None) -> Iterator[Callable[[int], object]]:
    """Yield ``advance(n_bytes)``; it drives a rich bar on stderr when ``enabled``."""
    if not enabled:
        yield lambda n: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    columns = ("CIFAR-10", BarColumn(), DownloadColumn(), TransferSpeedColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("download", total=total)
        yield lambda n: bar.advance(task, n)
