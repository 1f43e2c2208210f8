"""The CenterNet detector: shapes, size, target encoding, decoding, NMS, loss, overfitting."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from diffisp.errors import InputError
from diffisp.models.classifier import count_params, recalibrate_batch_norm
from diffisp.models.detection import DETECT
from diffisp.models.detection_loss import detection_loss, encode_targets, gaussian_radius
from diffisp.models.detector import DetectorOutput, SmallCenterNet, box_iou, class_nms, decode
from diffisp.models.evaluate import evaluate, predict
from diffisp.models.task import TASKS

NUM_CLASSES = 6

# One image with objects at the borders and in the middle, one with padding only.
BOXES = np.zeros((2, 4, 4), np.float32)
LABELS = np.full((2, 4), -1, np.int32)
BOXES[0, :3] = [[0, 0, 9, 7], [10, 12, 30, 40], [50, 44, 64, 64]]
LABELS[0, :3] = [0, 2, 5]
TARGETS = {"boxes": jnp.asarray(BOXES), "labels": jnp.asarray(LABELS)}


def _images(n: int = 2, size: int = 64, channels: int = 3, seed: int = 0) -> jax.Array:
    # NumPy's generator: an eager jax.random call compiles its kernel for each new shape.
    rng = np.random.default_rng(seed)
    return jnp.asarray(rng.uniform(size=(n, size, size, channels)), jnp.float32)


def _encode(boxes=BOXES, labels=LABELS, difficult=None):
    return encode_targets(
        jnp.asarray(boxes),
        jnp.asarray(labels),
        difficult,
        grid=(16, 16),
        stride=4,
        num_classes=NUM_CLASSES,
    )


@pytest.fixture(scope="module")
def model() -> SmallCenterNet:
    """One initialised detector for the module; tests that change it work on a clone.

    Initialised from an "rbg" key: eager initialisation compiles the random kernel for every
    parameter shape, and threefry's (the default) takes twice as long to compile here.
    """
    return SmallCenterNet(NUM_CLASSES, rngs=nnx.Rngs(jax.random.key(0, impl="rbg")))


def _abstract(**kwargs) -> SmallCenterNet:
    return nnx.eval_shape(lambda: SmallCenterNet(rngs=nnx.Rngs(0), **kwargs))


def test_parameter_count(model):
    assert count_params(model) == 417_754
    # Each class adds a 64 -> 1 prediction (64 weights + 1 bias); packed RAW one stem input
    # channel (3 x 3 x 16 weights).
    assert count_params(_abstract(num_classes=NUM_CLASSES + 1)) == 417_754 + 65
    assert count_params(_abstract(num_classes=NUM_CLASSES, in_channels=4)) == 417_754 + 144
    assert len(model.norms) == 9


def test_output_shapes_for_images_and_packed_raw(model):
    out = nnx.eval_shape(lambda m, x: m(x), model, _images(2, 64))
    assert out.heatmap.shape == (2, 16, 16, NUM_CLASSES)
    assert out.size.shape == out.offset.shape == (2, 16, 16, 2)
    # Heatmap logits start at the 0.1 prior.
    bias = np.asarray(model.predict.linear.bias[...])
    np.testing.assert_allclose(jax.nn.sigmoid(bias[:NUM_CLASSES]), 0.1, atol=1e-3)
    shape = lambda m, x: nnx.eval_shape(lambda m, x: m(x), m, x).heatmap.shape  # noqa: E731
    assert shape(model, _images(1, 32)) == (1, 8, 8, NUM_CLASSES)
    # Packed RAW at half resolution lands on the same stride-4 grid of the full image.
    raw = _abstract(num_classes=NUM_CLASSES, in_channels=4)
    assert shape(raw, _images(2, 32, channels=4)) == (2, 16, 16, NUM_CLASSES)
    with pytest.raises(InputError, match="multiples of 16"):
        shape(model, _images(1, 40))


def test_gaussian_radius_matches_centernet():
    # CenterNet's gaussian_radius((h, w), 0.7), as published (NumPy), for a few box sizes.
    def reference(h, w, m=0.7):
        r1 = ((h + w) + np.sqrt((h + w) ** 2 - 4 * w * h * (1 - m) / (1 + m))) / 2
        r2 = (2 * (h + w) + np.sqrt(4 * (h + w) ** 2 - 16 * (1 - m) * w * h)) / 2
        b3, c3 = -2 * m * (h + w), (m - 1) * w * h
        r3 = (b3 + np.sqrt(b3**2 - 16 * m * c3)) / 2
        return min(r1, r2, r3)

    for w, h in [(5.0, 7.0), (1.0, 1.0), (16.0, 4.0), (2.25, 1.75)]:
        assert float(gaussian_radius(jnp.float32(w), jnp.float32(h))) == pytest.approx(
            reference(h, w), rel=1e-5
        )
    assert float(gaussian_radius(jnp.float32(5.0), jnp.float32(7.0))) == pytest.approx(
        1.5980, abs=1e-4
    )


def test_target_encoding():
    t = _encode()
    heat = np.asarray(t.heatmap)
    # The 20 x 28 box (10, 12, 30, 40): centre (20, 26) px = (5, 6.5) cells -> cell x 5, y 6.
    assert heat[0, 6, 5, 2] == 1.0
    assert int(t.index[0, 1]) == 6 * 16 + 5
    np.testing.assert_allclose(t.size[0, 1], [20 / 4, 28 / 4])
    np.testing.assert_allclose(t.offset[0, 1], [0.0, 0.5])
    # Its radius is floor(1.60) = 1: a 3 x 3 window, sigma 0.5; neighbours at exp(-1 / 0.5).
    np.testing.assert_allclose(heat[0, 6, 4, 2], np.exp(-2.0), rtol=1e-6)
    np.testing.assert_allclose(heat[0, 5, 4, 2], np.exp(-4.0), rtol=1e-6)
    assert heat[0, 6, 7, 2] == 0.0 and heat[0, 8, 5, 2] == 0.0
    # Border boxes peak at their cells: (4.5, 3.5) px -> (1, 0); (57, 54) px -> (14, 13).
    assert heat[0, 0, 1, 0] == 1.0 and heat[0, 13, 14, 5] == 1.0
    # One peak per object, on its class only; nothing for padding or the empty image.
    assert (heat == 1.0).sum() == 3 and heat[..., [1, 3, 4]].max() == 0.0
    assert heat[1].max() == 0.0
    np.testing.assert_array_equal(t.mask, [[1, 1, 1, 0], [0, 0, 0, 0]])
    assert float(t.weight.min()) == 1.0


def test_difficult_objects_are_masked_out():
    difficult = jnp.array([[False, True, False, False], [False] * 4])
    t = _encode(difficult=difficult)
    assert float(t.heatmap[0, ..., 2].max()) == 0.0  # no Gaussian for the difficult object
    assert float(t.mask[0, 1]) == 0.0 and float(t.mask[0, 0]) == 1.0
    weight = np.asarray(t.weight[0, ..., 2])
    assert weight[5:8, 4:7].max() == 0.0 and weight.sum() == 16 * 16 - 9  # its 3x3 window
    # So the loss does not depend on what the model predicts there.
    rng = np.random.default_rng(0)
    out = DetectorOutput(
        *(jnp.asarray(rng.normal(size=(2, 16, 16, d)), jnp.float32) for d in (NUM_CLASSES, 2, 2))
    )
    targets = TARGETS | {"difficult": difficult}
    changed = out._replace(heatmap=out.heatmap.at[0, 5:8, 4:7, 2].set(5.0))
    base = detection_loss(out, targets, stride=4)[0]
    assert float(detection_loss(changed, targets, stride=4)[0]) == pytest.approx(float(base))
    plain = detection_loss(out, TARGETS, stride=4)[0]  # without the flag, the change counts
    assert abs(float(detection_loss(changed, TARGETS, stride=4)[0]) - float(plain)) > 1.0


def test_decoding_the_encoded_targets_recovers_the_boxes():
    t = _encode()
    logits = jnp.log(t.heatmap) - jnp.log1p(-jnp.minimum(t.heatmap, 1 - 1e-6))
    rows = jnp.arange(2)[:, None]
    size = jnp.zeros((2, 256, 2)).at[rows, t.index].set(t.size * t.mask[..., None])
    offset = jnp.zeros((2, 256, 2)).at[rows, t.index].set(t.offset * t.mask[..., None])
    out = DetectorOutput(logits, size.reshape(2, 16, 16, 2), offset.reshape(2, 16, 16, 2))
    dets = jax.jit(lambda out: decode(out, stride=4, top_k=20))(out)
    assert dets.boxes.shape == (2, 20, 4) and dets.valid.shape == (2, 20)
    confident = np.asarray(dets.valid & (dets.scores > 0.5))
    assert confident[1].sum() == 0
    found = np.asarray(dets.boxes[0])[confident[0]]
    order = np.argsort(np.asarray(dets.classes[0])[confident[0]])
    np.testing.assert_allclose(found[order], BOXES[0, :3], atol=1e-4)
    np.testing.assert_array_equal(np.asarray(dets.classes[0])[confident[0]][order], [0, 2, 5])


def test_nms_removes_a_duplicate_and_keeps_other_classes():
    boxes = jnp.array([[[10, 10, 30, 30], [11, 10, 31, 30], [11, 10, 31, 30], [30, 30, 50, 50]]])
    scores = jnp.array([[0.6, 0.9, 0.8, 0.7]])
    classes = jnp.array([[1, 1, 2, 1]])
    valid = jnp.ones((1, 4), bool)
    assert float(box_iou(boxes, boxes)[0, 0, 1]) == pytest.approx(380 / 420)
    keep = class_nms(boxes, scores, classes, valid, iou_threshold=0.5)
    # The 0.6 duplicate of the 0.9 box goes; the class-2 copy and the distant box stay.
    np.testing.assert_array_equal(keep, [[False, True, True, True]])
    # An invalid box suppresses nothing; a threshold above the IoU keeps both.
    keep = class_nms(boxes, scores, classes, valid.at[0, 1].set(False), iou_threshold=0.5)
    np.testing.assert_array_equal(keep, [[True, False, True, True]])
    assert bool(class_nms(boxes, scores, classes, valid, iou_threshold=0.95).all())


def test_loss_and_gradients_are_finite_with_empty_images_and_border_boxes(model):
    model = nnx.clone(model)
    model.train()
    empty = {"boxes": jnp.zeros((2, 4, 4)), "labels": jnp.full((2, 4), -1, jnp.int32)}

    @nnx.jit
    def loss_and_grads(model, images, targets):
        loss_fn = lambda m: DETECT.loss(m, images, targets)  # noqa: E731
        return nnx.value_and_grad(loss_fn, has_aux=True)(model)

    for targets in (TARGETS, empty):
        (loss, sums), grads = loss_and_grads(model, _images(), targets)
        assert np.isfinite(float(loss)) and float(loss) > 0
        assert all(bool(jnp.isfinite(g).all()) for g in jax.tree.leaves(grads))
        assert set(sums) == {"heatmap_loss", "size_loss", "offset_loss", "centres_found", "objects"}
    assert int(sums["objects"]) == 0 and DETECT.train_score(sums, 2) == 0.0


def test_compiled_predictions_are_batch_invariant_and_evaluate(model):
    x = _images(3)
    whole = predict(model, x, task=DETECT)  # jitted, eval mode, padded chunks
    assert whole.boxes.shape == (3, 100, 4) and whole.classes.dtype == np.int32
    # Image 1's detections do not depend on the images beside it.
    other = predict(model, x.at[0].set(_images(1, seed=5)[0]).at[2].set(0.5), task=DETECT)
    for a, b in zip(other, whole, strict=True):
        np.testing.assert_allclose(a[1], b[1], atol=1e-5)
    # Boxes lie in the image; NMS left no same-class pair above its IoU threshold.
    assert float(whole.boxes.min()) >= 0 and float(whole.boxes.max()) <= 64
    kept = np.asarray(whole.valid[0])
    iou = np.asarray(box_iou(whole.boxes[0], whole.boxes[0]))[np.ix_(kept, kept)]
    same = np.equal.outer(*[np.asarray(whole.classes[0])[kept]] * 2)
    assert not ((iou > 0.5) & same & ~np.eye(kept.sum(), dtype=bool)).any()

    assert TASKS["detect"] is DETECT and DETECT.headline == "map50"
    metrics = evaluate(
        model, _images(3), jax.tree.map(lambda a: a[:1].repeat(3, 0), TARGETS), task=DETECT
    )
    assert metrics["num_samples"] == 3 and 0.0 <= metrics["map50"] <= 1.0


@pytest.mark.slow
def test_overfits_eight_scenes():
    """~35 s here (two compilations): 60 full-batch Adam steps on 8 generated 64x64 scenes."""
    from diffisp.data.scenes import load_scenes

    data = load_scenes(num_train=8, num_test=1, image_size=64, seed=0)
    x = jnp.asarray(data.train_images)
    targets = {"boxes": jnp.asarray(data.train_boxes), "labels": jnp.asarray(data.train_labels)}
    model = DETECT.build_model(data.num_classes, rngs=nnx.Rngs(0))
    model.train()
    optimizer = nnx.Optimizer(model, optax.adam(3e-3), wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer):
        loss_fn = lambda m: DETECT.loss(m, x, targets)  # noqa: E731
        (loss, sums), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
        optimizer.update(model, grads)
        return loss, sums

    losses = [float(step(model, optimizer)[0]) for _ in range(60)]
    _, sums = step(model, optimizer)
    assert losses[-1] < losses[0] / 10
    assert DETECT.train_score(sums, 8) > 0.9
    recalibrate_batch_norm(model, x)
    assert evaluate(model, x, targets, task=DETECT)["map50"] > 0.8
