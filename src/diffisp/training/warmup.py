"""A warm-up for phase 1: bring the ISP's output to the clean images' statistics first.

Phase 1 tunes only the ISP in front of a frozen model, starting from the identity, i.e. from
dark images the model has never seen. From there the task loss alone can settle in a poor basin
(measured: one seed in three stayed dark and blurred, 30 % against 57-75 % for the others).
The warm-up needs no labels and no paired clean images, only what a deployed model's owner
knows: the per-channel mean and standard deviation of the images the model was trained on. For
``isp_warmup_epochs`` epochs the ISP learns to match those statistics on the dark training
images; then phase 1 proper starts from there with the task loss.

A per-image ISP (the adaptive one) matches them image by image instead (each image's own channel
means and standard deviations against the clean images' average of those): a batch-level target
can be met by brightening every image alike, which teaches a per-image exposure nothing, while
per-image targets are auto-exposure and grey-world white balance, the same for every image
whatever its capture brightness. Before those epochs its linear pathway is set in closed form to
exactly that, auto-exposure to the clean images' mean luminance and grey-world white balance
(:meth:`~diffisp.isp.adaptive.AdaptiveISP.start_from_auto_exposure`): measured on mixed
captures, gradient steps alone left the per-image exposure weakly tied to the brightness.

It runs through the training core unchanged: the statistics objective is a :class:`Task` whose
loss ignores the model, trained with phase 1's step (ISP parameters only, model frozen).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from diffisp.ops import LUMA_WEIGHTS
from diffisp.training.config import STREAM_SAMPLE
from diffisp.training.data import RunData
from diffisp.training.state import (
    ISP_PARAMS,
    PHASES,
    TrainState,
    group_labels,
    isp_transforms,
)
from diffisp.training.step import release_compiled_epochs, train_one_epoch


@dataclass(frozen=True)
class StatisticsMatching:
    """The warm-up objective as a task: squared distance between the batch's per-channel mean
    and standard deviation and ``target`` (``(mean_r, mean_g, mean_b, std_r, std_g, std_b)``).

    ``per_image``: each image's own statistics (:func:`image_statistics`) against ``target``,
    the squared distances averaged over the batch.
    """

    target: tuple[float, ...]
    name: str = "statistics"
    headline: str = "statistics_loss"
    per_image: bool = False

    def loss(self, model: Any, images: jax.Array, targets: Any) -> tuple[jax.Array, dict]:
        del model, targets
        target = jnp.asarray(self.target, images.dtype)
        if self.per_image:
            loss = jnp.mean(jnp.sum((image_statistics(images) - target) ** 2, axis=-1))
        else:
            loss = jnp.sum((batch_statistics(images) - target) ** 2)
        return loss, {"loss": loss}

    def train_score(self, sums: dict[str, jax.Array], num_samples: int) -> float:
        return float(sums["loss"])  # a sum over steps; only reported in the warm-up's log


def batch_statistics(images: jax.Array) -> jax.Array:
    """``(6,)``: per-channel mean and standard deviation of ``(N, H, W, 3)`` images."""
    return jnp.concatenate([jnp.mean(images, axis=(0, 1, 2)), _std(images, (0, 1, 2))])


def image_statistics(images: jax.Array) -> jax.Array:
    """``(N, 6)``: each image's per-channel mean and standard deviation."""
    return jnp.concatenate([jnp.mean(images, axis=(1, 2)), _std(images, (1, 2))], axis=-1)


def _std(images: jax.Array, axis: tuple[int, ...]) -> jax.Array:
    # jnp.std's gradient is NaN where the spread is 0 (sqrt at 0): an image the ISP drives to
    # all black or all white. The floor (a spread of 1e-4) keeps it finite and changes nothing
    # above it.
    return jnp.sqrt(jnp.var(images, axis=axis) + 1e-8)


def clean_statistics(data: RunData, per_image: bool = False) -> tuple[float, ...]:
    """The warm-up's target: statistics of the first ``STREAM_SAMPLE`` clean training images
    (hashable floats; the images a streamed training set keeps in memory, so in memory and
    streamed give the same target); with ``per_image``, the average over the images of each
    one's own statistics."""
    clean = data.train.head(min(data.num_train, STREAM_SAMPLE), captured=False)
    if per_image:
        return tuple(float(v) for v in image_statistics(clean).mean(axis=0))
    return tuple(float(v) for v in batch_statistics(clean))


def warm_up_isp(state: TrainState, data: RunData) -> float:
    """Run the warm-up on ``state``'s ISP (``cfg.optim.isp_warmup_epochs`` epochs at the ISP's
    learning rates, :func:`~diffisp.training.state.isp_transforms`, constant; an adaptive
    ISP's statistics map at ``lr_isp``: the warm-up is where it learns its scale).

    Returns the statistics loss of the last epoch (per step).
    """
    cfg, phase = state.cfg, PHASES[1]
    steps = state.steps_per_epoch(data.num_train) * cfg.optim.isp_warmup_epochs
    transforms = isp_transforms(cfg, steps, "constant", lr_stats_map=cfg.optim.lr_isp)
    tx = optax.multi_transform(transforms, group_labels)
    release_compiled_epochs()
    optimizer = nnx.Optimizer(state.learner, tx, wrt=ISP_PARAMS)
    per_image = bool(getattr(state.isp, "per_image", False))
    target = clean_statistics(data, per_image)
    state.isp.start_from_auto_exposure(float(np.dot(target[:3], LUMA_WEIGHTS)))
    task = StatisticsMatching(target, per_image=per_image)
    loss = float("nan")
    for epoch in range(cfg.optim.isp_warmup_epochs):
        state.learner, optimizer, loss, _ = train_one_epoch(
            state.learner,
            optimizer,
            phase,
            data.train,
            task=task,
            seed=cfg.seed,
            # Epoch numbers of their own, so the warm-up's permutations and gate samples are
            # not those of phase 1's epochs.
            epoch=1000 + epoch,
            batch_size=cfg.optim.batch_size,
            devices=cfg.devices.count,
        )
    return loss
