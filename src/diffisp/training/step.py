"""The one training step, and an epoch of them as one compiled call.

``train_step`` is the whole of training's maths: slice a batch out of the device-resident
data, run it through the phase's input path, score it with the task's loss (plus the ISP's
penalty, e.g. an adaptive ISP's cost), differentiate the phase's trainable parameters and apply
the phase's one optax update. Every phase and every fine-tuned baseline runs this step.

``train_epoch`` scans it over an epoch's chunk: one XLA call per chunk (an in-memory set is one
chunk), data and state on the device, the state's buffers donated. ``train_one_epoch`` is the
host side, the only epoch function training has: it reads the chunks of any
:class:`~diffisp.data.source.EpochSource`, checks that nothing diverged before the caller saves
anything, and re-estimates batch-norm statistics.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding

from diffisp.data.source import EpochSource, chunk_plan, epoch_order
from diffisp.errors import TrainingDivergedError
from diffisp.models.classifier import recalibrate_batch_norm
from diffisp.models.task import Task
from diffisp.training import keys
from diffisp.training.parallel import data_parallel
from diffisp.training.state import Learner, Phase


def train_step(
    graphdef: nnx.GraphDef,
    state: nnx.State,
    images: jax.Array,
    targets: Any,
    perm: jax.Array,
    key: jax.Array,
    step: jax.Array,
    first_step: jax.Array = 0,
    *,
    phase: Phase,
    task: Task,
    batch_size: int,
    batch_sharding: NamedSharding | None = None,
) -> tuple[nnx.State, jax.Array, dict[str, jax.Array]]:
    """One optimisation step of ``phase`` on batch ``step`` of the permutation ``perm``, the
    epoch's step ``first_step + step`` (its random draws, e.g. an adaptive ISP's gate samples,
    come from ``fold_in(key, first_step + step)``: the same however the epoch is chunked).

    ``(graphdef, state)`` is ``nnx.split((learner, optimizer))``. ``batch_sharding``: how to
    lay the batch out over devices (its image axis split over a data-parallel mesh,
    :mod:`diffisp.training.parallel`); ``None`` leaves it to XLA. Returns the new state, the
    loss and the task's per-batch sums (e.g. correct predictions).
    """
    learner, optimizer = nnx.merge(graphdef, state)
    idx = jax.lax.dynamic_slice_in_dim(perm, step * batch_size, batch_size)
    x = jax.tree.map(lambda a: a[idx], images)  # an image array or a RawCapture
    y = jax.tree.map(lambda t: t[idx], targets)
    if batch_sharding is not None:
        x, y = jax.lax.with_sharding_constraint((x, y), batch_sharding)

    def loss_fn(learner: Learner):
        penalty = 0.0
        if phase.train_isp:  # sampled gates and the cost penalty of an adaptive ISP
            x_in = x if phase.transform is None else phase.transform(x)
            step_key = jax.random.fold_in(key, first_step + step)
            processed, aux = learner.isp.forward_train(x_in, step_key)
            penalty = aux["penalty"]
        else:
            processed = phase.inputs(learner.isp, x)
        loss, sums = task.loss(learner.model, processed, y)
        return loss + penalty, sums

    grad_fn = nnx.value_and_grad(loss_fn, argnums=nnx.DiffState(0, phase.trainable), has_aux=True)
    (loss, sums), grads = grad_fn(learner)
    optimizer.update(learner, grads)
    return nnx.state((learner, optimizer)), loss, sums


@partial(
    jax.jit,
    static_argnames=("graphdef", "phase", "task", "batch_size", "steps", "batch_sharding"),
    donate_argnames=("state",),
)
def train_epoch(
    graphdef,
    state,
    images,
    targets,
    perm,
    key,
    first_step,
    *,
    phase,
    task,
    batch_size,
    steps,
    batch_sharding=None,
):
    """``steps`` training steps as one XLA call (``lax.scan``): ~10 % faster than dispatching
    each step from Python on this CPU (measured by ``diffisp bench``), same maths. Over
    several devices when the inputs are placed on a mesh and ``batch_sharding`` splits the
    batch (:func:`train_one_epoch` does both). Returns the new state, each step's loss and
    sums, and whether every trained parameter is finite at the end."""

    def body(state, step):
        state, loss, sums = train_step(
            graphdef,
            state,
            images,
            targets,
            perm,
            key,
            step,
            first_step,
            phase=phase,
            task=task,
            batch_size=batch_size,
            batch_sharding=batch_sharding,
        )
        return state, (loss, sums)

    state, outputs = jax.lax.scan(body, state, jnp.arange(steps))
    learner, _ = nnx.merge(graphdef, state)
    # Checked here, not leaf by leaf on the host: one flag instead of a sync (and, on a first
    # run, a compiled program) per parameter array.
    finite = jnp.all(
        jnp.asarray(
            [jnp.isfinite(p).all() for p in jax.tree.leaves(nnx.state(learner, phase.trainable))]
        )
    )
    return state, outputs, finite


def release_compiled_epochs() -> None:
    """Drop every compiled :func:`train_epoch`; call it before training with a new optimiser.

    An optimiser's optax transformation is part of the compiled epoch's static graph, and every
    optimiser has fresh closures, so a compiled epoch serves one optimiser (one phase of one
    run) and is never reused after it. Kept, they pile up: on CPU each holds a few hundred
    memory mappings of machine code, and a five-seed study reached ~72,000, over Linux's default
    ``vm.max_map_count`` (65,530), and died with "LLVM ERROR: Unable to allocate section
    memory". Dropping them costs no compilation (measured: the same compile count).
    """
    train_epoch.clear_cache()


def train_one_epoch(
    learner: Learner,
    optimizer: nnx.Optimizer,
    phase: Phase,
    source: EpochSource,
    *,
    task: Task,
    seed: int,
    epoch: int,
    batch_size: int,
    bn_calibration: int = 0,
    devices: int | None = None,
) -> tuple[Learner, nnx.Optimizer, float, float]:
    """One epoch of ``phase`` over a training set, chunk by chunk (an in-memory set is one
    chunk), over ``devices`` devices (``None``: all).

    The epoch's order is :func:`~diffisp.data.source.epoch_order` of ``(seed, phase, epoch)``,
    cut by :func:`~diffisp.data.source.chunk_plan`; every chunk runs through the one compiled
    :func:`train_epoch` with its images (clean or captured, as the phase asks) and targets.
    Returns the new learner and optimiser (the old ones' buffers are donated), the mean loss
    over the epoch's steps and the task's training score. Images past the last whole batch
    are left out this epoch. Checks the loss and the trained parameters for NaN/Inf before
    returning them, and re-estimates batch-norm statistics on the source's first
    ``bn_calibration`` images when the model was trained.

    Raises:
      TrainingDivergedError: the loss or a trained parameter is not finite.
      ConfigError: the batch does not split evenly over the devices.
      DataError: fewer images than one batch; a training file cannot be read (named).
    """
    parallel = data_parallel(devices)
    parallel.check_batch_size(batch_size)
    model = learner.model
    model.train() if phase.train_cnn else model.eval()
    order = epoch_order(seed, phase.index, epoch, len(source))
    plan = chunk_plan(order, source.chunk_size, batch_size, source.process_count)
    gate_key = jax.random.fold_in(keys.epoch_key(seed, phase.index, epoch), 1)
    graphdef, state = nnx.split((learner, optimizer))
    state = parallel.replicate(state)
    losses, sums, finite_chunks, first_step = [], [], [], 0
    for chunk in source.chunks(plan, captured=phase.dark_input):
        images = chunk.captured if phase.dark_input else chunk.clean
        data = (images, chunk.targets)
        # Each host read its slice of the chunk: one global chunk from them all.
        data = parallel.from_hosts(data) if chunk.host_local else parallel.replicate_data(data)
        steps = int(chunk.order.shape[0]) // batch_size
        state, (chunk_losses, chunk_sums), finite = train_epoch(
            graphdef,
            state,
            *data,
            parallel.replicate(chunk.order),
            parallel.replicate(gate_key),
            parallel.replicate(jnp.asarray(first_step, jnp.int32)),
            phase=phase,
            task=task,
            batch_size=batch_size,
            steps=steps,
            batch_sharding=parallel.batch,
        )
        # Read at the end of the epoch, not here: waiting for this chunk's steps would leave
        # the device idle while the next chunk is prepared. Waiting for the one before bounds
        # what is queued on the device to two chunks (a streamed set's memory bound).
        losses.append(chunk_losses)
        sums.append(chunk_sums)
        finite_chunks.append(finite)
        if len(losses) > 1:
            losses[-2].block_until_ready()
        first_step += steps
    losses = [np.asarray(parallel.local(chunk), np.float64) for chunk in losses]
    sums = [jax.tree.map(np.asarray, parallel.local(chunk)) for chunk in sums]
    state = parallel.local(state)
    learner, optimizer = nnx.merge(graphdef, state)
    # Summed on the host in float64, step by step: the same for any chunking of the epoch.
    mean_loss = float(np.mean(np.concatenate(losses)))
    finite = all(bool(parallel.local(flag)) for flag in finite_chunks)
    if not np.isfinite(mean_loss) or not finite:
        what = (
            f"loss became {mean_loss}"
            if not np.isfinite(mean_loss)
            else "parameters became NaN/Inf"
        )
        raise TrainingDivergedError(
            f"{what} in phase {phase.index} ({phase.name}), epoch {epoch + 1}; stopped "
            "before saving them. Try a lower learning rate."
        )
    if phase.train_cnn and bn_calibration:
        calibration = phase.inputs(None, source.head(bn_calibration, captured=phase.dark_input))
        isp = learner.isp if phase.use_isp else None
        recalibrate_batch_norm(learner.model, calibration, isp=isp)
    learner.model.eval()
    totals = jax.tree.map(lambda *parts: np.concatenate(parts).sum(axis=0), *sums)
    score = task.train_score(totals, first_step * batch_size)
    return learner, optimizer, mean_loss, score
