"""CenterNet training targets, encoded in JAX from padded boxes, and the detection loss.

The targets are built inside the loss, from the same padded arrays a
:class:`~diffisp.data.detection.DetectionDataset` holds (``(N, M, 4)`` xyxy boxes, ``(N, M)``
labels with ``-1`` for padding, optional ``(N, M)`` ``difficult`` flags), so the training step
slices raw boxes out of device-resident data and nothing is precomputed per image size.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from diffisp.models.detector import DetectorOutput

MIN_OVERLAP = 0.7  # CenterNet's Gaussian radius rule: corners this far off keep IoU >= 0.7
SIZE_WEIGHT = 0.1  # CenterNet's loss weights: heatmap 1, size 0.1, offset 1
OFFSET_WEIGHT = 1.0
HIT_SCORE = 0.3  # a centre counts as found (train score) if its cell is a peak above this


class Targets(NamedTuple):
    """Encoded targets of a batch on an ``(Ho, Wo)`` grid of ``C`` classes.

    heatmap: ``(N, Ho, Wo, C)``: per class, the maximum of the objects' Gaussians; exactly 1 at
      each object's centre cell.
    weight: ``(N, Ho, Wo, C)``: 0 inside a difficult object's Gaussian window (its class only)
      except at another object's centre, else 1; weights the heatmap loss.
    index: ``(N, M)`` int32 flat cell ``y * Wo + x`` of each object's centre.
    size: ``(N, M, 2)`` box ``(w, h)`` in grid cells (pixels / stride).
    offset: ``(N, M, 2)`` centre minus its cell's corner, in cells, in [0, 1).
    mask: ``(N, M)`` float: 1 for real, non-difficult objects (regressed), else 0.
    """

    heatmap: jax.Array
    weight: jax.Array
    index: jax.Array
    size: jax.Array
    offset: jax.Array
    mask: jax.Array


def gaussian_radius(width: jax.Array, height: jax.Array) -> jax.Array:
    """CenterNet's radius (from CornerNet's code, kept as published, including its ``/ 2``
    where the quadratic formula has ``/ 2a``) for boxes of ``width x height`` grid cells, at
    :data:`MIN_OVERLAP`; the heatmap uses ``max(0, floor(radius))``."""
    m = MIN_OVERLAP
    b1, c1 = height + width, width * height * (1 - m) / (1 + m)
    r1 = (b1 + jnp.sqrt(b1**2 - 4 * c1)) / 2
    b2, c2 = 2 * (height + width), (1 - m) * width * height
    r2 = (b2 + jnp.sqrt(b2**2 - 16 * c2)) / 2
    b3, c3 = -2 * m * (height + width), (m - 1) * width * height
    r3 = (b3 + jnp.sqrt(b3**2 - 16 * m * c3)) / 2
    return jnp.minimum(jnp.minimum(r1, r2), r3)


def encode_targets(
    boxes: jax.Array,
    labels: jax.Array,
    difficult: jax.Array | None,
    *,
    grid: tuple[int, int],
    stride: int,
    num_classes: int,
) -> Targets:
    """CenterNet targets of padded ``boxes`` (``(N, M, 4)`` xyxy pixels) and ``labels``
    (``(N, M)``, ``-1`` = padding) on a ``grid = (Ho, Wo)`` of ``stride`` pixels per cell.

    Each object's centre ``((x0 + x1) / 2, (y0 + y1) / 2) / stride`` falls in cell
    ``floor(centre)`` (clipped to the grid); its class's heatmap gets a Gaussian there of
    radius ``r = max(0, floor(gaussian_radius(w, h)))`` cells, ``sigma = (2r + 1) / 6``, cut to
    the ``(2r + 1)^2`` window (CenterNet's ``draw_umich_gaussian``). ``difficult`` objects
    (VOC) are left out of the heatmap and the regression, and their window is given weight 0
    so that predicting them is neither rewarded nor penalised. Jittable; no gradients needed.
    """
    ho, wo = grid
    real = labels >= 0
    regressed = real if difficult is None else real & ~difficult
    centre = (boxes[..., :2] + boxes[..., 2:]) / (2 * stride)  # (N, M, 2) in cells
    cell = jnp.clip(jnp.floor(centre), 0, jnp.array([wo - 1, ho - 1], centre.dtype))
    size = (boxes[..., 2:] - boxes[..., :2]) / stride
    radius = jnp.maximum(jnp.floor(gaussian_radius(size[..., 0], size[..., 1])), 0.0)
    sigma = (2 * radius + 1) / 6
    dx = jnp.arange(wo, dtype=centre.dtype)[None, None, None, :] - cell[..., 0, None, None]
    dy = jnp.arange(ho, dtype=centre.dtype)[None, None, :, None] - cell[..., 1, None, None]
    r = radius[..., None, None]
    window = (jnp.abs(dx) <= r) & (jnp.abs(dy) <= r)  # (N, M, Ho, Wo)
    gauss = jnp.where(window, jnp.exp(-(dx**2 + dy**2) / (2 * sigma[..., None, None] ** 2)), 0.0)
    one_hot = jax.nn.one_hot(labels, num_classes, dtype=gauss.dtype)  # zeros for -1
    per_class = gauss[..., None] * one_hot[:, :, None, None, :]  # (N, M, Ho, Wo, C)
    heatmap = jnp.max(jnp.where(regressed[:, :, None, None, None], per_class, 0.0), axis=1)
    ignored = (window[..., None] * one_hot[:, :, None, None, :] > 0) & (
        (real & ~regressed)[:, :, None, None, None]
    )
    weight = jnp.where(jnp.any(ignored, axis=1) & (heatmap < 1), 0.0, 1.0)
    index = (cell[..., 1] * wo + cell[..., 0]).astype(jnp.int32)
    return Targets(heatmap, weight, index, size, centre - cell, regressed.astype(gauss.dtype))


def focal_loss(logits: jax.Array, heatmap: jax.Array, weight: jax.Array) -> jax.Array:
    """CenterNet's penalty-reduced pixel-wise focal loss (alpha 2, beta 4), summed over the
    batch and divided by the number of object centres (at least 1).

    Positives are the cells where ``heatmap == 1``; ``log sigmoid`` keeps it finite for any
    logits (CenterNet clamps the probabilities instead).
    """
    p = jax.nn.sigmoid(logits)
    positive = heatmap == 1.0
    pos = -jax.nn.log_sigmoid(logits) * (1 - p) ** 2
    neg = -jax.nn.log_sigmoid(-logits) * p**2 * (1 - heatmap) ** 4
    total = jnp.sum(weight * jnp.where(positive, pos, neg))
    return total / jnp.maximum(jnp.sum(positive), 1)


def _at_centres(maps: jax.Array, index: jax.Array) -> jax.Array:
    """``(N, Ho, Wo, D)`` maps read at flat cells ``(N, M)`` -> ``(N, M, D)``."""
    n, _, _, d = maps.shape
    return jnp.take_along_axis(maps.reshape(n, -1, d), index[..., None], axis=1)


def _masked_l1(pred: jax.Array, target: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean absolute error per coordinate over the masked objects (CenterNet's RegL1Loss)."""
    return jnp.sum(jnp.abs(pred - target) * mask[..., None]) / jnp.maximum(2 * jnp.sum(mask), 1)


def detection_loss(
    output: DetectorOutput, targets: dict[str, Any], *, stride: int
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The CenterNet loss of a batch and its per-batch sums.

    ``targets`` is ``{"boxes": (N, M, 4), "labels": (N, M)}`` plus optionally
    ``"difficult": (N, M)`` bool. Loss = focal heatmap loss + 0.1 x size L1 + offset L1
    (sizes and offsets in grid cells, as CenterNet). The sums are ``N`` times each batch term
    (so summing them over batches and dividing by the number of images gives the mean), and
    ``centres_found``/``objects``: how many regressed objects have a heatmap peak (3x3 local
    maximum) above :data:`HIT_SCORE` of their class at their centre cell, out of how many.
    """
    n, ho, wo, c = output.heatmap.shape
    t = encode_targets(
        targets["boxes"],
        targets["labels"],
        targets.get("difficult"),
        grid=(ho, wo),
        stride=stride,
        num_classes=c,
    )
    heat_loss = focal_loss(output.heatmap, t.heatmap, t.weight)
    size_loss = _masked_l1(_at_centres(output.size, t.index), t.size, t.mask)
    offset_loss = _masked_l1(_at_centres(output.offset, t.index), t.offset, t.mask)
    loss = heat_loss + SIZE_WEIGHT * size_loss + OFFSET_WEIGHT * offset_loss

    found = hit_peaks(jax.lax.stop_gradient(jax.nn.sigmoid(output.heatmap)))  # (N, Ho, Wo, C)
    at_centre = _at_centres(found, t.index)  # (N, M, C)
    label = jnp.clip(targets["labels"], 0, c - 1)
    hit = jnp.take_along_axis(at_centre, label[..., None], axis=-1)[..., 0] & (t.mask > 0)
    sums = {
        "heatmap_loss": heat_loss * n,
        "size_loss": size_loss * n,
        "offset_loss": offset_loss * n,
        "centres_found": jnp.sum(hit),
        "objects": jnp.sum(t.mask).astype(jnp.int32),
    }
    return loss, sums


def hit_peaks(heat: jax.Array) -> jax.Array:
    """``(N, Ho, Wo, C)`` scores -> bool: cells that are 3x3 local maxima of their class above
    :data:`HIT_SCORE` (a found centre, for the training score)."""
    peak = jax.lax.reduce_window(heat, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, 1, 1, 1), "SAME")
    return (heat == peak) & (heat > HIT_SCORE)
