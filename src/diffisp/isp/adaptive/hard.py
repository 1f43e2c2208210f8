"""Inference in which a skipped stage costs nothing.

A gated blend (``jnp.where(gate, stage(x), x)``, or the same under ``vmap``) computes the stage
for every image and then throws the result away, so it never saves time. Here the gates are
predicted first, brought to the host, and the batch is split by gate pattern; each group runs a
compiled chain of *only* its active stages. Compiled chains are cached by ``jax.jit`` per
(pattern, batch size), and every call has a power-of-two batch size, so a pattern compiles at
most ``log2(N) + 1`` times however the images split. A group is cut into its binary digits
(130 images: 128 + 2) rather than padded to the next power of two (256), which could double its
cost; only a remainder under ``MIN_CHUNK`` images is padded (with copies of a real image).
"""

from __future__ import annotations

import time
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from diffisp.isp.adaptive.predictor import per_image_values
from diffisp.isp.chain import run_chain
from diffisp.util.checks import check_images

Chain = tuple[tuple[str, int, int], ...]  # (stage name, raw start, raw stop) per active stage
MIN_CHUNK = 8


@partial(jax.jit, static_argnames=("graphdef",))
def _predict(graphdef, state, images):
    isp = nnx.merge(graphdef, state)
    raw, logits = isp.predict(images)
    return raw, logits > 0


@partial(jax.jit, static_argnames=("chain",))
def _run_active_stages(
    images: jax.Array, raw: jax.Array, index: jax.Array, chain: Chain
) -> jax.Array:
    """The images at ``index`` through the stages of ``chain`` only, with their own parameters."""
    names = tuple(name for name, _, _ in chain)
    raw_slices = tuple((start, stop) for _, start, stop in chain)
    x, raw = images[index], raw[index]
    return run_chain(x, names, per_image_values(names, raw_slices, raw))


def _padded_size(n: int) -> int:
    return 1 << (n - 1).bit_length()


def batch_sizes(count: int, min_chunk: int = MIN_CHUNK) -> list[int]:
    """Power-of-two batch sizes that cover ``count`` images with fewer than ``min_chunk`` spare.

    The binary digits of ``count`` that are ``>= min_chunk``, largest first, then what is left
    padded up to a power of two: ``130 -> [128, 2]``, ``13 -> [8, 8]``, ``5 -> [8]``.
    """
    sizes = [1 << b for b in reversed(range(count.bit_length())) if count >> b & 1]
    big = [size for size in sizes if size >= min_chunk]
    rest = count - sum(big)
    return big + ([_padded_size(rest)] if rest else [])


def run_hard(adaptive_isp: nnx.Module, images: jax.Array) -> tuple[jax.Array, dict[str, Any]]:
    """Process ``images`` running, for each image, only the stages its gates switch on.

    Args:
      adaptive_isp: an :class:`~diffisp.isp.adaptive.AdaptiveISP`.
      images: ``(N, H, W, 3)`` in [0, 1].

    Returns:
      ``(processed, timings)``: ``processed`` equals ``adaptive_isp(images)`` (up to float
      rounding); ``timings`` has seconds for ``"predict"`` (the predictor and gates, including
      the copy of the gates to the host), ``"stages"`` (all groups' chains), ``"total"``, and
      ``"stages_per_image"``, plus ``"groups"``: one dict per gate pattern with its
      ``"active"`` stage names, ``"count"`` images, ``"batches"`` (the power-of-two batch
      sizes it ran as, see :func:`batch_sizes`) and ``"seconds"``.
      The first call for a new (pattern, size) includes compilation: time a second call.
    """
    images = check_images(images)
    n = images.shape[0]
    start = time.perf_counter()
    graphdef, state = nnx.split(adaptive_isp)
    raw, active = _predict(graphdef, state, images)
    active = np.asarray(active)  # waits for the predictor: the grouping happens on the host
    predict_s = time.perf_counter() - start

    patterns, inverse = np.unique(active, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    names, slices = adaptive_isp.stage_names, adaptive_isp.raw_slices
    outputs, order, groups = [], [], []
    stages_start = time.perf_counter()
    for p, pattern in enumerate(patterns):
        members = np.flatnonzero(inverse == p)
        chain = tuple(
            (name, a, b) for name, (a, b), on in zip(names, slices, pattern, strict=True) if on
        )
        group_start = time.perf_counter()
        sizes = batch_sizes(int(members.size)) if chain else []
        if not chain:  # every stage off: nothing to run
            outputs.append(images[members])
        start_at = 0
        for size in sizes:
            part = members[start_at : start_at + size]
            # Pad with copies of a real image: valid inputs, results dropped.
            index = np.concatenate([part, np.full(size - part.size, part[0])])
            out = _run_active_stages(images, raw, jnp.asarray(index, jnp.int32), chain)
            outputs.append(jax.block_until_ready(out)[: part.size])
            start_at += size
        groups.append(
            {
                "active": tuple(c[0] for c in chain),
                "count": int(members.size),
                "batches": sizes,
                "seconds": time.perf_counter() - group_start,
            }
        )
        order.append(members)
    stages_s = time.perf_counter() - stages_start
    # Put the images back in their original order with one gather.
    restore = np.argsort(np.concatenate(order), kind="stable")
    processed = jax.block_until_ready(jnp.concatenate(outputs)[restore])
    timings = {
        "predict": predict_s,
        "stages": stages_s,
        "stages_per_image": stages_s / n,
        "total": time.perf_counter() - start,
        "groups": groups,
    }
    return processed, timings
