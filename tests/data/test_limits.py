"""Limits where data set files are read (issue 27): the pixel limit before decoding, symbolic
links kept inside the data set's folder, a line while a large COCO file is read."""

from __future__ import annotations

import inspect
import json
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffisp.data import load_coco, load_voc
from diffisp.data.folder import load_folder
from diffisp.data.images import DEFAULT_MAX_PIXELS, load_image
from diffisp.data.raw_file import check_raw_file, read_raw
from diffisp.data.stream import FolderSource
from diffisp.errors import DataError

LIMIT = r"12000x12000 \(144,000,000 pixels\), above the limit of 64,000,000 pixels"


def _png(path: Path, size=(8, 8), seed=0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (*size, 3), np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def _huge_png(path: Path, side: int = 12000) -> Path:
    """A valid PNG header of ``side x side`` pixels with almost no data: what a decompression
    bomb looks like before it is decoded (a real one is 445 KB)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
    data += chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _no_bomb_warning():
    context = warnings.catch_warnings()
    context.__enter__()
    warnings.simplefilter("error", Image.DecompressionBombWarning)
    return context


# -- the pixel limit ---------------------------------------------------------------------------


def test_a_folder_data_set_refuses_a_huge_image_from_its_header(tmp_path):
    for cls in ("a", "b"):
        for i in range(3):
            _png(tmp_path / cls / f"{i}.png", seed=i)
    _huge_png(tmp_path / "b" / "bomb.png")
    context = _no_bomb_warning()
    try:
        with pytest.raises(DataError, match=rf"bomb.png is {LIMIT}"):
            load_folder(tmp_path, image_size=8, test_fraction=0.5, seed=0)
    finally:
        context.__exit__(None, None, None)


def test_a_streamed_folder_refuses_it_too(tmp_path):
    streamed = FolderSource([_huge_png(tmp_path / "bomb.png")], np.zeros(1, np.int32), 8)
    with pytest.raises(DataError, match=LIMIT):
        streamed[0]


def test_coco_refuses_a_huge_image(tmp_path):
    _png(tmp_path / "images" / "a.png")
    _huge_png(tmp_path / "images" / "bomb.png")
    images = [{"id": i, "file_name": n} for i, n in enumerate(["a.png", "bomb.png"])]
    data = {"images": images, "annotations": [], "categories": [{"id": 1, "name": "x"}]}
    (tmp_path / "ann.json").write_text(json.dumps(data))
    with pytest.raises(DataError, match=rf"bomb.png is {LIMIT}"):
        load_coco(tmp_path / "ann.json", tmp_path / "images", image_size=8)


def _voc(
    root: Path,
    stems,
    objects="<object><name>x</name><bndbox><xmin>1</xmin><ymin>1</ymin>"
    "<xmax>4</xmax><ymax>4</ymax></bndbox></object>",
) -> Path:
    (root / "Annotations").mkdir(parents=True, exist_ok=True)
    for stem in stems:
        text = f"<annotation><filename>{stem}.png</filename>{objects}</annotation>"
        (root / "Annotations" / f"{stem}.xml").write_text(text)
    return root


def test_voc_refuses_a_huge_image(tmp_path):
    root = _voc(tmp_path / "VOC", ["a", "bomb"])
    _png(root / "JPEGImages" / "a.png")
    _huge_png(root / "JPEGImages" / "bomb.png")
    with pytest.raises(DataError, match=rf"bomb.png is {LIMIT}"):
        load_voc(root, image_size=8)


def test_load_image_keeps_no_limit_unless_asked(tmp_path):
    path = _png(tmp_path / "a.png", size=(10, 10))
    assert load_image(path).shape == (10, 10, 3)
    with pytest.raises(DataError, match=r"10x10 \(100 pixels\), above the limit of 99 pixels"):
        load_image(path, max_pixels=99)


def test_raw_readers_and_apply_share_the_limit():
    from diffisp.experiments.apply import DEFAULT_MAX_PIXELS as APPLY_DEFAULT

    assert APPLY_DEFAULT == DEFAULT_MAX_PIXELS == 64_000_000
    for reader in (read_raw, check_raw_file):
        assert inspect.signature(reader).parameters["max_pixels"].default == DEFAULT_MAX_PIXELS


# -- symbolic links ----------------------------------------------------------------------------


def test_coco_refuses_an_image_linked_from_outside_its_folder(tmp_path):
    secret = _png(tmp_path / "elsewhere" / "secret.png")
    _png(tmp_path / "images" / "a.png")
    (tmp_path / "images" / "b.png").symlink_to(secret)
    images = [{"id": i, "file_name": n} for i, n in enumerate(["a.png", "b.png"])]
    data = {"images": images, "annotations": [], "categories": [{"id": 1, "name": "x"}]}
    (tmp_path / "ann.json").write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"image 'b.png' is a symbolic link to .*secret.png, "):
        load_coco(tmp_path / "ann.json", tmp_path / "images", image_size=8)
    (tmp_path / "images" / "b.png").unlink()
    (tmp_path / "images" / "b.png").symlink_to(tmp_path / "images" / "a.png")  # inside: fine
    linked = tmp_path / "linked-images"
    linked.symlink_to(tmp_path / "images")  # the folder itself may be a link
    assert load_coco(tmp_path / "ann.json", linked, image_size=8).num_train == 1


def test_voc_refuses_images_and_annotations_linked_from_outside(tmp_path):
    root = _voc(tmp_path / "VOC", ["a", "b"])
    _png(root / "JPEGImages" / "a.png")
    (root / "JPEGImages" / "b.png").symlink_to(_png(tmp_path / "secret.png"))
    with pytest.raises(DataError, match=r"the image of .*b.xml is a symbolic link to .*secret"):
        load_voc(root, image_size=8)
    (root / "JPEGImages" / "b.png").unlink()
    _png(root / "JPEGImages" / "b.png")
    outside = _voc(tmp_path / "other", ["c"]) / "Annotations" / "c.xml"
    (root / "Annotations" / "c.xml").symlink_to(outside)
    with pytest.raises(DataError, match=r"VOC annotation .*c.xml is a symbolic link to"):
        load_voc(root, image_size=8)


# -- progress on large annotation files ----------------------------------------------------------


def test_a_large_coco_file_says_it_is_being_read_and_what_it_held(tmp_path, monkeypatch):
    import diffisp.data.coco as coco

    _png(tmp_path / "images" / "a.png")
    _png(tmp_path / "images" / "b.png")
    images = [{"id": i, "file_name": n} for i, n in enumerate(["a.png", "b.png"])]
    data = {"images": images, "annotations": [], "categories": [{"id": 1, "name": "x"}]}
    (tmp_path / "ann.json").write_text(json.dumps(data))
    lines: list[str] = []
    load_coco(tmp_path / "ann.json", tmp_path / "images", image_size=8, log=lines.append)
    assert lines == []  # small files are read silently
    monkeypatch.setattr(coco, "PROGRESS_BYTES", 10)
    load_coco(tmp_path / "ann.json", tmp_path / "images", image_size=8, log=lines.append)
    assert len(lines) == 2
    assert lines[0].startswith("reading 0 MB of COCO annotations from ") and "ann.json" in lines[0]
    assert lines[1].startswith("read 2 images, 0 annotations and 1 categories from ")


def test_an_image_folder_refuses_links_that_lead_outside_it(tmp_path):
    from diffisp.data.folder import load_folder

    root = tmp_path / "photos"
    for name in ("cat", "dog"):
        for i in range(2):
            _png(root / name / f"{i}.png")
    secret = _png(tmp_path / "elsewhere" / "secret.png")
    (root / "cat" / "2.png").symlink_to(secret)
    with pytest.raises(DataError, match=r"image cat/2.png is a symbolic link to .*secret.png"):
        load_folder(root, image_size=8)
    (root / "cat" / "2.png").unlink()
    (root / "cat" / "2.png").symlink_to(root / "dog" / "0.png")  # inside the folder: fine
    assert load_folder(root, image_size=8).num_train + load_folder(root, image_size=8).num_test == 5
    (root / "bird").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    with pytest.raises(DataError, match="class folder 'bird' is a symbolic link"):
        load_folder(root, image_size=8)
