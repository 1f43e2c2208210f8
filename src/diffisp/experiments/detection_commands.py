"""The bodies of the detection commands of the CLI: ``diffisp scenes`` and
``diffisp bench --task detect``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from diffisp.data.scenes import write_scenes_coco
from diffisp.errors import ConfigError


def write_scenes(
    out: str | Path,
    num_train: int,
    num_test: int,
    image_size: int,
    seed: int,
    log: Callable[[str], None] = print,
) -> Path:
    """Write the stand-in scenes as COCO (PNGs + ``instances.json``) into ``out``; returns the
    JSON's path. ``--data coco:OUT`` then loads exactly these images."""
    path = write_scenes_coco(out, num_train, num_test, image_size=image_size, seed=seed)
    log(
        f"wrote {num_train} train + {num_test} test scenes ({image_size}x{image_size}, seed "
        f"{seed}) to {Path(out)}; train on them with --task detect --data coco:{Path(out)}"
    )
    return path


def bench_detection(args: Any) -> int:
    """``diffisp bench --task detect``: run, print, write ``args.out``."""
    from diffisp.experiments.detection_bench import (
        DEFAULT_IMAGE_SIZE,
        print_detection_bench,
        run_detection_bench,
    )
    from diffisp.util.io import atomic_write_json

    image_size = args.image_size or DEFAULT_IMAGE_SIZE
    if image_size % 16:
        raise ConfigError(f"--image-size must be a multiple of 16; got {image_size}")
    result = run_detection_bench(
        num_train=args.num_train, epochs=args.epochs, image_size=image_size
    )
    print_detection_bench(result)
    atomic_write_json(args.out, result)
    print(f"wrote {args.out}")
    return 0


__all__ = ["bench_detection", "write_scenes"]
