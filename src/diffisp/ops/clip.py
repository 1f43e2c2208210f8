"""The one clip to [0, 1], with the full gradient on the closed interval.

Ops do not clip their results (as in dm-pix, so that they chain): an ISP clips once, at its
output. ``jnp.clip`` is the wrong tool for that clip: it is built from ``max``/``min``, whose
gradient at a tie is split between the two arguments, so an input of exactly 0 or exactly 1
receives only half of its gradient. Exact zeros are common in training data (low-light noise
clipped at 0), and an image pushed to white sits exactly at 1 after a saturating stage.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


@jax.custom_jvp
def clip_unit(x: jax.Array) -> jax.Array:
    """``jnp.clip(x, 0, 1)`` whose derivative is 1 on the closed interval [0, 1], 0 outside.

    Args:
      x: any real array.

    Returns:
      ``x`` clipped to [0, 1], same shape and dtype.
    """
    return jnp.clip(x, 0.0, 1.0)


@clip_unit.defjvp
def _clip_unit_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    inside = (x >= 0.0) & (x <= 1.0)  # closed: exact 0s and 1s pass their whole gradient
    return clip_unit(x), jnp.where(inside, dx, jnp.zeros_like(dx))
