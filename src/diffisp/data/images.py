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
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps

from diffisp.data._common import RESAMPLE, check_image_size
from diffisp.errors import DataError

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg"})
ALPHA_BACKGROUND = 1.0  # white
_EIGHT_BIT_MODES = frozenset({"1", "L", "P", "RGB", "RGBA", "RGBX", "LA", "PA", "La", "RGBa"})
_EIGHT_BIT_MODES |= {"CMYK", "YCbCr"}
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "La", "RGBa"})
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
_TRUNCATION_LOCK = threading.Lock()


def load_image(path: str | Path, image_size: int | None = None) -> np.ndarray:
    """Read an image file as float RGB (see the module docstring for format handling).

    Args:
      path: a PNG or JPEG file (other formats Pillow reads also work, in the modes above).
      image_size: if given, resize so the short side is ``image_size`` (Lanczos, antialiased)
        and centre-crop to ``image_size x image_size``; must be >= 8.

    Returns:
      ``(H, W, 3)`` float32 in [0, 1], or ``(image_size, image_size, 3)``.

    Raises:
      DataError: the file is missing, not an image, corrupt, truncated or in an unsupported
        pixel format; the message names the file.
      ConfigError: ``image_size`` below 8 (``InputTypeError`` if it is not an int).
    """
    if image_size is not None:
        image_size = check_image_size(image_size)
    path = Path(path)
    if not path.is_file():
        what = "is a directory, not an image file" if path.is_dir() else "does not exist"
        raise DataError(f"image {path} {what}")
    with _strict_decoding():
        try:
            with Image.open(path) as image:
                if image_size is not None:
                    # JPEG only: decode at a reduced scale, never below image_size (much faster
                    # for camera photos; the result is resized with Lanczos anyway).
                    image.draft(None, (image_size, image_size))
                image.load()
                pixels = _to_float_rgb(ImageOps.exif_transpose(image), path)
        except DataError:
            raise
        # Pillow's decoders fail with many exception types (OSError, SyntaxError, ValueError,
        # struct.error, ...); all mean the same thing here.
        except Exception as exc:
            raise DataError(
                f"cannot read image {path}: {type(exc).__name__}: {exc} (the file is corrupt, "
                "truncated or not an image)"
            ) from exc
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
