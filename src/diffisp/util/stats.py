"""Small summary statistics shared by the protocol, the study and the report (no JAX needed)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def gap_closed(acc: float | None, floor: float | None, ceiling: float | None) -> float | None:
    """Share of the no-ISP -> clean-oracle gap that ``acc`` closes (None if there is no gap).

    0 means no better than no ISP, 1 as good as clean images; it can leave [0, 1].
    """
    if acc is None or floor is None or ceiling is None or ceiling - floor <= 1e-9:
        return None
    return (acc - floor) / (ceiling - floor)


def mean_std(values: Sequence[float]) -> dict[str, float]:
    """Mean and sample standard deviation (ddof=1; 0 for a single value)."""
    arr = np.asarray(values, dtype=np.float64)
    std = float(arr.std(ddof=1)) if len(arr) > 1 else 0.0
    return {"mean": float(arr.mean()), "std": std}
