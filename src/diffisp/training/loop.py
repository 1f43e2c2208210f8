"""The three-phase training protocol, with compiled steps and device-resident data.

Phase 0 trains the CNN on clean images, phase 1 optimises only the ISP in front of the frozen
(eval-mode) CNN on dark images, phase 2 fine-tunes both. Each optimisation step is one XLA call:
the whole data set sits on the device, each epoch's permutation is drawn on the device, and a
step slices its batch out of it, so nothing crosses from the host per step. Every random draw is
a function of ``(seed, phase, epoch)``, so a run resumed from a checkpoint continues exactly as
the uninterrupted run would have.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from diffisp.data import Dataset
from diffisp.data.degrade import _darken
from diffisp.errors import DataError, TrainingDivergedError
from diffisp.isp.chain import ISP
from diffisp.models.classifier import SmallCNN, recalibrate_batch_norm
from diffisp.models.evaluate import accuracy
from diffisp.training.config import TrainConfig

# Fold-in tags that separate the random streams derived from one seed.
_DARKEN_TRAIN, _DARKEN_TEST, _SHUFFLE, _INIT = 1, 2, 3, 4


@dataclass(frozen=True)
class Phase:
    """One stage of training: which images go in, through what, and what learns.

    The input path is ``images (clean or dark) -> transform (a fixed function, optional) -> ISP
    (when use_isp) -> CNN``. Phases are static arguments of the compiled step, so ``transform``
    must be a hashable module-level function.
    """

    index: int
    name: str
    dark_input: bool
    train_isp: bool
    train_cnn: bool
    use_isp: bool = True
    transform: Callable[[jax.Array], jax.Array] | None = None

    def inputs(self, isp: nnx.Module | None, images: jax.Array) -> jax.Array:
        x = images if self.transform is None else self.transform(images)
        return isp(x) if (self.use_isp and isp is not None) else x


PHASES = (
    Phase(0, "clean", dark_input=False, train_isp=False, train_cnn=True, use_isp=False),
    Phase(1, "isp", dark_input=True, train_isp=True, train_cnn=False),
    Phase(2, "joint", dark_input=True, train_isp=True, train_cnn=True),
)


@dataclass
class RunData:
    """A run's images on the device: clean and darkened train/test sets, labels."""

    train_clean: jax.Array
    train_dark: jax.Array
    train_labels: jax.Array
    test_clean: jax.Array
    test_dark: jax.Array
    test_labels: jax.Array
    num_classes: int

    @property
    def num_train(self) -> int:
        return int(self.train_labels.shape[0])


def prepare_data(dataset: Dataset, cfg: TrainConfig) -> RunData:
    """Darken the data set once, deterministically from ``cfg.seed``, and put it on the device."""
    if len(dataset.train_labels) < cfg.batch_size:
        raise DataError(
            f"the training set has {len(dataset.train_labels)} images, fewer than one batch "
            f"({cfg.batch_size})"
        )
    key = jax.random.key(cfg.seed)
    low_light = cfg.low_light()
    train_clean = jnp.asarray(dataset.train_images, jnp.float32)
    test_clean = jnp.asarray(dataset.test_images, jnp.float32)
    train_dark, _ = _darken(jax.random.fold_in(key, _DARKEN_TRAIN), train_clean, low_light)
    test_dark, _ = _darken(jax.random.fold_in(key, _DARKEN_TEST), test_clean, low_light)
    return RunData(
        train_clean=train_clean,
        train_dark=train_dark,
        train_labels=jnp.asarray(dataset.train_labels, jnp.int32),
        test_clean=test_clean,
        test_dark=test_dark,
        test_labels=jnp.asarray(dataset.test_labels, jnp.int32),
        num_classes=dataset.num_classes,
    )


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def make_optimizer(
    lr: float, steps: int, schedule: str, clip_norm: float | None = None
) -> optax.GradientTransformation:
    """Adam at ``lr``, constant or cosine-decayed to zero over ``steps``, optionally after
    clipping the gradient's global norm."""
    rate = optax.cosine_decay_schedule(lr, max(steps, 1)) if schedule == "cosine" else lr
    adam = optax.adam(rate)
    return adam if clip_norm is None else optax.chain(optax.clip_by_global_norm(clip_norm), adam)


@partial(jax.jit, static_argnames=("graphdef", "phase", "batch_size"), donate_argnames=("state",))
def _train_step(graphdef, state, images, labels, perm, key, step, *, phase: Phase, batch_size: int):
    isp, model, isp_opt, cnn_opt = nnx.merge(graphdef, state)
    idx = jax.lax.dynamic_slice_in_dim(perm, step * batch_size, batch_size)
    x, y = images[idx], labels[idx]

    def loss_fn(isp, model):
        if phase.train_isp:  # sampled gates and the cost penalty of an adaptive ISP
            x_in = x if phase.transform is None else phase.transform(x)
            processed, aux = isp.forward_train(x_in, jax.random.fold_in(key, step))
            penalty = aux["penalty"]
        else:
            processed, penalty = phase.inputs(isp, x), 0.0
        logits = model(processed)
        return cross_entropy(logits, y) + penalty, logits

    argnums = (0, 1) if phase.train_isp and phase.train_cnn else (0 if phase.train_isp else 1)
    (loss, logits), grads = nnx.value_and_grad(loss_fn, argnums=argnums, has_aux=True)(isp, model)
    if phase.train_isp and phase.train_cnn:
        isp_opt.update(isp, grads[0])
        cnn_opt.update(model, grads[1])
    elif phase.train_isp:
        isp_opt.update(isp, grads)
    else:
        cnn_opt.update(model, grads)
    correct = jnp.sum(jnp.argmax(logits, -1) == y)
    return nnx.state((isp, model, isp_opt, cnn_opt)), loss, correct


@partial(
    jax.jit,
    static_argnames=("graphdef", "phase", "batch_size", "steps"),
    donate_argnames=("state",),
)
def _train_epoch(graphdef, state, images, labels, perm, key, *, phase, batch_size, steps):
    """``steps`` training steps as one XLA call (``lax.scan``): ~10 % faster than dispatching
    each step from Python on this CPU (measured by ``diffisp bench``), same maths."""

    def body(state, step):
        state, loss, correct = _train_step.__wrapped__(
            graphdef, state, images, labels, perm, key, step, phase=phase, batch_size=batch_size
        )
        return state, (loss, correct)

    return jax.lax.scan(body, state, jnp.arange(steps))


def build_isp(cfg: TrainConfig, seed_offset: int = 0) -> nnx.Module:
    """The ISP a config asks for: the global :class:`ISP`, or the per-image ``AdaptiveISP``."""
    if not cfg.adaptive:
        return ISP(cfg.isp)
    from diffisp.isp.adaptive import AdaptiveISP

    rngs = nnx.Rngs(jax.random.fold_in(jax.random.key(cfg.seed), _INIT + 1 + seed_offset))
    return AdaptiveISP(cfg.isp, gates=cfg.gates, cost_weight=cfg.cost_weight, rngs=rngs)


def epoch_key(seed: int, phase: Phase, epoch: int) -> jax.Array:
    """The key of one epoch's random draws: a function of (seed, phase, epoch) only."""
    key = jax.random.fold_in(jax.random.key(seed), _SHUFFLE)
    return jax.random.fold_in(key, phase.index * 100_000 + epoch)


def epoch_permutation(seed: int, phase: Phase, epoch: int, n: int) -> jax.Array:
    """The order of the training images in one epoch."""
    return jax.random.permutation(epoch_key(seed, phase, epoch), n)


def train_one_epoch(
    modules: tuple[nnx.Module | None, nnx.Module, tuple[Any, Any]],
    phase: Phase,
    images: jax.Array,
    labels: jax.Array,
    cfg: TrainConfig,
    epoch: int,
    on_step: Callable[[Phase, int], None] | None = None,
) -> tuple[tuple[Any, Any, tuple[Any, Any]], float, float]:
    """One epoch of ``phase`` over device-resident ``images``; returns new modules, loss, acc.

    Drops the last incomplete batch (each epoch has its own permutation, so every image is seen).
    Checks the loss and the trained parameters for NaN/Inf before returning them, and
    re-estimates batch-norm statistics when the CNN was trained.

    Raises:
      TrainingDivergedError: the loss or a trained parameter is not finite.
    """
    isp, model, optimizers = modules
    if phase.train_cnn:
        model.train()
    else:
        model.eval()
    graphdef, state = nnx.split((isp, model, *optimizers))
    perm = epoch_permutation(cfg.seed, phase, epoch, images.shape[0])
    steps = images.shape[0] // cfg.batch_size
    gate_key = jax.random.fold_in(epoch_key(cfg.seed, phase, epoch), 1)
    state, (losses, corrects) = _train_epoch(
        graphdef,
        state,
        images,
        labels,
        perm,
        gate_key,
        phase=phase,
        batch_size=cfg.batch_size,
        steps=steps,
    )
    isp, model, *opts = nnx.merge(graphdef, state)
    mean_loss = float(jnp.mean(losses))
    if on_step is not None:
        on_step(phase, steps)
    trained = [m for m, on in ((isp, phase.train_isp), (model, phase.train_cnn)) if on]
    if not np.isfinite(mean_loss) or not _all_finite(trained):
        what = (
            f"loss became {mean_loss}"
            if not np.isfinite(mean_loss)
            else "parameters became NaN/Inf"
        )
        raise TrainingDivergedError(
            f"{what} in phase {phase.index} ({phase.name}), epoch {epoch + 1}; stopped "
            "before saving them. Try a lower learning rate."
        )
    if phase.train_cnn and cfg.bn_calibration:
        calibration = phase.inputs(None, images[: cfg.bn_calibration])
        recalibrate_batch_norm(model, calibration, isp=isp if phase.use_isp else None)
    model.eval()
    train_acc = float(jnp.sum(corrects)) / (steps * cfg.batch_size)
    return (isp, model, tuple(opts)), mean_loss, train_acc


def finetune_cnn(
    model: nnx.Module,
    images: jax.Array,
    labels: jax.Array,
    cfg: TrainConfig,
    *,
    epochs: int,
    lr: float,
    transform: Callable[[jax.Array], jax.Array] | None = None,
    name: str = "finetune",
    index: int = 10,
) -> nnx.Module:
    """Train a copy of ``model`` on ``transform(images)`` with no ISP: the fair baselines.

    ``index`` keeps the epoch permutations of different baselines distinct from the protocol's.
    """
    phase = Phase(
        index,
        name,
        dark_input=True,
        train_isp=False,
        train_cnn=True,
        use_isp=False,
        transform=transform,
    )
    model = detached_copy(model)
    steps = images.shape[0] // cfg.batch_size * epochs
    optimizer = nnx.Optimizer(model, make_optimizer(lr, steps, cfg.schedule), wrt=nnx.Param)
    modules = (None, model, (None, optimizer))
    for epoch in range(epochs):
        modules, _, _ = train_one_epoch(modules, phase, images, labels, cfg, epoch)
    return modules[1]


@dataclass
class EpochRecord:
    phase: int
    phase_name: str
    epoch: int
    loss: float
    train_acc: float
    test_acc: float
    seconds: float


@dataclass
class Trainer:
    """Owns the ISP, the CNN, the optimisers of the current phase and the run's history.

    ``position`` is ``(phase, epoch)`` of the next epoch to run; ``snapshots`` keeps the states
    that evaluation needs later (the CNN after phase 0, the ISP after phase 1).
    """

    cfg: TrainConfig
    data: RunData
    isp: ISP = field(init=False)
    model: SmallCNN = field(init=False)
    history: list[EpochRecord] = field(default_factory=list)
    position: tuple[int, int] = (0, 0)
    snapshots: dict[str, Any] = field(default_factory=dict)
    optimizers: tuple[Any, Any] = (None, None)

    def __post_init__(self) -> None:
        rngs = nnx.Rngs(jax.random.fold_in(jax.random.key(self.cfg.seed), _INIT))
        self.isp = build_isp(self.cfg)
        self.model = SmallCNN(self.data.num_classes, rngs=rngs)

    def epochs_in(self, phase: Phase) -> int:
        cfg = self.cfg
        return (cfg.epochs_clean, cfg.epochs_isp, cfg.epochs_joint)[phase.index]

    def steps_per_epoch(self) -> int:
        return self.data.num_train // self.cfg.batch_size

    def new_optimizers(self, phase: Phase) -> tuple[Any, Any]:
        cfg, steps = self.cfg, self.steps_per_epoch() * self.epochs_in(phase)
        lr_cnn = cfg.lr_clean if phase.index == 0 else cfg.lr_cnn
        isp_opt = cnn_opt = None
        if phase.train_isp:
            if cfg.adaptive:  # a network: smaller, decaying steps, clipped against spikes
                tx = make_optimizer(cfg.lr_predictor, steps, "cosine", clip_norm=1.0)
            else:
                tx = make_optimizer(cfg.lr_isp, steps, cfg.isp_schedule)
            isp_opt = nnx.Optimizer(self.isp, tx, wrt=nnx.Param)
        if phase.train_cnn:
            cnn_opt = nnx.Optimizer(
                self.model, make_optimizer(lr_cnn, steps, cfg.schedule), wrt=nnx.Param
            )
        return isp_opt, cnn_opt

    def run(
        self,
        on_epoch: Callable[[Trainer, EpochRecord], None] | None = None,
        on_step: Callable[[Phase, int], None] | None = None,
    ) -> None:
        """Run every remaining epoch of every phase, from ``position`` on.

        ``on_epoch`` is called after each epoch (and after a phase ends, with its snapshot
        taken), which is where a caller checkpoints; ``on_step(phase, steps)`` after each epoch
        with the number of steps it ran (progress).
        """
        while not self.done:
            phase_index, epoch = self.position
            phase = PHASES[phase_index]
            if epoch >= self.epochs_in(phase):  # a phase with zero epochs
                self._end_phase(phase)
                continue
            if epoch == 0:
                self.optimizers = self.new_optimizers(phase)
            record = self.run_epoch(phase, epoch, on_step)
            self.history.append(record)
            self.position = (phase_index, epoch + 1)
            if epoch + 1 == self.epochs_in(phase):
                self._end_phase(phase)
            if on_epoch is not None:
                on_epoch(self, record)

    def _end_phase(self, phase: Phase) -> None:
        if phase.index == 0:
            self.snapshots["cnn_clean"] = detached_copy(self.model)
        elif phase.index == 1:
            self.snapshots["isp_phase1"] = detached_copy(self.isp)
        self.model.eval()
        self.position = (phase.index + 1, 0)
        self.optimizers = (None, None)

    def run_epoch(self, phase: Phase, epoch: int, on_step=None) -> EpochRecord:
        cfg, data = self.cfg, self.data
        start = time.perf_counter()
        images = data.train_dark if phase.dark_input else data.train_clean
        (self.isp, self.model, self.optimizers), loss, train_acc = train_one_epoch(
            (self.isp, self.model, self.optimizers),
            phase,
            images,
            data.train_labels,
            cfg,
            epoch,
            on_step,
        )
        test_images = data.test_dark if phase.dark_input else data.test_clean
        test_acc = accuracy(
            self.model,
            phase.inputs(None, test_images),
            data.test_labels,
            isp=self.isp if phase.use_isp else None,
        )
        return EpochRecord(
            phase.index,
            phase.name,
            epoch + 1,
            loss,
            train_acc,
            test_acc,
            time.perf_counter() - start,
        )

    @property
    def done(self) -> bool:
        return self.position[0] >= len(PHASES)


def detached_copy(module: nnx.Module) -> nnx.Module:
    """A copy of ``module`` with its own buffers: training steps donate (free) the originals."""
    copy = nnx.clone(module)
    nnx.update(copy, jax.tree.map(jnp.copy, nnx.state(copy)))
    return copy


def _all_finite(modules: Any) -> bool:
    leaves = jax.tree.leaves(nnx.state(modules, nnx.Param))
    return all(bool(jnp.isfinite(leaf).all()) for leaf in leaves)
