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
from diffisp.ops.raw import (
    BAYER_PATTERNS,
    apply_cfa_white_balance,
    camera_to_srgb,
    cfa_masks,
    demosaic_bilinear,
    demosaic_malvar2004,
    mosaic,
    normalize_levels,
    pack_bayer,
    srgb_decode,
    srgb_encode,
    unpack_bayer,
)
from diffisp.ops.spatial import blur3x3, denoise, sharpen
from diffisp.ops.tone import (
    adjust_contrast,
    adjust_exposure,
    adjust_gamma,
    inverse_smoothstep,
    smoothstep,
    tone_curve,
)

__all__ = [
    "BAYER_PATTERNS",
    "LUMA_WEIGHTS",
    "adjust_contrast",
    "adjust_exposure",
    "adjust_gamma",
    "adjust_saturation",
    "apply_ccm",
    "apply_cfa_white_balance",
    "blur3x3",
    "camera_to_srgb",
    "cfa_masks",
    "clip_unit",
    "demosaic_bilinear",
    "demosaic_malvar2004",
    "denoise",
    "desaturate",
    "inverse_smoothstep",
    "luminance",
    "mosaic",
    "normalize_levels",
    "pack_bayer",
    "sharpen",
    "smoothstep",
    "srgb_decode",
    "srgb_encode",
    "tone_curve",
    "unpack_bayer",
    "white_balance",
]
