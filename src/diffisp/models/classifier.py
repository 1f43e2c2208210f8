"""Task networks that sit after the ISP."""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from flax import nnx

SEED_WIDTHS = (32, 64, 128, 256)


class SmallCNN(nnx.Module):
    """The reference classifier: four 3x3 stride-2 convolutions, batch norm, ReLU, GAP, linear.

    With the default widths (32, 64, 128, 256) and 10 classes it has 391,946 parameters
    (388,416 convolution, 960 batch-norm scale and bias, 2,570 head). Batch norm uses batch
    statistics in train mode (``model.train()``) and running averages in eval mode
    (``model.eval()``). ``im2col=False`` runs the same layers through ``nnx.Conv`` (XLA's
    convolution), the way the reference does; the default computes them as one matmul each.

    Input ``(N, H, W, in_channels)`` (3 for images, 4 for packed RAW) -> logits
    ``(N, num_classes)``; any ``H, W`` works (global pooling).
    """

    def __init__(
        self,
        num_classes: int = 10,
        widths: tuple[int, ...] = SEED_WIDTHS,
        *,
        rngs: nnx.Rngs,
        im2col: bool = True,
        in_channels: int = 3,
    ) -> None:
        self.im2col = im2col  # compute convolutions as patches @ kernel (same parameters)
        self.convs = nnx.List()
        self.norms = nnx.List()
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
            if self.im2col:
                x = conv_im2col(x, conv.kernel[...], conv.bias[...], conv.strides)
            else:
                x = conv(x)
            x = nnx.relu(norm(x))
        return self.head(jnp.mean(x, axis=(1, 2)))


def conv_im2col(
    x: jax.Array, kernel: jax.Array, bias: jax.Array, strides: tuple[int, int] = (1, 1)
) -> jax.Array:
    """``nnx.Conv`` with SAME padding, computed as patches @ kernel (one matmul per layer).

    Same parameters and the same result as ``lax.conv_general_dilated`` (up to float rounding),
    but XLA's CPU backend runs small convolutions through a generic path that reaches under 10 %
    of its matmul speed; gathering the 3x3 patches (cheap strided slices) and doing one large
    matmul is ~3x faster per training step here (``diffisp bench`` measures it).

    Args:
      x: ``(N, H, W, C)``.
      kernel: ``(KH, KW, C, O)`` (``nnx.Conv`` layout).
      bias: ``(O,)``.
      strides: ``(SH, SW)``.

    Returns:
      ``(N, ceil(H / SH), ceil(W / SW), O)``.
    """
    n, h, w, c = x.shape
    kh, kw, _, out_channels = kernel.shape
    sh, sw = strides
    oh, ow = -(-h // sh), -(-w // sw)
    pad_h = max((oh - 1) * sh + kh - h, 0)
    pad_w = max((ow - 1) * sw + kw - w, 0)
    padded = jnp.pad(
        x, ((0, 0), (pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2), (0, 0))
    )
    patches = jnp.concatenate(
        [
            padded[:, dy : dy + sh * (oh - 1) + 1 : sh, dx : dx + sw * (ow - 1) + 1 : sw]
            for dy in range(kh)
            for dx in range(kw)
        ],
        axis=-1,
    )  # (N, oh, ow, KH*KW*C), ordered like kernel.reshape(KH*KW*C, O)
    out = patches.reshape(n * oh * ow, kh * kw * c) @ kernel.reshape(kh * kw * c, out_channels)
    return out.reshape(n, oh, ow, out_channels) + bias


def recalibrate_batch_norm(
    model: SmallCNN, images: jax.Array, *, isp: nnx.Module | None = None
) -> None:
    """Set every batch-norm layer's running statistics to the exact statistics of ``images``.

    Training updates running averages slowly (momentum 0.99), so after the input distribution
    shifts (clean -> dark -> ISP output that keeps changing) eval-mode batch norm normalises with
    stale statistics, which can wreck eval accuracy while train-mode accuracy looks fine. This is
    the standard fix, "BN re-estimation": one train-mode forward pass over ``images`` (through
    ``isp`` first, if given) as a single batch, with momentum 0, so each layer's running mean and
    (biased) variance become the population statistics of its input, layer after layer.
    ``images`` is one batch: a few thousand 32x32 images take tens of MB.
    """
    graphdef, state = nnx.split((model, isp))
    stats = _population_stats(graphdef, state, images)
    for norm, (mean, var) in zip(model.norms, stats, strict=True):
        norm.mean[...] = mean
        norm.var[...] = var


@partial(jax.jit, static_argnames=("graphdef",))
def _population_stats(graphdef, state, images):
    model, isp = nnx.merge(graphdef, state)  # a traced copy: the caller's modes stay as they are
    model.train()
    for norm in model.norms:
        norm.momentum = 0.0
    model(images if isp is None else isp(images))
    return [(norm.mean[...], norm.var[...]) for norm in model.norms]


def count_params(module: nnx.Module) -> int:
    """Number of trainable scalars (``nnx.Param``) in ``module``."""
    return sum(int(p.size) for p in jax.tree.leaves(nnx.state(module, nnx.Param)))
