"""A generated image folder of any size, for streaming tests and memory measurements.

:func:`write_image_folder` writes ``root/class_<k>/<i>.png``: ``n`` small 8-bit RGB PNGs,
deterministic in ``seed``, in the layout :mod:`diffisp.data.folder` reads. Each class has its
own mean colour and stripe orientation under per-image noise, so a classifier can learn them
(the set is for throughput and memory, not a benchmark of accuracy).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from diffisp.data._common import check_image_size, check_int
from diffisp.errors import ConfigError


def generated_image(index: int, label: int, num_classes: int, size: int, seed: int) -> np.ndarray:
    """Image ``index`` (of class ``label``) as ``(size, size, 3)`` uint8."""
    rng = np.random.default_rng([seed, index])
    hue = 2 * np.pi * label / num_classes
    colour = 0.5 + 0.35 * np.cos(hue + np.array([0.0, 2.094, 4.189]))
    angle = np.pi * label / num_classes
    y, x = np.mgrid[0:size, 0:size] / size
    stripes = 0.15 * np.sin(2 * np.pi * 4 * (x * np.cos(angle) + y * np.sin(angle)))
    noise = rng.normal(0.0, 0.08, (size, size, 3))
    shift = rng.uniform(-0.1, 0.1)
    pixels = colour + stripes[..., None] + noise + shift
    return np.clip(np.round(pixels * 255), 0, 255).astype(np.uint8)


def write_image_folder(
    root: str | Path, n: int, *, num_classes: int = 10, image_size: int = 32, seed: int = 0
) -> Path:
    """Write ``n`` generated PNGs into ``root/class_<k>/`` (image ``i`` is of class
    ``i % num_classes``, file ``class_<k>/<i:07d>.png``) and return ``root``.

    Raises:
      ConfigError: ``n < 2 * num_classes`` (every class needs a train and a test image) or
        ``num_classes < 2``.
    """
    n = check_int(n, "n", minimum=1)
    num_classes = check_int(num_classes, "num_classes", minimum=2)
    image_size = check_image_size(image_size)
    if n < 2 * num_classes:
        raise ConfigError(f"n must be at least 2 * num_classes = {2 * num_classes}; got {n}")
    root = Path(root)
    folders = [root / f"class_{k:02d}" for k in range(num_classes)]
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        label = i % num_classes
        pixels = generated_image(i, label, num_classes, image_size, seed)
        Image.fromarray(pixels).save(folders[label] / f"{i:07d}.png", compress_level=1)
    return root
