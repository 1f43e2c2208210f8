"""Train a tiny joint (ISP + model) run and save its loss curve and final parameters (``.npz``).

Run by tests/training/test_parallel.py in fresh processes, since the device count
(``XLA_FLAGS=--xla_force_host_platform_device_count=N``) and ``jax.distributed`` are fixed when
JAX starts::

    python parallel_worker.py CASE OUT.npz --devices 1 8
    python parallel_worker.py CASE OUT.npz --coordinator localhost:PORT --num-processes 2 \\
        --process-id 0

CASE is ``classify`` (global ISP), ``adaptive`` (adaptive ISP, gates and cost), ``detect``, or
``stream:FOLDER`` (a classification folder read while training, each host its slice).
The run is two epochs of phase 2 through :func:`diffisp.training.step.train_one_epoch`, the
one training path of every phase.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


def _config(case: str, devices: int | None):
    from diffisp.training.config import TrainConfig

    common = dict(
        num_train=64,
        num_test=16,
        batch_size=16,
        bn_calibration=32,
        devices=devices,
    )
    if case == "classify":
        return TrainConfig.of(data="builtin", image_size=16, isp="full", **common)
    if case == "adaptive":
        return TrainConfig.of(
            data="builtin", image_size=16, isp="full", adaptive=True, cost_weight=0.5, **common
        )
    if case == "detect":
        return TrainConfig.of(task="detect", data="scenes", image_size=32, **common)
    if case.startswith("stream:"):  # a generated image folder, streamed (8-batch chunks)
        return TrainConfig.of(
            data="folder:" + case.removeprefix("stream:"),
            image_size=16,
            stream=True,
            stream_chunk_batches=2,
            **common,
        )
    raise SystemExit(f"unknown case {case!r}")


def _dataset(case: str, cfg):
    if case.startswith("stream:"):
        from diffisp.experiments.run import load_run_data

        return load_run_data(cfg)
    if case == "detect":
        from diffisp.data.scenes import load_scenes

        return load_scenes(64, 16, image_size=32, seed=0)
    from diffisp.data import load_dataset

    return load_dataset("builtin", num_train=64, num_test=16, image_size=16, seed=0)


def train_case(case: str, devices: int | None, epochs: int = 2) -> dict[str, np.ndarray]:
    """``epochs`` epochs of phase 2 (ISP and model trained jointly, batch norm recalibrated
    after each) from a fresh state: every parameter group, every gradient path."""
    import jax
    from flax import nnx

    from diffisp.experiments.run import prepare_run_data
    from diffisp.training.loop import train_epoch_of
    from diffisp.training.state import PHASES, TrainState

    cfg = _config(case, devices)
    data = prepare_run_data(_dataset(case, cfg), cfg)
    state = TrainState.create(cfg, data.num_classes)
    phase = PHASES[2]
    state.optimizer = state.new_optimizer(phase, data.num_train)
    losses = [train_epoch_of(state, data, phase, epoch)[0] for epoch in range(epochs)]
    params = jax.tree.leaves(nnx.state(state.learner, nnx.Param))
    return {
        "losses": np.array(losses),
        "params": np.concatenate([np.asarray(p).ravel() for p in params]),
    }


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("case")
    parser.add_argument("out", type=Path)
    parser.add_argument("--devices", type=int, nargs="*", default=[None])
    parser.add_argument("--coordinator")
    parser.add_argument("--num-processes", type=int)
    parser.add_argument("--process-id", type=int)
    args = parser.parse_args(argv)
    if args.coordinator:
        from diffisp.training.parallel import initialize_distributed

        initialize_distributed(args.coordinator, args.num_processes, args.process_id)
    results = {}
    for devices in args.devices:
        for name, value in train_case(args.case, devices).items():
            results[f"{name}_{devices or 'all'}"] = value
    np.savez(args.out, **results)


if __name__ == "__main__":
    main(sys.argv[1:])
