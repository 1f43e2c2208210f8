"""Simulated RAW captures from sRGB images: "unprocessing" (Brooks et al., CVPR 2019).

Brooks, Mildenhall, Xue, Chen, Sharlet and Barron, "Unprocessing Images for Learned Raw
Denoising", invert each step of a simple camera pipeline, with random camera parameters, to turn
any sRGB photo into a plausible raw capture. :func:`unprocess` does that for a batch:

1. inverse tone mapping, :func:`~diffisp.ops.inverse_smoothstep`, on the sRGB-encoded values
   (where Brooks et al. fit the smoothstep to camera JPEGs);
2. the inverse sRGB curve, :func:`~diffisp.ops.srgb_decode` (exact IEC 61966-2-1, where Brooks
   et al. use a plain 2.2 power);
3. linear sRGB -> camera RGB with a random camera matrix per image: a convex combination
   ``w A_i + (1 - w) A_j`` of the row-normalised matrices of two different real cameras
   (:mod:`.camera_matrices`), ``i``, ``j`` and ``w ~ U(0, 1)`` drawn per image. Brooks et al.
   mix four cameras with random weights, which concentrates the mixtures near the four's mean;
   a random pair reaches every pair of the 13 real matrices, and any such mixture still has
   rows summing to 1;
4. inverse white balance: divide red by a gain drawn from ``red_gain``, blue by one from
   ``blue_gain`` (green 1). Like Brooks et al. (``preserve_highlights``), the inverse gains
   fade to 1 where the camera-RGB grey level ``g`` (channel mean) is above 0.9, by the weight
   ``((g - 0.9) / 0.1)**2``: a white pixel then stays (1, 1, 1), saturated in every channel as
   on a real sensor, instead of becoming (1/r, 1, 1/b), a raw value that white balance would map
   back to white only because nothing saturated;
5. darkening by a per-image factor drawn from ``brightness`` (linear light; in place of Brooks et
   al.'s random inverse exposure, so that the captures are low-light captures);
6. the Bayer mosaic (:func:`~diffisp.ops.mosaic`);
7. sensor noise with variance ``shot * x + read`` (heteroscedastic Gaussian: shot noise's
   Poisson variance grows with the signal), ``shot`` log-uniform and ``log(read)`` linear in
   ``log(shot)`` plus Gaussian scatter, Brooks et al.'s fit to real sensors;
8. saturation: values are clipped at 1 (the white level). Negative values, which read noise
   leaves below the black level, are kept, as in a raw file after black-level subtraction.
   The noise-free signal itself is clipped to [0, 1] before the noise (light is non-negative;
   with the tabulated matrices, whose sRGB -> camera entries are all positive, it never leaves
   [0, 1] anyway);
9. optionally, quantisation to ``quantize_bits`` (straight-through gradient).

:func:`process_rgb` (and the ISP layer's :func:`diffisp.isp.raw.process_capture`) is the
matching conventional camera pipeline (demosaic, white balance, camera -> sRGB, sRGB curve,
smoothstep): on a capture unprocessed without noise, darkening and
highlight preservation, it returns the original image up to the demosaicing error.
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass

import jax
import jax.numpy as jnp
import numpy as np

from diffisp.capture.camera_matrices import srgb_to_camera_matrices
from diffisp.capture.raw_capture import RawCapture
from diffisp.errors import ConfigError, InputError, InputTypeError
from diffisp.ops import (
    BAYER_PATTERNS,
    camera_to_srgb,
    clip_unit,
    inverse_smoothstep,
    mosaic,
    smoothstep,
    srgb_decode,
    srgb_encode,
)
from diffisp.util.checks import check_images, finite_real, positive_range

# Brooks et al.'s highlight-preserving inverse white balance: above this camera-RGB grey level
# the inverse gains fade towards 1.
HIGHLIGHT_START = 0.9
MAX_QUANTIZE_BITS = 24  # float32 holds every integer up to 2**24 exactly


@dataclass(frozen=True)
class UnprocessConfig:
    """The random camera of :func:`unprocess` (defaults: Brooks et al. 2019, plus darkening).

    Attributes:
      red_gain: ``(low, high)`` range of the red white-balance gain, ``0 < low <= high``.
      blue_gain: ``(low, high)`` range of the blue white-balance gain.
      brightness: ``(low, high)`` range of the per-image darkening factor applied in linear
        light, ``0 < low <= high <= 1`` (as :class:`~diffisp.capture.low_light.LowLight`);
        ``(1, 1)`` for no darkening.
      shot_noise: ``(low, high)`` range of the shot-noise factor, drawn log-uniformly,
        ``0 < low <= high <= 1``.
      read_noise_slope, read_noise_intercept, read_noise_sigma: ``log(read) = slope *
        log(shot) + intercept + N(0, sigma**2)``; ``sigma >= 0``.
      pattern: the CFA pattern of the mosaics (any case; stored upper case).
      quantize_bits: ``None`` (float output) or the bit depth, 1 to 24, to round the mosaic to.
      noise: add sensor noise (when False the metadata's noise levels are zero).
      preserve_highlights: Brooks et al.'s highlight-preserving inverse white balance; turn it
        off for an inverse that :func:`process_capture` undoes exactly.
    """

    red_gain: tuple[float, float] = (1.9, 2.4)
    blue_gain: tuple[float, float] = (1.5, 1.9)
    brightness: tuple[float, float] = (0.1, 0.3)
    shot_noise: tuple[float, float] = (1e-4, 0.012)
    read_noise_slope: float = 2.18
    read_noise_intercept: float = 1.20
    read_noise_sigma: float = 0.26
    pattern: str = "RGGB"
    quantize_bits: int | None = None
    noise: bool = True
    preserve_highlights: bool = True

    def __post_init__(self) -> None:
        for name, upper in (
            ("red_gain", math.inf),
            ("blue_gain", math.inf),
            ("brightness", 1.0),
            ("shot_noise", 1.0),
        ):
            object.__setattr__(self, name, positive_range(name, getattr(self, name), upper))
        for name in ("read_noise_slope", "read_noise_intercept", "read_noise_sigma"):
            value = finite_real(getattr(self, name))
            if value is None:
                raise ConfigError(f"{name} must be a finite number; got {getattr(self, name)!r}")
            object.__setattr__(self, name, value)
        if self.read_noise_sigma < 0:
            raise ConfigError(f"read_noise_sigma must be >= 0; got {self.read_noise_sigma}")
        if not isinstance(self.pattern, str) or self.pattern.upper() not in BAYER_PATTERNS:
            raise ConfigError(f"pattern must be one of {BAYER_PATTERNS}; got {self.pattern!r}")
        object.__setattr__(self, "pattern", self.pattern.upper())
        bits = self.quantize_bits
        if bits is not None and (
            isinstance(bits, bool)
            or not isinstance(bits, (int, np.integer))
            or not 1 <= bits <= MAX_QUANTIZE_BITS
        ):
            raise ConfigError(
                f"quantize_bits must be None or an integer in [1, {MAX_QUANTIZE_BITS}]; got "
                f"{bits!r}"
            )
        for name in ("noise", "preserve_highlights"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be True or False; got {getattr(self, name)!r}")

    def to_dict(self) -> dict:
        return asdict(self)


# --- the random camera -------------------------------------------------------------------------


def sample_camera(key: jax.Array, num_images: int, cfg: UnprocessConfig) -> dict[str, jax.Array]:
    """Draw the camera of each image: colour matrix, white balance, brightness, noise levels.

    The draws do not depend on ``cfg.noise``, ``cfg.quantize_bits`` or ``cfg.pattern``, so one
    key gives the same camera with and without noise.

    Returns:
      ``srgb_to_camera`` ``(N, 3, 3)`` (rows sum to 1), ``cameras`` ``(N, 2)`` int32 (the two
      mixed table entries), ``camera_weight`` ``(N,)`` (of the first), ``red_gain``,
      ``blue_gain``, ``brightness``, ``shot_noise`` and ``read_noise``, each ``(N,)``.
    """
    # One uniform draw per parameter and image (and one normal): a single random call each
    # keeps the compiled program small (every jax.random call inlines its own hash rounds).
    uniform_key, normal_key = jax.random.split(key)
    u = jax.random.uniform(uniform_key, (7, num_images))
    table = jnp.asarray(srgb_to_camera_matrices(), jnp.float32)
    k = table.shape[0]
    first = jnp.minimum(jnp.floor(u[0] * k), k - 1).astype(jnp.int32)
    offset = 1 + jnp.minimum(jnp.floor(u[1] * (k - 1)), k - 2).astype(jnp.int32)
    second = (first + offset) % k  # any camera but the first, uniformly
    weight = u[2]
    matrices = weight[:, None, None] * table[first] + (1.0 - weight[:, None, None]) * table[second]

    def between(values: jax.Array, bounds: tuple[float, float]) -> jax.Array:
        return bounds[0] + (bounds[1] - bounds[0]) * values

    log_shot = between(u[6], (math.log(cfg.shot_noise[0]), math.log(cfg.shot_noise[1])))
    log_read = (
        cfg.read_noise_slope * log_shot
        + cfg.read_noise_intercept
        + cfg.read_noise_sigma * jax.random.normal(normal_key, (num_images,))
    )
    return {
        "srgb_to_camera": matrices,
        "cameras": jnp.stack([first, second], axis=-1).astype(jnp.int32),
        "camera_weight": weight,
        "red_gain": between(u[3], cfg.red_gain),
        "blue_gain": between(u[4], cfg.blue_gain),
        "brightness": between(u[5], cfg.brightness),
        "shot_noise": jnp.exp(log_shot),
        "read_noise": jnp.exp(log_read),
    }


# Compiled (one fused pass per call, not one dispatch per op); inlined inside a caller's jit.
@functools.partial(jax.jit, static_argnames="preserve_highlights")
def unprocess_rgb(
    images: jax.Array, camera: dict[str, jax.Array], *, preserve_highlights: bool = True
) -> jax.Array:
    """Steps 1-5 of the module docstring: sRGB images -> darkened linear camera RGB.

    Args:
      images: ``(N, H, W, 3)`` sRGB in [0, 1].
      camera: :func:`sample_camera`'s draws (``srgb_to_camera``, ``red_gain``, ``blue_gain``,
        ``brightness``; ``(N, ...)`` each).
      preserve_highlights: fade the inverse gains to 1 in highlights (Brooks et al.).

    Returns:
      ``(N, H, W, 3)`` linear camera RGB, not white balanced, not clipped (in [0, 1] for the
      tabulated cameras).
    """
    linear = srgb_decode(inverse_smoothstep(images))
    return linear_to_camera(linear, camera, preserve_highlights=preserve_highlights)


def linear_to_camera(
    linear: jax.Array, camera: dict[str, jax.Array], *, preserve_highlights: bool = True
) -> jax.Array:
    """Steps 3-5: linear sRGB ``(N, H, W, 3)`` -> darkened linear camera RGB (as
    :func:`unprocess_rgb`, for scenes that are already linear, e.g. lit by a coloured
    illuminant)."""
    # camera_to_srgb is the per-image 3x3 colour transform (rows = outputs); here it takes
    # linear sRGB to camera RGB.
    camera_rgb = camera_to_srgb(linear, camera["srgb_to_camera"])
    ones = jnp.ones_like(camera["red_gain"])
    inverse_gains = jnp.stack([1.0 / camera["red_gain"], ones, 1.0 / camera["blue_gain"]], -1)
    inverse_gains = inverse_gains[:, None, None, :]
    if preserve_highlights:
        grey = jnp.mean(camera_rgb, axis=-1, keepdims=True)
        fade = (jnp.maximum(grey - HIGHLIGHT_START, 0.0) / (1.0 - HIGHLIGHT_START)) ** 2
        # Never below the plain inverse gain: for a gain below 1 (allowed by the config) the
        # fade towards 1 would otherwise darken the highlights instead of sparing them.
        inverse_gains = jnp.maximum(fade + (1.0 - fade) * inverse_gains, inverse_gains)
    return camera_rgb * inverse_gains * camera["brightness"][:, None, None, None]


def sensor(
    key: jax.Array, camera_rgb: jax.Array, camera: dict[str, jax.Array], cfg: UnprocessConfig
) -> jax.Array:
    """Steps 6-9: mosaic, noise, saturation at 1, optional quantisation."""
    signal = clip_unit(mosaic(camera_rgb, cfg.pattern))
    if cfg.noise:
        variance = (
            camera["shot_noise"][:, None, None] * signal + camera["read_noise"][:, None, None]
        )
        signal = signal + jnp.sqrt(variance) * jax.random.normal(key, signal.shape, signal.dtype)
    # Saturation at the white level; with where (not minimum) an exact 1 keeps its gradient.
    raw = jnp.where(signal > 1.0, 1.0, signal)
    if cfg.quantize_bits is not None:
        levels = 2.0**cfg.quantize_bits - 1.0
        # Straight-through: rounded values forward, the identity's gradient backward.
        raw = raw + jax.lax.stop_gradient(jnp.round(raw * levels) / levels - raw)
    return raw


def _inverse_3x3(m: jax.Array) -> jax.Array:
    """``(N, 3, 3)`` -> inverses, by the adjugate (cheaper to compile than an LU solve, and
    accurate for these matrices, whose condition numbers are below 5)."""
    rows = [m[:, i] for i in range(3)]
    adjugate = jnp.stack(
        [jnp.cross(rows[1], rows[2]), jnp.cross(rows[2], rows[0]), jnp.cross(rows[0], rows[1])],
        axis=-1,
    )  # columns = cofactor rows
    determinant = jnp.sum(rows[0] * jnp.cross(rows[1], rows[2]), axis=-1)
    return adjugate / determinant[:, None, None]


def raw_capture(raw: jax.Array, camera: dict[str, jax.Array], cfg: UnprocessConfig) -> RawCapture:
    """The :class:`RawCapture` of mosaics ``raw`` ``(N, H, W)`` taken by ``camera`` (its
    metadata: the as-shot white balance, colour matrix and noise levels)."""
    ones = jnp.ones_like(camera["red_gain"])
    noise = jnp.stack([camera["shot_noise"], camera["read_noise"]], axis=-1)
    return RawCapture(
        mosaic=raw,
        wb_gains=jnp.stack([camera["red_gain"], ones, camera["blue_gain"]], axis=-1),
        cam_to_srgb=_inverse_3x3(camera["srgb_to_camera"]),
        noise=noise if cfg.noise else jnp.zeros_like(noise),
        pattern=cfg.pattern,
    )


@functools.partial(jax.jit, static_argnums=2)
def _unprocess(
    key: jax.Array, images: jax.Array, cfg: UnprocessConfig
) -> tuple[RawCapture, dict[str, jax.Array]]:
    camera_key, noise_key = jax.random.split(key)
    camera = sample_camera(camera_key, images.shape[0], cfg)
    camera_rgb = unprocess_rgb(images, camera, preserve_highlights=cfg.preserve_highlights)
    raw = sensor(noise_key, camera_rgb, camera, cfg)
    capture = raw_capture(raw, camera, cfg)
    return capture, camera


def unprocess(
    key: jax.Array, images: jax.Array, cfg: UnprocessConfig = UnprocessConfig()
) -> tuple[RawCapture, dict[str, jax.Array]]:
    """Simulate raw captures of sRGB images with a random camera per image (module docstring).

    Deterministic: the same key, images and config give bit-identical results. Compiled once per
    config and shape; may itself be called inside ``jit`` (with ``cfg`` static), ``grad``
    (finite gradients with respect to the images everywhere in [0, 1], 0 and 1 included) and
    ``vmap``.

    Args:
      key: a JAX PRNG key.
      images: ``(N, H, W, 3)`` float sRGB in [0, 1], ``H`` and ``W`` even.
      cfg: the random camera's ranges.

    Returns:
      ``(capture, info)``: a :class:`~diffisp.capture.raw_capture.RawCapture` (mosaic ``(N, H, W)``
      in ``(-inf, 1]``; ``wb_gains`` ``(N, 3)`` = ``(red_gain, 1, blue_gain)``, the as-shot white
      balance; ``cam_to_srgb`` ``(N, 3, 3)``, the inverse of the image's sRGB -> camera matrix,
      rows summing to 1; ``noise`` ``(N, 2)`` = ``(shot, read)``, zeros if ``cfg.noise`` is off;
      ``pattern``) and ``info``, the draws of :func:`sample_camera` (``info["brightness"]``
      ``(N,)`` etc.).

    Raises:
      InputTypeError: ``cfg`` is not an :class:`UnprocessConfig`, or ``images`` not float.
      InputError: ``images`` of the wrong shape, odd height or width, or values outside [0, 1].
    """
    if not isinstance(cfg, UnprocessConfig):
        raise InputTypeError(f"cfg must be an UnprocessConfig; got {type(cfg).__name__}")
    images = check_images(images)
    if images.shape[1] % 2 or images.shape[2] % 2:
        raise InputError(
            f"images must have even height and width (whole 2x2 Bayer tiles); got shape "
            f"{tuple(images.shape)}"
        )
    return _unprocess(key, images.astype(jnp.float32), cfg)


# --- the conventional pipeline it inverts ------------------------------------------------------


@functools.partial(jax.jit, static_argnames="tone")
def process_rgb(
    camera_rgb: jax.Array, wb_gains: jax.Array, cam_to_srgb: jax.Array, *, tone: bool = True
) -> jax.Array:
    """A conventional camera pipeline after demosaicing: white balance, colour, sRGB, tone.

    ``camera_rgb * wb_gains`` -> clip to [0, 1] -> ``cam_to_srgb`` -> clip -> sRGB curve ->
    smoothstep (if ``tone``) -> clip; the tone curve acts on encoded values, as in Brooks et al.
    The clip after white balance is the sensor's saturation, applied where Brooks et al. and
    dcraw's default highlight mode apply it: a pixel saturated in every channel, (1, 1, 1) raw,
    is (r, 1, b) after white balance, and without the clip the colour matrix's negative
    entries would turn it magenta (measured: (1, 0.96, 1)) instead of white.

    Args:
      camera_rgb: ``(N, H, W, 3)`` linear camera RGB (any finite values).
      wb_gains: ``(N, 3)`` white-balance gains.
      cam_to_srgb: ``(N, 3, 3)`` white-balanced camera RGB -> linear sRGB.
      tone: apply the smoothstep tone curve.

    Returns:
      ``(N, H, W, 3)`` sRGB in [0, 1].
    """
    balanced = clip_unit(camera_rgb * jnp.asarray(wb_gains)[:, None, None, :])
    encoded = srgb_encode(clip_unit(camera_to_srgb(balanced, cam_to_srgb)))
    return clip_unit(smoothstep(encoded) if tone else encoded)
