"""A user's PyTorch detector with a CenterNet head: maps, labelled and label-free losses."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffisp.errors import ConfigError
from diffisp.models.detection_loss import detection_loss, focal_loss
from diffisp.models.detector import DetectorOutput
from diffisp.models.external import from_torch
from diffisp.models.external_tasks import (
    CenterNetConsistency,
    ExternalCenterNet,
    centernet_maps,
)

torch = pytest.importorskip("torch")
pytest.importorskip("torchax")

CLASSES, SIZE = 3, 32


def _targets():
    boxes = np.array([[[4, 4, 20, 18], [10, 12, 30, 30]], [[0, 0, 8, 8], [0, 0, 0, 0]]], "f4")
    labels = np.array([[0, 2], [1, -1]], "i4")
    return {"boxes": jnp.asarray(boxes), "labels": jnp.asarray(labels)}


@pytest.fixture(scope="module")
def detector():
    from diffisp.models.torch_reference import centernet_resnet

    torch.manual_seed(0)
    return from_torch(centernet_resnet(CLASSES), sample_size=(SIZE, SIZE))


def _images(n=2, seed=0):
    return jnp.asarray(np.random.default_rng(seed).random((n, SIZE, SIZE, 3), dtype=np.float32))


def test_centernet_maps_split_the_channels_in_either_layout():
    nchw = jnp.arange(2 * 7 * 4 * 5, dtype=jnp.float32).reshape(2, 7, 4, 5)
    maps = centernet_maps(nchw, layout="NCHW")
    assert maps.heatmap.shape == (2, 4, 5, 3) and maps.size.shape == maps.offset.shape
    np.testing.assert_array_equal(maps.size[..., 1], nchw[:, 4])
    np.testing.assert_array_equal(maps.offset[..., 0], nchw[:, 5])
    same = centernet_maps(jnp.transpose(nchw, (0, 2, 3, 1)), layout="NHWC")
    for a, b in zip(maps, same, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    ("shape", "match"), [((2, 4, 8, 8), "C \\+ 4 channels"), ((2, 7, 8), "4-D")]
)
def test_centernet_maps_refuse_what_is_no_centernet_head(shape, match):
    with pytest.raises(ConfigError, match=match):
        centernet_maps(jnp.zeros(shape), layout="NCHW")


def test_the_labelled_loss_is_diffisps_centernet_loss_on_the_users_maps(detector):
    images, targets = _images(), _targets()
    loss, sums = ExternalCenterNet().loss(detector, images, targets)
    maps = centernet_maps(detector(images), layout="NCHW")
    assert SIZE // maps.heatmap.shape[1] == 4  # the stride is read off the shapes
    expected, _ = detection_loss(maps, targets, stride=4)
    np.testing.assert_allclose(float(loss), float(expected), rtol=1e-6)
    assert int(sums["objects"]) == 3
    grad = jax.grad(lambda x: ExternalCenterNet().loss(detector, x, targets)[0])(images)
    assert np.isfinite(np.asarray(grad)).all() and float(jnp.abs(grad).sum()) > 0


def test_predictions_are_boxes_in_the_isp_images_pixels(detector):
    detections = ExternalCenterNet(top_k=10).predict(detector, _images())
    assert detections.boxes.shape == (2, 10, 4)
    assert float(detections.boxes.max()) <= SIZE and float(detections.boxes.min()) >= 0


def test_consistency_is_zero_on_the_clean_outputs_and_grows_away_from_them(detector):
    images = _images()
    task = CenterNetConsistency()
    clean = detector(images)
    loss, sums = task.loss(detector, images, clean)
    assert abs(float(loss)) < 1e-5
    assert int(sums["centres_found"]) == int(sums["objects"])
    darker, _ = task.loss(detector, 0.2 * images, clean)
    assert float(darker) > 1e-3
    grad = jax.grad(lambda x: task.loss(detector, x, clean)[0])(0.2 * images)
    assert np.isfinite(np.asarray(grad)).all() and float(jnp.abs(grad).sum()) > 0


def test_consistency_refuses_targets_of_another_shape(detector):
    clean = detector(_images())
    with pytest.raises(ConfigError, match="differ"):
        CenterNetConsistency().loss(detector, _images(), clean[:, :, :4])


def test_the_pytorch_training_loss_is_diffisps_focal_loss():
    from diffisp.models.torch_reference import _focal

    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 8, 8, 3)).astype("f4")
    heat = rng.random((2, 8, 8, 3)).astype("f4") * 0.9
    heat[0, 2, 3, 1] = heat[1, 5, 5, 0] = 1.0
    weight = (rng.random((2, 8, 8, 3)) > 0.1).astype("f4")
    ours = focal_loss(jnp.asarray(logits), jnp.asarray(heat), jnp.asarray(weight))
    theirs = _focal(*(torch.tensor(a) for a in (logits, heat, weight)))
    np.testing.assert_allclose(float(theirs), float(ours), rtol=1e-5)


@pytest.mark.slow  # 27 s of PyTorch training on 2 cores
def test_train_detector_lowers_the_loss_and_saves_weights(tmp_path):
    from diffisp.data.detection_loader import load_detection
    from diffisp.data.spec import DataSpec
    from diffisp.models.torch_reference import centernet_resnet, train_detector

    ds = load_detection(DataSpec.parse("scenes"), num_train=64, num_test=8, seed=0, image_size=SIZE)
    images, boxes, labels = ds.train_images, ds.train_boxes, ds.train_labels
    module = centernet_resnet()
    model = lambda m: from_torch(m, sample_size=(SIZE, SIZE))  # noqa: E731
    targets = {"boxes": jnp.asarray(boxes[:16]), "labels": jnp.asarray(labels[:16])}
    x = jnp.asarray(images[:16])
    before = float(ExternalCenterNet().loss(model(module), x, targets)[0])
    train_detector(module, images, boxes, labels, epochs=3, batch_size=16, save=tmp_path / "d.pt")
    after = float(ExternalCenterNet().loss(model(module), x, targets)[0])
    assert after < before and (tmp_path / "d.pt").stat().st_size > 0


def test_detector_output_is_a_named_tuple_of_maps(detector):
    maps = ExternalCenterNet().maps(detector, _images())
    assert isinstance(maps, DetectorOutput) and maps.heatmap.shape[-1] == CLASSES
