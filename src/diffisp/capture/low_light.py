"""Low-light capture simulation: darkening plus sensor noise.

The reference model (kept as the default): each image is scaled by its own brightness factor drawn
uniformly from ``[0.1, 0.3]``, Gaussian noise with sigma 0.02 is added, and the result is clipped to
[0, 1]. Real sensors are better described by Poisson-Gaussian noise (photon shot noise, whose
variance grows with the signal, plus signal-independent read noise); that model is available with
``noise="poisson_gaussian"``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass
from typing import Literal

import jax
import jax.numpy as jnp

from diffisp.capture.base import check_sweep_kind
from diffisp.errors import ConfigError
from diffisp.util.checks import check_images, finite_real, positive_range

NoiseModel = Literal["gaussian", "poisson_gaussian"]
# Largest full well the Poisson simulation reproduces faithfully. JAX draws Poisson counts as
# int32 with float32 arithmetic: above 2**31 electrons counts saturate (a white image came out
# at 0.21 with a full well of 1e10), and already from a few million electrons the shot noise's
# spread is wrong (measured std / sqrt(mean): 1.004 at 1e6, 0.977 at 3e6, 0.952 at 1e7).
# Real sensors hold about 1e3 to 1e5 electrons per pixel, large scientific CCDs up to ~1e6.
MAX_FULL_WELL = 1e6


@dataclass(frozen=True)
class LowLight:
    """Parameters of the low-light simulation.

    Attributes:
      brightness: ``(low, high)`` range of the per-image brightness factor,
        ``0 < low <= high <= 1``. Use ``(b, b)`` for a fixed darkening (e.g. in a sweep).
      noise_sigma: standard deviation of the additive Gaussian (read) noise, >= 0, in [0, 1] units.
      noise: ``"gaussian"`` (the reference model) or ``"poisson_gaussian"`` (shot + read noise).
      full_well: photo-electrons that a full-scale (1.0) pixel collects, in
        ``(0, MAX_FULL_WELL]``; only for ``"poisson_gaussian"``: the darkened signal ``s`` becomes
        ``Poisson(s * full_well) / full_well``, so shot noise has standard deviation
        ``sqrt(s / full_well)``.
    """

    brightness: tuple[float, float] = (0.1, 0.3)
    noise_sigma: float = 0.02
    noise: NoiseModel = "gaussian"
    full_well: float = 1000.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "brightness", positive_range("brightness", self.brightness, 1.0))
        sigma = finite_real(self.noise_sigma)
        if sigma is None or not 0.0 <= sigma <= 1.0:
            raise ConfigError(f"noise_sigma must be in [0, 1]; got {self.noise_sigma!r}")
        if self.noise not in ("gaussian", "poisson_gaussian"):
            raise ConfigError(f"noise must be 'gaussian' or 'poisson_gaussian'; got {self.noise!r}")
        full_well = finite_real(self.full_well)
        if full_well is None or not 0 < full_well <= MAX_FULL_WELL:
            raise ConfigError(
                f"full_well must be a number of electrons in (0, {MAX_FULL_WELL:.0e}] (real "
                f"sensors: 1e3 to 1e5; larger ones are not simulated faithfully); got "
                f"{self.full_well!r}"
            )

    def to_dict(self) -> dict:
        return asdict(self)

    # The capture protocol (diffisp.capture.base).
    raw = False

    def capture_batch(
        self, key: jax.Array, images: jax.Array
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        dark, factors = _darken(key, images, self)
        return dark, {"brightness": factors}

    def bins(self, conditions: dict) -> None:
        return None  # every image is captured alike: nothing to split results by

    def at(self, kind: str, value: float) -> LowLight:
        """A sweep point: a fixed brightness factor, or a fixed read-noise sigma."""
        if check_sweep_kind(kind) == "brightness":
            return dataclasses.replace(self, brightness=(value, value))
        return dataclasses.replace(self, noise_sigma=value)

    def trained_range(self, kind: str) -> tuple[float, float]:
        if check_sweep_kind(kind) == "brightness":
            return self.brightness
        return (self.noise_sigma, self.noise_sigma)


def darken(
    key: jax.Array, images: jax.Array, config: LowLight = LowLight()
) -> tuple[jax.Array, jax.Array]:
    """Simulate a low-light capture of clean images.

    Deterministic for a given ``key``: the same key, images and config give the same output.

    Args:
      key: a JAX PRNG key.
      images: ``(N, H, W, 3)`` clean images in [0, 1].
      config: the darkening and noise model.

    Returns:
      ``(dark, factors)``: dark images ``(N, H, W, 3)`` in [0, 1] and the brightness factor of
      each image ``(N,)``.
    """
    images = check_images(images)
    return _darken(key, images, config)


def _darken(key: jax.Array, images: jax.Array, config: LowLight) -> tuple[jax.Array, jax.Array]:
    factor_key, shot_key, read_key = jax.random.split(key, 3)
    low, high = config.brightness
    factors = jax.random.uniform(factor_key, (images.shape[0],), minval=low, maxval=high)
    signal = images * factors[:, None, None, None]
    if config.noise == "poisson_gaussian":
        electrons = jax.random.poisson(shot_key, signal * config.full_well)
        signal = electrons.astype(images.dtype) / config.full_well
    noisy = signal + config.noise_sigma * jax.random.normal(read_key, images.shape, images.dtype)
    return jnp.clip(noisy, 0.0, 1.0), factors
