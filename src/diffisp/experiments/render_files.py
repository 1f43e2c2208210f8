"""The files at both ends of a ``diffisp apply`` job: decoding an input (RAW or sRGB, with the
EXIF to carry over) and encoding and writing its output as 8/16-bit PNG or TIFF.

Orientation and EXIF are as the module docstring of :mod:`diffisp.experiments.render` says.
"""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from diffisp.errors import InputError

if TYPE_CHECKING:
    from diffisp.experiments.render_plan import Job

FORMATS = {"png": ".png", "tiff": ".tif"}
BITS = (8, 16)
# zlib level for PNGs: 1 is 3-4x faster than the usual 6 on photographs for files ~10 % larger.
PNG_LEVEL = 1
_EXIF_ORIENTATION = 0x0112


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


def _write(job: Job, image: np.ndarray, fmt: str, bits: int, exif: bytes | None) -> None:
    from diffisp.util import io as io_util

    data = encode(image, fmt, bits, exif)
    try:
        io_util.atomic_write_bytes(job.target, data)
    except OSError as exc:
        if exc.filename is None:  # a full disk fails in write() or fsync(), without a name
            exc.filename = str(job.target)
        raise
