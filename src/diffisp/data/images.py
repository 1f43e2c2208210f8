"""Reading one image file into the library's float RGB format.

Every supported file becomes ``(H, W, 3)`` float32 RGB in [0, 1]:

* 8-bit files (JPEG, PNG, also palette and 1-bit) are divided by 255.
* 16-bit grayscale PNGs keep their full precision and are divided by 65 535, so 65 535 is 1.0.
  16-bit *colour* PNGs are reduced to 8 bits by Pillow while decoding (correctly scaled, but
  with 8-bit precision): Pillow has no 48-bit RGB mode.
* Grayscale is replicated to three channels.
* Transparency (RGBA, LA, palette or tRNS transparency) is composited onto white, which is how
  image viewers and browsers show transparent PNGs, so the model sees what the user saw.
* The EXIF orientation tag is applied, so photos come out the way cameras meant them.

Truncated or corrupt files raise :class:`DataError` naming the file: decoding is always
strict, even if some other code enabled Pillow's ``ImageFile.LOAD_TRUNCATED_IMAGES``.

Only the formats in :data:`DECODED_FORMATS` are decoded (PNG, JPEG, TIFF, BMP, WebP), chosen by
the file's content, never by its name. Pillow alone would try every format it knows, and some
of those hand the file to an external program: a PostScript file named ``photo.png`` would be
run by Ghostscript. Files in any other format are refused with a :class:`DataError`.

Pixel limit: with ``max_pixels`` (the data sets' readers pass :data:`DEFAULT_MAX_PIXELS`, the
same limit as ``diffisp apply``'s default), an image whose header gives more pixels is refused
by :func:`check_pixel_limit` before anything is decoded: a 445 KB PNG can hold 12000x12000
pixels, 1.7 GB as floats.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps

from diffisp.data._common import RESAMPLE, check_image_size
from diffisp.errors import DataError

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg"})
# Raster formats that cameras, scanners and the web produce, decoded in-process by Pillow's own
# code or libpng/libjpeg/libtiff/libwebp. Everything else (EPS runs Ghostscript; many rarely
# used formats have little-tested decoders) is refused, whatever the file is called.
DECODED_FORMATS = ("PNG", "JPEG", "TIFF", "BMP", "WEBP")
ALPHA_BACKGROUND = 1.0  # white
_EIGHT_BIT_MODES = frozenset({"1", "L", "P", "RGB", "RGBA", "RGBX", "LA", "PA", "La", "RGBa"})
_EIGHT_BIT_MODES |= {"CMYK", "YCbCr"}
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "La", "RGBa"})
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
_TRUNCATION_LOCK = threading.Lock()
# 8000 x 8000: one float32 RGB copy is 768 MB. Data set readers and ``apply`` (its default
# --max-pixels) refuse larger images from their header, before decoding.
DEFAULT_MAX_PIXELS = 64_000_000


def check_pixel_limit(
    path: str | Path, width: int, height: int, max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> None:
    """Refuse an image of ``width x height`` above ``max_pixels`` (None: no limit).

    Raises:
      DataError: naming the file, its size, the limit and the memory one float copy needs.
    """
    if max_pixels is not None and width * height > max_pixels:
        raise DataError(
            f"image {path} is {width}x{height} ({width * height:,} pixels), above the limit of "
            f"{max_pixels:,} pixels before decoding; one float copy would need "
            f"{width * height * 12 / 1e9:.2f} GB (downscale it, or leave it out)"
        )


def check_inside_root(path: Path, root: Path, what: str) -> None:
    """Refuse ``path`` if it resolves (through symbolic links) outside ``root``, itself
    resolved: a link in a data set must not read files elsewhere on the machine. A link to
    the data set's folder itself (``images -> /data/coco/train2017``) is fine.

    Raises:
      DataError: naming ``what``, the link and where it leads.
    """
    try:
        target, base = path.resolve(), root.resolve()
    except (OSError, RuntimeError) as exc:  # a symlink loop
        raise DataError(f"{what}: cannot resolve {path}: {exc}") from None
    if not target.is_relative_to(base):
        raise DataError(
            f"{what} is a symbolic link to {target}, outside the data set's folder {base}; "
            "refused (copy the file in, or point the data set at the folder it is in)"
        )


def load_image(
    path: str | Path, image_size: int | None = None, *, max_pixels: int | None = None
) -> np.ndarray:
    """Read an image file as float RGB (see the module docstring for format handling).

    Args:
      path: a PNG, JPEG, TIFF, BMP or WebP file (:data:`DECODED_FORMATS`; the content decides,
        not the extension).
      image_size: if given, resize so the short side is ``image_size`` (Lanczos, antialiased)
        and centre-crop to ``image_size x image_size``; must be >= 8.
      max_pixels: refuse images with more pixels, from the header (:func:`check_pixel_limit`);
        None (the default here): no limit of diffisp's own (data set readers pass
        :data:`DEFAULT_MAX_PIXELS`).

    Returns:
      ``(H, W, 3)`` float32 in [0, 1], or ``(image_size, image_size, 3)``.

    Raises:
      DataError: the file is missing, not an image, in a format outside
        :data:`DECODED_FORMATS`, corrupt, truncated or in an unsupported pixel format; the
        message names the file.
      ConfigError: ``image_size`` below 8 (``InputTypeError`` if it is not an int).
    """
    if image_size is not None:
        image_size = check_image_size(image_size)
    path = _check_is_file(path)
    return _decode(path, path, image_size, max_pixels)


def load_image_and_digest(
    path: str | Path, image_size: int | None = None, *, max_pixels: int | None = None
) -> tuple[np.ndarray, str]:
    """:func:`load_image`, plus the SHA-256 of exactly the bytes that were decoded.

    The file is read once and both hashed and decoded from memory, so the digest describes
    the pixels returned even if the file changes meanwhile (used to record data splits).

    Returns:
      ``(pixels, sha256_hex)``; ``pixels`` as from :func:`load_image`.

    Raises:
      DataError, ConfigError: as :func:`load_image`.
    """
    if image_size is not None:
        image_size = check_image_size(image_size)
    path = _check_is_file(path)
    data = read_file_bytes(path)
    pixels = decode_image_bytes(data, path, image_size, max_pixels=max_pixels)
    return pixels, hashlib.sha256(data).hexdigest()


def decode_image_bytes(
    data: bytes, path: Path, image_size: int | None = None, *, max_pixels: int | None = None
) -> np.ndarray:
    """:func:`load_image` on the bytes ``data`` of the file ``path`` (named in errors)."""
    if image_size is not None:
        image_size = check_image_size(image_size)
    return _decode(io.BytesIO(data), path, image_size, max_pixels)


def read_file_bytes(path: Path) -> bytes:
    """The bytes of ``path``; ``DataError`` naming it if it cannot be read."""
    try:
        return path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read image {path}: {exc.strerror or exc}") from exc


def _check_is_file(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        what = "is a directory, not an image file" if path.is_dir() else "does not exist"
        raise DataError(f"image {path} {what}")
    return path


def read_image_size(path: str | Path) -> tuple[int, int]:
    """``(width, height)`` of an image from its header alone, nothing decoded.

    The same formats and errors as :func:`load_image`; for checking an image's size before
    committing the memory to decode it.

    Raises:
      DataError: missing, not a file, not a supported format, or a header Pillow refuses.
    """
    path = _check_is_file(path)
    with _opened(path, path) as image:
        return image.size


@contextlib.contextmanager
def _opened(
    source: Path | io.BytesIO, path: Path, *, own_limit: bool = False
) -> Iterator[Image.Image]:
    """``Image.open`` restricted to :data:`DECODED_FORMATS`; any failure (opening, or in the
    body of the ``with``) becomes a ``DataError`` naming ``path``. ``own_limit``: the caller
    checks a pixel limit of its own (below Pillow's), so Pillow's warning is not shown."""
    try:
        with warnings.catch_warnings():
            if own_limit:
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(source, formats=DECODED_FORMATS)
        with image:
            yield image
    except DataError:
        raise
    except Image.UnidentifiedImageError as exc:
        raise DataError(
            f"cannot read image {path}: not a {', '.join(DECODED_FORMATS)} file (the "
            "content decides, not the name; other formats are refused)"
        ) from exc
    except Image.DecompressionBombError as exc:  # above twice Pillow's own pixel limit
        raise DataError(f"image {path} is too large to decode: {exc}") from exc
    # Pillow's decoders fail with many exception types (OSError, SyntaxError, ValueError,
    # struct.error, ...); all mean the same thing here.
    except Exception as exc:
        raise DataError(
            f"cannot read image {path}: {type(exc).__name__}: {exc} (the file is corrupt, "
            "truncated or not an image)"
        ) from exc


def _decode(
    source: Path | io.BytesIO, path: Path, image_size: int | None, max_pixels: int | None = None
) -> np.ndarray:
    """Decode ``source`` (the file ``path`` or its bytes); errors name ``path``."""
    own_limit = max_pixels is not None and max_pixels <= Image.MAX_IMAGE_PIXELS
    with _strict_decoding(), _opened(source, path, own_limit=own_limit) as image:
        check_pixel_limit(path, *image.size, max_pixels)
        if image_size is not None:
            # JPEG only: decode at a reduced scale, never below image_size (much faster
            # for camera photos; the result is resized with Lanczos anyway).
            image.draft(None, (image_size, image_size))
        image.load()
        pixels = _to_float_rgb(ImageOps.exif_transpose(image), path)
    if image_size is not None:
        pixels = resize_center_crop(pixels, image_size)
    return pixels


def resize_center_crop(pixels: np.ndarray, size: int) -> np.ndarray:
    """Scale the short side to ``size`` (Lanczos) and keep the centre square.

    Args:
      pixels: ``(H, W, 3)`` float32 in [0, 1].
      size: output side.

    Returns:
      ``(size, size, 3)`` float32 in [0, 1] (Lanczos overshoot is clipped).
    """
    height, width = pixels.shape[:2]
    if height == width == size:  # Pillow would return a copy: skip the three channel round trips
        return pixels
    short = min(height, width)
    # A fractional box keeps the crop exactly centred; resizing only the box is also cheaper
    # than resizing the whole image and cropping afterwards.
    top, left = (height - short) / 2, (width - short) / 2
    box = (left, top, left + short, top + short)
    channels = [
        np.asarray(
            Image.fromarray(np.ascontiguousarray(pixels[..., c])).resize(
                (size, size), RESAMPLE, box=box, reducing_gap=3.0
            )
        )
        for c in range(3)
    ]
    return np.clip(np.stack(channels, axis=-1), 0.0, 1.0)


def is_image_file(path: Path) -> bool:
    """True for a visible file with a supported extension (case-insensitive)."""
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def _to_float_rgb(image: Image.Image, path: Path) -> np.ndarray:
    mode = image.mode
    if mode in _SIXTEEN_BIT_MODES or mode == "I":
        values = np.asarray(image)
        if mode == "I" and (values.min() < 0 or values.max() > 65535):
            raise DataError(
                f"image {path} is 32-bit integer with values outside [0, 65535]; save it as an "
                "8- or 16-bit PNG"
            )
        gray = values.astype(np.float32) / np.float32(65535)
        return np.repeat(gray[..., None], 3, axis=-1)
    if mode not in _EIGHT_BIT_MODES:
        raise DataError(
            f"image {path} has unsupported pixel mode {mode!r}; save it as an 8-bit or 16-bit "
            "RGB or grayscale PNG, or as a JPEG"
        )
    if mode in _ALPHA_MODES or "transparency" in image.info:
        rgba = np.asarray(image.convert("RGBA")).astype(np.float32) / np.float32(255)
        alpha = rgba[..., 3:]
        rgb = rgba[..., :3] * alpha + np.float32(ALPHA_BACKGROUND) * (1 - alpha)
        return np.clip(rgb, 0.0, 1.0)  # rounding can leave [0, 1] by an ulp
    return np.asarray(image.convert("RGB")).astype(np.float32) / np.float32(255)


@contextlib.contextmanager
def _strict_decoding() -> Iterator[None]:
    """Make Pillow raise on truncated files while we decode, whatever the global setting.

    Pillow's switch is a module global. It is off by default and then left alone; only when
    some other code turned it on is it switched off around our decode (under a lock, so our
    own threads do not restore each other's value).
    """
    if not ImageFile.LOAD_TRUNCATED_IMAGES:
        yield
        return
    with _TRUNCATION_LOCK:
        previous = ImageFile.LOAD_TRUNCATED_IMAGES
        ImageFile.LOAD_TRUNCATED_IMAGES = False
        try:
            yield
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = previous
