"""Bounded parameterisations: unconstrained raw values -> valid ISP parameters.

Optimisers move raw values anywhere on the real line; these maps keep the parameters they
produce inside a valid range by construction (no projection step, no clipping of the
optimiser's state), and each is chosen so that raw = 0 gives the identity stage with a
non-zero gradient, so training starts from "do nothing" and can move away from it at once.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp


def log_bounded(raw: jax.Array, max_factor: float) -> jax.Array:
    """Positive factor in ``(1/max_factor, max_factor)``, 1 at raw 0, unit slope in log space.

    ``exp(L * tanh(raw / L))`` with ``L = log(max_factor)``: near 0 it is ``exp(raw)`` (so Adam's
    steps are relative changes, the natural scale for gains and exponents), far out it saturates
    smoothly instead of overflowing.
    """
    limit = math.log(max_factor)
    return jnp.exp(limit * jnp.tanh(raw / limit))


def symmetric_bounded(raw: jax.Array, limit: float) -> jax.Array:
    """Value in ``(-limit, limit)``, 0 at raw 0, slope 1 there: ``limit * tanh(raw / limit)``."""
    return limit * jnp.tanh(raw / limit)


def interval(raw: jax.Array, low: float, high: float, at_zero: float) -> jax.Array:
    """Value in ``(low, high)`` that equals ``at_zero`` at raw 0 (a shifted, scaled sigmoid)."""
    frac = (at_zero - low) / (high - low)
    if not 0.0 < frac < 1.0:
        raise ValueError(f"at_zero={at_zero} must lie strictly inside ({low}, {high})")
    return low + (high - low) * jax.nn.sigmoid(raw + math.log(frac / (1.0 - frac)))


def clip_straight_through(raw: jax.Array, low: float, high: float) -> jax.Array:
    """``clip(raw, low, high)`` forward, identity gradient backward.

    For parameters whose identity value sits on the boundary of their range (a desaturation or
    denoising strength of 0): any smooth bounded map is flat at its boundary and would give a zero
    gradient at initialisation, so the stage could never switch on. The straight-through clip
    keeps the value in range and still tells the optimiser which way to move.
    """
    return raw + jax.lax.stop_gradient(jnp.clip(raw, low, high) - raw)


def monotone_knots(raw: jax.Array, max_slope: float | None = None) -> jax.Array:
    """Non-decreasing tone-curve knots from ``K`` raw values (last axis).

    ``raw[..., 0]`` sets the black level ``y_0 = 0.5 tanh(raw_0)`` in (-0.5, 0.5); each other raw
    value sets one segment's rise, ``log_bounded(raw_k, max_slope) / (K - 1)``, which is positive,
    so the cumulative sum is monotone whatever the raw values are. All zeros give ``y_k = k/(K-1)``,
    the identity curve. ``max_slope`` defaults to ``K - 1`` (one segment may span the whole range).
    """
    num_segments = raw.shape[-1] - 1
    slope_limit = float(max_slope or num_segments)
    black = 0.5 * jnp.tanh(raw[..., :1])
    rises = log_bounded(raw[..., 1:], slope_limit) / num_segments
    return jnp.concatenate([black, black + jnp.cumsum(rises, axis=-1)], axis=-1)
