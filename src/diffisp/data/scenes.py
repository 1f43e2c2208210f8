"""An offline stand-in detection data set: objects pasted onto photo crops, generated per seed.

This is NOT a real detection benchmark. It exists so detection runs anywhere without a
download, from the ten photos diffisp ships (:mod:`diffisp.data.builtin`):

* **Backgrounds** are square crops (40–100 % of the usable region's short side, flipped at
  random) of four photos (:data:`BACKGROUND_PHOTOS`); train scenes take them from the left
  70 % of each photo, test scenes from the right 30 %.
* **Objects** belong to :data:`CLASSES`: each class is the luminance texture of one of the
  other six photos, tinted with one colour, so classes differ by colour *and* texture, never
  by shape. Textures come from the top 70 % of the photo for train, the bottom 30 % for test.
* **Shapes** are soft blobs: an ellipse (aspect 1:1 to 2:1, any rotation) whose radius is
  modulated by a few low harmonics (ellipses, lumpy and rounded-polygon shapes), with a
  feathered alpha edge 1–2 px wide, so no straight edge gives the box away.
* 1–:data:`MAX_OBJECTS` objects per scene (uniform), long side log-uniform in
  :data:`SIZE_RANGE` of the image side (at least 4 px), centres such that at most about half an
  object leaves the image. Later objects are drawn over earlier ones (occlusion); an object
  whose visible part (``alpha > 0.5`` and not covered) has fewer than :data:`MIN_VISIBLE_PIXELS`
  pixels or less than :data:`MIN_VISIBLE_FRACTION` of its unoccluded in-image area is left out
  of the picture and of the annotations.
* **Boxes** are tight to the visible mask, like COCO's boxes: the smallest box (pixel-edge
  coordinates, see :mod:`diffisp.data.boxes`) holding every pixel where the object's visible
  alpha ``alpha * prod(1 - alpha of the objects above)`` exceeds 0.5.

Scenes are made in blocks of :data:`BLOCK` with their own random streams
(``SeedSequence([seed, split, block])``), so a data set is deterministic in its seed and the
first ``n`` scenes are the same whatever the total.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np
from PIL import Image

from diffisp.data._common import RESAMPLE, check_image_size, check_int, uint8_to_float
from diffisp.data.boxes import Letterbox, pad_objects
from diffisp.data.builtin import CLASS_NAMES as PHOTO_NAMES
from diffisp.data.builtin import _photo
from diffisp.data.detection import DetectionDataset
from diffisp.data.memory import check_fits_in_memory
from diffisp.errors import ConfigError
from diffisp.util.io import atomic_write_bytes, atomic_write_json, check_output_path

Split = Literal["train", "test"]


class SceneClass(NamedTuple):
    name: str
    photo: str  # texture source, a name in diffisp.data.builtin.PHOTOS
    tint: tuple[float, float, float]


CLASSES: tuple[SceneClass, ...] = (
    SceneClass("red_fur", "chelsea", (0.9, 0.15, 0.1)),
    SceneClass("green_cells", "immunohistochemistry", (0.15, 0.8, 0.2)),
    SceneClass("blue_beans", "coffee", (0.15, 0.3, 0.95)),
    SceneClass("yellow_petals", "flower", (0.95, 0.85, 0.1)),
    SceneClass("magenta_stars", "hubble_deep_field", (0.85, 0.15, 0.85)),
    SceneClass("cyan_veins", "retina", (0.1, 0.85, 0.9)),
)
CLASS_NAMES = tuple(c.name for c in CLASSES)
BACKGROUND_PHOTOS = ("astronaut", "rocket", "motorcycle", "china")
MAX_OBJECTS = 8
SIZE_RANGE = (0.06, 0.5)  # object long side / image side
MIN_SIDE_PX = 4.0
MIN_VISIBLE_PIXELS = 4
MIN_VISIBLE_FRACTION = 0.3
TRAIN_SHARE = 0.7  # of a photo's columns (backgrounds) or rows (textures) used for train
BLOCK = 16
_TEXTURE_SIDE = 256
_HARMONICS = (2, 3, 4, 5)  # z**2 .. z**5 below
_SPLIT_ID = {"train": 0, "test": 1}


class _Block(NamedTuple):
    images: np.ndarray  # (B, S, S, 3) uint8
    boxes: list[np.ndarray]  # (K, 4) float32 per scene
    labels: list[np.ndarray]  # (K,) int32
    areas: list[np.ndarray]  # (K,) int64 visible pixels
    masks: list[np.ndarray]  # (K, S, S) bool visible masks (visible alpha > 0.5)


def generate_scenes(
    num: int, image_size: int, seed: int, *, split: Split = "train"
) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
    """Generate ``num`` scenes of ``split`` (see module docstring).

    Returns:
      ``(images, boxes, labels)``: ``(num, S, S, 3)`` uint8 RGB; per scene ``(K, 4)`` float32
      xyxy boxes in pixels and ``(K,)`` int32 class indices into :data:`CLASS_NAMES`,
      ``1 <= K <= MAX_OBJECTS``, in drawing order (later ones on top).
    """
    return _joined(_generate(num, image_size, seed, split))


def generate_scenes_with_masks(
    num: int, image_size: int, seed: int, *, split: Split = "train"
) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """:func:`generate_scenes` plus each scene's ``(K, S, S)`` bool visible masks (the pixels
    where an object's visible alpha exceeds 0.5; its box is the box of its mask)."""
    blocks = _generate(num, image_size, seed, split)
    images, boxes, labels = _joined(blocks)
    return images, boxes, labels, [m for b in blocks for m in b.masks]


def _joined(blocks: list[_Block]) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
    return (
        np.concatenate([b.images for b in blocks]),
        [x for b in blocks for x in b.boxes],
        [x for b in blocks for x in b.labels],
    )


def load_scenes(
    num_train: int = 2000, num_test: int = 500, image_size: int = 64, seed: int = 0
) -> DetectionDataset:
    """The scenes as a :class:`DetectionDataset`, in memory (no files), ``M = MAX_OBJECTS``.

    Identical to :func:`write_scenes_coco` followed by
    ``load_coco(out / "instances.json", out / "images", image_size=image_size, max_objects=8)``.
    """
    image_size = check_image_size(image_size)
    check_fits_in_memory(
        num_train + num_test, image_size, options="num_train, num_test or image_size"
    )
    arrays: dict[str, object] = {}
    for split, num in (("train", num_train), ("test", num_test)):
        images, boxes, labels = generate_scenes(num, image_size, seed, split=split)
        padded = pad_objects(
            [(b, lab, np.zeros(len(lab), bool)) for b, lab in zip(boxes, labels, strict=True)],
            MAX_OBJECTS,
        )
        info = tuple(
            Letterbox(_file_name(split, i), image_size, image_size, 1.0, 1.0, 0, 0)
            for i in range(num)
        )
        arrays |= {
            f"{split}_images": uint8_to_float(images),
            f"{split}_boxes": padded[0],
            f"{split}_labels": padded[1],
            f"{split}_difficult": padded[2],
            f"{split}_info": info,
        }
    return DetectionDataset(
        name="scenes",
        class_names=CLASS_NAMES,
        description=_description(num_train, num_test, seed),
        is_standin=True,
        skipped={},
        **arrays,
    )


def write_scenes_coco(
    out_dir: str | Path, num_train: int, num_test: int, image_size: int = 64, seed: int = 0
) -> Path:
    """Write the scenes as PNGs plus one COCO JSON that :func:`~diffisp.data.coco.load_coco`
    reads.

    Layout: ``out_dir/images/{train,test}/NNNNNN.png`` and ``out_dir/instances.json``, whose
    images carry a ``"split"`` field and whose category ids are ``1..K`` in
    :data:`CLASS_NAMES` order. Every file is written atomically, the JSON last, so a folder with
    an ``instances.json`` is complete.

    Files of an earlier, larger set in ``out_dir`` are left there but not listed in the JSON.

    Returns:
      The path of ``instances.json``.
    """
    out_dir = check_output_path(out_dir, directory=True, what="scenes folder")
    image_size = check_image_size(image_size)
    num_train = check_int(num_train, "num_train", minimum=1)
    num_test = check_int(num_test, "num_test", minimum=1)
    seed = check_int(seed, "seed", minimum=0)
    coco: dict[str, list] = {
        "images": [],
        "annotations": [],
        "categories": [{"id": i + 1, "name": n} for i, n in enumerate(CLASS_NAMES)],
    }
    for split, num in (("train", num_train), ("test", num_test)):
        index = 0
        for block in _generate(num, image_size, seed, split):
            for image, boxes, labels, areas, _ in zip(*block, strict=True):
                image_id = len(coco["images"]) + 1
                name = _file_name(split, index)
                index += 1
                atomic_write_bytes(out_dir / "images" / name, _png(image))
                coco["images"].append(
                    {"id": image_id, "file_name": name, "width": image_size,
                     "height": image_size, "split": split}
                )  # fmt: skip
                for box, label, area in zip(boxes, labels, areas, strict=True):
                    x0, y0, x1, y1 = (float(v) for v in box)
                    coco["annotations"].append(
                        {"id": len(coco["annotations"]) + 1, "image_id": image_id,
                         "category_id": int(label) + 1, "bbox": [x0, y0, x1 - x0, y1 - y0],
                         "area": int(area), "iscrowd": 0}
                    )  # fmt: skip
    coco["info"] = {"description": _description(num_train, num_test, seed)}
    return atomic_write_json(out_dir / "instances.json", coco)


def _description(num_train: int, num_test: int, seed: int) -> str:
    return (
        f"generated stand-in scenes (objects of {len(CLASSES)} tinted-texture classes pasted "
        f"with soft masks on photo crops, seed {seed}), NOT a real detection benchmark: "
        f"{num_train} train / {num_test} test images"
    )


def _file_name(split: str, index: int) -> str:
    return f"{split}/{index:06d}.png"


def _png(image: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def _generate(num: int, image_size: int, seed: int, split: str) -> list[_Block]:
    num = check_int(num, "num", minimum=1)
    image_size = check_image_size(image_size)
    seed = check_int(seed, "seed", minimum=0)
    if split not in _SPLIT_ID:
        raise ConfigError(f"split must be 'train' or 'test'; got {split!r}")
    blocks = []
    for start in range(0, num, BLOCK):
        stream = [seed, _SPLIT_ID[split], start // BLOCK]
        block = _render_block(np.random.default_rng(stream), BLOCK, image_size, split)
        count = min(BLOCK, num - start)
        blocks.append(_redraw_empty(_Block(*(part[:count] for part in block)), stream, split))
    return blocks


def _redraw_empty(block: _Block, stream: list[int], split: str) -> _Block:
    """Replace scenes whose objects were all too hidden (rare) by new ones from their own
    streams, so every scene has at least one object."""
    size = block.images.shape[1]
    for i in np.flatnonzero([len(lab) == 0 for lab in block.labels]):
        for attempt in range(1, 1000):
            rng = np.random.default_rng([*stream, int(i), attempt])
            new = _render_block(rng, 1, size, split)
            if len(new.labels[0]):
                break
        block.images[i] = new.images[0]
        for part, value in zip(block[1:], new[1:], strict=True):
            part[i] = value[0]
    return block


def _render_block(rng: np.random.Generator, num: int, size: int, split: str) -> _Block:
    canvas = _backgrounds(rng, num, size, split)
    alpha, shade, tint, present, labels = _objects(rng, num, size, split)
    # Visible alpha: an object's alpha times the transparency of every object drawn above it.
    above = np.ones_like(alpha)
    above[:, :-1] = np.cumprod((1 - alpha)[:, :0:-1], axis=1)[:, ::-1]
    whole = (alpha > 0.5).sum(axis=(2, 3))
    seen = (alpha * above > 0.5).sum(axis=(2, 3))
    too_hidden = (seen < MIN_VISIBLE_PIXELS) | (seen < MIN_VISIBLE_FRACTION * whole)
    present &= ~too_hidden
    alpha *= present[:, :, None, None]  # left out of the picture too
    above[:, :-1] = np.cumprod((1 - alpha)[:, :0:-1], axis=1)[:, ::-1]
    visible = (alpha * above > 0.5) & present[:, :, None, None]
    for k in range(alpha.shape[1]):  # bottom to top
        a = alpha[:, k, :, :, None]
        colour = np.clip(shade[:, k, :, :, None] * tint[:, k, None, None, :], 0, 1)
        canvas = canvas * (1 - a) + colour * a
    images = np.clip(np.round(canvas * 255), 0, 255).astype(np.uint8)
    rows, cols = visible.any(axis=3), visible.any(axis=2)  # (B, K, S)
    first_row, last_row = rows.argmax(axis=2), size - 1 - rows[:, :, ::-1].argmax(axis=2)
    first_col, last_col = cols.argmax(axis=2), size - 1 - cols[:, :, ::-1].argmax(axis=2)
    boxes = np.stack([first_col, first_row, last_col + 1, last_row + 1], axis=-1)
    areas = visible.sum(axis=(2, 3))
    return _Block(
        images,
        [boxes[i, present[i]].astype(np.float32) for i in range(num)],
        [labels[i, present[i]].astype(np.int32) for i in range(num)],
        [areas[i, present[i]] for i in range(num)],
        [visible[i, present[i]] for i in range(num)],
    )


def _backgrounds(rng: np.random.Generator, num: int, size: int, split: str) -> np.ndarray:
    photos = rng.integers(len(BACKGROUND_PHOTOS), size=num)
    fraction, u, v = rng.uniform(0.4, 1.0, num), rng.random(num), rng.random(num)
    flips = rng.random(num) < 0.5
    out = np.empty((num, size, size, 3), np.float32)
    for i in range(num):
        photo = _photo(PHOTO_NAMES.index(BACKGROUND_PHOTOS[photos[i]]))
        width, height = photo.size
        split_col = round(width * TRAIN_SHARE)
        left, right = (0, split_col) if split == "train" else (split_col, width)
        side = fraction[i] * min(right - left, height)
        x = left + u[i] * (right - left - side)
        y = v[i] * (height - side)
        box = (x, y, x + side, y + side)
        crop = photo.resize((size, size), RESAMPLE, box=box, reducing_gap=2.0)
        out[i] = np.asarray(crop, np.float32) / 255
    out[flips] = out[flips, :, ::-1]
    return out


def _objects(
    rng: np.random.Generator, num: int, size: int, split: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Alpha and texture shade ``(B, K, S, S)``, tint ``(B, K, 3)`` (colour = shade * tint),
    present and labels ``(B, K)``."""
    k = MAX_OBJECTS
    shape = (num, k)
    present = np.arange(k) < rng.integers(1, k + 1, size=num)[:, None]
    labels = rng.integers(len(CLASSES), size=shape)
    low, high = np.log(SIZE_RANGE[0] * size), np.log(SIZE_RANGE[1] * size)
    long_side = np.maximum(np.exp(rng.uniform(low, high, shape)), MIN_SIDE_PX)
    semi_a = long_side / 2
    semi_b = semi_a * rng.uniform(0.5, 1.0, shape)
    angle = rng.uniform(0, np.pi, shape)
    amps = rng.uniform(0, 0.1, (*shape, len(_HARMONICS))) * (rng.random((*shape, 1)) < 0.7)
    phases = rng.uniform(0, 2 * np.pi, (*shape, len(_HARMONICS)))
    # Centres anywhere in the image: at most about half of an object leaves it.
    cx, cy = rng.uniform(0, size, shape), rng.uniform(0, size, shape)
    feather = 1.0 + 0.03 * semi_b
    tex_scale = rng.uniform(0.5, 1.0, shape)
    tex_x, tex_y = rng.uniform(0, _TEXTURE_SIDE, shape), rng.uniform(0, _TEXTURE_SIDE, shape)
    brightness = rng.uniform(0.8, 1.15, shape)

    # Only the objects present are rendered (about half the slots), as a flat (P, S, S) stack.
    which = np.flatnonzero(present.ravel())

    def per(x: np.ndarray) -> np.ndarray:
        return np.asarray(x, np.float32).reshape(num * k, *x.shape[2:])[which][:, None, None]

    grid = np.arange(size, dtype=np.float32) + 0.5  # pixel centres
    dx = grid[None, None, :] - per(cx)
    dy = grid[None, :, None] - per(cy)
    cos, sin = per(np.cos(angle)), per(np.sin(angle))
    u = dx * cos + dy * sin  # along the long axis, pixels
    v = dy * cos - dx * sin
    un, vn = u / per(semi_a), v / per(semi_b)
    rho = np.sqrt(un * un + vn * vn)
    # cos(h phi + phase) = Re(z^h e^{i phase}) with z = e^{i phi}: no arctan2 or cos per pixel.
    z = (un + 1j * vn).astype(np.complex64) / np.maximum(rho, np.float32(1e-6))
    wobble, power = np.zeros_like(rho), z * z
    for h in range(len(_HARMONICS)):  # harmonics 2, 3, 4, 5
        rotation = per(np.exp(1j * phases[..., h]).real), per(np.exp(1j * phases[..., h]).imag)
        wobble += per(amps[..., h]) * (power.real * rotation[0] - power.imag * rotation[1])
        power = power * z
    radius = (1 + wobble) / per(1 + amps.sum(axis=-1))  # boundary, <= 1 (inside the ellipse)
    distance = (radius - rho) * per(semi_b)  # about the distance to the edge in pixels
    ramp = np.clip(0.5 + distance / per(feather), 0, 1)
    alpha = np.zeros((num * k, size, size), np.float32)
    alpha[which] = ramp * ramp * (3 - 2 * ramp)  # smoothstep: a soft, not linear, ramp

    textures = _textures(split)  # (C, T, 256)
    t_size = textures.shape[1:]
    ty = np.mod(np.floor(v * per(tex_scale) + per(tex_y)), t_size[0]).astype(np.int32)
    tx = np.mod(np.floor(u * per(tex_scale) + per(tex_x)), t_size[1]).astype(np.int32)
    shade = np.zeros((num * k, size, size), np.float32)
    shade[which] = 0.3 + 0.7 * textures[labels.ravel()[which][:, None, None], ty, tx]
    tints = np.array([c.tint for c in CLASSES], np.float32)
    tint = (tints[labels] * brightness[..., None]).astype(np.float32)
    grids = (num, k, size, size)
    return alpha.reshape(grids), shade.reshape(grids), tint, present, labels


@functools.cache
def _textures(split: str) -> np.ndarray:
    """``(C, T, 256)`` float32 luminance textures in [0, 1], one per class (read-only)."""
    out = []
    for c in CLASSES:
        photo = _photo(PHOTO_NAMES.index(c.photo)).convert("L")
        gray = np.asarray(photo.resize((_TEXTURE_SIDE, _TEXTURE_SIDE), RESAMPLE), np.float32)
        cut = round(_TEXTURE_SIDE * TRAIN_SHARE)
        gray = gray[:cut] if split == "train" else gray[cut : cut + _TEXTURE_SIDE - cut]
        # Standardised, so every class has texture contrast whatever its photo's exposure.
        z = (gray - gray.mean()) / max(float(gray.std()), 1e-3)
        out.append(np.clip(0.5 + z / 5, 0, 1))
    textures = np.stack(out)
    textures.setflags(write=False)
    return textures
