"""What an ISP does on a test set: active stages, parameter spread, measured run time per image.

Works for the global :class:`~diffisp.isp.chain.ISP` (every stage runs on every image, one
parameter set) and for the :class:`~diffisp.isp.adaptive.AdaptiveISP` (per-image parameters and
gates; its time is measured with :func:`~diffisp.isp.adaptive.run_hard`, which skips inactive
stages).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from flax import nnx

from diffisp.isp.chain import ISP


def best_seconds(fn: Callable[[], Any], repeats: int) -> float:
    """Wall time of the fastest of ``repeats`` calls of ``fn`` (its result awaited)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        best = min(best, time.perf_counter() - start)
    return best


def isp_usage(isp: nnx.Module, images: jax.Array, *, repeats: int = 3) -> dict[str, Any]:
    """Mean active stages per image, per-stage activity, and ISP milliseconds per image.

    Time is the best of ``repeats`` runs over ``images`` in one batch, after compilation.
    """
    n = int(images.shape[0])
    if isinstance(isp, ISP):
        graphdef, state = nnx.split(isp)
        run = jax.jit(lambda state, x: nnx.merge(graphdef, state)(x))
        run(state, images).block_until_ready()
        seconds = best_seconds(lambda: run(state, images), repeats)
        rates = dict.fromkeys(isp.stage_names, 1.0)
    else:
        from diffisp.isp.adaptive import run_hard

        run_hard(isp, images)  # compiles the chains of the gate patterns that occur
        seconds = best_seconds(lambda: run_hard(isp, images)[0], repeats)
        active = np.asarray(isp.decisions(images)["active"], dtype=bool)
        rates = {name: float(active[:, s].mean()) for s, name in enumerate(isp.stage_names)}
    return {
        "active_stages": float(sum(rates.values())),
        "stage_rates": rates,
        "isp_ms_per_image": 1e3 * seconds / n,
    }


def parameter_summary(isp: nnx.Module, images: jax.Array) -> dict[str, Any]:
    """Learned parameters: the global ISP's values, or per-image mean/std (adaptive ISP)."""
    if isinstance(isp, ISP):
        return {
            stage: {k: np.asarray(v).tolist() for k, v in values.items()}
            for stage, values in isp.values().items()
        }
    decisions = isp.decisions(images)
    active = np.asarray(decisions["active"], dtype=bool)
    out = {}
    for s, (stage, values) in enumerate(decisions["values"].items()):
        out[stage] = {"active_rate": float(active[:, s].mean())}
        for name, v in values.items():
            v = np.asarray(v)
            out[stage][name] = {"mean": v.mean(axis=0).tolist(), "std": v.std(axis=0).tolist()}
    return out
