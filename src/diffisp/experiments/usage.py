"""What an ISP does on a test set: active stages, parameter spread, measured run time per image.

Works for any :class:`~diffisp.isp.chain.LearnedISP`: the global ISP (every stage runs on every
image, one parameter set) and the adaptive ISP (per-image parameters and gates; its fastest
inference skips inactive stages, so its time falls as gates switch stages off).
"""

from __future__ import annotations

import resource
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from flax import nnx

from diffisp.capture.raw_capture import num_images
from diffisp.isp.chain import LearnedISP


def peak_memory_mib() -> tuple[float, str]:
    """The peak memory so far, MiB, and what was measured: the first device's
    ``peak_bytes_in_use`` where the platform reports it (GPUs, TPUs), else this process's
    peak resident memory (on a CPU backend the device's arrays are host memory; Linux reports
    ``ru_maxrss`` in KiB). Both only grow during a process."""
    stats = jax.devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        return stats["peak_bytes_in_use"] / 2**20, "device peak_bytes_in_use"
    return peak_rss_mib(), "process peak RSS"


def peak_rss_mib() -> float:
    """This process's peak resident memory so far, MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def best_seconds(fn: Callable[[], Any], repeats: int) -> float:
    """Wall time of the fastest of ``repeats`` calls of ``fn`` (its result awaited)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        best = min(best, time.perf_counter() - start)
    return best


def isp_usage(
    isp: LearnedISP, images: jax.Array, *, repeats: int = 3, timed: bool = True
) -> dict[str, Any]:
    """Mean active stages per image, per-stage activity, and (``timed``) ISP milliseconds per
    image.

    Time is the best of ``repeats`` runs of the ISP's fastest inference over ``images`` in one
    batch, after a first call that compiles it.
    """
    active = np.asarray(_active(isp, images), dtype=bool)
    rates = {name: float(active[:, s].mean()) for s, name in enumerate(isp.stage_names)}
    usage: dict[str, Any] = {"active_stages": float(sum(rates.values())), "stage_rates": rates}
    if timed:
        run = isp.fastest_inference()
        jax.block_until_ready(run(images))
        seconds = best_seconds(lambda: run(images), repeats)
        usage["isp_ms_per_image"] = 1e3 * seconds / num_images(images)
    return usage


@nnx.jit
def _active(isp: LearnedISP, images: jax.Array) -> jax.Array:
    return isp.decisions(images)["active"]


def parameter_summary(isp: LearnedISP, images: jax.Array) -> dict[str, Any]:
    """Learned parameters: the global ISP's values, or per-image mean/std (adaptive ISP)."""
    return isp.parameter_summary(images)
