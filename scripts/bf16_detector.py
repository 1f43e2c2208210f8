"""The detector's forward + backward with its im2col matmuls in bfloat16 (float32 accumulation)
against float32, alternating, at one image size and batch.

    PYTHONPATH=src python scripts/bf16_detector.py SIZE BATCH

A measurement for docs/performance.md: bfloat16 is not an option of diffisp's models (it was
slower on the CPU measured; see there). Batch norm in inference mode (the layers' cost, not
its statistics, is what is compared).
"""

from __future__ import annotations

import sys
import time

import jax
import jax.numpy as jnp
from flax import nnx

import diffisp.models.detector as detector
from diffisp.models.classifier import conv_im2col


def conv_im2col_bf16(x, kernel, bias, strides=(1, 1)):
    """``conv_im2col`` with bfloat16 patches and kernel, accumulated in float32."""
    n, h, w, c = x.shape
    kh, kw, _, out_channels = kernel.shape
    sh, sw = strides
    oh, ow = -(-h // sh), -(-w // sw)
    pad_h, pad_w = max((oh - 1) * sh + kh - h, 0), max((ow - 1) * sw + kw - w, 0)
    padding = ((0, 0), (pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2), (0, 0))
    padded = jnp.pad(x.astype(jnp.bfloat16), padding)
    taps = [
        padded[:, dy : dy + sh * (oh - 1) + 1 : sh, dx : dx + sw * (ow - 1) + 1 : sw]
        for dy in range(kh)
        for dx in range(kw)
    ]
    patches = jnp.concatenate(taps, axis=-1).reshape(n * oh * ow, kh * kw * c)
    weights = kernel.reshape(kh * kw * c, out_channels).astype(jnp.bfloat16)
    out = jnp.dot(patches, weights, preferred_element_type=jnp.float32)
    return out.reshape(n, oh, ow, out_channels) + bias


def time_step(size: int, batch: int, repeats: int = 5) -> tuple[float, float]:
    """(compile seconds, best step seconds) of the detector's gradient with the current conv."""
    model = detector.SmallCenterNet(6, rngs=nnx.Rngs(0))
    model.eval()
    graph, params, rest = nnx.split(model, nnx.Param, ...)
    images = jax.random.uniform(jax.random.key(0), (batch, size, size, 3))

    @jax.jit
    def step(params, images):
        def loss(params):
            outputs = nnx.merge(graph, params, rest)(images)
            return sum(jnp.mean(o**2) for o in outputs)

        return jax.value_and_grad(loss)(params)

    start = time.perf_counter()
    jax.block_until_ready(step(params, images))
    compile_s = time.perf_counter() - start
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(step(params, images))
        best = min(best, time.perf_counter() - start)
    return compile_s, best


def main() -> None:
    size, batch = int(sys.argv[1]), int(sys.argv[2])
    for name, conv in [("float32", conv_im2col), ("bfloat16", conv_im2col_bf16)] * 2:
        detector.conv_im2col = conv
        compile_s, best = time_step(size, batch)
        print(
            f"{name} {size}px batch {batch}: compile {compile_s:.1f} s, best step {best:.3f} s, "
            f"{batch / best:.1f} img/s",
            flush=True,
        )


if __name__ == "__main__":
    main()
