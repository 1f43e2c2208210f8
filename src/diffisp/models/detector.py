"""A compact CenterNet-style detector, and its decoding (peaks, top-K, class-wise NMS) in JAX.

The model follows Zhou et al. 2019, "Objects as Points": every object is the peak of a
per-class heatmap at its box centre on a grid of stride 4, with the box size and the centre's
sub-cell offset regressed at that cell. No anchors; decoding keeps the 3x3 local maxima of the
heatmap and the top K of them. A real class-wise NMS runs after that (CenterNet's paper has
none; here it removes the duplicate peaks two neighbouring cells can give a large object).

Coordinates are those of :mod:`diffisp.data.boxes`: xyxy, continuous pixels, right/bottom
edges exclusive, in the frame of the (letterboxed) image.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from diffisp.errors import InputError
from diffisp.models.classifier import conv_im2col

BACKBONE_WIDTHS = (16, 32, 64, 128)  # at strides 2, 4, 8, 16 of the image
NECK_WIDTH = 64
OUTPUT_STRIDE = 4  # image pixels per heatmap cell
# Heatmap logit bias at init: sigmoid(-2.19) = 0.1, CenterNet's (and RetinaNet's) prior, so the
# many background cells do not swamp the focal loss in the first steps.
HEATMAP_PRIOR_BIAS = -2.19


class ConvBN(nnx.Module):
    """3x3 convolution (no bias: batch norm has one), batch norm, ReLU, through ``conv_im2col``."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, *, rngs: nnx.Rngs):
        self.conv = nnx.Conv(
            in_channels, out_channels, (3, 3), strides=(stride, stride), use_bias=False, rngs=rngs
        )
        self.norm = nnx.BatchNorm(out_channels, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.conv.kernel[...]
        zero = jnp.zeros(kernel.shape[-1], kernel.dtype)
        return nnx.relu(self.norm(conv_im2col(x, kernel, zero, self.conv.strides)))


class Projection(nnx.Module):
    """1x1 convolution with bias (an FPN lateral, or a prediction layer)."""

    def __init__(self, in_channels: int, out_channels: int, *, rngs: nnx.Rngs):
        self.linear = nnx.Linear(in_channels, out_channels, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.linear(x)


class DetectorOutput(NamedTuple):
    """Raw maps on the ``(Ho, Wo)`` grid, ``Ho = H * input_stride / 4``.

    ``heatmap``: ``(N, Ho, Wo, C)`` logits; ``size``: ``(N, Ho, Wo, 2)`` box ``(w, h)`` in grid
    cells; ``offset``: ``(N, Ho, Wo, 2)`` centre ``(x, y)`` minus its cell's corner, in cells.
    """

    heatmap: jax.Array
    size: jax.Array
    offset: jax.Array


class SmallCenterNet(nnx.Module):
    """A small CenterNet: 7 conv/BN/ReLU blocks down to stride 16, an FPN-lite path back up to
    stride 4, and one shared 3x3 head with a 1x1 prediction of ``C`` heatmap logits, the box
    size and the centre offset.

    Backbone (widths 16, 32, 64, 128): a stride-2 block to stride 2, then at strides 4, 8 and 16
    a stride-2 block followed by a stride-1 block. Neck (width 64): 1x1 laterals from strides
    16, 8 and 4, nearest-neighbour 2x upsampling and addition, a 3x3 block at stride 8 and at
    stride 4. Head: 3x3 conv + ReLU (no batch norm), then a 1x1 to ``C + 4`` channels, the
    heatmap logits starting at ``HEATMAP_PRIOR_BIAS``. All convolutions run as
    :func:`~diffisp.models.classifier.conv_im2col` matmuls.

    With 3 input channels and 6 classes it has 417,754 parameters (``count_params``): 364,464
    in the nine 3x3 block convolutions, 1,184 batch-norm scales and biases, 14,528 in the
    laterals and 37,578 in the head (36,928 in its 3x3, 650 in the prediction). Each extra class
    adds 65, a 4-channel input 144. ``model.norms`` lists its 9 batch-norm layers (for
    :func:`~diffisp.models.classifier.recalibrate_batch_norm`).

    ``in_channels=4`` means packed RAW (:func:`diffisp.ops.raw.pack_bayer`), at half the
    image's resolution: ``input_stride`` (default 2 for 4 channels, else 1) says how many image
    pixels one input pixel spans, and the first block then keeps the resolution, so the outputs
    are on the same stride-4 grid of the image either way.

    Input ``(N, H, W, in_channels)`` with ``H`` and ``W`` multiples of ``16 / input_stride`` ->
    :class:`DetectorOutput` on the ``(H * input_stride / 4, W * input_stride / 4)`` grid.
    """

    stride: int = OUTPUT_STRIDE

    def __init__(
        self,
        num_classes: int,
        *,
        rngs: nnx.Rngs,
        in_channels: int = 3,
        input_stride: int | None = None,
    ) -> None:
        self.num_classes = num_classes
        self.input_stride = input_stride or (2 if in_channels == 4 else 1)
        if self.input_stride not in (1, 2):
            raise InputError(f"input_stride must be 1 or 2; got {self.input_stride}")
        w1, w2, w3, w4 = BACKBONE_WIDTHS
        self.stem = ConvBN(in_channels, w1, 2 // self.input_stride, rngs=rngs)
        self.down4 = nnx.List([ConvBN(w1, w2, 2, rngs=rngs), ConvBN(w2, w2, 1, rngs=rngs)])
        self.down8 = nnx.List([ConvBN(w2, w3, 2, rngs=rngs), ConvBN(w3, w3, 1, rngs=rngs)])
        self.down16 = nnx.List([ConvBN(w3, w4, 2, rngs=rngs), ConvBN(w4, w4, 1, rngs=rngs)])
        self.lateral16 = Projection(w4, NECK_WIDTH, rngs=rngs)
        self.lateral8 = Projection(w3, NECK_WIDTH, rngs=rngs)
        self.lateral4 = Projection(w2, NECK_WIDTH, rngs=rngs)
        self.merge8 = ConvBN(NECK_WIDTH, NECK_WIDTH, 1, rngs=rngs)
        self.merge4 = ConvBN(NECK_WIDTH, NECK_WIDTH, 1, rngs=rngs)
        self.head = nnx.Conv(NECK_WIDTH, NECK_WIDTH, (3, 3), rngs=rngs)
        self.predict = Projection(NECK_WIDTH, num_classes + 4, rngs=rngs)
        bias = self.predict.linear.bias
        bias[...] = bias[...].at[:num_classes].set(HEATMAP_PRIOR_BIAS)

    @property
    def norms(self) -> list[nnx.BatchNorm]:
        """Every batch-norm layer, in forward order."""
        blocks = [self.stem, *self.down4, *self.down8, *self.down16, self.merge8, self.merge4]
        return [block.norm for block in blocks]

    def __call__(self, images: jax.Array) -> DetectorOutput:
        multiple = 16 // self.input_stride
        if images.ndim != 4 or images.shape[1] % multiple or images.shape[2] % multiple:
            raise InputError(
                f"images must be (N, H, W, C) with H and W multiples of {multiple}; got "
                f"{tuple(images.shape)}"
            )
        c2 = self.stem(images)
        c4 = self.down4[1](self.down4[0](c2))
        c8 = self.down8[1](self.down8[0](c4))
        c16 = self.down16[1](self.down16[0](c8))
        p8 = self.merge8(_upsample2(self.lateral16(c16)) + self.lateral8(c8))
        p4 = self.merge4(_upsample2(p8) + self.lateral4(c4))
        head = nnx.relu(conv_im2col(p4, self.head.kernel[...], self.head.bias[...]))
        out = self.predict(head)
        c = self.num_classes
        return DetectorOutput(out[..., :c], out[..., c : c + 2], out[..., c + 2 :])


def _upsample2(x: jax.Array) -> jax.Array:
    return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


class Detections(NamedTuple):
    """Fixed-size decoded detections, ``K`` per image in descending score order.

    ``boxes``: ``(N, K, 4)`` float32 xyxy image pixels; ``scores``: ``(N, K)`` in [0, 1];
    ``classes``: ``(N, K)`` int32; ``valid``: ``(N, K)`` bool, False for slots under the score
    threshold or removed by NMS (their other entries are meaningless).
    """

    boxes: jax.Array
    scores: jax.Array
    classes: jax.Array
    valid: jax.Array


def decode(
    output: DetectorOutput,
    *,
    stride: int = OUTPUT_STRIDE,
    top_k: int = 100,
    nms_iou: float = 0.5,
    min_score: float = 0.001,
) -> Detections:
    """CenterNet decoding: 3x3 max-pool peaks, top ``K``, boxes, then class-wise NMS.

    A cell is a peak when its score equals the maximum of its 3x3 neighbourhood (same class).
    The top ``K = min(top_k, Ho * Wo * C)`` peaks over all cells and classes become boxes
    centred at ``(cell + offset) * stride`` of size ``max(size, 0) * stride``, clipped to the
    ``(Ho * stride, Wo * stride)`` image. Peaks scoring ``<= min_score`` are invalid; the rest
    go through :func:`class_nms` at ``nms_iou``. Jittable; differentiable nowhere useful.
    """
    heat = jax.nn.sigmoid(output.heatmap)
    n, ho, wo, c = heat.shape
    neighbourhood = jax.lax.reduce_window(
        heat, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, 1, 1, 1), "SAME"
    )
    peaks = jnp.where(heat == neighbourhood, heat, 0.0).reshape(n, -1)
    scores, index = jax.lax.top_k(peaks, min(top_k, ho * wo * c))
    classes = (index % c).astype(jnp.int32)
    cell = index // c
    size = jnp.take_along_axis(output.size.reshape(n, -1, 2), cell[..., None], axis=1)
    offset = jnp.take_along_axis(output.offset.reshape(n, -1, 2), cell[..., None], axis=1)
    corner = jnp.stack([cell % wo, cell // wo], axis=-1).astype(heat.dtype)
    centre = (corner + offset) * stride
    half = jnp.maximum(size, 0.0) * stride / 2
    limit = jnp.array([wo * stride, ho * stride], heat.dtype)
    boxes = jnp.concatenate(
        [jnp.clip(centre - half, 0.0, limit), jnp.clip(centre + half, 0.0, limit)], axis=-1
    )
    valid = class_nms(boxes, scores, classes, scores > min_score, iou_threshold=nms_iou)
    return Detections(boxes, scores, classes, valid)


def box_iou(a: jax.Array, b: jax.Array) -> jax.Array:
    """IoU of every pair: ``(..., K, 4)`` and ``(..., L, 4)`` xyxy -> ``(..., K, L)``; 0 for
    pairs with no area."""
    a, b = a[..., :, None, :], b[..., None, :, :]
    wh = jnp.clip(jnp.minimum(a[..., 2:], b[..., 2:]) - jnp.maximum(a[..., :2], b[..., :2]), 0.0)
    inter = wh[..., 0] * wh[..., 1]
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    union = area_a + area_b - inter
    return jnp.where(union > 0, inter / jnp.where(union > 0, union, 1.0), 0.0)


def class_nms(
    boxes: jax.Array,
    scores: jax.Array,
    classes: jax.Array,
    valid: jax.Array,
    *,
    iou_threshold: float = 0.5,
) -> jax.Array:
    """Greedy class-wise non-maximum suppression with fixed shapes (jittable).

    Visits the valid boxes from the highest score down; a box still kept suppresses every
    lower-scored valid box of its class whose IoU with it exceeds ``iou_threshold`` (the
    classic greedy NMS, as ``torchvision.ops.batched_nms``). ``K`` steps of a ``fori_loop``
    over a precomputed ``(K, K)`` suppression matrix per image.

    Args:
      boxes: ``(N, K, 4)`` xyxy.
      scores: ``(N, K)``.
      classes: ``(N, K)`` int.
      valid: ``(N, K)`` bool; invalid boxes neither survive nor suppress.
      iou_threshold: suppress at IoU strictly above this.

    Returns:
      ``(N, K)`` bool: the boxes that survive, in the input order.
    """
    k = scores.shape[-1]
    order = jnp.argsort(-jnp.where(valid, scores, -jnp.inf), axis=-1, stable=True)
    boxes = jnp.take_along_axis(boxes, order[..., None], axis=1)
    classes = jnp.take_along_axis(classes, order, axis=1)
    keep = jnp.take_along_axis(valid, order, axis=1)
    later = jnp.arange(k)[None, :] > jnp.arange(k)[:, None]
    suppresses = (
        (box_iou(boxes, boxes) > iou_threshold)
        & (classes[..., :, None] == classes[..., None, :])
        & later
    )

    def visit(i, keep):
        return keep & ~(keep[:, i, None] & suppresses[:, i, :])

    keep = jax.lax.fori_loop(0, k, visit, keep)
    inverse = jnp.argsort(order, axis=-1)
    return jnp.take_along_axis(keep, inverse, axis=1)
