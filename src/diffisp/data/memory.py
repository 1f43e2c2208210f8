"""Refusing data sets that cannot fit in memory before allocating them.

Images are float32 RGB, so ``N`` images of ``S x S`` take ``N * S * S * 3 * 4`` bytes per
copy. A typo such as ``--num-train 1000000000`` or ``--image-size 100000`` would otherwise end
in a ``MemoryError`` traceback, or worse, in minutes of swapping before the kernel kills the
process. The estimate is checked against the memory the operating system says is available.
"""

from __future__ import annotations

import os
from pathlib import Path

from diffisp.errors import ConfigError

BYTES_PER_PIXEL = 3 * 4  # RGB float32
_MEMINFO = "/proc/meminfo"
_CGROUP = "/sys/fs/cgroup"


def image_bytes(num_images: int, image_size: int, copies: int = 1) -> int:
    """Bytes of ``copies`` float32 arrays of shape ``(num_images, image_size, image_size, 3)``."""
    return num_images * image_size * image_size * BYTES_PER_PIXEL * copies


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation without swapping, or None if unknown.

    Linux: ``MemAvailable`` of ``/proc/meminfo`` (free memory plus reclaimable caches), or
    what is left under the cgroup (v2) memory limit of a container, whichever is smaller.
    Elsewhere: the physical memory size from ``os.sysconf``, when the platform has it.
    """
    candidates = [_meminfo_available(), _cgroup_headroom()]
    known = [c for c in candidates if c is not None]
    if known:
        return min(known)
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):
        return None


def _meminfo_available() -> int | None:
    try:
        with open(_MEMINFO, encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024  # the value is in kB
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_headroom() -> int | None:
    try:
        limit = Path(_CGROUP, "memory.max").read_text().strip()
        if limit == "max":
            return None
        return max(int(limit) - int(Path(_CGROUP, "memory.current").read_text()), 0)
    except (OSError, ValueError):
        return None


def check_fits_in_memory(
    num_images: int, image_size: int, *, copies: int = 1, options: str, limit: int | None = None
) -> None:
    """Raise if ``copies`` float32 copies of the images exceed the available memory.

    Args:
      num_images: images held at once.
      image_size: side ``S`` of the square images.
      copies: how many float32 copies of them exist at the same time.
      options: the options that set these numbers, named in the error.
      limit: bytes allowed; default :func:`available_memory` (no check if that is unknown).

    Raises:
      ConfigError: the estimate is above the limit; the message names ``options``, the
        estimate and the limit.
    """
    needed = image_bytes(num_images, image_size, copies)
    limit = available_memory() if limit is None else limit
    if limit is not None and needed > limit:
        raise ConfigError(
            f"{num_images} images of {image_size}x{image_size} need about "
            f"{_format_bytes(needed)} ({copies} float32 cop{'y' if copies == 1 else 'ies'}) but "
            f"only {_format_bytes(limit)} of memory is available; lower {options}"
        )


def _format_bytes(n: int) -> str:
    if n >= 1024**5:  # also keeps absurd sizes (10**400) out of float arithmetic
        return "more than 1 PiB"
    value, unit = float(n), "bytes"
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            break
        value /= 1024
    return f"{n} bytes" if unit == "bytes" else f"{value:.3g} {unit}"
