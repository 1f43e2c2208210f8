"""Mixed capture conditions: every image darkened, amplified, colour-cast and blurred its own way.

The low-light model of :mod:`diffisp.capture.low_light` darkens every image alike (brightness
0.1-0.3, one noise level), so a per-image ISP has nothing to choose between. Here each image
gets its own capture conditions, drawn independently per image:

1. **brightness** ``B ~ LogUniform(brightness)`` (default 0.02-1): ``log B`` uniform, so every
   factor of two in exposure is equally likely;
2. **ISO-like gain** ``g = clip(target_exposure / B, 1, max_gain)`` (default
   ``clip(0.5 / B, 1, 64)``): a camera short of light raises its gain, so the darker the
   capture, the fewer photons stand behind each recorded level. Images at least half exposed
   stay at base gain; with the default range the gain spans 1-25;
3. **sensor noise**, the heteroscedastic Poisson-Gaussian model of Foi, Trimeche, Katkovnik
   and Egiazarian ("Practical Poissonian-Gaussian noise modeling and fitting for single-image
   raw-data", IEEE TIP 17(10), 2008), in its Gaussian approximation: a recorded level ``y``
   becomes ``y + sqrt(a y + b) * N(0, 1)`` with ``a = shot_noise * g`` (shot noise: the
   Poisson variance of ``y Q / g`` photo-electrons, rescaled by the gain) and
   ``b = (read_noise * g)**2`` (read noise added before the amplifier). The base values
   ``shot_noise = 1e-4`` and ``read_noise = 8e-5`` (standard deviation) are the low-gain end of
   the sensor fit of Brooks et al., "Unprocessing Images for Learned Raw Denoising" (CVPR 2019:
   ``a`` log-uniform in [1e-4, 1.2e-2], ``log b = 2.18 log a + 1.20``, which gives
   ``b = 6.3e-9`` at ``a = 1e-4``); gains 1-64 keep ``a`` inside their range. At mid-grey the
   noise is 1.4 % of the signal for ``B = 1``, 5 % for ``B = 0.2`` and 54 % for ``B = 0.02``
   (its absolute standard deviation, 0.005-0.007, hardly changes: a darker capture has less
   signal and proportionally more noise, which the ISP's brightening then amplifies);
4. **colour cast** from an illuminant drawn uniformly from ``illuminants`` (default daylight,
   shade, fluorescent, tungsten). An un-white-balanced capture under illuminant ``L`` records a
   white surface as ``c_L = M_sRGB (x/y, 1, (1-x-y)/y)``, the linear-sRGB colour of ``L``'s
   white point (CIE 1931 chromaticity ``(x, y)``, CIE 15:2004; ``M_sRGB`` the XYZ -> linear
   sRGB matrix of IEC 61966-2-1), divided by that of D65, the white of sRGB. ``c_L`` multiplies
   each channel (it is the *inverse* of the white-balance gains ``1 / c_L`` an ISP must find);
   its luminance is 1, so the cast does not change the brightness. The table
   (:data:`ILLUMINANT_CASTS`): daylight D65 (1, 1, 1), shade D75 (0.929, 1.006, 1.145),
   sunlight D50 (1.176, 0.976, 0.722), fluorescent F2 (1.340, 0.943, 0.563), warm fluorescent
   F4 (1.807, 0.834, 0.267), tungsten A (1.845, 0.826, 0.233);
5. **blur** with probability ``blur_probability`` (default 0.2): a Gaussian of standard
   deviation ``sigma ~ U(blur_sigma)`` pixels (default 0.5-1.0; camera shake, missed focus),
   edge-replicated; ``sigma = 0`` (no blur) otherwise.

The capture is ``clip(noise(B * c_L * blur(x)), 0, 1)``. Like :mod:`.degrade`, it treats the
values of the clean image as the scene's linear signal (no sRGB decoding), so a brightness
means the same as in the uniform model. :func:`capture_mixed` records every draw per image;
:func:`condition_bins` groups the images by darkness, noise, cast and blur.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from diffisp.capture.base import check_sweep_kind
from diffisp.errors import ConfigError
from diffisp.util.checks import check_images, finite_real, positive_range

# CIE 1931 2-degree chromaticities (x, y) of standard illuminants' white points (CIE 15:2004).
ILLUMINANT_CHROMATICITY: dict[str, tuple[float, float]] = {
    "daylight": (0.31271, 0.32902),  # D65, 6504 K
    "shade": (0.29902, 0.31485),  # D75, 7500 K
    "sunlight": (0.34567, 0.35850),  # D50, 5003 K
    "fluorescent": (0.37208, 0.37529),  # F2, cool white, 4230 K
    "warm_fluorescent": (0.44018, 0.40329),  # F4, warm white, 2940 K
    "tungsten": (0.44757, 0.40745),  # A, 2856 K
}
# Every illuminant's index in the recorded conditions is its position here.
ILLUMINANTS: tuple[str, ...] = tuple(ILLUMINANT_CHROMATICITY)
# XYZ -> linear sRGB (IEC 61966-2-1).
_XYZ_TO_SRGB = np.array(
    [[3.2406, -1.5372, -0.4986], [-0.9689, 1.8758, 0.0415], [0.0557, -0.2040, 1.0570]]
)


def _white_point_rgb(x: float, y: float) -> np.ndarray:
    return _XYZ_TO_SRGB @ np.array([x / y, 1.0, (1.0 - x - y) / y])


# (K, 3) channel multipliers of each illuminant relative to D65 (luminance 1 each).
ILLUMINANT_CASTS: np.ndarray = np.stack(
    [_white_point_rgb(*xy) for xy in ILLUMINANT_CHROMATICITY.values()]
) / _white_point_rgb(*ILLUMINANT_CHROMATICITY["daylight"])

# Bin edges: darkness by brightness, noise by gain (the noise grows with it).
DARKNESS_BINS = (("very dark", 0.05), ("dark", 0.2), ("dim", 0.5), ("bright", math.inf))
NOISE_BINS = (("low", 2.0), ("mid", 8.0), ("high", math.inf))
# The labels of each kind of bin, in display order.
BIN_LABELS: dict[str, tuple[str, ...]] = {
    "darkness": tuple(name for name, _ in DARKNESS_BINS),
    "noise": tuple(name for name, _ in NOISE_BINS),
    "cast": ILLUMINANTS,
    "blur": ("sharp", "blurred"),
}


@dataclass(frozen=True)
class MixedConditions:
    """Distributions of the per-image capture conditions (see the module docstring).

    Attributes:
      brightness: ``(low, high)``, ``0 < low <= high <= 1``: ``log B`` uniform between logs.
      target_exposure: in (0, 1]; the gain is ``clip(target_exposure / B, 1, max_gain)``.
      max_gain: the largest gain, in [1, 1e4].
      shot_noise: ``a`` at gain 1, in [0, 1]: noise variance ``a g y + (read_noise g)**2``.
      read_noise: read-noise standard deviation at gain 1, in [0, 1].
      illuminants: names from :data:`ILLUMINANTS`, drawn uniformly (repeat one to weight it).
      blur_probability: chance of a blur, in [0, 1].
      blur_sigma: ``(low, high)`` pixels of the blur's standard deviation, ``0 < low <= high
        <= 3``.
    """

    brightness: tuple[float, float] = (0.02, 1.0)
    target_exposure: float = 0.5
    max_gain: float = 64.0
    shot_noise: float = 1e-4
    read_noise: float = 8e-5
    illuminants: tuple[str, ...] = ("daylight", "shade", "fluorescent", "tungsten")
    blur_probability: float = 0.2
    blur_sigma: tuple[float, float] = (0.5, 1.0)

    def __post_init__(self) -> None:
        object.__setattr__(self, "brightness", positive_range("brightness", self.brightness, 1.0))
        object.__setattr__(self, "blur_sigma", positive_range("blur_sigma", self.blur_sigma, 3.0))
        for name, low, high, open_low in (
            ("target_exposure", 0.0, 1.0, True),
            ("max_gain", 1.0, 1e4, False),
            ("shot_noise", 0.0, 1.0, False),
            ("read_noise", 0.0, 1.0, False),
            ("blur_probability", 0.0, 1.0, False),
        ):
            value = finite_real(getattr(self, name))
            if value is None or not low <= value <= high or (open_low and value == low):
                bounds = f"{'(' if open_low else '['}{low:g}, {high:g}]"
                raise ConfigError(
                    f"{name} must be a number in {bounds}; got {getattr(self, name)!r}"
                )
            object.__setattr__(self, name, value)
        names = self.illuminants
        if isinstance(names, str) or not isinstance(names, (tuple, list)) or not names:
            raise ConfigError(f"illuminants must be a non-empty list of names; got {names!r}")
        unknown = [n for n in names if n not in ILLUMINANTS]
        if unknown:
            raise ConfigError(
                f"unknown illuminant(s) {unknown}; choose from {', '.join(ILLUMINANTS)}"
            )
        object.__setattr__(self, "illuminants", tuple(names))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    # The capture protocol (diffisp.capture.base).
    raw = False

    def capture_batch(
        self, key: jax.Array, images: jax.Array
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        return capture_mixed(key, images, self)

    def bins(self, conditions: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return condition_bins(conditions)

    def at(self, kind: str, value: float) -> MixedConditions:
        """A sweep point: a fixed brightness (the gain follows it), or a fixed read noise at
        base gain (``"noise_sigma"``; the shot noise and the gain stay as drawn)."""
        if check_sweep_kind(kind) == "brightness":
            return dataclasses.replace(self, brightness=(value, value))
        return dataclasses.replace(self, read_noise=value)

    def trained_range(self, kind: str) -> tuple[float, float]:
        if check_sweep_kind(kind) == "brightness":
            return self.brightness
        return (self.read_noise, self.read_noise)


def capture_mixed(
    key: jax.Array, images: jax.Array, cfg: MixedConditions = MixedConditions()
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Simulate a capture of each clean image under its own randomly drawn conditions.

    Deterministic for a given ``key``; batched, jitted (compiled once per image shape and blur
    kernel size, the config's numbers are traced) and usable inside ``jax.jit``.

    Args:
      key: a JAX PRNG key.
      images: ``(N, H, W, 3)`` clean images in [0, 1].
      cfg: the distributions of the conditions.

    Returns:
      ``(dark, conditions)``: captures ``(N, H, W, 3)`` in [0, 1], and per image ``(N,)``
      arrays ``"brightness"`` (``B``), ``"gain"`` (``g``), ``"noise_std"`` (the noise standard
      deviation at the recorded level ``0.5 B`` of a mid-grey scene point), ``"relative_noise"``
      (that standard deviation over ``0.5 B``: the noise once the exposure is corrected, which
      grows as ``B`` falls, unlike the absolute one), ``"illuminant"``
      (int32 index into :data:`ILLUMINANTS`) and ``"blur_sigma"`` (pixels; 0 = not blurred).
    """
    images = check_images(images)
    numbers, log_weights, radius = condition_numbers(cfg, images.dtype)
    return _capture_mixed(key, images, numbers, log_weights, radius)


def condition_numbers(
    cfg: MixedConditions, dtype: Any = np.float32
) -> tuple[dict[str, np.ndarray], np.ndarray, int]:
    """``(numbers, log_weights, radius)``: the config as host arrays (traced by the compiled
    capture, so other ranges reuse it), the log-probability of every illuminant of the table (a
    fixed shape for every config) and the blur kernel's radius (compiled in; 0: no blur)."""
    dtype = np.dtype(dtype)
    numbers = {
        name: np.asarray(getattr(cfg, name), dtype)
        for name in ("target_exposure", "max_gain", "shot_noise", "read_noise", "blur_probability")
    }
    numbers["log_brightness"] = np.log(np.asarray(cfg.brightness, dtype))
    numbers["brightness"] = np.asarray(cfg.brightness, dtype)
    numbers["blur_sigma"] = np.asarray(cfg.blur_sigma, dtype)
    counts = np.asarray([cfg.illuminants.count(name) for name in ILLUMINANTS], dtype)
    with np.errstate(divide="ignore"):
        log_weights = np.log(counts / counts.sum())
    radius = math.ceil(3.0 * cfg.blur_sigma[1]) if cfg.blur_probability > 0 else 0
    return numbers, log_weights, radius


def draw_conditions(
    key: jax.Array, n: int, cfg: dict[str, jax.Array], log_weights: jax.Array
) -> dict[str, jax.Array]:
    """Each of ``n`` images' conditions (steps 1, 2, 4 and 5 of the module docstring): ``(N,)``
    ``"brightness"``, ``"gain"``, ``"illuminant"`` (int32), ``"blur_sigma"`` and ``(N, 3)``
    ``"cast"``. ``cfg`` and ``log_weights`` as :func:`condition_numbers` gives them."""
    k_bright, k_cast, k_blur, k_sigma = jax.random.split(key, 4)
    log_low, log_high = cfg["log_brightness"]
    brightness = jnp.exp(jax.random.uniform(k_bright, (n,), minval=log_low, maxval=log_high))
    # exp(log(x)) may round past the ends of the range.
    brightness = jnp.clip(brightness, cfg["brightness"][0], cfg["brightness"][1])
    gain = jnp.clip(cfg["target_exposure"] / brightness, 1.0, cfg["max_gain"])
    illuminant = jax.random.categorical(k_cast, log_weights, shape=(n,)).astype(jnp.int32)
    blurred = jax.random.uniform(k_blur, (n,)) < cfg["blur_probability"]
    low, high = cfg["blur_sigma"]
    sigma = jnp.where(blurred, jax.random.uniform(k_sigma, (n,), minval=low, maxval=high), 0.0)
    return {
        "brightness": brightness,
        "gain": gain,
        "illuminant": illuminant,
        "cast": jnp.asarray(ILLUMINANT_CASTS, jnp.float32)[illuminant],
        "blur_sigma": sigma,
    }


def noise_variance(cfg: dict[str, jax.Array], level: jax.Array, gain: jax.Array) -> jax.Array:
    """Step 3's noise variance ``a g y + (read_noise g)**2`` at recorded level ``y``."""
    return cfg["shot_noise"] * gain * jnp.maximum(level, 0.0) + (cfg["read_noise"] * gain) ** 2


def recorded_conditions(cfg: dict[str, jax.Array], draws: dict[str, jax.Array]) -> dict:
    """What :func:`capture_mixed` records per image (its Returns), from the draws."""
    brightness, gain = draws["brightness"], draws["gain"]
    mid_grey_std = jnp.sqrt(noise_variance(cfg, 0.5 * brightness, gain))
    return {
        "brightness": brightness,
        "gain": gain,
        "noise_std": mid_grey_std,
        "relative_noise": mid_grey_std / (0.5 * brightness),
        "illuminant": draws["illuminant"],
        "blur_sigma": draws["blur_sigma"],
    }


@partial(jax.jit, static_argnames=("radius",))
def _capture_mixed(
    key: jax.Array,
    images: jax.Array,
    cfg: dict[str, jax.Array],
    log_weights: jax.Array,
    radius: int,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    draw_key, noise_key = jax.random.split(key)
    draws = draw_conditions(draw_key, images.shape[0], cfg, log_weights)
    signal = gaussian_blur(images, draws["blur_sigma"], radius) if radius else images
    cast = draws["cast"].astype(images.dtype)
    signal = signal * cast[:, None, None, :] * draws["brightness"][:, None, None, None]
    std = jnp.sqrt(noise_variance(cfg, signal, draws["gain"][:, None, None, None]))
    noisy = signal + std * jax.random.normal(noise_key, images.shape, images.dtype)
    return jnp.clip(noisy, 0.0, 1.0), recorded_conditions(cfg, draws)


def gaussian_blur(images: jax.Array, sigma: jax.Array, radius: int) -> jax.Array:
    """Separable Gaussian blur with a per-image standard deviation, replicating edges.

    Args:
      images: ``(N, H, W, C)`` float.
      sigma: ``(N,)`` standard deviations in pixels, >= 0; 0 leaves the image unchanged.
      radius: half-width of the kernel in pixels (static); ``3 * max(sigma)`` keeps 99.7 %.

    Returns:
      ``(N, H, W, C)``.
    """
    taps = jnp.arange(-radius, radius + 1, dtype=images.dtype)
    safe = jnp.maximum(sigma, 1e-6)[:, None]
    weights = jnp.where(sigma[:, None] > 0, jnp.exp(-0.5 * (taps / safe) ** 2), taps == 0)
    weights = weights / weights.sum(axis=1, keepdims=True)  # (N, 2 radius + 1)
    _, h, w, _ = images.shape
    padded = jnp.pad(images, ((0, 0), (radius, radius), (0, 0), (0, 0)), mode="edge")
    rows = sum(
        weights[:, i, None, None, None] * padded[:, i : i + h] for i in range(2 * radius + 1)
    )
    padded = jnp.pad(rows, ((0, 0), (0, 0), (radius, radius), (0, 0)), mode="edge")
    return sum(
        weights[:, i, None, None, None] * padded[:, :, i : i + w] for i in range(2 * radius + 1)
    )


def condition_bins(conditions: dict[str, Any]) -> dict[str, np.ndarray]:
    """Group images by their recorded conditions (from :func:`capture_mixed`).

    Returns ``{kind: (N,) array of labels}`` for the kinds of :data:`BIN_LABELS`:

    * ``"darkness"``: ``"very dark"`` (B < 0.05), ``"dark"`` (0.05-0.2), ``"dim"`` (0.2-0.5),
      ``"bright"`` (B >= 0.5);
    * ``"noise"``, by gain: ``"low"`` (g < 2), ``"mid"`` (2-8), ``"high"`` (g >= 8);
    * ``"cast"``: the illuminant's name;
    * ``"blur"``: ``"sharp"`` or ``"blurred"``.
    """
    brightness = np.asarray(conditions["brightness"], np.float64)
    gain = np.asarray(conditions["gain"], np.float64)
    names = np.asarray(ILLUMINANTS, dtype=object)
    return {
        "darkness": _bin(brightness, DARKNESS_BINS),
        "noise": _bin(gain, NOISE_BINS),
        "cast": names[np.asarray(conditions["illuminant"], np.int64)],
        "blur": np.where(np.asarray(conditions["blur_sigma"]) > 0, "blurred", "sharp").astype(
            object
        ),
    }


def _bin(values: np.ndarray, edges: tuple[tuple[str, float], ...]) -> np.ndarray:
    """The label of the first ``(label, upper)`` with ``value < upper``, per value."""
    uppers = np.asarray([upper for _, upper in edges])
    labels = np.asarray([label for label, _ in edges], dtype=object)
    return labels[np.searchsorted(uppers, values, side="right")]
