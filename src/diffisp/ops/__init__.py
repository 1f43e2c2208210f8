"""Pure, batched image-processing functions (NHWC float32); no state, no datarax.

Images are nominally in [0, 1], but no op clips unless asked (``clip=True``): as in dm-pix, ops
chain, and an ISP clips once, at its output, with :func:`clip_unit` (full gradient at 0 and 1).
"""

from diffisp.ops.clip import clip_unit
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
    "clip_unit",
    "denoise",
    "desaturate",
    "luminance",
    "sharpen",
    "tone_curve",
    "white_balance",
]
