"""Data parallelism with ``jax.sharding``: one compiled epoch for one device, many, or many hosts.

A :class:`DataParallel` is a 1-D :class:`~jax.sharding.Mesh` named ``"data"`` over the devices
a run trains on. The training epoch (:func:`diffisp.training.step.train_epoch`) receives the
state, the data set and the permutation replicated over the mesh, and constrains each batch it
slices to be split along its image axis: XLA's SPMD partitioner then runs every device on its
share of the batch, and the reductions that cross it (the loss mean, batch-norm statistics,
the gradient sum) become all-reduces. Nothing else changes: with one device the mesh has one
member and the code path is the same.

Why replicate the parameters and the optimiser state instead of sharding them: the ISP has tens
of parameters and the task models a few hundred thousand, so a copy per device costs nothing
and a sharded design would only add communication. The in-memory data set is replicated too
(each step gathers a random batch from it; a sharded set would need an all-to-all per step);
a set that does not fit one device streams instead (:class:`diffisp.data.stream.StreamedSource`).

Only the epoch runs on the mesh: its results come back as each process's local copy
(:meth:`DataParallel.local`), so evaluation, checkpoints and reports work on ordinary
single-device arrays. Across hosts (:func:`initialize_distributed`, ``jax.distributed``) every
process runs the same program on the same data; process 0 writes the run's files.
"""

from __future__ import annotations

import math
import os
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from diffisp.errors import ConfigError

AXIS = "data"
_PLACED_CACHE_SIZE = 8  # data trees kept placed on the mesh (train/clean x images/targets)


@dataclass(eq=False)
class DataParallel:
    """The devices a run trains on, as a 1-D mesh with the batch split along ``"data"``."""

    mesh: Mesh
    _placed: OrderedDict = field(default_factory=OrderedDict, repr=False)

    @property
    def num_devices(self) -> int:
        return int(self.mesh.devices.size)

    @property
    def replicated(self) -> NamedSharding:
        return NamedSharding(self.mesh, PartitionSpec())

    @property
    def batch(self) -> NamedSharding:
        """Leading (image) axis split over the devices, the rest whole."""
        return NamedSharding(self.mesh, PartitionSpec(AXIS))

    def check_batch_size(self, batch_size: int) -> None:
        check_batch_split(batch_size, self.num_devices)

    def replicate(self, tree: Any) -> Any:
        """``tree``'s arrays as one copy per device of the mesh (every process must pass the
        same values: each host holds the whole in-memory data set and the same state)."""
        sharding = self.replicated
        to_host = jax.process_count() > 1  # a local array cannot be placed on other hosts' devices

        def place(leaf: Any) -> Any:
            if not (to_host and isinstance(leaf, jax.Array)) or not leaf.is_fully_addressable:
                return jax.device_put(leaf, sharding)  # (a global array: an all-gather)
            if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
                data = jax.device_put(np.asarray(jax.random.key_data(leaf)), sharding)
                return jax.random.wrap_key_data(data, impl=jax.random.key_impl(leaf))
            return jax.device_put(np.asarray(leaf), sharding)

        return jax.tree.map(place, tree)

    def replicate_data(self, tree: Any) -> Any:
        """:meth:`replicate` for a data set, cached: the same arrays are placed once per run,
        not once per epoch. Holds a reference to the arrays it cached (a few, least recently
        used first out)."""
        if self.num_devices == 1:  # placing on the one device is free: nothing to cache
            return self.replicate(tree)
        leaves = jax.tree.leaves(tree)
        key = tuple(id(leaf) for leaf in leaves)
        if key in self._placed:
            self._placed.move_to_end(key)
            return self._placed[key][1]
        placed = self.replicate(tree)
        self._placed[key] = (leaves, placed)  # the leaves keep their ids from being reused
        while len(self._placed) > _PLACED_CACHE_SIZE:
            self._placed.popitem(last=False)
        return placed

    def from_hosts(self, tree: Any) -> Any:
        """Each process's share of a batch-like ``tree`` (``(n, ...)`` arrays, the same ``n``
        on every process) as global arrays of ``n * process_count`` along the image axis,
        process 0's share first: a streamed chunk that every host read a slice of."""
        return jax.tree.map(
            lambda leaf: jax.make_array_from_process_local_data(self.batch, np.asarray(leaf)),
            tree,
        )

    def local(self, tree: Any) -> Any:
        """This process's copy of a replicated ``tree``, as arrays on one local device."""

        def one(leaf: Any) -> Any:
            if isinstance(leaf, jax.Array) and len(leaf.sharding.device_set) > 1:
                return leaf.addressable_data(0)
            return leaf

        return jax.tree.map(one, tree)


def check_batch_split(batch_size: int, num_devices: int) -> None:
    """Raise :class:`ConfigError` unless ``batch_size`` images split evenly over the devices."""
    if batch_size % num_devices:
        raise ConfigError(
            f"batch size {batch_size} does not split over {num_devices} devices: use a "
            f"multiple of {num_devices}, or fewer devices (--devices)"
        )


@cache
def data_parallel(devices: int | None = None) -> DataParallel:
    """The mesh over the first ``devices`` devices (``None``: all of them, on every host).

    Raises:
      ConfigError: ``devices`` is not a positive int, exceeds the devices there are, or (with
        several processes) is not all of them.
    """
    available = jax.devices()
    if devices is None:
        devices = len(available)
    if isinstance(devices, bool) or not isinstance(devices, int) or devices < 1:
        raise ConfigError(f"devices must be a positive int or None (all), got {devices!r}")
    if devices > len(available):
        raise ConfigError(
            f"devices={devices} but JAX sees {len(available)} "
            f"({available[0].platform}); leave --devices out to use them all"
        )
    if jax.process_count() > 1 and devices != len(available):
        raise ConfigError(
            f"with {jax.process_count()} processes a run trains on all {len(available)} devices; "
            f"got devices={devices}"
        )
    mesh = jax.make_mesh(
        (devices,), (AXIS,), devices=available[:devices], axis_types=(AxisType.Auto,)
    )
    return DataParallel(mesh)


DEFAULT_COORDINATOR_TIMEOUT = 60.0  # seconds to wait for every process to join
# XLA's own deadline comes this much later than ours: its expiry aborts the process (SIGABRT,
# a C++ "Check failure" stack), so ours must always fire first.
_XLA_DEADLINE_MARGIN_S = 30
EXIT_PROCESSES_MISSING = 2  # the exit status when the processes did not all join in time


def initialize_distributed(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    timeout: float = DEFAULT_COORDINATOR_TIMEOUT,
    log: Callable[[str], None] | None = None,
) -> None:
    """Join a multi-process run (``jax.distributed.initialize``), before any other JAX call.

    With all three arguments, the processes meet at ``coordinator`` (``host:port`` of process
    0); without them JAX reads its cluster's environment (SLURM, Open MPI, Cloud TPU, or the
    ``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID`` variables). On CPU,
    JAX's collectives across processes use gloo (tested on localhost).

    The wait is bounded: ``log`` (default: standard error) first says that this process waits
    for the others at ``coordinator``; if they have not all joined after ``timeout`` seconds,
    one line ``diffisp: error: ...`` naming the address and the processes is printed and the
    process exits with status :data:`EXIT_PROCESSES_MISSING` (2). It cannot raise instead:
    JAX's join is one C++ call that, past its own deadline, aborts the whole process.

    Raises:
      ConfigError: only some of the three arguments given, or out-of-range values (also of
        ``timeout``: a positive, finite number of seconds).
    """
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, (int, float))
        or not math.isfinite(timeout)
        or timeout <= 0
    ):
        raise ConfigError(
            f"the coordinator timeout must be a positive number of seconds, got {timeout!r}"
        )
    given = [coordinator is not None, num_processes is not None, process_id is not None]
    if any(given) and not all(given):
        raise ConfigError(
            "a multi-process run needs --coordinator HOST:PORT, --num-processes and --process-id "
            "together (or none of them, to read the cluster's environment)"
        )
    if all(given):
        if not isinstance(num_processes, int) or num_processes < 1:
            raise ConfigError(f"num_processes must be a positive int, got {num_processes!r}")
        if not isinstance(process_id, int) or not 0 <= process_id < num_processes:
            raise ConfigError(f"process_id must be in [0, {num_processes}), got {process_id!r}")
        if ":" not in str(coordinator):
            raise ConfigError(f"coordinator must be HOST:PORT, got {coordinator!r}")
    where = coordinator or os.environ.get("JAX_COORDINATOR_ADDRESS") or "the cluster's coordinator"
    count = f"{num_processes} processes" if num_processes is not None else "the processes"
    me = "" if process_id is None else f" (this is process {process_id})"
    say = log or (lambda line: print(line, file=sys.stderr, flush=True))
    if num_processes != 1:
        say(f"waiting up to {timeout:g} s for {count} of the run to join at {where}{me} ...")
    watchdog = threading.Timer(
        timeout,
        _give_up,
        args=(
            f"{count} of the run did not all join at {where} within {timeout:g} s{me}: start "
            "the others with the same --coordinator and --num-processes and each its own "
            "--process-id, or wait longer (--coordinator-timeout SECONDS)",
        ),
    )
    watchdog.daemon = True
    watchdog.start()
    try:
        jax.distributed.initialize(
            coordinator_address=coordinator,
            num_processes=num_processes,
            process_id=process_id,
            initialization_timeout=math.ceil(timeout) + _XLA_DEADLINE_MARGIN_S,
        )
    finally:
        watchdog.cancel()


def _give_up(message: str) -> None:
    """The watchdog of :func:`initialize_distributed`: one error line, then exit at once (the
    main thread is inside XLA's join and cannot be interrupted; ``os._exit`` skips JAX's exit
    hooks, which would wait on that join)."""
    sys.stdout.flush()
    print(f"diffisp: error: {message}", file=sys.stderr, flush=True)
    os._exit(EXIT_PROCESSES_MISSING)


def is_primary() -> bool:
    """Whether this process writes the run's files (process 0; always, with one process)."""
    return jax.process_index() == 0
