"""Bounded parameterisations, including monotone tone curves for any raw values."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from diffisp import ops
from diffisp.isp import params

raw_knots = arrays(np.float32, (16,), elements=st.floats(-60, 60, width=32))


@settings(max_examples=60, deadline=None)
@given(raw_knots)
def test_tone_curve_is_monotone_for_any_raw_parameters(raw):
    knots = np.asarray(params.monotone_knots(jnp.asarray(raw)))
    assert np.all(np.isfinite(knots))
    assert np.all(np.diff(knots) >= 0)
    x = jnp.linspace(0, 1, 257).reshape(1, 257, 1, 1).repeat(3, -1)
    y = np.asarray(ops.tone_curve(x, knots))[0, :, 0, 0]
    assert np.all(np.diff(y) >= -1e-6)


def test_identity_raw_values_give_identity_parameters():
    np.testing.assert_allclose(
        params.monotone_knots(jnp.zeros(16)), np.linspace(0, 1, 16), atol=1e-6
    )
    assert float(params.log_bounded(jnp.float32(0), 10.0)) == 1.0
    assert float(params.symmetric_bounded(jnp.float32(0), 8.0)) == 0.0
    np.testing.assert_allclose(float(params.interval(jnp.float32(0), -1, 4, 0.0)), 0.0, atol=1e-6)


def test_bounded_maps_have_unit_slope_at_zero():
    for fn in (
        lambda r: jnp.log(params.log_bounded(r, 10.0)),
        lambda r: params.symmetric_bounded(r, 8.0),
        lambda r: params.clip_straight_through(r, 0.0, 1.0),
    ):
        np.testing.assert_allclose(float(jax.grad(fn)(jnp.float32(0.0))), 1.0, atol=1e-6)


def test_straight_through_clip_clips_forward_only():
    r = jnp.array([-2.0, 0.5, 3.0])
    np.testing.assert_allclose(params.clip_straight_through(r, 0.0, 1.0), [0.0, 0.5, 1.0])
    grad = jax.grad(lambda v: params.clip_straight_through(v, 0.0, 1.0).sum())(r)
    np.testing.assert_allclose(grad, [1.0, 1.0, 1.0])
