"""``diffisp apply --raw``: camera RAW files through a trained ISP (or the conventional pipeline);
the batch itself (folders, threads, resuming, failures) is :mod:`diffisp.experiments.render`.

Which pipeline renders a file depends on what the checkpoint holds:

* a :class:`~diffisp.isp.raw.RawISP` (trained with ``--input raw``): its learned RAW front on the
  whole mosaic, then its chain ISP through :func:`~diffisp.experiments.apply.run_isp_tiled`;
* an sRGB ISP (trained on sRGB images): the conventional RAW front (the recorded white
  balance, bilinear demosaic, the recorded colour matrix, the sRGB curve), then that ISP, tiled;
* no checkpoint (``--conventional``): the conventional pipeline alone.

The front runs on the whole frame: its largest temporary is a few float32 copies of the RGB
image (about 0.8 GB at the 64 MP default of ``--max-pixels``). The output is turned the way the
file's orientation flag says, as LibRaw does.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import nnx

from diffisp.capture.raw_capture import RawCapture
from diffisp.data.raw_file import orient, read_raw
from diffisp.errors import InputError
from diffisp.experiments.apply import DEFAULT_TILE, run_isp_tiled
from diffisp.experiments.render import BatchOptions, BatchResult, apply_batch
from diffisp.isp.raw import RawISP, conventional_linear, display_encode

PNG_BITS = (8, 16)


def describe_pipeline(isp: Any) -> str:
    """One line saying how RAW files are rendered with ``isp`` (``None``: no checkpoint)."""
    if isp is None:
        return "conventional pipeline (as-shot WB, bilinear demosaic, camera matrix, sRGB curve)"
    if isinstance(isp, RawISP):
        return "learned RAW ISP (RAW front" + (" + chain ISP)" if isp.back is not None else ")")
    return "conventional RAW front (as-shot WB, bilinear, camera matrix, sRGB curve) + sRGB ISP"


@jax.jit
def _conventional_front(capture: RawCapture) -> jax.Array:
    # No tone curve: real files are rendered as LibRaw renders them (docs/raw-files.md).
    return display_encode(conventional_linear(capture), tone=False)


def render_raw(capture: RawCapture, isp: Any = None, *, tile: int = DEFAULT_TILE) -> np.ndarray:
    """Render one capture: ``(H, W, 3)`` float32 in [0, 1].

    Args:
      capture: a :class:`RawCapture` of one image (:func:`~diffisp.data.raw_file.read_raw`).
      isp: a :class:`RawISP`, an sRGB ISP (:class:`~diffisp.isp.chain.LearnedISP`) or ``None``
        (the conventional pipeline).
      tile: tile side for the chain ISP.

    Compiles afresh on every call; a batch uses :class:`~diffisp.experiments.render.Renderer`,
    which compiles once per image size.
    """
    if capture.num_images != 1:
        raise InputError(f"render_raw takes one capture; got {capture.num_images}")
    if isinstance(isp, RawISP):
        graphdef, state = nnx.split(isp.front)
        front = jax.jit(lambda state, capture: nnx.merge(graphdef, state)(capture))
        rgb = np.asarray(front(state, capture))[0]
        back = isp.back
    else:
        rgb, back = np.asarray(_conventional_front(capture))[0], isp
    return rgb if back is None else run_isp_tiled(back, rgb, tile=tile)


def png_bytes(
    image: np.ndarray, bits: int = 8, *, exif: bytes | None = None, level: int = 6
) -> bytes:
    """An ``(H, W, 3)`` image in [0, 1] as PNG bytes, 8 or 16 bits per sample.

    16-bit RGB is written here (zlib + the PNG chunks): Pillow writes 16 bits for grey images
    only. ``exif``: TIFF-format EXIF bytes for an ``eXIf`` chunk; ``level``: zlib's, 0-9.
    """
    if bits not in PNG_BITS:
        raise InputError(f"PNG bits must be 8 or 16; got {bits}")
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise InputError(f"png_bytes takes an (H, W, 3) image; got {image.shape}")
    if image.dtype == (np.uint8 if bits == 8 else np.uint16):  # samples already
        scaled = image
    else:
        scaled = np.round(np.clip(image, 0, 1) * (2**bits - 1))
    if bits == 8:
        import io

        from PIL import Image

        buffer = io.BytesIO()
        extra = {} if exif is None else {"exif": b"Exif\x00\x00" + exif}
        Image.fromarray(scaled.astype(np.uint8, copy=False)).save(
            buffer, format="PNG", compress_level=level, **extra
        )
        return buffer.getvalue()
    height, width, _ = image.shape
    rows = scaled.astype(">u2").reshape(height, width * 3).view(np.uint8)  # (H, 6 W) bytes
    # Each row: filter type 0 (none), then the big-endian samples.
    raw = np.concatenate([np.zeros((height, 1), np.uint8), rows], axis=1).tobytes()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)  # 16 bits, RGB
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + (b"" if exif is None else chunk(b"eXIf", exif))
        + chunk(b"IDAT", zlib.compress(raw, level))
        + chunk(b"IEND", b"")
    )


def render_raw_file(
    path: Any, isp: Any = None, *, tile: int = DEFAULT_TILE, max_pixels: int | None = None
) -> tuple[np.ndarray, Any]:
    """Read, render and orient one RAW file: ``(image (H', W', 3) in [0, 1], RawFileInfo)``."""
    capture, info = read_raw(path, max_pixels=max_pixels)
    return orient(render_raw(capture, isp, tile=tile), info.flip), info


def apply_raw_files(
    paths: Sequence[Path],
    out_dir: Path,
    isp: Any = None,
    *,
    bits: int = 8,
    tile: int = DEFAULT_TILE,
    max_pixels: int | None = None,
    log: Callable[[str], None] = print,
    warn: Callable[[str], None] = print,
    **options: Any,
) -> BatchResult:
    """Render RAW files and folders to ``out_dir`` through
    :func:`~diffisp.experiments.render.apply_batch` (names, skipping, failures: see there).

    ``options``: the other fields of :class:`~diffisp.experiments.render.BatchOptions`.
    """
    if bits not in PNG_BITS:
        raise InputError(f"--bits must be 8 or 16; got {bits}")
    log(f"rendering with the {describe_pipeline(isp)}")
    batch = BatchOptions(raw=True, bits=bits, tile=tile, max_pixels=max_pixels, **options)
    return apply_batch(paths, out_dir, isp, batch, log=log, warn=warn)
