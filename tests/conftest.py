"""Shared fixtures: small random image batches and ISP parameter randomisation."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx


@pytest.fixture
def images() -> jax.Array:
    """Eight 12x12 RGB images spanning the whole [0, 1] range."""
    return jax.random.uniform(jax.random.key(0), (8, 12, 12, 3), dtype=jnp.float32)


def randomize(module: nnx.Module, seed: int = 0, scale: float = 1.0) -> nnx.Module:
    """Set every nnx.Param of ``module`` to random normal values (a non-identity state)."""
    rng = np.random.default_rng(seed)
    state = nnx.state(module, nnx.Param)
    new = jax.tree.map(lambda p: jnp.asarray(rng.normal(0, scale, p.shape), p.dtype), state)
    nnx.update(module, new)
    return module


EDGE_INPUTS = {
    "zeros": np.zeros((2, 6, 6, 3), np.float32),
    "ones": np.ones((2, 6, 6, 3), np.float32),
    "tiny": np.full((2, 6, 6, 3), 1e-7, np.float32),
    "knots": np.broadcast_to(
        np.linspace(0, 1, 16, dtype=np.float32)[None, :, None, None], (2, 16, 6, 3)
    ).copy(),
}
