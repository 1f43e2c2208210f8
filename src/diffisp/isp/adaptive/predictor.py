"""The parameter predictor: a tiny CNN that looks at a thumbnail and sets the ISP for one image.

In the style of IA-YOLO's CNN-PP: the image is shrunk to a small thumbnail (16x16 by default), a
few stride-2 convolutions summarise it, and a two-layer head outputs every stage's raw parameter
vector plus one gate logit per stage. Dark captures carry most of their information in their
overall level, which a CNN on raw pixel values sees poorly (everything is close to 0), so the
convolutions look at the thumbnail *in stops relative to its own mean* (exposure-invariant
structure and colour), and a handful of global statistics (channel means, log mean luminance,
spread) go straight into the head (the exposure itself).

The head's last layer starts at zero weight, and its bias holds the identity raw values of every
stage (and the initial gate logits), so every image initially gets exactly the "do nothing"
parameters: the adaptive ISP starts where the global one does.

Two linear pathways sit beside the network, both zero at initialisation (so the start is still
the identity) and trained like the global ISP's parameters (:data:`DIRECT_PARAM_NAMES`):

* ``global_raw``, ``(P,)``: a raw offset shared by every image, i.e. the global ISP's own
  parameters. Without it, the common part of the parameters (e.g. +3 EV for a dataset that is
  dark on average) had to be learnt by the network's bias at the network's small learning
  rate: measured, it did not get there in the study's budget.
* ``stats_head``: a linear map from the image's channel and luminance means *in stops* relative
  to mid-grey (:func:`log_exposure_features`) to every raw parameter and gate logit (a gate
  that should follow the light level, such as denoising's, needs one weight). Exposure (EV) and
  white-balance gains (log-space parameters) are linear in these: auto-exposure is
  ``EV = -log2(mean / target)`` and grey-world white balance ``log g_c = log mean_G - log
  mean_c``, so one weight per feature, of order 1 in these units, does what a thumbnail CNN fed
  values near 0 finds hard.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from diffisp.isp.stages import STAGES
from diffisp.ops import luminance

# Floor for log-luminance: a quarter of an 8-bit step, so an all-black image gives finite,
# moderate features (log2 -> -10) instead of -inf.
_LOG_FLOOR = 1.0 / 1024.0
NUM_STATS = 9
# Photographic mid-grey: the stop features are 0 for an image whose mean is at it.
MID_GREY = 0.18
NUM_STOP_FEATURES = 4
# Predictor parameters that are linear maps onto the raw stage parameters (see the module
# docstring): the trainer steps them like the global ISP's parameters (Adam, the ISP schedule),
# the shared offset at lr_isp and the statistics map, whose inputs are large and nearly
# collinear, at a smaller rate of its own (TrainConfig.lr_stats_map); the network at the
# predictor's.
DIRECT_PARAM_NAMES = ("global_raw", "stats_head")
STATS_MAP_NAME = "stats_head"


def thumbnail(images: jax.Array, size: int) -> jax.Array:
    """Shrink ``(N, H, W, 3)`` to ``(N, size, size, 3)``.

    Area averaging when ``H`` and ``W`` are multiples of ``size`` (32 -> 16 is a 2x2 mean: exact
    and cheap); otherwise an antialiased linear resize, which handles any input size.
    """
    n, h, w, c = images.shape
    if h % size == 0 and w % size == 0:
        fh, fw = h // size, w // size
        return images.reshape(n, size, fh, size, fw, c).mean(axis=(2, 4))
    return jax.image.resize(images, (n, size, size, c), method="linear", antialias=True)


def image_statistics(images: jax.Array) -> jax.Array:
    """Global features for exposure and colour decisions, ``(N, H, W, 3)`` -> ``(N, 9)``.

    Channel means (3), their log2 / 10 (3, "stops below white", about [-1, 0]), log2 mean
    luminance / 10 (1), luminance standard deviation (1) and maximum luminance (1). All are
    bounded and have finite gradients for any input in [0, 1], including all black.
    """
    luma = luminance(images)[..., 0]
    means = images.mean(axis=(1, 2))
    mean_luma = luma.mean(axis=(1, 2))
    return jnp.concatenate(
        [
            means,
            jnp.log2(means + _LOG_FLOOR) / 10.0,
            (jnp.log2(mean_luma + _LOG_FLOOR) / 10.0)[:, None],
            luma.std(axis=(1, 2))[:, None],
            luma.max(axis=(1, 2))[:, None],
        ],
        axis=-1,
    )


def log_exposure_features(images: jax.Array) -> jax.Array:
    """Channel means and mean luminance in stops relative to mid-grey (0.18), ``(N, 4)``.

    ``log2((m + floor) / 0.18)`` of the three channel means and of the mean luminance: 0 at
    mid-grey, -1 per halving of the light, about [-7.5, 2.5] for any input in [0, 1] (all black
    gives finite values and gradients). Multiplying an image by ``2**k`` adds ``k`` to every
    feature (away from the floor): exposure becomes a shift, which a linear map can undo.
    """
    means = images.mean(axis=(1, 2))
    mean_luma = luminance(images)[..., 0].mean(axis=(1, 2))
    levels = jnp.concatenate([means, mean_luma[:, None]], axis=-1)
    return jnp.log2(levels + _LOG_FLOOR) - jnp.log2(MID_GREY)


def relative_stops(thumb: jax.Array) -> jax.Array:
    """Each thumbnail pixel in stops relative to the thumbnail's mean, divided by 4.

    Multiplying an image by any gain leaves this unchanged (away from the floor), so the
    convolutions describe content and colour, not exposure; values are about [-2.5, 2].
    """
    mean = thumb.mean(axis=(1, 2, 3), keepdims=True)
    return (jnp.log2(thumb + _LOG_FLOOR) - jnp.log2(mean + _LOG_FLOOR)) / 4.0


class ParameterPredictor(nnx.Module):
    """Thumbnail CNN -> per-image raw stage parameters and gate logits.

    Args:
      identity_raw: ``(P,)`` raw parameter vector that makes every stage the identity (the
        concatenation of each stage's ``flat_identity_raw()``); the head's initial bias.
      gate_init: ``(S,)`` initial gate logits (empty for an ISP without gates).
      thumb_size: side of the thumbnail the convolutions see.
      widths: channels of the 3x3 stride-2 convolutions (16 -> 8 -> 4 -> 2 pixels by default).
      hidden: width of the hidden dense layer.

    ``__call__``: ``(N, H, W, 3)`` in [0, 1] -> ``(raw (N, P), gate_logits (N, S))``.
    With the defaults and the full ten-stage preset (P = 45, S = 10) it has 20,864 parameters
    (20,599 in the network, 265 in the linear pathways) and costs about 0.27 MFLOP per 32x32
    image (XLA count), 4 % of the reference SmallCNN.
    """

    def __init__(
        self,
        identity_raw: np.ndarray,
        gate_init: np.ndarray,
        *,
        thumb_size: int = 16,
        widths: Sequence[int] = (16, 32, 32),
        hidden: int = 64,
        rngs: nnx.Rngs,
    ) -> None:
        identity_raw = np.asarray(identity_raw, np.float32).ravel()
        gate_init = np.asarray(gate_init, np.float32).ravel()
        self.thumb_size = int(thumb_size)
        self.num_raw = int(identity_raw.size)
        self.num_gates = int(gate_init.size)
        self.convs = nnx.List()
        channels = 3
        for width in widths:
            self.convs.append(
                nnx.Conv(channels, width, (3, 3), strides=(2, 2), padding="SAME", rngs=rngs)
            )
            channels = width
        self.hidden = nnx.Linear(channels + NUM_STATS, hidden, rngs=rngs)
        outputs = self.num_raw + self.num_gates
        # Zero weights + identity bias: every image starts with the identity parameters, and the
        # first gradient steps move only this layer (the deeper ones get gradients once it is
        # non-zero), which is the usual zero-init-last-layer start of residual-style models.
        self.head = nnx.Linear(hidden, outputs, kernel_init=nnx.initializers.zeros, rngs=rngs)
        self.head.bias[...] = jnp.asarray(np.concatenate([identity_raw, gate_init]))
        # The linear pathways (module docstring), zero at initialisation: identity unchanged.
        self.global_raw = nnx.Param(jnp.zeros(self.num_raw, jnp.float32))
        self.stats_head = nnx.Linear(
            NUM_STOP_FEATURES,
            outputs,
            use_bias=False,
            kernel_init=nnx.initializers.zeros,
            rngs=rngs,
        )

    def set_linear_pathway(self, weights: np.ndarray, offsets: np.ndarray) -> None:
        """Overwrite the raw-parameter part of the linear pathways (the gates' part is kept).

        Args:
          weights: ``(NUM_STOP_FEATURES, P)``, the map from :func:`log_exposure_features` to the
            raw parameters (``stats_head``'s kernel, first ``P`` columns).
          offsets: ``(P,)`` shared raw offsets (``global_raw``).
        """
        weights = np.asarray(weights, np.float32)
        offsets = np.asarray(offsets, np.float32)
        if weights.shape != (NUM_STOP_FEATURES, self.num_raw) or offsets.shape != (self.num_raw,):
            raise ValueError(
                f"linear pathway must be ({NUM_STOP_FEATURES}, {self.num_raw}) weights and "
                f"({self.num_raw},) offsets; got {weights.shape} and {offsets.shape}"
            )
        self.stats_head.kernel[...] = self.stats_head.kernel[...].at[:, : self.num_raw].set(weights)
        self.global_raw[...] = jnp.asarray(offsets)

    def __call__(self, images: jax.Array) -> tuple[jax.Array, jax.Array]:
        x = relative_stops(thumbnail(images, self.thumb_size))
        for conv in self.convs:
            x = nnx.leaky_relu(conv(x), 0.1)
        features = jnp.concatenate([x.mean(axis=(1, 2)), image_statistics(images)], axis=-1)
        out = self.head(nnx.leaky_relu(self.hidden(features), 0.1))
        out = out + self.stats_head(log_exposure_features(images))
        return out[:, : self.num_raw] + self.global_raw[...], out[:, self.num_raw :]


def per_image_values(
    stage_names: Sequence[str], raw_slices: Sequence[tuple[int, int]], raw: jax.Array
) -> list[dict[str, jax.Array]]:
    """Constrained values of each stage, from the predictor's flat raw vectors.

    Args:
      stage_names: ``S`` stage names.
      raw_slices: ``(start, stop)`` of each stage's slice of a raw vector.
      raw: ``(N, P)`` raw parameters, one row per image.

    Returns:
      ``S`` dicts of constrained values, each with a leading ``N`` axis (:func:`run_chain`'s
      ``stage_values``).
    """
    return [
        STAGES[name].constrain(STAGES[name].unflatten_raw(raw[:, a:b]))
        for name, (a, b) in zip(stage_names, raw_slices, strict=True)
    ]
