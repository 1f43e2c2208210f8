"""One shifted window of a padded batch, as a static slice."""

from __future__ import annotations

from collections.abc import Sequence

import jax


def window(x: jax.Array, start: Sequence[int], size: Sequence) -> jax.Array:
    """``x[:, s0 : s0 + n0, s1 : s1 + n1, ...]`` over the axes after the batch axis.

    Args:
      x: ``(N, ...)`` array.
      start: static offsets for axes ``1 .. len(start)``.
      size: the window's length on those axes (ints, or symbolic dimensions under export).

    Returns:
      ``x`` cut to ``size`` on those axes; the other axes are whole.
    """
    # lax.slice, not x[...] indexing: with a symbolic image size (ONNX export with dynamic
    # height and width) jnp indexing can fall back to a gather whose slice size is symbolic,
    # which jax2onnx cannot lower; a slice is exact for any size.
    k = len(start)
    begin = (0, *start) + (0,) * (x.ndim - 1 - k)
    end = (x.shape[0], *(s + n for s, n in zip(start, size, strict=True)), *x.shape[1 + k :])
    return jax.lax.slice(x, begin, end)
