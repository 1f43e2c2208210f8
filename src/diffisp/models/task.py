"""The task interface: what training and evaluation need from a downstream vision task.

Training knows nothing about classes, logits or boxes. A task says how to build its model, how
to score a batch (the loss the ISP is trained for), how to turn model outputs into predictions
and how to measure them. :class:`Classification` is today's task; a detector implements the
same four methods and the training core runs it unchanged
(:class:`~diffisp.models.detection.Detection`, registered here as ``"detect"``).

Targets are any pytree of arrays with a leading batch axis (class indices here; boxes and
classes for a detector), so the training step can slice a batch out of them on the device.

Tasks are static arguments of compiled functions: keep them frozen dataclasses (hashable).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from diffisp.models.classifier import SmallCNN
from diffisp.models.detection import DETECT, Detection
from diffisp.models.reporting import CLASSIFY_REPORTING, Reporting
from diffisp.util.compiled import compiled_init


class Task(Protocol):
    """A downstream task: model, loss, predictions, metrics."""

    name: str
    #: The metric that ranks methods (a key of :meth:`metrics`), e.g. ``"accuracy"``.
    headline: str
    #: How its results are reported (labels, intervals, which figures apply).
    reporting: Reporting

    def build_model(self, num_outputs: int, *, rngs: nnx.Rngs, in_channels: int = 3) -> nnx.Module:
        """A fresh model for ``num_outputs`` classes (or categories) and ``in_channels`` input
        channels (3 for images; 4 for packed RAW)."""
        ...

    def loss(
        self, model: nnx.Module, images: jax.Array, targets: Any
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Mean loss of a batch and per-batch *sums* to report (e.g. correct predictions)."""
        ...

    def train_score(self, sums: dict[str, jax.Array], num_samples: int) -> float:
        """The headline metric on the training batches of an epoch, from summed loss aux."""
        ...

    def predict(self, model: nnx.Module, images: jax.Array) -> Any:
        """Predictions for ``(N, H, W, 3)`` images (jittable; eval mode is the caller's)."""
        ...

    def metrics(self, predictions: Any, targets: Any) -> dict[str, float]:
        """Metrics of host-side predictions against targets; includes ``num_samples``."""
        ...

    # Optional: ``per_image_scores(predictions, targets) -> (N,) array`` whose mean is the
    # headline metric (classification has it; mAP is not a mean over images). With it, a
    # run's comparisons carry paired intervals.


def label_cross_entropy(
    logits: jax.Array, labels: jax.Array
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Mean cross-entropy of ``logits`` ``(N, K)`` against integer ``labels`` ``(N,)``, and the
    number of correct arg-max predictions (``{"correct": ...}``) for the training score."""
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    return loss, {"correct": jnp.sum(jnp.argmax(logits, -1) == labels)}


@dataclass(frozen=True)
class Classification:
    """Image classification with a CNN and softmax cross-entropy; metric: accuracy.

    Accuracy is computed over all samples at once (not a mean of per-batch means).
    """

    name: str = "classify"
    headline: str = "accuracy"
    reporting: Reporting = CLASSIFY_REPORTING

    def build_model(self, num_outputs: int, *, rngs: nnx.Rngs, in_channels: int = 3) -> SmallCNN:
        return compiled_init(
            lambda rngs: SmallCNN(num_outputs, rngs=rngs, in_channels=in_channels), rngs
        )

    def loss(
        self, model: nnx.Module, images: jax.Array, targets: jax.Array
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        return label_cross_entropy(model(images), targets)

    def train_score(self, sums: dict[str, jax.Array], num_samples: int) -> float:
        return float(sums["correct"]) / num_samples

    def predict(self, model: nnx.Module, images: jax.Array) -> jax.Array:
        return jnp.argmax(model(images), axis=-1)

    def metrics(self, predictions: Any, targets: Any) -> dict[str, float]:
        predictions, targets = np.asarray(predictions), np.asarray(targets)
        return {
            "accuracy": float(np.mean(predictions == targets)),
            "num_samples": int(targets.shape[0]),
        }

    def per_image_scores(self, predictions: Any, targets: Any) -> np.ndarray:
        """``(N,)`` 1.0 where an image is classified right, else 0.0: the headline metric is
        their mean, so two methods can be compared image by image (paired)."""
        return (np.asarray(predictions) == np.asarray(targets)).astype(np.float64)


CLASSIFY = Classification()
TASKS: dict[str, Task] = {CLASSIFY.name: CLASSIFY, DETECT.name: DETECT}

__all__ = ["CLASSIFY", "DETECT", "TASKS", "Classification", "Detection", "Task"]
