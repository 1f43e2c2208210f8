"""Helpers shared by the loaders: argument checks, stratified subsets, batch resizing."""

from __future__ import annotations

import operator
import sys

import numpy as np
from PIL import Image

from diffisp.errors import ConfigError, DataError, InputTypeError

MIN_IMAGE_SIZE = 8
# The options that size a data set in memory, named when it would not fit.
SIZE_OPTIONS = "num_train, num_test or image_size (--num-train, --num-test, --image-size)"
# Lanczos in Pillow widens its kernel when it shrinks, i.e. it is antialiased.
RESAMPLE = Image.Resampling.LANCZOS


def log_to_stderr(line: str) -> None:
    """The loaders' default progress log: a line on standard error, flushed."""
    print(line, file=sys.stderr, flush=True)


def check_count(value: object, name: str) -> int | None:
    """Validate a sample count: a positive int, or ``None`` for "all" / the default."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InputTypeError(f"{name} must be a positive int or None; got {type(value).__name__}")
    if value <= 0:
        raise ConfigError(f"{name} must be a positive int or None (all available); got {value}")
    return int(value)


def check_int(value: object, name: str, *, minimum: int) -> int:
    """Validate an int argument that must be ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InputTypeError(f"{name} must be an int; got {type(value).__name__}")
    if value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}; got {value}")
    return operator.index(value)


def check_image_size(value: object) -> int:
    """Validate the output image side (pixels)."""
    return check_int(value, "image_size", minimum=MIN_IMAGE_SIZE)


def check_load_arguments(
    spec: object,
    num_train: object,
    num_test: object,
    seed: object,
    image_size: object,
    *,
    example: str,
) -> tuple[str, int | None, int | None, int, int]:
    """The arguments every ``load_*`` entry point takes, checked: ``(spec as a str,
    num_train, num_test, seed, image_size)``. ``spec`` may be a parsed
    :class:`~diffisp.data.spec.DataSpec`; ``example`` names a valid spec in the error."""
    from diffisp.data.spec import DataSpec  # it imports folder, which imports this module

    if isinstance(spec, DataSpec):
        spec = str(spec)
    if not isinstance(spec, str):
        raise InputTypeError(f"spec must be a str such as {example!r}; got {type(spec).__name__}")
    return (
        spec,
        check_count(num_train, "num_train"),
        check_count(num_test, "num_test"),
        check_int(seed, "seed", minimum=0),
        check_image_size(image_size),
    )


def check_enough(requested: int | None, available: int, what: str, hint: str) -> int:
    """Resolve ``requested`` (None = all) against ``available``; never silently return fewer."""
    if requested is None:
        return available
    if requested > available:
        raise DataError(f"requested {requested} {what} but only {available} are available; {hint}")
    return requested


def stratified_subset(
    labels: np.ndarray, n: int, rng: np.random.Generator, num_classes: int
) -> np.ndarray:
    """Pick ``n`` indices into ``labels`` with the classes as balanced as they allow.

    Classes are drawn round-robin: every class gives one random sample before any class gives
    a second, and so on, so per-class counts differ by at most one unless a class runs out
    (then the others fill in). Within a round the class order is random, so which classes get
    the remainder is random too. ``n <= len(labels)`` is the caller's job.

    Returns:
      ``(n,)`` int64 indices in random order.
    """
    perm = rng.permutation(len(labels))
    permuted = labels[perm]
    rank = np.empty(len(perm), np.int64)
    for c in range(num_classes):
        members = np.flatnonzero(permuted == c)
        rank[members] = np.arange(len(members))
    class_order = rng.permutation(num_classes)[permuted]
    chosen = perm[np.lexsort((class_order, rank))[:n]]
    return rng.permutation(chosen)


def resize_batch(images: np.ndarray, size: int) -> np.ndarray:
    """Resize ``(N, H, W, 3)`` uint8 images to ``(N, size, size, 3)`` uint8 (Lanczos)."""
    if images.shape[1:3] == (size, size):
        return images
    out = np.empty((len(images), size, size, 3), np.uint8)
    for i, image in enumerate(images):
        out[i] = np.asarray(Image.fromarray(image).resize((size, size), RESAMPLE))
    return out


def uint8_to_float(images: np.ndarray) -> np.ndarray:
    """uint8 in [0, 255] -> float32 in [0, 1]."""
    # Division (not multiplication by 1/255) keeps 255 -> exactly 1.0.
    return images.astype(np.float32) / np.float32(255)
