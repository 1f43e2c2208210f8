"""smoothstep and its inverse: known values, exact inversion, finite gradients, the ends."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffisp import ops
from diffisp.errors import InputError, InputTypeError


def test_smoothstep_known_values_and_flat_continuation_outside():
    x = jnp.array([0.0, 0.25, 0.5, 0.75, 1.0, -0.5, 1.5])
    np.testing.assert_allclose(ops.smoothstep(x), [0, 0.15625, 0.5, 0.84375, 1, 0, 1], atol=1e-7)


def test_inverse_matches_the_closed_form_in_float64():
    y = np.linspace(0, 1, 20001).astype(np.float32).astype(np.float64)
    want = 0.5 - np.sin(np.arcsin(1 - 2 * y) / 3)  # Brooks et al.'s formula
    got = np.asarray(ops.inverse_smoothstep(jnp.asarray(y, jnp.float32)), np.float64)
    toe = np.minimum(y, 1 - y) < ops.tone.SMOOTHSTEP_TOE
    np.testing.assert_allclose(got[~toe], want[~toe], atol=3e-7)
    np.testing.assert_allclose(got[toe], want[toe], atol=1e-3)  # the secant toes at 0 and 1


def test_round_trips():
    y = jnp.linspace(0, 1, 100001)
    np.testing.assert_allclose(ops.smoothstep(ops.inverse_smoothstep(y)), y, atol=3e-7)
    x = jnp.linspace(0.01, 0.99, 9801)  # away from the ends, where float32 smoothstep is flat
    np.testing.assert_allclose(ops.inverse_smoothstep(ops.smoothstep(x)), x, atol=2e-6)


def test_inverse_clips_its_input_to_the_unit_interval():
    np.testing.assert_array_equal(ops.inverse_smoothstep(jnp.array([-0.2, 1.3])), [0.0, 1.0])


@pytest.mark.parametrize("fn", [ops.smoothstep, ops.inverse_smoothstep])
def test_gradients_are_finite_everywhere_including_the_ends(fn):
    points = jnp.array([0.0, 1e-12, 1e-8, 1e-6, 0.3, 0.5, 1 - 1e-7, 1.0, -0.1, 1.1])
    grads = jax.vmap(jax.grad(fn))(points)
    assert np.isfinite(np.asarray(grads)).all()


def test_inverse_gradient_is_the_reciprocal_slope_inside_and_bounded_at_the_ends():
    x = jnp.array([0.1, 0.3, 0.5, 0.8])
    slope = jax.vmap(jax.grad(ops.smoothstep))(x)
    inverse_slope = jax.vmap(jax.grad(ops.inverse_smoothstep))(ops.smoothstep(x))
    np.testing.assert_allclose(inverse_slope * slope, 1.0, rtol=1e-4)
    end_slopes = jax.vmap(jax.grad(ops.inverse_smoothstep))(jnp.array([0.0, 1.0]))
    np.testing.assert_allclose(end_slopes, 1 / np.sqrt(3 * ops.tone.SMOOTHSTEP_TOE), rtol=1e-3)


def test_bad_inputs():
    with pytest.raises(InputTypeError, match="floating-point"):
        ops.smoothstep(np.arange(3))
    with pytest.raises(InputError, match="NaN"):
        ops.inverse_smoothstep(jnp.array([0.5, jnp.nan]))
