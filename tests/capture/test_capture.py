"""The capture protocol: every model, one key per image, the same capture however the images
are grouped; sweep points; mixed conditions in RAW."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffisp.capture.base import capture
from diffisp.capture.low_light import LowLight
from diffisp.capture.mixed import ILLUMINANTS, MixedConditions
from diffisp.capture.raw_camera import RawCamera
from diffisp.capture.raw_capture import RawCapture
from diffisp.capture.unprocess import UnprocessConfig
from diffisp.errors import ConfigError
from diffisp.isp.raw import process_capture

MODELS = {
    "low_light": LowLight(),
    "poisson": LowLight(noise="poisson_gaussian"),
    "mixed": MixedConditions(),
    "raw": RawCamera(),
    "raw_mixed": RawCamera(MixedConditions()),
}


def _images(n: int = 8, size: int = 16) -> jax.Array:
    return jax.random.uniform(jax.random.key(1), (n, size, size, 3))


@pytest.mark.parametrize("name", list(MODELS))
def test_capture_is_the_same_however_images_are_grouped(name):
    model, images, key = MODELS[name], _images(), jax.random.key(0)
    numbers = np.arange(100, 108)
    whole, conditions = capture(model, key, images, numbers)
    halves = [capture(model, key, images[s], numbers[s])[0] for s in (slice(0, 3), slice(3, 8))]
    reordered = capture(model, key, images[::-1], numbers[::-1])[0]
    for got in (jax.tree.map(lambda *a: jnp.concatenate(a), *halves),):
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(whole), strict=True):
            np.testing.assert_allclose(a, b, atol=1e-6)
    for a, b in zip(jax.tree.leaves(reordered), jax.tree.leaves(whole), strict=True):
        np.testing.assert_allclose(a[::-1], b, atol=1e-6)
    assert isinstance(whole, RawCapture) == model.raw
    assert all(np.asarray(v).shape == (8,) for v in conditions.values())
    # Another key gives other captures.
    other = capture(model, jax.random.key(5), images, numbers)[0]
    assert not np.allclose(jax.tree.leaves(other)[0], jax.tree.leaves(whole)[0])


def test_bins_only_for_models_with_per_image_conditions():
    images = _images()
    for name, model in MODELS.items():
        _, conditions = capture(model, jax.random.key(0), images)
        bins = model.bins(conditions)
        assert (bins is not None) == ("mixed" in name), name
        if bins is not None:
            assert set(bins) == {"darkness", "noise", "cast", "blur"}


@pytest.mark.parametrize("name", list(MODELS))
def test_sweep_points_fix_the_swept_quantity(name):
    model, images = MODELS[name], _images(16)
    point = model.at("brightness", 0.5)
    _, conditions = capture(point, jax.random.key(0), images)
    np.testing.assert_allclose(conditions["brightness"], 0.5, rtol=1e-6)
    assert point.trained_range("brightness") == (0.5, 0.5)
    assert model.at("noise_sigma", 0.0) != model
    with pytest.raises(ValueError, match="unknown sweep"):
        model.at("contrast", 1.0)


def test_raw_mixed_capture_records_the_conditions_and_the_cameras_metadata():
    model = RawCamera(MixedConditions(illuminants=("tungsten",), blur_probability=0.0))
    images = jnp.full((64, 16, 16, 3), 0.5)
    out, conditions = capture(model, jax.random.key(0), images)
    assert out.mosaic.shape == (64, 16, 16) and out.pattern == "RGGB"
    assert set(ILLUMINANTS[i] for i in conditions["illuminant"]) == {"tungsten"}
    gain = conditions["gain"]
    # The metadata's noise is the mixed model's, at each image's gain.
    np.testing.assert_allclose(out.noise[:, 0], 1e-4 * gain, rtol=1e-5)
    np.testing.assert_allclose(out.noise[:, 1], (8e-5 * gain) ** 2, rtol=1e-4)
    # The as-shot white balance is the camera's daylight balance: after it, a grey scene under
    # tungsten stays red (the cast is left for the ISP), brighter the brighter the capture.
    rgb = np.asarray(process_capture(out, tone=False)).mean(axis=(1, 2))
    assert np.all(rgb[:, 0] > rgb[:, 2])


def test_raw_mixed_without_noise_cast_or_blur_is_the_uniform_raw_capture():
    # One fixed brightness, daylight, no blur, no noise: the same linear signal as unprocessing.
    light = MixedConditions(
        brightness=(0.3, 0.3),
        illuminants=("daylight",),
        blur_probability=0.0,
        shot_noise=0.0,
        read_noise=0.0,
    )
    camera = UnprocessConfig(noise=False)
    images = _images(4)
    mixed, _ = capture(RawCamera(light, camera), jax.random.key(0), images)
    uniform, _ = capture(RawCamera(LowLight((0.3, 0.3)), camera), jax.random.key(0), images)
    # Different keys split differently; compare through the pipeline that inverts both.
    a, b = process_capture(mixed, tone=False), process_capture(uniform, tone=False)
    np.testing.assert_allclose(np.asarray(a).mean(), np.asarray(b).mean(), rtol=0.05)


def test_raw_camera_refuses_other_lights():
    with pytest.raises(ConfigError, match="LowLight or MixedConditions"):
        RawCamera(light="dark")
