"""Classical, non-learned pipelines for RAW captures: the conventional camera pipeline and the
sRGB baselines applied after it (each ``RawCapture -> (N, H, W, 3)`` in [0, 1]).

These are what a RAW study compares the learned RAW ISP with, in front of the same
clean-trained model: the camera's own recipe (:func:`~diffisp.isp.raw.conventional_pipeline`),
then that recipe followed by a fixed gamma, the classical auto ISP (on its linear output, where
grey-world and auto exposure belong) or histogram equalisation.
"""

from __future__ import annotations

import jax

from diffisp import ops
from diffisp.capture.raw_capture import RawCapture
from diffisp.isp import baselines
from diffisp.isp.raw import conventional_linear, conventional_pipeline


def conventional_gamma(capture: RawCapture) -> jax.Array:
    """Conventional pipeline, then the fixed gamma 0.5 of the sRGB baseline."""
    return baselines.fixed_gamma(conventional_pipeline(capture))


def conventional_auto(capture: RawCapture) -> jax.Array:
    """Recorded WB, demosaic and matrix (linear sRGB), then grey-world, auto exposure to 18 %
    grey and gamma 1/2.2 (the classical auto ISP)."""
    return baselines.auto_isp(ops.clip_unit(conventional_linear(capture)))


def conventional_histeq(capture: RawCapture) -> jax.Array:
    """Conventional pipeline, then per-image histogram equalisation."""
    return baselines.equalize_histogram(conventional_pipeline(capture))
