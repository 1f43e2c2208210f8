"""A built-in, offline stand-in data set: random crops of 10 bundled photographs.

This is NOT CIFAR-10. It exists so that demos and tests run anywhere without a download. Each
class is one real photograph shipped inside scikit-image or scikit-learn; a sample is a random
square crop of it (side 10–33% of the photo's short side, i.e. scale jitter), resized to
``image_size`` with Lanczos and randomly flipped left-right.

Train and test never overlap. Each photo is cut into a 3x3 grid of blocks; three blocks, one
in every grid row and every grid column (a diagonal pattern that shifts with the class), are
test blocks, the other six train blocks. Every crop lies inside a single block, so a crop can
neither straddle the boundary nor cover pixels of the other split, and train and test crops
share one distribution of scale and position within a block. The split is fixed: it does not
depend on the seed, so the test crops of one seed never overlap the train crops of another.

Photos whose short side exceeds 512 px are first downscaled to 512 (a "working" copy, decoded
once per process); crop boxes are given in working-copy pixels.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from diffisp.data._common import (
    RESAMPLE,
    SIZE_OPTIONS,
    check_image_size,
    check_int,
    uint8_to_float,
)
from diffisp.data.dataset import Dataset
from diffisp.data.images import DECODED_FORMATS
from diffisp.data.memory import check_fits_in_memory
from diffisp.errors import ConfigError, DataError

Split = Literal["train", "test"]

GRID = 3
CROP_FRACTION = (0.10, 1 / GRID)  # crop side / short side of the photo
WORK_SIDE = 512
DEFAULT_NUM_TRAIN = 2000
DEFAULT_NUM_TEST = 500


def _skimage(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        import skimage.data

        image = getattr(skimage.data, name)()
        return image[0] if isinstance(image, tuple) else image

    return load


def _sklearn(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from sklearn.datasets import load_sample_image

        return load_sample_image(name)

    return load


@dataclass(frozen=True)
class _Photo:
    name: str  # class name
    package: str
    file: str  # path inside the package; read with Pillow (fast, no heavy imports)
    fallback: Callable[[], np.ndarray]  # the library's own loader, if the file ever moves
    # (top, left, bottom, right) as fractions: the part of the photo that is picture content.
    content: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 1.0)


# All of these ship inside the wheels; none needs a download (checked for scikit-image 0.26,
# whose other colour images such as "lily" or "skin" are fetched with pooch on first use).
PHOTOS: tuple[_Photo, ...] = (
    _Photo("astronaut", "skimage", "data/astronaut.png", _skimage("astronaut")),
    _Photo("chelsea", "skimage", "data/chelsea.png", _skimage("chelsea")),
    _Photo("coffee", "skimage", "data/coffee.png", _skimage("coffee")),
    _Photo(
        "hubble_deep_field", "skimage", "data/hubble_deep_field.jpg", _skimage("hubble_deep_field")
    ),
    _Photo("immunohistochemistry", "skimage", "data/ihc.png", _skimage("immunohistochemistry")),
    # A fundus photo: a disc on black. Keep the square inside the disc, else corner crops are
    # pure black and look like the Hubble field.
    _Photo("retina", "skimage", "data/retina.jpg", _skimage("retina"), (0.16, 0.16, 0.84, 0.84)),
    _Photo("rocket", "skimage", "data/rocket.jpg", _skimage("rocket")),
    _Photo("motorcycle", "skimage", "data/motorcycle_left.png", _skimage("stereo_motorcycle")),
    _Photo("china", "sklearn", "datasets/images/china.jpg", _sklearn("china.jpg")),
    _Photo("flower", "sklearn", "datasets/images/flower.jpg", _sklearn("flower.jpg")),
)
CLASS_NAMES: tuple[str, ...] = tuple(p.name for p in PHOTOS)


@dataclass(frozen=True)
class CropPlan:
    """Where the crops of one split come from.

    Attributes:
      labels: ``(N,)`` int32 class (= photo) index.
      boxes: ``(N, 4)`` int64 ``(top, left, bottom, right)`` in working-photo pixels,
        bottom/right exclusive; square.
      flips: ``(N,)`` bool, flip the crop left-right.
    """

    labels: np.ndarray
    boxes: np.ndarray
    flips: np.ndarray


def load_builtin(
    num_train: int = DEFAULT_NUM_TRAIN,
    num_test: int = DEFAULT_NUM_TEST,
    *,
    seed: int = 0,
    image_size: int = 32,
) -> Dataset:
    """The built-in stand-in data set (see module docstring); balanced, deterministic.

    Train and test use independent random streams derived from ``seed``, so the test set
    does not change when ``num_train`` does.

    Returns:
      A :class:`Dataset` with ``is_standin=True`` and images ``(N, image_size, image_size, 3)``.
    """
    image_size = check_image_size(image_size)
    num_train = check_int(num_train, "num_train", minimum=1)
    num_test = check_int(num_test, "num_test", minimum=1)
    check_fits_in_memory(num_train + num_test, image_size, options=SIZE_OPTIONS)
    train = plan_crops(num_train, split="train", seed=seed)
    test = plan_crops(num_test, split="test", seed=seed)
    return Dataset(
        name="builtin",
        train_images=render_crops(train, image_size),
        train_labels=train.labels,
        test_images=render_crops(test, image_size),
        test_labels=test.labels,
        class_names=CLASS_NAMES,
        description=(
            f"built-in stand-in data set (random crops of {len(PHOTOS)} bundled photos, one "
            f"photo per class; test crops from image regions disjoint from train), NOT "
            f"CIFAR-10: {num_train} train / {num_test} test images"
        ),
        is_standin=True,
    )


def plan_crops(num: int, *, split: Split, seed: int) -> CropPlan:
    """Draw ``num`` crop boxes for ``split``; class counts differ by at most one.

    Deterministic in ``(num, split, seed)``; :func:`load_builtin` uses exactly these boxes.
    """
    num = check_int(num, "num", minimum=1)
    seed = check_int(seed, "seed", minimum=0)
    if split not in ("train", "test"):
        raise ConfigError(f"split must be 'train' or 'test'; got {split!r}")
    rng = np.random.default_rng([seed, 0 if split == "train" else 1])
    num_classes = len(PHOTOS)
    counts = np.full(num_classes, num // num_classes)
    counts[rng.choice(num_classes, num % num_classes, replace=False)] += 1
    labels = rng.permutation(np.repeat(np.arange(num_classes, dtype=np.int32), counts))
    boxes = np.empty((num, 4), np.int64)
    for c in range(num_classes):
        members = np.flatnonzero(labels == c)
        boxes[members] = _boxes_in_blocks(rng, split_blocks(c, split), _short_side(c), counts[c])
    return CropPlan(labels=labels, boxes=boxes, flips=rng.random(num) < 0.5)


def split_blocks(photo: int, split: Split) -> np.ndarray:
    """The grid blocks of photo ``photo`` that belong to ``split``.

    Returns:
      ``(B, 4)`` int64 ``(top, left, bottom, right)`` in working-photo pixels; 6 blocks for
      train, 3 for test.
    """
    height, width = photo_shape(photo)
    rows = np.linspace(0, height, GRID + 1).round().astype(np.int64)
    cols = np.linspace(0, width, GRID + 1).round().astype(np.int64)
    blocks = [
        (rows[r], cols[q], rows[r + 1], cols[q + 1])
        for r in range(GRID)
        for q in range(GRID)
        if ((q - r - photo) % GRID == 0) == (split == "test")
    ]
    return np.asarray(blocks, np.int64)


def render_crops(plan: CropPlan, image_size: int) -> np.ndarray:
    """Cut, resize (Lanczos, antialiased) and flip the crops of ``plan``.

    Returns:
      ``(N, image_size, image_size, 3)`` float32 in [0, 1].
    """
    image_size = check_image_size(image_size)
    size = (image_size, image_size)
    out = np.empty((len(plan.labels), image_size, image_size, 3), np.uint8)
    for i, label in enumerate(plan.labels):
        top, left, bottom, right = plan.boxes[i]
        # Resizing straight from the box avoids copying the crop first.
        out[i] = np.asarray(_photo(label).resize(size, RESAMPLE, box=(left, top, right, bottom)))
    out[plan.flips] = out[plan.flips, :, ::-1]
    return uint8_to_float(out)


def photo_shape(photo: int) -> tuple[int, int]:
    """``(height, width)`` of the working copy of photo ``photo``."""
    width, height = _photo(photo).size
    return height, width


def _short_side(photo: int) -> int:
    return min(photo_shape(photo))


def _boxes_in_blocks(
    rng: np.random.Generator, blocks: np.ndarray, short_side: int, n: int
) -> np.ndarray:
    top, left, bottom, right = blocks[rng.integers(len(blocks), size=n)].T
    fraction = rng.uniform(*CROP_FRACTION, size=n)
    # Rounding the grid can make a block a pixel smaller than a third of the short side.
    side = np.clip(
        (fraction * short_side).astype(np.int64), 1, np.minimum(bottom - top, right - left)
    )
    y = top + rng.integers(0, bottom - top - side + 1)
    x = left + rng.integers(0, right - left - side + 1)
    return np.stack([y, x, y + side, x + side], axis=1)


def _photo(index: int) -> Image.Image:
    return _decoded_photo(int(index))  # one cache key per photo, whatever the int type


@functools.cache
def _decoded_photo(index: int) -> Image.Image:
    """Working copy of photo ``index``: content region, short side <= WORK_SIDE, RGB, decoded."""
    photo = PHOTOS[index]
    try:
        image = _read(photo)
    except Exception as exc:  # any failure of a third-party loader means a broken install
        raise DataError(
            f"built-in photo {photo.name!r} could not be loaded from {photo.package} "
            f"({type(exc).__name__}: {exc}); reinstall {photo.package} or use another data set"
        ) from exc
    width, height = image.size
    top, left, bottom, right = photo.content
    image = image.crop(
        (round(left * width), round(top * height), round(right * width), round(bottom * height))
    )
    scale = WORK_SIDE / min(image.size)
    if scale < 1:
        image = image.resize((round(image.width * scale), round(image.height * scale)), RESAMPLE)
    return image


def _read(photo: _Photo) -> Image.Image:
    spec = importlib.util.find_spec(photo.package)
    path = Path(spec.origin).parent / photo.file if spec and spec.origin else None
    if path is not None and path.is_file():
        with Image.open(path, formats=DECODED_FORMATS) as image:
            return image.convert("RGB")
    return Image.fromarray(np.asarray(photo.fallback(), np.uint8)).convert("RGB")
