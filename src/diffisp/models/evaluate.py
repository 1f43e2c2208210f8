"""Predictions and metrics of a task model behind an ISP, computed in compiled, padded chunks."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from diffisp.models.task import CLASSIFY, Task

Transform = Callable[[jax.Array], jax.Array]


@partial(jax.jit, static_argnames=("graphdef", "transform", "task"))
def _predict(graphdef, state, images, transform, task):
    model, isp = nnx.merge(graphdef, state)
    model.eval()  # on the traced copy only: the caller's module keeps its mode
    x = images if transform is None else transform(images)
    x = x if isp is None else isp(x)
    return task.predict(model, x)


def predict(
    model: nnx.Module,
    images: jax.Array,
    *,
    isp: nnx.Module | None = None,
    transform: Transform | None = None,
    task: Task = CLASSIFY,
    chunk: int = 500,
) -> Any:
    """The task's predictions for ``(N, H, W, 3)`` images (or any pytree of inputs with a leading
    ``N`` axis, e.g. a RAW capture), eval-mode batch norm, on the host.

    The images go through ``transform`` (a fixed function, e.g. a fixed gamma), then ``isp``
    (a learnable ISP), then ``model``. Chunks are padded to one size so there is one compilation.
    """
    graphdef, state = nnx.split((model, isp))
    n = int(jax.tree.leaves(images)[0].shape[0])
    size = min(chunk, n)
    preds = []
    for start in range(0, n, size):
        part = jax.tree.map(lambda a, start=start: a[start : start + size], images)
        short = size - int(jax.tree.leaves(part)[0].shape[0])
        if short:
            part = jax.tree.map(lambda a, short=short: _pad(a, short), part)
        out = _predict(graphdef, state, part, transform, task)
        preds.append(jax.tree.map(lambda p, keep=size - short: p[:keep], out))
    return jax.tree.map(lambda *parts: np.asarray(jnp.concatenate(parts)), *preds)


def _pad(array: jax.Array, count: int) -> jax.Array:
    """``array`` with ``count`` copies of its first entry appended (padding that every input
    path accepts: a zero white balance or matrix would be a degenerate capture)."""
    return jnp.concatenate([array, jnp.repeat(array[:1], count, axis=0)])


def evaluate(
    model: nnx.Module,
    images: jax.Array,
    targets: Any,
    *,
    isp: nnx.Module | None = None,
    transform: Transform | None = None,
    task: Task = CLASSIFY,
) -> dict[str, float]:
    """The task's metrics for ``model`` behind ``transform`` and ``isp`` on ``images``."""
    predictions = predict(model, images, isp=isp, transform=transform, task=task)
    return task.metrics(predictions, targets)


def accuracy(
    model: nnx.Module,
    images: jax.Array,
    labels: jax.Array,
    *,
    isp: nnx.Module | None = None,
    transform: Transform | None = None,
) -> float:
    """Fraction of correctly classified images (over all samples, not a mean of batch means)."""
    return evaluate(model, images, labels, isp=isp, transform=transform)["accuracy"]
