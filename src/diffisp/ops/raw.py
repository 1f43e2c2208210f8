"""RAW operators: Bayer mosaic and demosaic, packing, black/white levels, CFA white balance,
the camera-to-sRGB matrix and the sRGB transfer curve.

Contract:

* A mosaic (``raw``) is ``(N, H, W)`` float, one sample per pixel and no channel axis (as the 2-D
  arrays of colour-demosaicing and rawpy's ``raw_image``), with ``H`` and ``W`` even so that every
  image holds whole 2x2 CFA tiles. Images are ``(N, H, W, 3)`` float RGB, as in the other ops.
* A CFA pattern is a string (any case) naming the colours of the 2x2 tile at pixel (0, 0), in
  row-major order: ``"RGGB"``, ``"GRBG"``, ``"GBRG"`` or ``"BGGR"`` (colour-demosaicing's names).
* Nothing is clipped: values outside [0, 1] (noise below the black level, highlights after
  white balance) pass through unchanged and a later stage decides what to do with them. Every
  op but the sRGB curve is linear, and all have finite gradients for any finite input.
* Whatever repeats with the CFA tile is computed on the ``(N, H/2, 2, W/2, 2)`` view of a mosaic
  (a free reshape), never with ``(H, W)`` masks, which ``jit`` would bake into the program as
  constants as large as the image.

Demosaicing borders: the filters read up to 2 pixels outside the image, which is extended by
whole-sample mirroring (numpy's ``mode="reflect"``, scipy's ``"mirror"``: ``c b | a b c``). That
keeps the Bayer pattern intact across the border, so border pixels are interpolated from samples
of the right colour and a constant-colour image demosaics to itself everywhere.
colour-demosaicing 0.2.7 convolves with scipy's default ``"reflect"`` (``b a | a b c``), which
shifts the pattern by one pixel outside the image: its results differ from these in the outer 1
(bilinear) or 2 (Malvar) rows and columns, where they are wrong (a constant image comes out up to
2.25x too bright; colour-demosaicing issue #8, whose agreed fix is ``"mirror"``). Everywhere else,
and everywhere when it is given the same mirrored border, the two agree to float32 rounding.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from diffisp.errors import ConfigError, InputError, InputTypeError
from diffisp.ops._broadcast import per_image
from diffisp.ops.color import apply_ccm
from diffisp.util.checks import (
    check_finite_range,
    check_float_array,
    check_images,
    check_param,
    is_concrete,
)

BAYER_PATTERNS = ("RGGB", "GRBG", "GBRG", "BGGR")

# IEC 61966-2-1 sRGB transfer curve: linear below these points, a 2.4 power law above.
SRGB_LINEAR_KNEE = 0.0031308
SRGB_ENCODED_KNEE = 0.04045

_CHANNEL_INDEX = {"R": 0, "G": 1, "B": 2}
# A linear filter as its non-zero taps (dy, dx, weight): out[y, x] += weight * raw[y+dy, x+dx].
_Taps = tuple[tuple[int, int, float], ...]


# --- patterns and validation -------------------------------------------------------------------


def _check_pattern(pattern: Any) -> str:
    if not isinstance(pattern, str):
        raise InputTypeError(
            f"pattern must be a string such as 'RGGB'; got {type(pattern).__name__}"
        )
    if pattern.upper() not in BAYER_PATTERNS:
        raise ConfigError(f"unknown CFA pattern {pattern!r}; expected one of {BAYER_PATTERNS}")
    return pattern.upper()


def _tile_channels(pattern: str) -> tuple[tuple[int, int], tuple[int, int]]:
    """Channel index (0 R, 1 G, 2 B) at each ``(row, col)`` of the 2x2 tile."""
    c = [_CHANNEL_INDEX[letter] for letter in pattern]
    return (c[0], c[1]), (c[2], c[3])


def _packed_positions(pattern: str) -> tuple[tuple[int, int], ...]:
    """Tile positions of R, G1 (the green on red rows), G2 (on blue rows) and B."""
    red, blue = divmod(pattern.index("R"), 2), divmod(pattern.index("B"), 2)
    return red, (red[0], 1 - red[1]), (blue[0], 1 - blue[1]), blue


def _check_mosaic(raw: Any, *, name: str = "raw", integer_ok: bool = False) -> jax.Array:
    """Validate an ``(N, H, W)`` mosaic with even ``H``, ``W``; return it as a JAX array."""
    if not hasattr(raw, "shape") or not hasattr(raw, "dtype"):
        raise InputTypeError(
            f"{name} must be an array of shape (N, H, W); got {type(raw).__name__}"
        )
    dtype = np.dtype(raw.dtype)
    integer = integer_ok and np.issubdtype(dtype, np.integer)
    if not (np.issubdtype(dtype, np.floating) or integer):
        hint = " (map sensor counts to floats with normalize_levels)" if dtype.kind in "iu" else ""
        raise InputTypeError(f"{name} must be floating point; got dtype {raw.dtype}{hint}")
    shape = tuple(raw.shape)
    if len(shape) != 3:
        hint = ""
        if len(shape) == 4 and shape[-1] == 1:
            hint = f" (drop the channel axis: {name}[..., 0])"
        elif len(shape) == 2:
            hint = f" (add a batch axis: {name}[None])"
        raise InputError(
            f"{name} must be a batch of Bayer mosaics of shape (N, H, W); got shape {shape}{hint}"
        )
    if 0 in shape:
        raise InputError(f"{name} is empty: shape {shape}")
    _check_even(shape, name=name)
    if is_concrete(raw):
        check_finite_range(raw, name=name, value_range=None)
    return jnp.asarray(raw)


def _check_even(shape: tuple[int, ...], *, name: str) -> None:
    """Raise unless the height and width (axes 1 and 2) hold whole 2x2 CFA tiles."""
    if shape[1] % 2 or shape[2] % 2:
        raise InputError(
            f"{name} must have even height and width (whole 2x2 CFA tiles); got H={shape[1]}, "
            f"W={shape[2]}"
        )


def _tile_view(raw: jax.Array) -> jax.Array:
    """``(N, H, W)`` -> ``(N, H/2, 2, W/2, 2)``: axes 2 and 4 are the row and column in the tile."""
    n, h, w = raw.shape
    return raw.reshape(n, h // 2, 2, w // 2, 2)


def _per_tile_position(values: jax.Array) -> jax.Array:
    """``(4,)`` or ``(N, 4)`` values in tile order -> broadcastable against :func:`_tile_view`."""
    return values.reshape(2, 1, 2) if values.ndim == 1 else values.reshape(-1, 1, 2, 1, 2)


def _interleave(planes: Sequence[Sequence[jax.Array]]) -> jax.Array:
    """Inverse of taking ``x[:, i::2, j::2]``: ``planes[i][j]`` of ``(N, H/2, W/2, ...)`` ->
    ``(N, H, W, ...)``."""
    tiles = jnp.stack([jnp.stack(row, axis=3) for row in planes], axis=2)
    n, h2, _, w2 = tiles.shape[:4]
    return tiles.reshape(n, 2 * h2, 2 * w2, *tiles.shape[5:])


# --- mosaic, packing ---------------------------------------------------------------------------


def cfa_masks(pattern: str, height: int, width: int) -> np.ndarray:
    """The colour of every pixel of a Bayer sensor as one-hot masks (cf. ``masks_CFA_Bayer``).

    Args:
      pattern: ``"RGGB"``, ``"GRBG"``, ``"GBRG"`` or ``"BGGR"``.
      height, width: sensor size in pixels (positive; need not be even).

    Returns:
      ``(height, width, 3)`` bool NumPy array (a static constant): ``[y, x, c]`` is True where
      pixel ``(y, x)`` sees colour ``c`` (R, G, B), so ``mosaic(x) == (x * masks).sum(-1)``.
    """
    pattern = _check_pattern(pattern)
    for size, label in ((height, "height"), (width, "width")):
        if not isinstance(size, (int, np.integer)) or isinstance(size, bool) or size < 1:
            raise InputError(f"{label} must be a positive integer; got {size!r}")
    channels = np.array(_tile_channels(pattern))
    tiled = np.tile(channels, (height // 2 + 1, width // 2 + 1))[:height, :width]
    return tiled[..., None] == np.arange(3)


def mosaic(images: jax.Array, pattern: str = "RGGB") -> jax.Array:
    """Sample RGB images through a Bayer colour filter array (cf. ``mosaicing_CFA_Bayer``).

    Args:
      images: ``(N, H, W, 3)`` float RGB (any finite values), ``H`` and ``W`` even.
      pattern: the CFA pattern.

    Returns:
      ``(N, H, W)`` mosaic: each pixel keeps the one channel its filter passes.
    """
    pattern = _check_pattern(pattern)
    images = check_images(images, value_range=None)
    _check_even(images.shape, name="images")
    channels = _tile_channels(pattern)
    return _interleave(
        [[images[:, i::2, j::2, channels[i][j]] for j in range(2)] for i in range(2)]
    )


def pack_bayer(raw: jax.Array, pattern: str = "RGGB") -> jax.Array:
    """Pack each 2x2 CFA tile into 4 channels, the "packed RAW" input of RAW-to-RGB models.

    Args:
      raw: ``(N, H, W)`` mosaic.
      pattern: its CFA pattern.

    Returns:
      ``(N, H/2, W/2, 4)`` in R, G1, G2, B order, G1 being the green on the red rows and G2 the
      green on the blue rows, whatever the pattern.
    """
    pattern = _check_pattern(pattern)
    raw = _check_mosaic(raw)
    return jnp.stack([raw[:, i::2, j::2] for i, j in _packed_positions(pattern)], axis=-1)


def unpack_bayer(packed: jax.Array, pattern: str = "RGGB") -> jax.Array:
    """Inverse of :func:`pack_bayer`: ``(N, H/2, W/2, 4)`` R, G1, G2, B -> ``(N, H, W)`` mosaic."""
    pattern = _check_pattern(pattern)
    packed = check_float_array(packed, name="packed")
    if packed.ndim != 4 or packed.shape[-1] != 4 or 0 in packed.shape:
        raise InputError(
            f"packed must have shape (N, H/2, W/2, 4) (R, G1, G2, B); got {tuple(packed.shape)}"
        )
    channel_at = {position: k for k, position in enumerate(_packed_positions(pattern))}
    return _interleave([[packed[..., channel_at[i, j]] for j in range(2)] for i in range(2)])


# --- levels, white balance, colour -------------------------------------------------------------


def normalize_levels(raw: jax.Array, black_level: jax.Array, white_level: jax.Array) -> jax.Array:
    """Map sensor counts to [0, 1]: ``(raw - black) / (white - black)``, unclipped.

    Args:
      raw: ``(N, H, W)`` mosaic in sensor counts, integer (e.g. ``uint16``) or float.
      black_level: a scalar, ``(4,)`` (one per tile position, in the order the pattern string
        lists them: top-left, top-right, bottom-left, bottom-right) or ``(N, 4)`` per image.
      white_level: the saturation count, a scalar or ``(N,)``; above the black level everywhere.

    Returns:
      ``(N, H, W)`` float: 0 at the black level, 1 at saturation; sensor noise leaves values
      slightly below 0, which are kept.
    """
    raw = _check_mosaic(raw, integer_ok=True)
    if not np.issubdtype(np.dtype(raw.dtype), np.floating):
        raw = raw.astype(jnp.float32)  # float32 holds every count below 2**24 exactly
    n = raw.shape[0]
    black = check_param(
        black_level, name="black_level", batch=n, shape=() if np.ndim(black_level) == 0 else (4,)
    )
    white = check_param(white_level, name="white_level", batch=n)
    black = jnp.broadcast_to(black, (4,)) if black.ndim == 0 else black
    if is_concrete(black) and is_concrete(white):
        headroom = np.asarray(white).reshape(-1, 1) - np.asarray(black).reshape(-1, 4)
        if (headroom <= 0).any():
            raise InputError(
                f"white_level must exceed black_level at every CFA position; got black_level "
                f"{np.asarray(black).tolist()} and white_level {np.asarray(white).tolist()}"
            )
    black = _per_tile_position(black.astype(raw.dtype))
    white = per_image(white.astype(raw.dtype), trailing=4)
    return ((_tile_view(raw) - black) / (white - black)).reshape(raw.shape)


def apply_cfa_white_balance(
    raw: jax.Array, gains_rgb: jax.Array, pattern: str = "RGGB"
) -> jax.Array:
    """White balance on the mosaic: multiply every sample by the gain of its filter colour.

    Args:
      raw: ``(N, H, W)`` mosaic, black level removed (a gain must not scale the offset).
      gains_rgb: ``(3,)`` shared or ``(N, 3)`` per image, non-negative; usually G = 1.
      pattern: the CFA pattern.

    Returns:
      ``(N, H, W)`` mosaic, unclipped.
    """
    pattern = _check_pattern(pattern)
    raw = _check_mosaic(raw)
    gains = check_param(
        gains_rgb, name="gains_rgb", batch=raw.shape[0], shape=(3,), value_range=(0, 1e6)
    )
    tile_gains = gains.astype(raw.dtype)[..., np.array(_tile_channels(pattern)).ravel()]
    return (_tile_view(raw) * _per_tile_position(tile_gains)).reshape(raw.shape)


def camera_to_srgb(images: jax.Array, matrix: jax.Array) -> jax.Array:
    """Convert camera RGB to linear sRGB: ``out_rgb = matrix @ camera_rgb`` per pixel, unclipped.

    The colour transform of :func:`diffisp.ops.apply_ccm` under the RAW pipeline's name (rows
    are output channels; any finite inputs, since camera RGB after black-level subtraction dips
    below 0).

    Args:
      images: ``(N, H, W, 3)`` demosaiced, white-balanced camera RGB (any finite values).
      matrix: ``(3, 3)`` shared or ``(N, 3, 3)`` per image, camera RGB -> linear sRGB; the rows
        of a white-balanced camera's matrix sum to 1 so that white stays white.

    Returns:
      ``(N, H, W, 3)`` linear sRGB; apply :func:`srgb_encode` for display.
    """
    return apply_ccm(images, matrix)


def srgb_encode(linear: jax.Array) -> jax.Array:
    """The IEC 61966-2-1 sRGB transfer curve (linear light -> display values).

    ``12.92 x`` for ``x <= 0.0031308``, else ``1.055 x**(1/2.4) - 0.055``. Negative inputs stay
    on the linear piece; the gradient is finite everywhere (12.92 at and below the knee).

    Args:
      linear: float array of any shape, usually ``(N, H, W, 3)`` linear sRGB.

    Returns:
      The encoded values, same shape: [0, 1] maps onto [0, 1].
    """
    x = check_float_array(linear, name="linear")
    above = x > SRGB_LINEAR_KNEE
    # The double where: the power branch only ever sees x > knee. With the plain x in it, the
    # masked-out branch's gradient at x <= 0 is inf or NaN, and 0 * NaN poisons the result.
    x_power = jnp.where(above, x, 1.0)
    # exp(log(x) / 2.4), not x ** (1 / 2.4): the same to float32 rounding, and XLA's CPU pow is
    # 2x slower (it dominated the 12 MP conventional pipeline against LibRaw).
    return jnp.where(above, 1.055 * jnp.exp(jnp.log(x_power) * (1 / 2.4)) - 0.055, 12.92 * x)


def srgb_decode(encoded: jax.Array) -> jax.Array:
    """Inverse of :func:`srgb_encode` (display values -> linear light).

    ``v / 12.92`` for ``v <= 0.04045``, else ``((v + 0.055) / 1.055)**2.4``; finite gradients
    everywhere, negative inputs on the linear piece.

    Args:
      encoded: float array of any shape, usually ``(N, H, W, 3)`` sRGB-encoded.

    Returns:
      The linear values, same shape.
    """
    v = check_float_array(encoded, name="encoded")
    above = v > SRGB_ENCODED_KNEE
    v_power = jnp.where(above, v, 1.0)  # the double where, as in srgb_encode
    return jnp.where(above, jnp.power((v_power + 0.055) / 1.055, 2.4), v * (1 / 12.92))


# --- demosaicing -------------------------------------------------------------------------------

# Bilinear: each missing sample is the mean of its nearest neighbours of that colour. Applied,
# as in colour-demosaicing, to the mosaic masked to one colour, so only same-colour taps count.
_BILINEAR_RB = np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]]) / 4
_BILINEAR_G = np.array([[0, 1, 0], [1, 4, 1], [0, 1, 0]]) / 4


def _eighths(kernel: list[list[float]]) -> np.ndarray:
    return np.array(kernel) / 8


# Malvar, He & Cutler (2004), Fig. 2: bilinear interpolation plus a Laplacian of the channel
# sampled at the pixel (the "gradient correction"), applied to the unmasked mosaic. Each kernel
# sums to 1 (a flat colour is reproduced) and is point-symmetric, so correlating with it, as
# done here, equals convolving with it, as the paper and colour-demosaicing do.
_MALVAR_G_AT_RB = _eighths(
    [
        [0, 0, -1, 0, 0],
        [0, 0, 2, 0, 0],
        [-1, 2, 4, 2, -1],
        [0, 0, 2, 0, 0],
        [0, 0, -1, 0, 0],
    ]
)
# R at a green pixel of a red row (its red neighbours are left and right); B likewise on blue
# rows. The transpose serves green pixels whose R (or B) neighbours are above and below.
_MALVAR_RB_AT_G_ROW = _eighths(
    [
        [0, 0, 0.5, 0, 0],
        [0, -1, 0, -1, 0],
        [-1, 4, 5, 4, -1],
        [0, -1, 0, -1, 0],
        [0, 0, 0.5, 0, 0],
    ]
)
_MALVAR_RB_AT_G_COLUMN = _MALVAR_RB_AT_G_ROW.T
_MALVAR_RB_AT_BR = _eighths(  # R at blue pixels, B at red pixels (diagonal neighbours)
    [
        [0, 0, -1.5, 0, 0],
        [0, 2, 0, 2, 0],
        [-1.5, 0, 6, 0, -1.5],
        [0, 2, 0, 2, 0],
        [0, 0, -1.5, 0, 0],
    ]
)
_IDENTITY = np.ones((1, 1))


def _taps(kernel: np.ndarray, keep: Callable[[int, int], bool] = lambda dy, dx: True) -> _Taps:
    """The non-zero entries of an odd-sized kernel as ``(dy, dx, weight)``, filtered by ``keep``."""
    ry, rx = kernel.shape[0] // 2, kernel.shape[1] // 2
    return tuple(
        (int(y) - ry, int(x) - rx, float(kernel[y, x]))
        for y, x in zip(*np.nonzero(kernel), strict=True)
        if keep(int(y) - ry, int(x) - rx)
    )


@functools.cache
def _bilinear_taps(pattern: str) -> tuple[tuple[tuple[_Taps, ...], ...], ...]:
    """``[i][j][c]``: the taps giving channel ``c`` at tile position ``(i, j)``."""
    channel_at = _tile_channels(pattern)

    def taps(i: int, j: int, c: int) -> _Taps:
        kernel = _BILINEAR_G if c == 1 else _BILINEAR_RB
        return _taps(kernel, lambda dy, dx: channel_at[(i + dy) % 2][(j + dx) % 2] == c)

    return tuple(tuple(tuple(taps(i, j, c) for c in range(3)) for j in range(2)) for i in range(2))


@functools.cache
def _malvar_taps(pattern: str) -> tuple[tuple[tuple[_Taps, ...], ...], ...]:
    """``[i][j][c]``: the Malvar-He-Cutler taps giving channel ``c`` at tile position ``(i, j)``."""

    def kernels(i: int, j: int) -> tuple[np.ndarray, ...]:
        site = pattern[2 * i + j]
        if site == "R":
            return _IDENTITY, _MALVAR_G_AT_RB, _MALVAR_RB_AT_BR
        if site == "B":
            return _MALVAR_RB_AT_BR, _MALVAR_G_AT_RB, _IDENTITY
        if pattern[2 * i + 1 - j] == "R":  # a green pixel on a red row
            return _MALVAR_RB_AT_G_ROW, _IDENTITY, _MALVAR_RB_AT_G_COLUMN
        return _MALVAR_RB_AT_G_COLUMN, _IDENTITY, _MALVAR_RB_AT_G_ROW

    return tuple(tuple(tuple(_taps(k) for k in kernels(i, j)) for j in range(2)) for i in range(2))


# Compiled on its own (the taps are static) so that an eager call is one fused pass, not ~50
# separate full-size temporaries (8x faster at 12 MP on CPU); inside a caller's jit it is inlined.
@functools.partial(jax.jit, static_argnums=1)
def _demosaic(raw: jax.Array, taps: tuple[tuple[tuple[_Taps, ...], ...], ...]) -> jax.Array:
    # Each of the four tile positions needs its own two filters, so each is computed only on its
    # own quarter of the pixels: the padded mosaic's tile view turns every tap into a unit-stride
    # slice of one of its four phase planes, and XLA fuses the multiply-adds into one pass.
    _, h, w = raw.shape
    pad = 2  # the kernels' radius; even, so the padded mosaic starts on the same tile position
    tiles = _tile_view(jnp.pad(raw, ((0, 0), (pad, pad), (pad, pad)), mode="reflect"))

    def shifted(y: int, x: int) -> jax.Array:  # raw[2a + y, 2b + x] for every tile (a, b)
        y, x = y + pad, x + pad
        return tiles[:, y // 2 : y // 2 + h // 2, y % 2, x // 2 : x // 2 + w // 2, x % 2]

    def interpolate(i: int, j: int, c: int) -> jax.Array:
        return sum(weight * shifted(i + dy, j + dx) for dy, dx, weight in taps[i][j][c])

    return _interleave(
        [
            [jnp.stack([interpolate(i, j, c) for c in range(3)], -1) for j in range(2)]
            for i in (0, 1)
        ]
    )


def demosaic_bilinear(raw: jax.Array, pattern: str = "RGGB") -> jax.Array:
    """Bilinear demosaicing (cf. ``demosaicing_CFA_Bayer_bilinear``).

    Args:
      raw: ``(N, H, W)`` mosaic (any finite values).
      pattern: its CFA pattern.

    Returns:
      ``(N, H, W, 3)`` RGB, unclipped; measured samples are kept as they are.
    """
    pattern = _check_pattern(pattern)
    return _demosaic(_check_mosaic(raw), _bilinear_taps(pattern))


def demosaic_malvar2004(raw: jax.Array, pattern: str = "RGGB") -> jax.Array:
    """Malvar-He-Cutler (2004) gradient-corrected linear demosaicing with 5x5 filters
    (cf. ``demosaicing_CFA_Bayer_Malvar2004``).

    Sharper than bilinear with fewer colour fringes (+3.7 dB PSNR on scikit-image's astronaut)
    and on CPU no slower: both are bound by writing the ``(N, H, W, 3)`` output. Linear, so its
    gradient is exact and cheap; its small overshoot at edges can leave [0, 1].

    Args:
      raw: ``(N, H, W)`` mosaic (any finite values).
      pattern: its CFA pattern.

    Returns:
      ``(N, H, W, 3)`` RGB, unclipped; measured samples are kept as they are.
    """
    pattern = _check_pattern(pattern)
    return _demosaic(_check_mosaic(raw), _malvar_taps(pattern))
