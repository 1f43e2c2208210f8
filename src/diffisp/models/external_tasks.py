"""Losses for an ISP in front of a frozen external model: with labels, or with none.

Both are :class:`~diffisp.models.task.Task` s, so they run through the one training step
(:mod:`diffisp.training.step`), phase 1 and its warm-up, any ISP, sRGB or RAW captures:

* :class:`LabelCrossEntropy`: softmax cross-entropy of the model's logits against class labels
  (the same maths as :class:`~diffisp.models.task.Classification`, for a model diffisp did not
  build).
* :class:`OutputConsistency`: no labels. The frozen model's outputs on the processed capture are
  matched to its outputs on the clean image (distillation through the ISP): KL divergence of
  the softmax for logits, mean squared error for any other output (dense head maps, features).
  The targets are those clean outputs, computed once by :func:`clean_outputs`.
* :class:`ExternalCenterNet`: the CenterNet loss and COCO mAP for a user's detector whose dense
  output is a CenterNet head (heatmap logits, box size, centre offset), the head diffisp's own
  detector has.
* :class:`DenseLoss`: a user's loss on the model's dense outputs (a detector's head maps)
  against their targets: ``loss_fn(outputs, targets) -> scalar``, a module-level function.

Evaluation scores class predictions (``argmax`` of the outputs) against class indices: the true
labels where the data has them, else the model's own predictions on the clean images
(agreement); :func:`clean_outputs` gives those too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from diffisp.errors import ConfigError
from diffisp.models.detection import Detection
from diffisp.models.detection_loss import (
    OFFSET_WEIGHT,
    SIZE_WEIGHT,
    detection_loss,
    hit_peaks,
)
from diffisp.models.detector import DetectorOutput, decode
from diffisp.models.evaluate import predict
from diffisp.models.task import Classification

CONSISTENCY_KINDS = ("kl", "mse")


@dataclass(frozen=True)
class _ExternalTask(Classification):
    """What both external tasks share with classification (predictions, accuracy, how they
    are reported); the model is the user's, never built here."""

    def build_model(self, num_outputs: int, *, rngs: nnx.Rngs, in_channels: int = 3) -> Any:
        raise ConfigError(
            "an external model is loaded, not built: use diffisp.models.external.load_model"
        )


@dataclass(frozen=True)
class LabelCrossEntropy(_ExternalTask):
    """Cross-entropy of the frozen model's logits against integer class labels ``(N,)``."""

    name: str = "external-labels"


@dataclass(frozen=True)
class OutputConsistency(_ExternalTask):
    """Match the model's outputs on the ISP's output to its outputs on the clean images.

    ``kind="kl"``: ``outputs`` are logits; the loss is ``T**2 * KL(softmax(t/T) || softmax(o/T))``
    averaged over the batch (Hinton et al. 2015's distillation; ``T`` = ``temperature``).
    ``kind="mse"``: any outputs (dense maps, features); the mean squared difference, divided by
    ``scale`` (e.g. the targets' variance, so the loss starts near 1 whatever the units).
    Targets ``(N, ...)``: the clean outputs (:func:`clean_outputs`). The training score is the
    share of argmax agreements (meaningful for logits).
    """

    kind: str = "kl"
    temperature: float = 1.0
    scale: float = 1.0
    name: str = "external-consistency"
    headline: str = "accuracy"

    def __post_init__(self) -> None:
        if self.kind not in CONSISTENCY_KINDS:
            raise ConfigError(
                f"consistency kind must be one of {', '.join(CONSISTENCY_KINDS)}; got {self.kind!r}"
            )
        if not self.temperature > 0 or not self.scale > 0:
            raise ConfigError("temperature and scale must be positive")

    def loss(
        self, model: nnx.Module, images: jax.Array, targets: jax.Array
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        outputs = model(images)
        if outputs.shape != targets.shape:
            raise ConfigError(
                f"outputs {outputs.shape} and clean-output targets {targets.shape} differ"
            )
        if self.kind == "kl":
            t = self.temperature
            p = jax.nn.softmax(targets / t, axis=-1)
            kl = jnp.sum(
                p * (jax.nn.log_softmax(targets / t, -1) - jax.nn.log_softmax(outputs / t, -1)),
                axis=-1,
            )
            loss = t**2 * jnp.mean(kl)
        else:
            loss = jnp.mean((outputs - targets) ** 2) / self.scale
        agree = jnp.sum(jnp.argmax(outputs, -1) == jnp.argmax(targets, -1))
        return loss, {"agree": agree}

    def train_score(self, sums: dict[str, jax.Array], num_samples: int) -> float:
        return float(sums["agree"]) / num_samples


def centernet_maps(outputs: jax.Array, *, layout: str) -> DetectorOutput:
    """A user detector's one dense output as CenterNet maps.

    ``outputs``: ``(N, C + 4, Ho, Wo)`` (``layout="NCHW"``) or ``(N, Ho, Wo, C + 4)``: ``C``
    heatmap logits, then box ``(w, h)`` in grid cells, then the centre's ``(x, y)`` offset in
    its cell.
    """
    if outputs.ndim != 4:
        raise ConfigError(f"a CenterNet head's output is 4-D; the model gave {outputs.shape}")
    maps = jnp.transpose(outputs, (0, 2, 3, 1)) if layout == "NCHW" else outputs
    if maps.shape[-1] < 5:
        raise ConfigError(
            f"a CenterNet head has C + 4 channels (C >= 1 classes, then w, h, dx, dy); "
            f"the model's output has {maps.shape[-1]} ({layout} {outputs.shape})"
        )
    return DetectorOutput(maps[..., :-4], maps[..., -4:-2], maps[..., -2:])


def _stride(maps: DetectorOutput, images: jax.Array) -> int:
    """The ISP image's height over the grid's (so a model that resizes its input still gets
    boxes in the ISP image's pixels)."""
    height = int(jax.tree.leaves(images)[0].shape[1])
    cells = int(maps.heatmap.shape[1])
    if height % cells:
        raise ConfigError(f"the {height}-pixel image does not divide into {cells} grid rows")
    return height // cells


@dataclass(frozen=True)
class ExternalCenterNet(Detection):
    """Detection through a user's frozen detector with a CenterNet head (:func:`centernet_maps`).

    The loss is diffisp's CenterNet loss on the user's maps against boxes and labels; the
    predictions are its decoding and class-wise NMS; the metrics COCO mAP. ``layout`` is the
    layout of the model's output (its input's, for PyTorch models).
    """

    layout: str = "NCHW"
    name: str = "external-detect"

    def build_model(self, num_outputs: int, *, rngs: nnx.Rngs, in_channels: int = 3) -> Any:
        raise ConfigError(
            "an external model is loaded, not built: use diffisp.models.external.load_model"
        )

    def maps(self, model: nnx.Module, images: jax.Array) -> DetectorOutput:
        return centernet_maps(model(images), layout=self.layout)

    def loss(
        self, model: nnx.Module, images: jax.Array, targets: dict[str, jax.Array]
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        maps = self.maps(model, images)
        return detection_loss(maps, targets, stride=_stride(maps, images))

    def predict(self, model: nnx.Module, images: jax.Array) -> Any:
        maps = self.maps(model, images)
        return decode(
            maps,
            stride=_stride(maps, images),
            top_k=self.top_k,
            nms_iou=self.nms_iou,
            min_score=self.min_score,
        )


@dataclass(frozen=True)
class CenterNetConsistency(ExternalCenterNet):
    """No labels: a CenterNet-head detector's maps on the ISP's output matched to its maps on
    the clean images (targets: those clean outputs, :func:`clean_outputs`).

    With ``q = sigmoid(clean heatmap)`` the heatmap term is the binary KL divergence of the
    student's cell probabilities from ``q``, summed and divided by ``sum(q)`` (about the number
    of objects the clean model sees, as CenterNet's focal loss divides by the object count);
    size and offset are L1 weighted by ``q``, so only where the clean model sees an object
    (its maps elsewhere were never trained and mean nothing). Weights as CenterNet's: heatmap
    1, size 0.1, offset 1. The training score is the share of the clean model's peaks above
    0.3 that are peaks above 0.3 on the ISP's output.
    """

    name: str = "external-detect-consistency"

    def loss(
        self, model: nnx.Module, images: jax.Array, targets: jax.Array
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        maps = self.maps(model, images)
        clean = centernet_maps(targets, layout=self.layout)
        if maps.heatmap.shape != clean.heatmap.shape:
            raise ConfigError(
                f"outputs {maps.heatmap.shape} and clean-output targets {clean.heatmap.shape} "
                "differ"
            )
        q = jax.nn.sigmoid(clean.heatmap)
        log_p, log_not_p = jax.nn.log_sigmoid(maps.heatmap), jax.nn.log_sigmoid(-maps.heatmap)
        log_q, log_not_q = jax.nn.log_sigmoid(clean.heatmap), jax.nn.log_sigmoid(-clean.heatmap)
        kl = q * (log_q - log_p) + (1 - q) * (log_not_q - log_not_p)
        mass = jnp.maximum(jnp.sum(q), 1.0)
        weight = jnp.max(q, axis=-1, keepdims=True)  # (N, Ho, Wo, 1): any class's object
        regression = jnp.maximum(2 * jnp.sum(weight), 1.0)
        size = jnp.sum(weight * jnp.abs(maps.size - clean.size)) / regression
        offset = jnp.sum(weight * jnp.abs(maps.offset - clean.offset)) / regression
        loss = jnp.sum(kl) / mass + SIZE_WEIGHT * size + OFFSET_WEIGHT * offset
        teacher, student = hit_peaks(q), hit_peaks(jax.nn.sigmoid(maps.heatmap))
        sums = {
            "centres_found": jnp.sum(teacher & student),
            "objects": jnp.sum(teacher).astype(jnp.int32),
        }
        return loss, sums


@dataclass(frozen=True)
class DenseLoss(_ExternalTask):
    """A user's loss on the frozen model's outputs: ``loss_fn(outputs, targets) -> scalar``.

    ``loss_fn`` must be a module-level function (the task is a static, hashed argument of the
    compiled step). It has no training score (0 is reported; the loss is in the history); its
    metric is ``loss_fn`` on the test predictions. For a label-free dense loss use
    :class:`OutputConsistency` with ``kind="mse"``. Not yet reachable from ``diffisp tune``.
    """

    loss_fn: Callable[[jax.Array, Any], jax.Array] | None = None
    name: str = "external-dense"
    headline: str = "loss"

    def loss(
        self, model: nnx.Module, images: jax.Array, targets: Any
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        if self.loss_fn is None:
            raise ConfigError("DenseLoss needs loss_fn")
        loss = self.loss_fn(model(images), targets)
        return loss, {"loss_sum": loss}

    def train_score(self, sums: dict[str, jax.Array], num_samples: int) -> float:
        return 0.0

    def predict(self, model: nnx.Module, images: jax.Array) -> jax.Array:
        return model(images)

    def metrics(self, predictions: Any, targets: Any) -> dict[str, float]:
        if self.loss_fn is None:
            raise ConfigError("DenseLoss needs loss_fn")
        value = self.loss_fn(jnp.asarray(predictions), targets)
        return {"loss": float(value), "num_samples": int(np.asarray(predictions).shape[0])}


@dataclass(frozen=True)
class _Outputs:
    """The model's raw outputs as "predictions" (for :func:`clean_outputs`)."""

    name: str = "outputs"

    def predict(self, model: nnx.Module, images: jax.Array) -> jax.Array:
        return model(images)


def clean_outputs(model: nnx.Module, images: jax.Array, *, chunk: int = 256) -> np.ndarray:
    """``model(images)`` in compiled, padded chunks on the host: the consistency targets."""
    return predict(model, images, task=_Outputs(), chunk=chunk)  # type: ignore[arg-type]
