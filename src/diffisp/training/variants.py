"""ISP variants compared against the same clean-trained CNN: global vs adaptive, with costs."""

from __future__ import annotations

import math
from typing import Any

from diffisp.errors import ConfigError
from diffisp.isp.chain import FULL_PRESET

VARIANT_HELP = (
    "global-full (global ISP, all ten stages), adaptive (per-image parameters and gates), "
    "adaptive:LAMBDA (gates with cost weight LAMBDA), adaptive-params (per-image parameters, "
    "every stage on)"
)


def parse_variant(spec: str) -> tuple[str, str, dict[str, Any]]:
    """``(key, label, config overrides)`` of an ISP variant trained against the same CNN.

    Raises:
      ConfigError: an unknown variant or a bad cost weight.
    """
    spec = spec.strip()
    full = {"isp": FULL_PRESET, "cost_weight": 0.0, "gates": True, "variants": ()}
    if spec == "global-full":
        return "global_full", "Global ISP, 10 stages", {**full, "adaptive": False}
    if spec == "adaptive-params":
        return (
            "adaptive_params",
            "Adaptive ISP, no gates",
            {**full, "adaptive": True, "gates": False},
        )
    if spec == "adaptive" or spec.startswith("adaptive:"):
        text = spec.partition(":")[2] or "0"
        try:
            weight = float(text)
        except ValueError:
            raise ConfigError(f"bad cost weight in ISP variant {spec!r}") from None
        if not (math.isfinite(weight) and 0 <= weight <= 100):
            raise ConfigError(f"cost weight of ISP variant {spec!r} must be in [0, 100]")
        label = f"Adaptive ISP, λ={weight:g}"
        return (
            f"adaptive_l{weight:g}",
            label,
            {**full, "adaptive": True, "gates": True, "cost_weight": weight},
        )
    raise ConfigError(f"unknown ISP variant {spec!r}; choose from: {VARIANT_HELP}")
