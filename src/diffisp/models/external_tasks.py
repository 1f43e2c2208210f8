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
