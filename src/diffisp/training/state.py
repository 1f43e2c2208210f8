"""The training state: ISP, task model, the phase's optimiser, position and history in one place.

Shaped like the Flax NNX examples: one object a reader can see whole. What learns is one NNX
module, :class:`Learner` (the ISP in front of the task model), and each phase gets ONE optax
transformation over it: ``optax.multi_transform`` with a label per parameter group (``"isp"``,
``"task"``). Which groups a phase trains is data (:attr:`Phase.trainable`, an NNX filter), not
a code path: the step differentiates and updates exactly those parameters, so a frozen group
costs no gradient work and its optimiser state does not exist.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from diffisp.isp.adaptive import AdaptiveISP
from diffisp.isp.adaptive.predictor import DIRECT_PARAM_NAMES, STATS_MAP_NAME
from diffisp.isp.chain import ISP, LearnedISP, split_raw_front
from diffisp.isp.raw import build_raw_isp
from diffisp.models.task import CLASSIFY, TASKS, Task
from diffisp.training import keys
from diffisp.training.config import TrainConfig
from diffisp.util.compiled import compiled_init


@dataclass(frozen=True)
class _Under:
    """NNX filter: the variable lives under the learner's attribute ``name``."""

    name: str

    def __call__(self, path: tuple, value: Any) -> bool:
        return bool(path) and path[0] == self.name


ISP_PARAMS = nnx.All(nnx.Param, _Under("isp"))
TASK_PARAMS = nnx.All(nnx.Param, _Under("model"))


@dataclass(frozen=True)
class Phase:
    """One stage of training: which images go in, through what, and what learns.

    The input path is ``images (clean or dark) -> transform (a fixed function, optional) -> ISP
    (when use_isp) -> task model``. Phases are static arguments of the compiled step, so
    ``transform`` must be a hashable module-level function.
    """

    index: int
    name: str
    dark_input: bool
    train_isp: bool
    train_cnn: bool
    use_isp: bool = True
    transform: Callable[[jax.Array], jax.Array] | None = None

    @property
    def trainable(self) -> Any:
        """NNX filter of the :class:`Learner` parameters this phase optimises."""
        if self.train_isp and self.train_cnn:
            return nnx.Param
        return ISP_PARAMS if self.train_isp else TASK_PARAMS

    def inputs(self, isp: nnx.Module | None, images: jax.Array) -> jax.Array:
        x = images if self.transform is None else self.transform(images)
        return isp(x) if (self.use_isp and isp is not None) else x


PHASES = (
    Phase(0, "clean", dark_input=False, train_isp=False, train_cnn=True, use_isp=False),
    Phase(1, "isp", dark_input=True, train_isp=True, train_cnn=False),
    Phase(2, "joint", dark_input=True, train_isp=True, train_cnn=True),
)


@dataclass
class EpochRecord:
    phase: int
    phase_name: str
    epoch: int
    loss: float
    train_acc: float
    test_acc: float
    seconds: float


class Learner(nnx.Module):
    """What learns: an ISP (or ``None``) in front of a task model."""

    def __init__(self, isp: nnx.Module | None, model: nnx.Module) -> None:
        self.isp = isp
        self.model = model


def make_optimizer(
    lr: float, steps: int, schedule: str, clip_norm: float | None = None
) -> optax.GradientTransformation:
    """Adam at ``lr``, constant or cosine-decayed to zero over ``steps``, optionally after
    clipping the gradient's global norm."""
    rate = optax.cosine_decay_schedule(lr, max(steps, 1)) if schedule == "cosine" else lr
    adam = optax.adam(rate)
    return adam if clip_norm is None else optax.chain(optax.clip_by_global_norm(clip_norm), adam)


def group_labels(params: Any) -> Any:
    """``"isp"``, ``"isp_direct"``, ``"isp_stats"`` or ``"task"`` for every parameter leaf of a
    :class:`Learner` state; ``"isp_stats"``: the adaptive predictor's statistics map
    (``STATS_MAP_NAME``), ``"isp_direct"``: its other linear pathway (``DIRECT_PARAM_NAMES``)."""

    def label(path: tuple, _: Any) -> str:
        if path[0].key != "isp":
            return "task"
        names = {getattr(entry, "key", None) for entry in path}
        if STATS_MAP_NAME in names:
            return "isp_stats"
        return "isp_direct" if names & set(DIRECT_PARAM_NAMES) else "isp"

    return jax.tree_util.tree_map_with_path(label, params)


def isp_transforms(
    cfg: TrainConfig, steps: int, schedule: str, *, lr_stats_map: float | None = None
) -> dict[str, optax.GradientTransformation]:
    """The ISP's optax transformations, for labels ``"isp"``, ``"isp_direct"``, ``"isp_stats"``.

    A global ISP: Adam at ``lr_isp`` (``schedule``). An adaptive ISP: its network takes smaller,
    cosine-decaying, clipped steps (``lr_predictor``); its shared raw offset those of a global
    ISP's parameters, which it is in kind (``lr_isp``, ``schedule``); its statistics-to-parameter
    map the same at ``lr_stats_map`` (default ``cfg.optim.lr_stats_map``: its inputs are large and
    nearly collinear, see :class:`~diffisp.training.config.TrainConfig`).
    """
    direct = make_optimizer(cfg.optim.lr_isp, steps, schedule)
    if not cfg.isp.adaptive:
        return {"isp": direct}
    network = make_optimizer(cfg.optim.lr_predictor, steps, "cosine", clip_norm=1.0)
    stats_lr = cfg.optim.lr_stats_map if lr_stats_map is None else lr_stats_map
    return {
        "isp": network,
        "isp_direct": direct,
        "isp_stats": make_optimizer(stats_lr, steps, schedule),
    }


def phase_transform(cfg: TrainConfig, phase: Phase, steps: int) -> optax.GradientTransformation:
    """The one optax transformation of a phase: a group per learning rate.

    The ISP's groups are :func:`isp_transforms`'.
    """
    lr_task = cfg.optim.lr_clean if phase.index == 0 else cfg.optim.lr_cnn
    task_tx = make_optimizer(lr_task, steps, cfg.optim.schedule)
    return optax.multi_transform(
        {**isp_transforms(cfg, steps, cfg.optim.isp_schedule), "task": task_tx}, group_labels
    )


def build_isp(cfg: TrainConfig, seed_offset: int = 0) -> LearnedISP:
    """The ISP a config asks for: the global :class:`ISP` or the per-image ``AdaptiveISP``,
    behind the learnable RAW front when the stages start with RAW stages (``--input raw``)."""

    def chain_isp(stages: tuple[str, ...]) -> LearnedISP:
        if not cfg.isp.adaptive:
            return ISP(stages)
        seed = jax.random.fold_in(jax.random.key(cfg.seed), keys.INIT + 1 + seed_offset)
        return compiled_init(
            lambda rngs: AdaptiveISP(
                stages, gates=cfg.isp.gates, cost_weight=cfg.isp.cost_weight, rngs=rngs
            ),
            nnx.Rngs(seed),
        )

    if split_raw_front(cfg.isp.stages)[0]:
        return build_raw_isp(
            cfg.isp.stages, chain_isp, demosaic=cfg.isp.raw_demosaic, residual=cfg.isp.raw_residual
        )
    return chain_isp(cfg.isp.stages)


def detached_copy(module: nnx.Module) -> nnx.Module:
    """A copy of ``module`` with its own buffers: training steps donate (free) the originals."""
    copy = nnx.clone(module)
    nnx.update(copy, jax.tree.map(jnp.copy, nnx.state(copy)))
    return copy


@dataclass
class TrainState:
    """Everything a run's training has, and nothing it does not (no data, no files).

    ``learner`` holds the ISP and the task model; ``optimizer`` is the current phase's (``None``
    between phases); ``position`` is ``(phase, epoch)`` of the next epoch to run; ``history``
    one :class:`EpochRecord` per finished epoch; ``snapshots`` the modules evaluation needs
    later (the model after phase 0, the ISP after phase 1). Saved and restored whole by
    :class:`diffisp.training.checkpoint.TrainingCheckpoints`.
    """

    cfg: TrainConfig
    learner: Learner
    num_classes: int
    task: Task = CLASSIFY
    optimizer: nnx.Optimizer | None = None
    position: tuple[int, int] = (0, 0)
    history: list[EpochRecord] = field(default_factory=list)
    snapshots: dict[str, nnx.Module] = field(default_factory=dict)

    @classmethod
    def create(cls, cfg: TrainConfig, num_classes: int, task: Task | None = None) -> TrainState:
        """A fresh state: identity ISP, a model initialised from ``cfg.seed``; the task is
        ``cfg.task.name``'s (:data:`~diffisp.models.task.TASKS`) unless one is given."""
        task = TASKS[cfg.task.name] if task is None else task
        rngs = nnx.Rngs(jax.random.fold_in(jax.random.key(cfg.seed), keys.INIT))
        model = task.build_model(num_classes, rngs=rngs)
        return cls(cfg, Learner(build_isp(cfg), model), num_classes, task)

    @property
    def isp(self) -> LearnedISP:
        return self.learner.isp

    @property
    def model(self) -> nnx.Module:
        return self.learner.model

    @property
    def done(self) -> bool:
        return self.position[0] >= len(PHASES)

    def epochs_in(self, phase: Phase) -> int:
        cfg = self.cfg
        return (cfg.optim.epochs_clean, cfg.optim.epochs_isp, cfg.optim.epochs_joint)[phase.index]

    def steps_per_epoch(self, num_train: int) -> int:
        return num_train // self.cfg.optim.batch_size

    def new_optimizer(self, phase: Phase, num_train: int) -> nnx.Optimizer:
        """The optimiser of ``phase``, over exactly the parameters it trains."""
        steps = self.steps_per_epoch(num_train) * self.epochs_in(phase)
        tx = phase_transform(self.cfg, phase, steps)
        return nnx.Optimizer(self.learner, tx, wrt=phase.trainable)

    def blank_snapshot(self, name: str) -> nnx.Module:
        """A module of the right structure for snapshot ``name`` (to restore a checkpoint into)."""
        if name == "cnn_clean":
            return self.task.build_model(self.num_classes, rngs=nnx.Rngs(0))
        if name == "isp_phase1":
            return build_isp(self.cfg)
        raise KeyError(f"unknown snapshot {name!r}")

    def end_phase(self, phase: Phase) -> None:
        """Take the phase's snapshot and move to the next phase."""
        if phase.index == 0:
            self.snapshots["cnn_clean"] = detached_copy(self.model)
        elif phase.index == 1:
            self.snapshots["isp_phase1"] = detached_copy(self.isp)
        self.model.eval()
        self.position = (phase.index + 1, 0)
        self.optimizer = None

    @property
    def model_after_phase0(self) -> nnx.Module:
        """The clean-trained model (the "frozen detector" of phase 1 and of the baselines)."""
        return self.snapshots.get("cnn_clean", self.model)

    @property
    def isp_after_phase1(self) -> nnx.Module:
        return self.snapshots.get("isp_phase1", self.isp)
