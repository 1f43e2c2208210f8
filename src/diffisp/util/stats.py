"""Small summary statistics shared by the protocol, the study and the report (no JAX needed)."""

from __future__ import annotations

import math
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


def wilson_interval(p: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion ``p`` measured on ``n`` samples.

    Why Wilson: the normal approximation gives intervals outside [0, 1] at the small test sets
    and extreme accuracies that quick runs produce.
    """
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def paired_difference(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    *,
    resamples: int = 2000,
    seed: int = 0,
) -> dict[str, float]:
    """Mean of ``a - b`` over the same test images, with its 95 % paired bootstrap interval.

    ``a`` and ``b`` are per-image scores of two methods on the same images (1/0 for a correct
    or wrong classification). Paired, because both methods see the same images: the image-to-
    image variation they share cancels, so the interval is narrower than two independent
    intervals would suggest (and an overlap of those says little).

    Returns ``{"difference", "low", "high", "num_samples"}``.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError(f"paired scores need two equal 1-D shapes; got {a.shape} and {b.shape}")
    diff = a - b
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, diff.size, size=(resamples, diff.size))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return {
        "difference": float(diff.mean()),
        "low": float(low),
        "high": float(high),
        "num_samples": int(diff.size),
    }


def bootstrap_counts(num_images: int, resamples: int, seed: int = 0) -> np.ndarray:
    """``(resamples, num_images)``: how often each image is drawn in each resample."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, num_images, (resamples, num_images))
    return np.stack([np.bincount(row, minlength=num_images) for row in draws])


def percentile_interval(values: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """The 2.5th and 97.5th percentiles of the finite ``values`` (NaN, NaN when none is)."""
    values = np.asarray(values, np.float64)
    values = values[np.isfinite(values)]
    if not values.size:
        return float("nan"), float("nan")
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high)
