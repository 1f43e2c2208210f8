"""Real camera RAW files (via rawpy / LibRaw) -> :class:`~diffisp.capture.raw_capture.RawCapture`.

:func:`read_raw` reads the Bayer mosaic of the visible area and every piece of metadata the RAW
ISP needs, and checks each one, because RAW readers hand out wrong values silently and each one
turns into a magenta, green or black picture further down:

* ``raw_pattern``: X-Trans (6x6), Foveon or linear (demosaiced) DNG (no pattern) ->
  :class:`~diffisp.errors.DataError`: diffisp reads Bayer RAW only.
* ``black_level_per_channel``: 0 on files whose darkest samples sit far above 0 (a washed-out,
  colour-cast image), or above most samples (a black-crushed one) -> an estimate: the 0.1 %
  quantile of each CFA position's samples (the darkest pixels are taken as black).
* ``white_level``: 0, or below the data's maximum -> the smallest ``2**bits - 1`` holding the
  maximum (the sensor's bit depth).
* ``camera_whitebalance``: zeros or NaN (not recorded) -> the daylight multipliers, else grey
  world. G not 1 (LibRaw reports a DNG's AsShotNeutral as its reciprocals, unnormalised) ->
  divided by G.
* ``rgb_xyz_matrix``: all zeros (LibRaw leaves it empty for DNGs of cameras it has no table
  entry for) -> ``color_matrix`` (LibRaw's camera -> sRGB for the file), else the identity. A
  matrix that is exactly XYZ -> sRGB (the file's ColorMatrix is the identity: placeholder
  metadata) is kept with a warning.

Every fallback issues a :class:`RawMetadataWarning` naming the field, its value and what was
used instead, and is recorded in :attr:`RawFileInfo.warnings`. Files LibRaw cannot decode
(corrupt, truncated, not RAW) raise :class:`~diffisp.errors.DataError` naming the file.

The returned mosaic is not flipped: ``RawFileInfo.flip`` holds the orientation LibRaw reports
(:func:`orient` applies it to a rendered image).
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np

from diffisp.capture.raw_capture import RawCapture, make_capture
from diffisp.data.images import DEFAULT_MAX_PIXELS
from diffisp.errors import DataError, InputError
from diffisp.ops.raw import BAYER_PATTERNS, normalize_levels

# Linear sRGB -> XYZ (D65), IEC 61966-2-1; dcraw/LibRaw's ``xyz_rgb`` is the same matrix.
SRGB_TO_XYZ = np.array(
    [[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169], [0.019334, 0.119193, 0.950227]]
)
WHITE_BALANCE_SOURCES = ("camera", "daylight", "gray_world")
# A black level of 0 is suspicious when the darkest samples are this far above it (of the white
# level): a camera's noise leaves its darkest samples within a few counts of the true black.
_BLACK_ZERO_TOLERANCE = 0.02
_BLACK_PERCENTILE = 0.1


class RawMetadataWarning(UserWarning):
    """A RAW file's metadata field was missing or implausible and a fallback was used."""


@dataclasses.dataclass(frozen=True)
class RawFileInfo:
    """What :func:`read_raw` read from a file, what it used, and the warnings it issued.

    Attributes:
      path: the file.
      pattern: the CFA pattern of the returned mosaic (``"RGGB"``, ...).
      height, width: of the returned mosaic (the visible area, cut to even sizes).
      black_levels: the black level used at each of the 4 tile positions (pattern order).
      white_level: the saturation count used.
      wb_gains: the R, G, B white-balance multipliers used (G = 1).
      cam_to_srgb: the 3x3 white-balanced camera RGB -> linear sRGB matrix used (rows sum to 1).
      flip: LibRaw's orientation code (0 none, 3 180 degrees, 5 90 CCW, 6 90 CW).
      raw: the values as rawpy reported them (lists, for JSON).
      warnings: the message of every :class:`RawMetadataWarning` issued for this file.
    """

    path: Path
    pattern: str
    height: int
    width: int
    black_levels: tuple[float, float, float, float]
    white_level: float
    wb_gains: tuple[float, float, float]
    cam_to_srgb: tuple[tuple[float, ...], ...]
    flip: int
    raw: dict[str, Any]
    warnings: tuple[str, ...]


class _Warnings:
    """Issues :class:`RawMetadataWarning` s for one file and keeps their messages."""

    def __init__(self, path: Path) -> None:
        self.path, self.messages = path, []

    def __call__(self, field: str, value: Any, fallback: str) -> None:
        message = f"{self.path.name}: {field} {value}; {fallback}"
        self.messages.append(message)
        warnings.warn(message, RawMetadataWarning, stacklevel=3)


def _rounded(values: Any, digits: int = 4) -> list:
    return np.round(np.asarray(values, np.float64), digits).tolist()


def check_raw_file(
    path: str | Path, max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> tuple[int, int]:
    """``(width, height)`` of a RAW file's sensor from its header, without decoding the data.

    Raises:
      DataError: not found, not a RAW file LibRaw opens, or above ``max_pixels``.
    """
    raw = _open(Path(path), max_pixels, unpack=False)
    try:
        return int(raw.sizes.raw_width), int(raw.sizes.raw_height)
    finally:
        raw.close()


def _open(path: Path, max_pixels: int | None, *, unpack: bool = True) -> Any:
    import rawpy

    if not path.is_file():
        raise DataError(f"RAW file not found: {path}")
    raw = rawpy.RawPy()
    try:
        raw.open_file(str(path))
        sizes = raw.sizes
        if max_pixels is not None and sizes.raw_width * sizes.raw_height > max_pixels:
            raise DataError(
                f"RAW file {path} is {sizes.raw_width}x{sizes.raw_height}, above the limit of "
                f"{max_pixels:,} pixels (--max-pixels)"
            )
        if unpack:
            raw.unpack()  # decodes the sensor data: truncated files fail here, not at open
    except rawpy.LibRawError as exc:
        raw.close()
        reason = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else exc
        hint = " (truncated or unreadable)" if isinstance(exc, rawpy.LibRawIOError) else ""
        raise DataError(
            f"cannot read RAW file {path}: {reason}{hint} ({type(exc).__name__})"
        ) from exc
    except BaseException:
        raw.close()
        raise
    return raw


def _pattern(raw: Any, path: Path) -> tuple[str, np.ndarray]:
    """The CFA pattern name and the colour index (into ``color_desc``) at each tile position."""
    import rawpy

    kind = getattr(raw.raw_type, "name", str(raw.raw_type))
    pattern = raw.raw_pattern
    if raw.raw_type != rawpy.RawType.Flat or pattern is None or raw.raw_image.ndim != 2:
        raise DataError(
            f"diffisp reads Bayer RAW only; {path} is a linear (demosaiced) DNG or a Foveon/"
            f"multi-layer file (raw_type {kind}, no CFA pattern)"
        )
    pattern = np.asarray(pattern)
    if pattern.shape == (6, 6):
        raise DataError(f"diffisp reads Bayer RAW only; {path} is X-Trans (6x6 CFA pattern)")
    colours = raw.color_desc.decode(errors="replace")
    # The colours of the visible area's first tile: the pattern is relative to it, and the
    # colour indices name entries of color_desc (RGBG: index 3 is the second green).
    tile = np.asarray(raw.raw_colors_visible[:2, :2])
    name = "".join(colours[c] if c < len(colours) else "?" for c in tile.ravel())
    if pattern.shape != (2, 2) or raw.num_colors != 3 or name not in BAYER_PATTERNS:
        raise DataError(
            f"diffisp reads Bayer RAW only; {path} has a {pattern.shape[0]}x{pattern.shape[1]} "
            f"CFA of colours {colours!r} ({name})"
        )
    return name, tile


def _black_levels(
    raw: Any, counts: np.ndarray, tile: np.ndarray, white: float, warn: _Warnings
) -> np.ndarray:
    per_channel = np.asarray(raw.black_level_per_channel, np.float64)
    black = per_channel[tile.ravel()]
    positions = [counts[i::2, j::2] for i in range(2) for j in range(2)]
    # A low percentile, not the minimum: one dead pixel must not decide the black level.
    darkest = np.array([np.percentile(p, _BLACK_PERCENTILE) for p in positions])
    below = np.mean([np.mean(p < b) for p, b in zip(positions, black, strict=True)])
    if not np.isfinite(black).all() or (black < 0).any() or (black >= white).any():
        warn("black_level_per_channel", _rounded(per_channel), f"estimated {_rounded(darkest)}")
        return darkest
    if (black == 0).all() and (darkest > _BLACK_ZERO_TOLERANCE * white).all():
        warn(
            "black_level_per_channel",
            "is 0 but the darkest samples are at " + str(_rounded(darkest, 1)),
            f"estimated the black level as their {_BLACK_PERCENTILE} % quantile",
        )
        return darkest
    if below > 0.75:  # noise puts about half of a black frame's samples below black, not more
        warn(
            "black_level_per_channel",
            f"{_rounded(per_channel)} is above {below:.0%} of the samples",
            f"estimated {_rounded(darkest)}",
        )
        return darkest
    return black


def _white_level(raw: Any, counts: np.ndarray, warn: _Warnings) -> float:
    white = float(raw.white_level)
    peak = float(counts.max())
    if np.isfinite(white) and white > 0 and peak <= white:
        return white
    bits = max(int(np.ceil(np.log2(peak + 1))), 8)
    fallback = float(2**bits - 1)
    warn("white_level", f"{white:g} (data maximum {peak:g})", f"using {fallback:g} ({bits} bits)")
    return fallback


def _usable_gains(values: Any) -> np.ndarray | None:
    gains = np.asarray(values, np.float64)[:3]
    return gains if np.isfinite(gains).all() and (gains > 0).all() else None


def _gray_world(mosaic: np.ndarray, pattern: str) -> np.ndarray:
    """Multipliers that make the average of the image grey (unsaturated samples only)."""
    means = {}
    for k, colour in enumerate(pattern):
        samples = mosaic[k // 2 :: 2, k % 2 :: 2]
        means.setdefault(colour, []).append(np.mean(samples[samples < 0.98]))
    r, g, b = (max(float(np.mean(means[c])), 1e-6) for c in "RGB")
    return np.array([g / r, 1.0, g / b])


def _white_balance(
    raw: Any, mosaic: np.ndarray, pattern: str, source: str, warn: _Warnings
) -> np.ndarray:
    reported = {"camera": raw.camera_whitebalance, "daylight": raw.daylight_whitebalance}
    usable = {name: _usable_gains(values) for name, values in reported.items()}
    if source != "gray_world" and usable[source] is None:
        fallback = "daylight" if source == "camera" and usable["daylight"] is not None else None
        warn(
            f"{source}_whitebalance",
            _rounded(reported[source]),
            f"using {fallback}_whitebalance" if fallback else "using grey world",
        )
        source = fallback or "gray_world"
    if source == "gray_world":
        return _gray_world(mosaic, pattern)
    gains = usable[source]
    if abs(gains[1] - 1) > 1e-3:
        # LibRaw reports a DNG's AsShotNeutral as its reciprocals, unnormalised: multipliers on
        # the scale of the file's neutral (tinydng's has R = 1, so G = 0.404). Dividing by G
        # gives the RawCapture's convention and keeps the exposure of the green channel.
        warn(
            f"{source}_whitebalance",
            f"{_rounded(reported[source])} has G = {gains[1]:.4g}, not 1",
            f"divided by G: {_rounded(gains / gains[1])}",
        )
    return gains / gains[1]


def _is_xyz_to_srgb(matrix: np.ndarray) -> bool:
    """Whether ``matrix`` is XYZ -> sRGB with unit row sums: what LibRaw derives from a DNG whose
    ColorMatrix is the identity, i.e. placeholder metadata treating camera RGB as XYZ."""
    return bool(np.allclose(matrix, _camera_to_srgb(np.eye(3)), atol=0.02))


def _camera_to_srgb(xyz_to_camera: np.ndarray) -> np.ndarray:
    """dcraw/LibRaw's ``cam_xyz_coeff``: sRGB -> camera with rows normalised (so that white
    balanced white maps to white), inverted."""
    srgb_to_camera = xyz_to_camera @ SRGB_TO_XYZ
    srgb_to_camera /= srgb_to_camera.sum(axis=1, keepdims=True)
    return np.linalg.inv(srgb_to_camera)


def _colour_matrix(raw: Any, warn: _Warnings) -> np.ndarray:
    """White-balanced camera RGB -> linear sRGB, rows summing to 1.

    Rows sum to 1 because the RawCapture applies it to *white-balanced* camera RGB, where a
    neutral surface has R = G = B: it must stay neutral (white stays white).
    """
    xyz_to_camera = np.asarray(raw.rgb_xyz_matrix, np.float64)[:3]
    if np.isfinite(xyz_to_camera).all() and np.abs(xyz_to_camera).sum() > 0:
        matrix = _camera_to_srgb(xyz_to_camera)
    else:
        rgb_cam = np.asarray(raw.color_matrix, np.float64)[:3, :3]
        usable = np.isfinite(rgb_cam).all() and (np.abs(rgb_cam.sum(axis=1)) > 1e-3).all()
        warn(
            "rgb_xyz_matrix",
            "is all zeros" if np.isfinite(xyz_to_camera).all() else "holds NaN/Inf",
            "using color_matrix (LibRaw's camera -> sRGB)" if usable else "using the identity",
        )
        if not usable:
            warn("color_matrix", _rounded(rgb_cam), "unusable too: using the identity")
            return np.eye(3)
        matrix = rgb_cam
    row_sums = matrix.sum(axis=1, keepdims=True)
    matrix = matrix / row_sums
    if _is_xyz_to_srgb(matrix):
        warn(
            "colour matrix",
            "is XYZ -> sRGB (the file's ColorMatrix is the identity: camera RGB taken as XYZ)",
            "kept, but the colours are not calibrated",
        )
    return matrix


def _margin_mean(raw: Any) -> float | None:
    sizes, full = raw.sizes, raw.raw_image
    inside = np.zeros(full.shape, bool)
    inside[
        sizes.top_margin : sizes.top_margin + sizes.height,
        sizes.left_margin : sizes.left_margin + sizes.width,
    ] = True
    return float(full[~inside].mean()) if (~inside).any() else None


def read_raw(
    path: str | Path,
    *,
    white_balance: str = "camera",
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> tuple[RawCapture, RawFileInfo]:
    """Read a Bayer RAW file (any format LibRaw decodes: DNG, CR2, NEF, ARW, ...).

    Args:
      path: the file.
      white_balance: ``"camera"`` (as shot), ``"daylight"`` (the camera's daylight
        multipliers) or ``"gray_world"`` (the image's mean made grey).
      max_pixels: refuse larger sensors (checked from the header, before decoding); default
        the image readers' and ``apply``'s limit, None: no limit.

    Returns:
      ``(capture, info)``: a :class:`RawCapture` of one image, the visible area of the sensor
      (cut to an even height and width at the bottom/right, so the pattern is unchanged), black
      level removed and 1 at the white level; and the :class:`RawFileInfo` of the file.

    Raises:
      DataError: not a RAW file LibRaw can decode (corrupt, truncated, unsupported), or not a
        Bayer one (X-Trans, Foveon, linear DNG); the message names the file.

    Warns:
      RawMetadataWarning: for each field replaced by a fallback (see the module docstring).
    """
    if white_balance not in WHITE_BALANCE_SOURCES:
        raise InputError(
            f"unknown white balance {white_balance!r}; choose from {WHITE_BALANCE_SOURCES}"
        )
    path = Path(path)
    warn = _Warnings(path)
    raw = _open(path, max_pixels)
    try:
        pattern, tile = _pattern(raw, path)
        visible = raw.raw_image_visible
        height, width = visible.shape[0] // 2 * 2, visible.shape[1] // 2 * 2
        if height == 0 or width == 0:
            raise DataError(f"RAW file {path} has an empty image area {visible.shape}")
        counts = np.array(visible[:height, :width])  # a copy: rawpy's buffer dies with the file
        white = _white_level(raw, counts, warn)
        black = _black_levels(raw, counts, tile, white, warn)
        mosaic = np.asarray(normalize_levels(counts[None], black, white))[0]
        gains = _white_balance(raw, mosaic, pattern, white_balance, warn)
        matrix = _colour_matrix(raw, warn)
        values = {
            "raw_type": getattr(raw.raw_type, "name", str(raw.raw_type)),
            "color_desc": raw.color_desc.decode(errors="replace"),
            "raw_pattern": np.asarray(raw.raw_pattern).tolist(),
            "black_level_per_channel": list(raw.black_level_per_channel),
            "white_level": int(raw.white_level),
            "camera_whitebalance": _rounded(raw.camera_whitebalance, 6),
            "daylight_whitebalance": _rounded(raw.daylight_whitebalance, 6),
            "rgb_xyz_matrix": _rounded(raw.rgb_xyz_matrix, 6),
            "color_matrix": _rounded(raw.color_matrix, 6),
            "raw_image_shape": list(raw.raw_image.shape),
            "visible_shape": list(visible.shape),
            "margins": [int(raw.sizes.top_margin), int(raw.sizes.left_margin)],
            "min_max": [int(counts.min()), int(counts.max())],
            "raw_image_min": int(raw.raw_image.min()),
            # The masked (optically black) margins, where there are any: a check of the black
            # level by eye (tinydng's average 2050 against its BlackLevel of 2056).
            "margin_mean": _margin_mean(raw),
        }
        flip = int(raw.sizes.flip)
    finally:
        raw.close()
    capture = make_capture(
        jnp.asarray(mosaic[None]), wb_gains=gains, cam_to_srgb=matrix, pattern=pattern
    )
    info = RawFileInfo(
        path=path,
        pattern=pattern,
        height=height,
        width=width,
        black_levels=tuple(float(b) for b in black),
        white_level=white,
        wb_gains=tuple(float(g) for g in gains),
        cam_to_srgb=tuple(tuple(float(v) for v in row) for row in matrix),
        flip=flip,
        raw=values,
        warnings=tuple(warn.messages),
    )
    return capture, info


def orient(image: np.ndarray, flip: int) -> np.ndarray:
    """An ``(H, W, ...)`` image turned the way LibRaw's ``flip`` code says (as rawpy does)."""
    if flip == 3:
        return image[::-1, ::-1]
    if flip == 5:  # 90 degrees counter-clockwise
        return np.rot90(image, 1)
    if flip == 6:  # 90 degrees clockwise
        return np.rot90(image, -1)
    return image
