"""The three-phase protocol as a loop over epochs, and the fine-tuned baselines.

Phase 0 trains the task model on clean images, phase 1 optimises only the ISP in front of the
frozen (eval-mode) model on dark images, phase 2 fine-tunes both. Every epoch of every phase is
:func:`diffisp.training.step.train_one_epoch`; the loop only moves the state's position, makes
each phase's optimiser, and calls back after each epoch (where a caller checkpoints).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import jax
from flax import nnx

from diffisp.data.source import EpochSource
from diffisp.models.evaluate import evaluate
from diffisp.models.task import CLASSIFY, Task
from diffisp.training.config import TrainConfig
from diffisp.training.data import RunData
from diffisp.training.state import (
    PHASES,
    EpochRecord,
    Learner,
    Phase,
    TrainState,
    detached_copy,
    make_optimizer,
)
from diffisp.training.step import release_compiled_epochs, train_one_epoch
from diffisp.training.warmup import warm_up_isp

OnEpoch = Callable[[TrainState, EpochRecord], None]
OnStep = Callable[[Phase, int], None]


def train(
    state: TrainState,
    data: RunData,
    *,
    on_epoch: OnEpoch | None = None,
    on_step: OnStep | None = None,
) -> TrainState:
    """Run every remaining epoch of every phase, from ``state.position`` on.

    ``on_epoch(state, record)`` is called after each epoch (and after a phase ends, with its
    snapshot taken): where a caller checkpoints. ``on_step(phase, steps)`` after each epoch with
    the number of steps it ran (progress).
    """
    while not state.done:
        phase_index, epoch = state.position
        phase = PHASES[phase_index]
        if epoch >= state.epochs_in(phase):  # a phase with zero epochs
            state.end_phase(phase)
            continue
        if epoch == 0:
            if phase.index == 1 and state.cfg.optim.isp_warmup_epochs:
                warm_up_isp(state, data)
            release_compiled_epochs()
            state.optimizer = state.new_optimizer(phase, data.num_train)
        record = run_epoch(state, data, phase, epoch)
        if on_step is not None:
            on_step(phase, state.steps_per_epoch(data.num_train))
        state.history.append(record)
        state.position = (phase_index, epoch + 1)
        if epoch + 1 == state.epochs_in(phase):
            state.end_phase(phase)
        if on_epoch is not None:
            on_epoch(state, record)
    return state


def train_epoch_of(
    state: TrainState, data: RunData, phase: Phase, epoch: int
) -> tuple[float, float]:
    """Train one epoch of ``phase`` on the run's training set in place; ``(mean loss, train
    score)``."""
    cfg = state.cfg
    state.learner, state.optimizer, loss, train_score = train_one_epoch(
        state.learner,
        state.optimizer,
        phase,
        data.train,
        task=state.task,
        seed=cfg.seed,
        epoch=epoch,
        batch_size=cfg.optim.batch_size,
        bn_calibration=cfg.optim.bn_calibration,
        devices=cfg.devices.count,
    )
    return loss, train_score


def train_clean_model(cfg: TrainConfig, data: RunData) -> nnx.Module:
    """Phase 0 alone: the task model trained on clean images (what :func:`train_from_model`
    starts from, when several ISPs or settings are compared against one model)."""
    state = TrainState.create(cfg.replace(epochs_isp=0, epochs_joint=0), data.num_classes)
    return train(state, data).model_after_phase0


def train_from_model(
    cfg: TrainConfig, model: nnx.Module, data: RunData, num_classes: int | None = None
) -> TrainState:
    """Phases 1 and 2 of ``cfg`` (ISP, then ISP and model) starting from an already-trained
    task model: ISP variants against one clean-trained model, an ISP for a frozen model.

    ``model`` itself is left as it is (training donates buffers: the state trains a copy).
    """
    state = TrainState.create(cfg, data.num_classes if num_classes is None else num_classes)
    state.learner.model = detached_copy(model)
    state.snapshots["cnn_clean"] = model
    state.position = (1, 0)
    return train(state, data)


def run_epoch(state: TrainState, data: RunData, phase: Phase, epoch: int) -> EpochRecord:
    """One epoch of ``phase``: train, then score the test set with the task's headline metric."""
    start = time.perf_counter()
    loss, train_score = train_epoch_of(state, data, phase, epoch)
    test_images = data.test_dark if phase.dark_input else data.test_clean
    metrics = evaluate(
        state.model,
        phase.inputs(None, test_images),
        data.test_labels,
        isp=state.isp if phase.use_isp else None,
        task=state.task,
    )
    return EpochRecord(
        phase.index,
        phase.name,
        epoch + 1,
        loss,
        train_score,
        metrics[state.task.headline],
        time.perf_counter() - start,
    )


def finetune_model(
    model: nnx.Module,
    source: EpochSource,
    cfg: TrainConfig,
    *,
    epochs: int,
    lr: float,
    clean: bool = False,
    transform: Callable[[jax.Array], jax.Array] | None = None,
    name: str = "finetune",
    index: int = 10,
    task: Task = CLASSIFY,
) -> nnx.Module:
    """Train a copy of ``model`` on ``transform(captures)`` (or the clean images, ``clean``)
    with no ISP: the fair baselines.

    The same step as every phase, with the model as the only trainable group. ``index`` keeps
    the epoch orders of different baselines distinct from the protocol's.
    """
    phase = Phase(
        index,
        name,
        dark_input=not clean,
        train_isp=False,
        train_cnn=True,
        use_isp=False,
        transform=transform,
    )
    learner = Learner(None, detached_copy(model))
    steps = len(source) // cfg.optim.batch_size * epochs
    release_compiled_epochs()
    optimizer = nnx.Optimizer(
        learner, make_optimizer(lr, steps, cfg.optim.schedule), wrt=phase.trainable
    )
    for epoch in range(epochs):
        learner, optimizer, _, _ = train_one_epoch(
            learner,
            optimizer,
            phase,
            source,
            task=task,
            seed=cfg.seed,
            epoch=epoch,
            batch_size=cfg.optim.batch_size,
            bn_calibration=cfg.optim.bn_calibration,
            devices=cfg.devices.count,
        )
    return learner.model
