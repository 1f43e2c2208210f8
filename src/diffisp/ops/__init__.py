"""Pure, batched image-processing functions (NHWC float32 in [0, 1]); no state, no datarax."""

from diffisp.ops.color import (
    LUMA_WEIGHTS,
    adjust_saturation,
    apply_ccm,
    desaturate,
    luminance,
    white_balance,
)
from diffisp.ops.spatial import blur3x3, denoise, sharpen
from diffisp.ops.tone import adjust_contrast, adjust_exposure, adjust_gamma, tone_curve

__all__ = [
    "LUMA_WEIGHTS",
    "adjust_contrast",
    "adjust_exposure",
    "adjust_gamma",
    "adjust_saturation",
    "apply_ccm",
    "blur3x3",
    "denoise",
    "desaturate",
    "luminance",
    "sharpen",
    "tone_curve",
    "white_balance",
]
