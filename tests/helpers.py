"""Helpers shared by the test modules (imported by name; conftest modules cannot be)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


def randomize(module: nnx.Module, seed: int = 0, scale: float = 1.0) -> nnx.Module:
    """Set every nnx.Param of ``module`` to random normal values (a non-identity state)."""
    rng = np.random.default_rng(seed)
    state = nnx.state(module, nnx.Param)
    new = jax.tree.map(lambda p: jnp.asarray(rng.normal(0, scale, p.shape), p.dtype), state)
    nnx.update(module, new)
    return module


EDGE_INPUTS = {
    "zeros": np.zeros((2, 6, 6, 3), np.float32),
    "ones": np.ones((2, 6, 6, 3), np.float32),
    "tiny": np.full((2, 6, 6, 3), 1e-7, np.float32),
    "knots": np.broadcast_to(
        np.linspace(0, 1, 16, dtype=np.float32)[None, :, None, None], (2, 16, 6, 3)
    ).copy(),
}


def toy_dataset(
    num_train: int = 64, num_test: int = 32, num_classes: int = 4, size: int = 16, seed: int = 0
):
    """A tiny, learnable data set: each class is a distinct colour and stripe orientation."""
    from diffisp.data import Dataset

    rng = np.random.default_rng(seed)
    colours = rng.uniform(0.3, 1.0, (num_classes, 3))

    def make(n):
        labels = np.arange(n) % num_classes
        yy, xx = np.mgrid[0:size, 0:size] / size
        images = []
        for label in labels:
            angle = np.pi * label / num_classes
            stripes = 0.5 + 0.5 * np.sin(12 * (np.cos(angle) * xx + np.sin(angle) * yy))
            image = stripes[..., None] * colours[label] + rng.normal(0, 0.05, (size, size, 3))
            images.append(np.clip(image, 0, 1))
        return np.stack(images).astype(np.float32), labels.astype(np.int32)

    train_x, train_y = make(num_train)
    test_x, test_y = make(num_test)
    return Dataset(
        name="toy",
        train_images=train_x,
        train_labels=train_y,
        test_images=test_x,
        test_labels=test_y,
        class_names=tuple(f"class{i}" for i in range(num_classes)),
        description="toy stripes for tests",
        is_standin=True,
    )


# A tiny but complete run for command-line tests (about 20 s).
TINY_CLI_ARGS = [
    "--data", "builtin", "--num-train", "64", "--num-test", "32", "--image-size", "16",
    "--batch-size", "16", "--epochs-clean", "1", "--epochs-isp", "1", "--epochs-joint", "1",
    "--no-progress", "--protocol", "seed",
]  # fmt: skip
# The seed protocol: the demo's own (an adaptive variant on mixed captures) costs a minute more
# of compiling; the slow tests/test_demo.py runs it.


def write_voc_from_scenes(coco_dir: Path, root: Path) -> Path:
    """A Pascal VOC folder (PNG images, 1-based inclusive boxes) holding the scenes that
    :func:`write_scenes_coco` wrote to ``coco_dir``, with an ImageSets split (train/test)."""
    data = json.loads((coco_dir / "instances.json").read_text())
    names = {c["id"]: c["name"] for c in data["categories"]}
    (root / "Annotations").mkdir(parents=True)
    (root / "JPEGImages").mkdir()
    (root / "ImageSets" / "Main").mkdir(parents=True)
    sets: dict[str, list[str]] = {"train": [], "test": []}
    for image in data["images"]:
        stem = image["file_name"].replace("/", "_").removesuffix(".png")
        shutil.copy(coco_dir / "images" / image["file_name"], root / "JPEGImages" / f"{stem}.png")
        sets[image["split"]].append(stem)
        parts = [
            f"<annotation><filename>{stem}.png</filename><size><width>{image['width']}</width>"
            f"<height>{image['height']}</height><depth>3</depth></size>"
        ]
        for a in data["annotations"]:
            if a["image_id"] != image["id"]:
                continue
            x, y, w, h = a["bbox"]
            parts.append(
                f"<object><name>{names[a['category_id']]}</name><difficult>0</difficult>"
                f"<bndbox><xmin>{x + 1}</xmin><ymin>{y + 1}</ymin><xmax>{x + w}</xmax>"
                f"<ymax>{y + h}</ymax></bndbox></object>"
            )
        (root / "Annotations" / f"{stem}.xml").write_text("".join(parts) + "</annotation>")
    for split, stems in sets.items():
        (root / "ImageSets" / "Main" / f"{split}.txt").write_text("\n".join(stems) + "\n")
    return root


def tiny(**overrides: Any) -> dict[str, Any]:
    """The config values of a tiny run on the built-in data (64 train / 32 test images of
    16x16, batches of 16, one epoch per phase), with ``overrides``."""
    return {
        "data": "builtin",
        "num_train": 64,
        "num_test": 32,
        "image_size": 16,
        "batch_size": 16,
        "epochs_clean": 1,
        "epochs_isp": 1,
        "epochs_joint": 1,
        **overrides,
    }
