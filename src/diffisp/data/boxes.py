"""Bounding boxes: the pixel convention, cleaning bad boxes, letterboxing, padding.

Coordinates are continuous pixel coordinates: pixel ``(row i, column j)`` covers the square
``[j, j + 1) x [i, i + 1)``, so a box ``(x0, y0, x1, y1)`` (xyxy, ``x1``/``y1`` exclusive edges)
tightly around pixels ``j0..j1`` and ``i0..i1`` (inclusive) is ``(j0, i0, j1 + 1, i1 + 1)``.
COCO's ``[x, y, w, h]`` is already in this convention (``x1 = x + w``); VOC's 1-based inclusive
pixel indices become ``(xmin - 1, ymin - 1, xmax, ymax)`` (as Detectron2 reads them).

Letterboxing (:func:`letterbox_image`) scales the image so its long side is ``image_size``,
keeping the aspect ratio, and centres it on a square of grey :data:`PAD_VALUE`; a box follows
with ``x' = x * scale_x + offset_x`` (:func:`letterbox_boxes`) and maps back with
:meth:`Letterbox.to_original`.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from PIL import Image

from diffisp.data._common import RESAMPLE

# Mid grey: the mean of [0, 1], so padding adds no colour cast and no strong edge either way.
PAD_VALUE = 0.5

# Keys of ``DetectionDataset.skipped``: why annotations were dropped.
SKIP_CROWD = "crowd"  # COCO iscrowd=1 regions (not single objects; COCO's evaluator ignores them)
SKIP_OUTSIDE = "outside_image"  # box entirely outside the image
SKIP_EMPTY = "zero_area"  # width or height <= 0 (before clipping)


class Letterbox(NamedTuple):
    """Where one original image sits in its letterboxed square.

    ``x_letterboxed = x_original * scale_x + offset_x`` (likewise y). The two scales differ
    only by the rounding of the resized image to whole pixels.
    """

    file: str  # relative to the data set's root, "/" separators
    width: int  # original image width in pixels
    height: int  # original image height
    scale_x: float
    scale_y: float
    offset_x: int  # left padding in letterboxed pixels
    offset_y: int  # top padding

    def to_original(self, boxes: np.ndarray) -> np.ndarray:
        """Map ``(..., 4)`` xyxy boxes in letterboxed pixels back to original pixels."""
        boxes = np.asarray(boxes, np.float64)
        scale = np.array([self.scale_x, self.scale_y] * 2)
        offset = np.array([self.offset_x, self.offset_y] * 2)
        return (boxes - offset) / scale


def letterbox_geometry(width: int, height: int, image_size: int) -> tuple[int, int, int, int]:
    """``(new_width, new_height, offset_x, offset_y)`` of a ``width x height`` image in an
    ``image_size`` square: long side ``image_size``, short side rounded (at least 1), centred."""
    scale = image_size / max(width, height)
    new_width = max(1, min(image_size, round(width * scale)))
    new_height = max(1, min(image_size, round(height * scale)))
    return new_width, new_height, (image_size - new_width) // 2, (image_size - new_height) // 2


def letterbox_image(
    pixels: np.ndarray, image_size: int, file: str = ""
) -> tuple[np.ndarray, Letterbox]:
    """Scale ``(H, W, 3)`` float32 [0, 1] pixels to fit an ``image_size`` square (Lanczos,
    antialiased; an image already of that size is kept as is) and pad with :data:`PAD_VALUE`.

    Returns:
      ``(image_size, image_size, 3)`` float32 in [0, 1], and its :class:`Letterbox`.
    """
    height, width = pixels.shape[:2]
    new_width, new_height, offset_x, offset_y = letterbox_geometry(width, height, image_size)
    if (new_width, new_height) == (width, height):
        resized = pixels
    else:
        resized = np.stack(
            [
                np.asarray(
                    Image.fromarray(np.ascontiguousarray(pixels[..., c], np.float32)).resize(
                        (new_width, new_height), RESAMPLE, reducing_gap=3.0
                    )
                )
                for c in range(3)
            ],
            axis=-1,
        )
    out = np.full((image_size, image_size, 3), PAD_VALUE, np.float32)
    out[offset_y : offset_y + new_height, offset_x : offset_x + new_width] = np.clip(resized, 0, 1)
    return out, letterbox_of(width, height, image_size, file)


def letterbox_of(width: int, height: int, image_size: int, file: str = "") -> Letterbox:
    """The :class:`Letterbox` :func:`letterbox_image` gives a ``width x height`` image (from
    its size alone: a decoded cache knows the size without the pixels)."""
    new_width, new_height, offset_x, offset_y = letterbox_geometry(width, height, image_size)
    scale_x, scale_y = new_width / width, new_height / height
    return Letterbox(file, width, height, scale_x, scale_y, offset_x, offset_y)


def letterbox_boxes(boxes: np.ndarray, letterbox: Letterbox) -> np.ndarray:
    """``(K, 4)`` xyxy boxes in original pixels -> letterboxed pixels (float32)."""
    scale = np.array([letterbox.scale_x, letterbox.scale_y] * 2)
    offset = np.array([letterbox.offset_x, letterbox.offset_y] * 2)
    return (np.asarray(boxes, np.float64).reshape(-1, 4) * scale + offset).astype(np.float32)


def clean_boxes(
    boxes: np.ndarray, width: int, height: int, skipped: dict[str, int]
) -> tuple[np.ndarray, int]:
    """Drop boxes of zero or negative size or entirely outside the image; clip the rest.

    Args:
      boxes: ``(K, 4)`` finite xyxy in original pixels.
      width, height: the image size.
      skipped: counts, updated in place under :data:`SKIP_EMPTY` and :data:`SKIP_OUTSIDE`.

    Returns:
      ``(keep, clipped)``: ``(K,)`` bool of the boxes kept, and how many kept ones were clipped.
      ``boxes`` is clipped in place.
    """
    x0, y0, x1, y1 = boxes.T
    empty = (x1 <= x0) | (y1 <= y0)
    # Touching the image only along an edge counts as outside: nothing of it is visible.
    outside = ~empty & ((x1 <= 0) | (y1 <= 0) | (x0 >= width) | (y0 >= height))
    keep = ~empty & ~outside
    limits = np.array([width, height] * 2, np.float64)
    clipped_boxes = np.clip(boxes, 0, limits)
    clipped = int(np.sum(keep & np.any(clipped_boxes != boxes, axis=1)))
    boxes[:] = clipped_boxes
    skipped[SKIP_EMPTY] = skipped.get(SKIP_EMPTY, 0) + int(empty.sum())
    skipped[SKIP_OUTSIDE] = skipped.get(SKIP_OUTSIDE, 0) + int(outside.sum())
    return keep, clipped


def pad_objects(
    per_image: list[tuple[np.ndarray, np.ndarray, np.ndarray]], max_objects: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stack per-image ``(boxes (K, 4), labels (K,), difficult (K,))`` into padded arrays.

    Returns:
      ``(N, M, 4)`` float32 boxes (zeros where padded), ``(N, M)`` int32 labels (-1 where
      padded) and ``(N, M)`` bool difficult flags (False where padded), ``M = max_objects``.
    """
    n = len(per_image)
    boxes = np.zeros((n, max_objects, 4), np.float32)
    labels = np.full((n, max_objects), -1, np.int32)
    difficult = np.zeros((n, max_objects), bool)
    for i, (b, lab, d) in enumerate(per_image):
        boxes[i, : len(b)] = b
        labels[i, : len(lab)] = lab
        difficult[i, : len(d)] = d
    return boxes, labels, difficult
