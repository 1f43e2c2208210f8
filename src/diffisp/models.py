"""Task networks that sit after the ISP."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

SEED_WIDTHS = (32, 64, 128, 256)


class SmallCNN(nnx.Module):
    """The reference classifier: four 3x3 stride-2 convolutions, batch norm, ReLU, GAP, linear.

    With the default widths (32, 64, 128, 256) and 10 classes it has 391,946 parameters
    (388,416 convolution, 960 batch-norm scale and bias, 2,570 head). Batch norm uses batch
    statistics in train mode (``model.train()``) and running averages in eval mode
    (``model.eval()``).

    Input ``(N, H, W, 3)`` -> logits ``(N, num_classes)``; any ``H, W`` works (global pooling).
    """

    def __init__(
        self,
        num_classes: int = 10,
        widths: tuple[int, ...] = SEED_WIDTHS,
        *,
        rngs: nnx.Rngs,
    ) -> None:
        self.convs = nnx.List()
        self.norms = nnx.List()
        in_channels = 3
        for width in widths:
            self.convs.append(
                nnx.Conv(in_channels, width, (3, 3), strides=(2, 2), padding="SAME", rngs=rngs)
            )
            self.norms.append(nnx.BatchNorm(width, rngs=rngs))
            in_channels = width
        self.head = nnx.Linear(in_channels, num_classes, rngs=rngs)

    def __call__(self, images: jax.Array) -> jax.Array:
        x = images
        for conv, norm in zip(self.convs, self.norms, strict=True):
            x = nnx.relu(norm(conv(x)))
        return self.head(jnp.mean(x, axis=(1, 2)))


def count_params(module: nnx.Module) -> int:
    """Number of trainable scalars (``nnx.Param``) in ``module``."""
    return sum(int(p.size) for p in jax.tree.leaves(nnx.state(module, nnx.Param)))
