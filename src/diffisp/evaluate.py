"""Accuracy of a classifier behind an ISP, computed in compiled, padded chunks."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

Transform = Callable[[jax.Array], jax.Array]


@partial(jax.jit, static_argnames=("graphdef", "transform"))
def _predict(graphdef, state, images, transform):
    model, isp = nnx.merge(graphdef, state)
    model.eval()  # on the traced copy only: the caller's module keeps its mode
    x = images if transform is None else transform(images)
    x = x if isp is None else isp(x)
    return jnp.argmax(model(x), axis=-1)


def predict(
    model: nnx.Module,
    images: jax.Array,
    *,
    isp: nnx.Module | None = None,
    transform: Transform | None = None,
    chunk: int = 500,
) -> np.ndarray:
    """Predicted classes for ``(N, H, W, 3)`` images, eval-mode batch norm.

    The images go through ``transform`` (a fixed function, e.g. a fixed gamma), then ``isp``
    (a learnable ISP), then ``model``. Chunks are padded to one size so there is one compilation.
    """
    graphdef, state = nnx.split((model, isp))
    n = images.shape[0]
    size = min(chunk, n)
    preds = []
    for start in range(0, n, size):
        part = images[start : start + size]
        short = size - part.shape[0]
        if short:
            part = jnp.concatenate([part, jnp.zeros((short, *part.shape[1:]), part.dtype)])
        preds.append(_predict(graphdef, state, part, transform)[: size - short])
    return np.asarray(jnp.concatenate(preds))


def accuracy(
    model: nnx.Module,
    images: jax.Array,
    labels: jax.Array,
    *,
    isp: nnx.Module | None = None,
    transform: Transform | None = None,
) -> float:
    """Fraction of correctly classified images (over all samples, not a mean of batch means)."""
    return float(
        np.mean(predict(model, images, isp=isp, transform=transform) == np.asarray(labels))
    )


# The rows of the results table, in order: what goes into the CNN, and which CNN.
PROTOCOL_ROWS = {
    "no_isp": "dark test images straight into the clean-trained CNN",
    "fixed_gamma": "dark images through a fixed gamma 0.5 into the clean-trained CNN",
    "learned_isp_phase1": "dark images through the ISP learned in phase 1, clean-trained CNN",
    "learned_isp_phase2": "dark images through the jointly fine-tuned ISP and CNN (phase 2)",
    "clean_oracle": "clean test images into the clean-trained CNN (upper reference)",
}


def evaluate_protocol(trainer) -> dict[str, dict]:
    """Accuracy of every row of the protocol, on the same test images, darkening and seed."""
    from diffisp.pipeline import fixed_gamma

    data = trainer.data
    cnn_clean = trainer.snapshots.get("cnn_clean", trainer.model)
    isp_phase1 = trainer.snapshots.get("isp_phase1", trainer.isp)
    dark, clean, labels = data.test_dark, data.test_clean, data.test_labels
    accuracies = {
        "no_isp": accuracy(cnn_clean, dark, labels),
        "fixed_gamma": accuracy(cnn_clean, dark, labels, transform=fixed_gamma),
        "learned_isp_phase1": accuracy(cnn_clean, dark, labels, isp=isp_phase1),
        "learned_isp_phase2": accuracy(trainer.model, dark, labels, isp=trainer.isp),
        "clean_oracle": accuracy(cnn_clean, clean, labels),
    }
    n = int(labels.shape[0])
    return {
        name: {"accuracy": acc, "num_samples": n, "description": PROTOCOL_ROWS[name]}
        for name, acc in accuracies.items()
    }
