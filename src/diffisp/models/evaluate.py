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
