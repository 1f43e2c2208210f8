"""RAW captures under any light: a random camera (:mod:`.unprocess`) behind a capture model.

:class:`RawCamera` composes the light a scene is captured under with the camera that records
it, so every capture model of the sRGB path also exists in RAW:

* **uniform low light** (:class:`~diffisp.capture.low_light.LowLight`): Brooks et al.'s
  unprocessing (:func:`~diffisp.capture.unprocess.unprocess`) darkened by the light's
  brightness range, with the paper's per-image sensor noise (shot noise log-uniform, read noise
  from their fit); the light's own sRGB noise model is not used;
* **mixed conditions** (:class:`~diffisp.capture.mixed.MixedConditions`): what a real camera
  sees. The sRGB image is inverted to linear light (inverse tone and sRGB curves), blurred and
  lit by the drawn illuminant *in linear light* (the cast ``c_L`` is the linear-sRGB colour of
  the illuminant's white relative to D65, so this is where it belongs), then taken to camera
  RGB by the random camera matrix and inverse white balance, darkened by the drawn brightness
  ``B``, mosaicked, and given the mixed model's heteroscedastic noise at the drawn gain ``g``:
  variance ``shot_noise g x + (read_noise g)**2``, recorded in the capture's metadata. The
  recorded as-shot white balance is the camera's daylight balance (its random red and blue
  gains): like a camera on a fixed daylight preset, it leaves the illuminant's cast for the
  ISP to correct.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from diffisp.capture.base import check_sweep_kind
from diffisp.capture.low_light import LowLight
from diffisp.capture.mixed import (
    MixedConditions,
    condition_numbers,
    draw_conditions,
    gaussian_blur,
    recorded_conditions,
)
from diffisp.capture.raw_capture import RawCapture
from diffisp.capture.unprocess import (
    UnprocessConfig,
    linear_to_camera,
    raw_capture,
    sample_camera,
    sensor,
    unprocess,
)
from diffisp.errors import ConfigError
from diffisp.ops import inverse_smoothstep, srgb_decode
from diffisp.util.checks import check_images


@dataclass(frozen=True)
class RawCamera:
    """A RAW capture model: ``light`` (uniform or mixed) recorded by the random ``camera``.

    The camera's own ``brightness`` is replaced by the light's; with mixed light its noise
    ranges are replaced by the light's gain-scaled noise (module docstring).
    """

    light: LowLight | MixedConditions = dataclasses.field(default_factory=LowLight)
    camera: UnprocessConfig = dataclasses.field(default_factory=UnprocessConfig)

    def __post_init__(self) -> None:
        if not isinstance(self.light, (LowLight, MixedConditions)):
            raise ConfigError(
                f"light must be a LowLight or MixedConditions; got {type(self.light).__name__}"
            )
        if not isinstance(self.camera, UnprocessConfig):
            raise ConfigError(f"camera must be an UnprocessConfig; got {self.camera!r}")

    raw = True

    @property
    def mixed(self) -> bool:
        return isinstance(self.light, MixedConditions)

    def capture_batch(
        self, key: jax.Array, images: jax.Array
    ) -> tuple[RawCapture, dict[str, jax.Array]]:
        if self.mixed:
            return capture_raw_mixed(key, images, self.camera, self.light)
        camera = dataclasses.replace(self.camera, brightness=self.light.brightness)
        capture, info = unprocess(key, images, camera)
        conditions = {k: info[k] for k in ("brightness", "shot_noise", "read_noise")}
        return capture, conditions

    def bins(self, conditions: dict[str, np.ndarray]) -> dict[str, np.ndarray] | None:
        return self.light.bins(conditions)

    def at(self, kind: str, value: float) -> RawCamera:
        """A sweep point. Brightness: the light's. Noise, uniform light: the shot-noise standard
        deviation ``value`` at a white sample (shot factor ``value**2``) with the read noise of
        Brooks et al.'s fit, no scatter; mixed light: the light's (its read noise)."""
        if check_sweep_kind(kind) == "brightness" or self.mixed:
            return dataclasses.replace(self, light=self.light.at(kind, value))
        shot = max(float(value) ** 2, 1e-12)
        camera = dataclasses.replace(self.camera, shot_noise=(shot, shot), read_noise_sigma=0.0)
        return dataclasses.replace(self, camera=camera)

    def trained_range(self, kind: str) -> tuple[float, float]:
        if check_sweep_kind(kind) == "brightness" or self.mixed:
            return self.light.trained_range(kind)
        low, high = self.camera.shot_noise
        return (math.sqrt(low), math.sqrt(high))


def capture_raw_mixed(
    key: jax.Array, images: jax.Array, camera: UnprocessConfig, light: MixedConditions
) -> tuple[RawCapture, dict[str, jax.Array]]:
    """RAW captures of sRGB ``images`` ``(N, H, W, 3)`` (even sides) under mixed conditions
    (module docstring). Returns the captures and :func:`~diffisp.capture.mixed.capture_mixed`'s
    recorded conditions."""
    images = check_images(images)
    numbers, log_weights, radius = condition_numbers(light, np.float32)
    return _capture_raw_mixed(key, images.astype(jnp.float32), numbers, log_weights, radius, camera)


@partial(jax.jit, static_argnames=("radius", "camera"))
def _capture_raw_mixed(key, images, numbers, log_weights, radius, camera):
    camera_key, draw_key, noise_key = jax.random.split(key, 3)
    n = images.shape[0]
    draws = draw_conditions(draw_key, n, numbers, log_weights)
    linear = srgb_decode(inverse_smoothstep(images))
    if radius:
        linear = gaussian_blur(linear, draws["blur_sigma"], radius)
    linear = linear * draws["cast"][:, None, None, :]
    gain = draws["gain"]
    drawn = sample_camera(camera_key, n, camera)
    drawn = {
        **drawn,
        "brightness": draws["brightness"],
        "shot_noise": numbers["shot_noise"] * gain,
        "read_noise": (numbers["read_noise"] * gain) ** 2,
    }
    camera_rgb = linear_to_camera(linear, drawn, preserve_highlights=camera.preserve_highlights)
    mosaic = sensor(noise_key, camera_rgb, drawn, camera)
    return raw_capture(mosaic, drawn, camera), recorded_conditions(numbers, draws)
