"""User images: load_image format handling and the folder data set."""

from __future__ import annotations

import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from diffisp.data import load_dataset, load_image
from diffisp.data.folder import load_folder, scan_folder
from diffisp.errors import ConfigError, DataError, InputTypeError


def _save(path: Path, array: np.ndarray, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **kwargs)
    return path


def _png16_rgb(path: Path, array: np.ndarray) -> Path:
    """Write a 16-bit-per-channel RGB PNG by hand (Pillow cannot write one)."""
    height, width, _ = array.shape
    raw = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in array)

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )
    return path


def _noise(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


# --- load_image: formats ------------------------------------------------------------------


def test_8bit_rgb_png_exact(tmp_path):
    pixels = _noise((7, 9, 3))
    out = load_image(_save(tmp_path / "a.png", pixels))
    assert out.shape == (7, 9, 3) and out.dtype == np.float32
    np.testing.assert_array_equal(out, pixels / np.float32(255))


def test_16bit_grayscale_png_keeps_scale_and_precision(tmp_path):
    values = np.array([[0, 1, 32768, 65534, 65535]], np.uint16)
    out = load_image(_save(tmp_path / "g16.png", values))
    assert out.shape == (1, 5, 3)
    np.testing.assert_array_equal(out[0, :, 0], values[0] / np.float32(65535))
    assert out[0, -1, 0] == 1.0 and out[0, 2, 0] == pytest.approx(0.5, abs=1e-4)
    assert 0 < out[0, 1, 0] < 1 / 255  # finer than 8 bits
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()


def test_16bit_grayscale_full_white_is_one(tmp_path):
    out = load_image(_save(tmp_path / "w.png", np.full((4, 4), 65535, np.uint16)))
    assert (out == 1.0).all()


def test_16bit_rgb_png_is_scaled_not_clipped(tmp_path):
    values = np.zeros((2, 3, 3), np.uint16)
    values[..., 0], values[..., 1], values[..., 2] = 65535, 32768, 257
    out = load_image(_png16_rgb(tmp_path / "c16.png", values))
    # Pillow decodes 16-bit colour with 8-bit precision, but the scale must stay right.
    np.testing.assert_allclose(out[0, 0], [1.0, 0.5, 1 / 255], atol=1 / 255)


def test_grayscale_is_replicated(tmp_path):
    out = load_image(_save(tmp_path / "l.png", np.full((3, 4), 51, np.uint8)))
    assert out.shape == (3, 4, 3)
    np.testing.assert_array_equal(out, np.full((3, 4, 3), np.float32(51) / 255))


def test_rgba_is_composited_on_white(tmp_path):
    rgba = np.zeros((1, 3, 4), np.uint8)
    rgba[0, :, :3] = (255, 0, 0)
    rgba[0, :, 3] = (255, 0, 51)  # opaque, transparent, 20% opaque
    out = load_image(_save(tmp_path / "rgba.png", rgba))
    np.testing.assert_allclose(out[0, 0], [1, 0, 0])
    np.testing.assert_allclose(out[0, 1], [1, 1, 1])
    np.testing.assert_allclose(out[0, 2], [1, 0.8, 0.8], atol=1e-6)


def test_la_and_palette_transparency(tmp_path):
    la = np.stack([np.zeros((2, 2), np.uint8), np.array([[255, 0], [255, 0]], np.uint8)], -1)
    out = load_image(_save(tmp_path / "la.png", la))
    np.testing.assert_allclose(out[:, 0], 0.0)
    np.testing.assert_allclose(out[:, 1], 1.0)

    palette = Image.new("P", (2, 1))
    palette.putpalette([0, 0, 255, 0, 255, 0])
    palette.putdata([0, 1])
    palette.save(tmp_path / "p.png", transparency=1)
    out = load_image(tmp_path / "p.png")
    np.testing.assert_allclose(out[0], [[0, 0, 1], [1, 1, 1]])


def test_palette_and_1bit(tmp_path):
    palette = Image.new("P", (2, 1))
    palette.putpalette([10, 20, 30, 200, 100, 0])
    palette.putdata([1, 0])
    palette.save(tmp_path / "p.png")
    expected = np.array([[200, 100, 0], [10, 20, 30]]) / 255
    np.testing.assert_allclose(load_image(tmp_path / "p.png")[0], expected, rtol=1e-6)
    Image.new("1", (3, 2), 1).save(tmp_path / "b.png")
    assert (load_image(tmp_path / "b.png") == 1.0).all()


def test_jpeg_and_uppercase_extension(tmp_path):
    path = _save(tmp_path / "photo.JPG", np.full((16, 16, 3), (200, 40, 90), np.uint8), quality=95)
    out = load_image(path)
    np.testing.assert_allclose(out.mean((0, 1)), np.array([200, 40, 90]) / 255, atol=0.02)


def test_exif_orientation_is_applied(tmp_path):
    stored = np.zeros((10, 20, 3), np.uint8)
    stored[:, :10] = (255, 0, 0)
    stored[:, 10:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    out = load_image(_save(tmp_path / "rotated.png", stored, exif=exif))
    assert out.shape == (20, 10, 3)
    np.testing.assert_array_equal(out[:10], np.broadcast_to([1, 0, 0], (10, 10, 3)))  # left->top


def test_resize_short_side_then_centre_crop(tmp_path):
    image = np.zeros((40, 80, 3), np.uint8)
    image[:, :10] = (255, 0, 0)
    image[:, 10:70] = (0, 255, 0)
    image[:, 70:] = (0, 0, 255)
    out = load_image(_save(tmp_path / "wide.png", image), image_size=16)
    assert out.shape == (16, 16, 3)
    # The centre 40x40 (columns 20..60) is all green; red and blue bars are cropped away.
    np.testing.assert_allclose(out, np.broadcast_to([0, 1, 0], (16, 16, 3)), atol=1e-5)
    tall = load_image(_save(tmp_path / "tall.png", _noise((50, 20, 3))), image_size=8)
    assert tall.shape == (8, 8, 3) and tall.min() >= 0 and tall.max() <= 1


def test_small_image_is_upscaled_and_jpeg_draft_keeps_size(tmp_path):
    assert load_image(_save(tmp_path / "s.png", _noise((5, 6, 3))), image_size=32).shape == (
        32,
        32,
        3,
    )
    big = _save(tmp_path / "big.jpg", _noise((400, 600, 3)), quality=90)
    assert load_image(big, image_size=20).shape == (20, 20, 3)


@pytest.mark.parametrize("ext", ["png", "jpg"])
def test_truncated_file_is_an_error_naming_it(tmp_path, ext):
    good = _save(tmp_path / f"good.{ext}", _noise((64, 64, 3)))
    bad = tmp_path / f"truncated.{ext}"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size * 6 // 10])
    with pytest.raises(DataError, match=f"truncated.{ext}.*truncated"):
        load_image(bad)


def test_truncated_file_is_an_error_even_if_pillow_was_told_to_allow_it(tmp_path, monkeypatch):
    good = _save(tmp_path / "good.png", _noise((64, 64, 3)))
    bad = tmp_path / "cut.png"
    bad.write_bytes(good.read_bytes()[:400])
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(DataError, match=r"cut\.png"):
        load_image(bad)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # the global setting is restored


@pytest.mark.parametrize("content", [b"", b"not an image at all", b"\x89PNG\r\n\x1a\ngarbage"])
def test_corrupt_file_is_an_error_naming_it(tmp_path, content):
    path = tmp_path / "broken.png"
    path.write_bytes(content)
    with pytest.raises(DataError, match=r"broken\.png"):
        load_image(path)


def test_missing_or_directory_or_bad_size(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_image(tmp_path / "nope.png")
    with pytest.raises(DataError, match="is a directory"):
        load_image(tmp_path)
    with pytest.raises(ConfigError, match="image_size must be >= 8"):
        load_image(tmp_path / "nope.png", image_size=4)


def test_unsupported_mode(tmp_path):
    path = tmp_path / "float.tif"
    Image.fromarray(np.zeros((2, 2), np.float32)).save(path)
    with pytest.raises(DataError, match="unsupported pixel mode 'F'"):
        load_image(path)


# --- folder data set ----------------------------------------------------------------------

COLOURS = {"apples": (200, 0, 0), "leaves": (0, 200, 0), "sky": (0, 0, 200)}


def _tree(root: Path, per_class: int = 5) -> Path:
    """Every image of a class has the class colour; its green..blue offset encodes its index."""
    writers = [
        lambda p, a: _save(p.with_suffix(".png"), a),
        lambda p, a: _save(p.with_suffix(".JPG"), a, quality=100),
        lambda p, a: _save(p.with_suffix(".jpeg"), a, quality=100),
        lambda p, a: _png16_rgb(p.with_suffix(".png"), a.astype(np.uint16) * 257),
        lambda p, a: _save(p.with_suffix(".png"), np.dstack([a, np.full_like(a[..., 0], 255)])),
    ]
    for name, colour in COLOURS.items():
        for i in range(per_class):
            pixels = np.empty((30 + i, 40, 3), np.uint8)
            pixels[:] = colour
            pixels[..., 1] += i * 5  # image identity (JPEG keeps a flat colour exact enough)
            writers[i % len(writers)](root / name / f"img{i}", pixels.astype(np.uint8))
    return root


def _identity(images: np.ndarray, labels: np.ndarray) -> set[tuple[int, int]]:
    mean_green = images[..., 1].mean((1, 2)) * 255
    offsets = mean_green - np.array([COLOURS[n][1] for n in sorted(COLOURS)])[labels]
    return set(zip(labels.tolist(), np.round(offsets / 5).astype(int).tolist(), strict=True))


def test_folder_loads_all_formats_with_right_labels(tmp_path):
    ds = load_folder(_tree(tmp_path / "photos"), image_size=16, seed=0)
    assert ds.class_names == ("apples", "leaves", "sky")
    assert ds.train_images.shape == (12, 16, 16, 3) and ds.test_images.shape == (3, 16, 16, 3)
    assert ds.name == f"folder:{tmp_path / 'photos'}" and not ds.is_standin
    for images, labels in ((ds.train_images, ds.train_labels), (ds.test_images, ds.test_labels)):
        for image, label in zip(images, labels, strict=True):
            red, _, blue = np.array(COLOURS[ds.class_names[label]]) / 255
            assert image[..., 0].mean() == pytest.approx(red, abs=0.02)
            assert image[..., 2].mean() == pytest.approx(blue, abs=0.02)


def test_folder_split_is_stratified_disjoint_and_complete(tmp_path):
    ds = load_folder(_tree(tmp_path / "photos", per_class=10), test_fraction=0.3, seed=2)
    assert np.bincount(ds.train_labels).tolist() == [7, 7, 7]
    assert np.bincount(ds.test_labels).tolist() == [3, 3, 3]
    train = _identity(ds.train_images, ds.train_labels)
    test = _identity(ds.test_images, ds.test_labels)
    assert len(train) == 21 and len(test) == 9 and not train & test
    assert train | test == {(c, i) for c in range(3) for i in range(10)}


def test_folder_every_class_gets_train_and_test(tmp_path):
    root = _tree(tmp_path / "photos", per_class=2)
    for fraction in (0.01, 0.99):
        ds = load_folder(root, test_fraction=fraction)
        assert np.bincount(ds.train_labels).tolist() == [1, 1, 1]
        assert np.bincount(ds.test_labels).tolist() == [1, 1, 1]


def test_folder_is_deterministic_in_the_seed(tmp_path):
    root = _tree(tmp_path / "photos", per_class=10)
    first, again, other = (load_folder(root, seed=s) for s in (4, 4, 5))
    np.testing.assert_array_equal(first.train_images, again.train_images)
    np.testing.assert_array_equal(first.test_labels, again.test_labels)
    assert _identity(first.test_images, first.test_labels) != _identity(
        other.test_images, other.test_labels
    )


def test_folder_subsets_and_too_many(tmp_path):
    root = _tree(tmp_path / "photos", per_class=10)
    ds = load_folder(root, num_train=6, num_test=3)
    assert np.bincount(ds.train_labels).tolist() == [2, 2, 2]
    assert np.bincount(ds.test_labels).tolist() == [1, 1, 1]
    with pytest.raises(DataError, match="requested 25 train images but only 24"):
        load_folder(root, num_train=25)
    with pytest.raises(DataError, match="requested 7 test images but only 6"):
        load_folder(root, num_test=7)


def test_folder_skips_other_files_with_one_warning(tmp_path):
    root = _tree(tmp_path / "photos", per_class=2)
    (root / "README.txt").write_text("hello")
    (root / "apples" / "notes.csv").write_text("a,b")
    (root / "apples" / "nested").mkdir()
    (root / "apples" / ".DS_Store").write_bytes(b"\0")
    (root / ".hidden_class").mkdir()
    with pytest.warns(UserWarning, match="skipped 3 entries") as record:
        ds = load_folder(root)
    message = str(record[0].message)
    assert "README.txt" in message and "notes.csv" in message and "nested" in message
    assert ".DS_Store" not in message
    assert ds.num_classes == 3


def test_folder_without_stray_files_does_not_warn(tmp_path):
    root = _tree(tmp_path / "photos", per_class=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_folder(root)


def test_folder_corrupt_image_names_the_file(tmp_path):
    root = _tree(tmp_path / "photos", per_class=2)
    (root / "sky" / "img1.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    with pytest.raises(DataError, match=r"sky/img1\.png"):
        load_folder(root)


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ({}, "is empty"),
        ({"loose.png": "file"}, "has no class sub-folders"),
        ({"a/x.png": "image", "b/": "dir"}, r"class folder .*b has no images"),
        ({"a/x.png": "image", "b/notes.txt": "file"}, r"class folder .*b has no images"),
        ({"a/x.png": "image", "a/y.png": "image"}, "only one class"),
        ({"a/x.png": "image", "a/y.png": "image", "b/z.png": "image"}, "'b' has 1 image"),
    ],
)
def test_folder_layout_errors(tmp_path, layout, message):
    root = tmp_path / "root"
    root.mkdir()
    for name, kind in layout.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if kind == "dir":
            path.mkdir(exist_ok=True)
        elif kind == "image":
            _save(path, _noise((4, 4, 3)))
        else:
            path.write_text("x")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(DataError, match=message):
            load_folder(root)


def test_folder_missing_or_file_root(tmp_path):
    with pytest.raises(DataError, match=r"does not exist.*root/<class_name>"):
        scan_folder(tmp_path / "nope")
    (tmp_path / "file.png").write_bytes(b"")
    with pytest.raises(DataError, match="is a file, not a folder"):
        scan_folder(tmp_path / "file.png")


def test_folder_argument_errors(tmp_path):
    root = _tree(tmp_path / "photos", per_class=2)
    for bad in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(ConfigError, match="test_fraction must lie strictly between"):
            load_folder(root, test_fraction=bad)
    with pytest.raises(InputTypeError, match="test_fraction must be a number"):
        load_folder(root, test_fraction="0.2")
    with pytest.raises(ConfigError, match="num_train must be a positive int"):
        load_folder(root, num_train=0)


def test_load_dataset_folder_spec(tmp_path):
    root = _tree(tmp_path / "my photos", per_class=5)
    ds = load_dataset(f"folder:{root}", image_size=8, seed=1)
    assert ds.name == f"folder:{root}" and ds.train_images.shape == (12, 8, 8, 3)
    assert "user images" in ds.description
