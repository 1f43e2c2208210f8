"""What each stage costs to run: measured timings, a default table, normalisation for the penalty.

Costs are seconds per image of a stage's *jitted forward pass on its own*, on 32x32 images in
batches of 256, with per-image parameters (what the adaptive ISP runs). Run inside one compiled
chain, XLA fuses neighbouring elementwise stages, so a chain can cost less than the sum of its
stages; the sum is still the right *relative* price for the penalty, and :func:`run_hard`
reports the real end-to-end times.

The predictor is paid for every image whatever the gates say, so it is not in the penalty;
:func:`measure_predictor_cost` reports it. Same machine and settings as the table below: 20,599
parameters (before the 265 of the linear pathways), 0.27 MFLOP and about 12 us per image,
against 7.6 MFLOP for the reference SmallCNN's forward pass, and about 90 us for the ten stages
together.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from diffisp.errors import ConfigError
from diffisp.isp.adaptive.predictor import per_image_values
from diffisp.isp.chain import parse_stage_list, run_chain
from diffisp.isp.stages import STAGES

# Microseconds per 32x32 image, jitted, batch 256, per-image parameters, XLA CPU on the
# development machine (2-core AMD EPYC): the median of three runs of the median of 30 repeats,
# rounded to 2 significant digits. Measured with:
#   python -c "from diffisp.isp.adaptive import measure_stage_costs as m; \
#       print({k: round(v * 1e6, 2) for k, v in m('full', repeats=30).items()})"
# Denoising (25 taps, each with an exp) dominates; gamma is a power per pixel; the others are a
# few fused multiply-adds per pixel. Only ratios matter (the penalty normalises them); on other
# hardware, measure and pass AdaptiveISP(costs=...).
DEFAULT_STAGE_COSTS_US: dict[str, float] = {
    "exposure": 0.87,
    "white_balance": 0.73,
    "ccm": 2.0,
    "denoise": 68.0,
    "sharpen": 3.7,
    "tone_curve": 2.7,
    "gamma": 8.4,
    "contrast": 1.8,
    "saturation": 1.0,
    "desaturation": 0.98,
}


def normalise_costs(
    stage_names: Sequence[str], costs: Mapping[str, float] | None = None
) -> tuple[float, ...]:
    """Each stage's share of the chain's total cost, in ``stage_names`` order (sums to 1).

    Args:
      stage_names: the chain (canonical names).
      costs: any positive cost per stage name (seconds, microseconds, FLOPs: only ratios matter);
        ``None`` uses :data:`DEFAULT_STAGE_COSTS_US`.

    Raises:
      ConfigError: a stage of the chain has no cost, or a cost is not a positive finite number.
    """
    table = DEFAULT_STAGE_COSTS_US if costs is None else costs
    missing = [name for name in stage_names if name not in table]
    if missing:
        raise ConfigError(f"stage costs are missing for: {', '.join(missing)}")
    values = []
    for name in stage_names:
        try:
            value = float(table[name])
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"cost of stage {name!r} must be a number") from exc
        if not (math.isfinite(value) and value > 0):
            raise ConfigError(f"cost of stage {name!r} must be positive and finite; got {value}")
        values.append(value)
    total = sum(values)
    return tuple(v / total for v in values)


def time_call(fn: Callable[[], jax.Array], repeats: int) -> float:
    """Median wall time of ``fn()`` in seconds, compile excluded (one untimed call first)."""
    jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _check_sizes(image_size: int, batch: int, repeats: int) -> None:
    for name, value in (("image_size", image_size), ("batch", batch), ("repeats", repeats)):
        if not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name} must be a positive integer; got {value!r}")


def measure_stage_costs(
    stage_names: str | Sequence[str] = "full",
    image_size: int = 32,
    batch: int = 256,
    repeats: int = 20,
    seed: int = 0,
) -> dict[str, float]:
    """Seconds per image of each stage's jitted forward pass, measured on this machine.

    Each stage runs alone under ``jax.jit`` on ``(batch, image_size, image_size, 3)`` dark images
    with per-image parameters near the identity (costs do not depend on the values: no op has
    data-dependent control flow). Compilation is excluded; the median of ``repeats`` calls,
    each waited for with ``block_until_ready``, is divided by ``batch``.
    """
    names = parse_stage_list(stage_names)
    _check_sizes(image_size, batch, repeats)
    key_images, key_raw = jax.random.split(jax.random.key(seed))
    images = 0.2 * jax.random.uniform(key_images, (batch, image_size, image_size, 3))
    costs = {}
    for name in names:
        identity = jnp.asarray(STAGES[name].flat_identity_raw())
        raw = identity + 0.1 * jax.random.normal(key_raw, (batch, identity.size))
        chain, raw_slices = (name,), ((0, identity.size),)  # a chain of this stage alone

        @jax.jit
        def run(x, r, chain=chain, raw_slices=raw_slices):
            return run_chain(x, chain, per_image_values(chain, raw_slices, r))

        costs[name] = time_call(lambda run=run, raw=raw: run(images, raw), repeats) / batch
    return costs


def measure_predictor_cost(
    predictor: nnx.Module,
    image_size: int = 32,
    batch: int = 256,
    repeats: int = 20,
) -> dict[str, float]:
    """Size and cost of a parameter predictor (or anything mapping images to arrays).

    Returns ``{"params": trainable scalars, "flops_per_image": XLA's count for the compiled
    forward pass, "seconds_per_image": median jitted wall time}`` on
    ``(batch, image_size, image_size, 3)`` inputs.
    """
    _check_sizes(image_size, batch, repeats)
    graphdef, state = nnx.split(predictor)
    images = 0.2 * jax.random.uniform(jax.random.key(0), (batch, image_size, image_size, 3))

    @jax.jit
    def forward(state, images):
        return nnx.merge(graphdef, state)(images)

    compiled = forward.lower(state, images).compile()
    analysis = compiled.cost_analysis()
    if isinstance(analysis, list):  # older JAX returned one dict per device
        analysis = analysis[0]
    flops = float((analysis or {}).get("flops", float("nan")))
    seconds = time_call(lambda: forward(state, images), repeats)
    num_params = sum(int(np.size(p)) for p in jax.tree.leaves(nnx.state(predictor, nnx.Param)))
    return {
        "params": float(num_params),
        "flops_per_image": flops / batch,
        "seconds_per_image": seconds / batch,
    }
