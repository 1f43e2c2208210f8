"""The decoded on-disk cache: exact images, reuse, invalidation, resumed and repaired builds,
worker processes, errors."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from diffisp.data import decoded
from diffisp.data.boxes import letterbox_image
from diffisp.data.decoded import DecodeRecipe, decoded_cache
from diffisp.data.generate import write_image_folder
from diffisp.data.images import load_image
from diffisp.errors import DataError


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = write_image_folder(tmp_path_factory.mktemp("decoded") / "images", 40, num_classes=2)
    return sorted(folder.rglob("*.png"))


def _decodes(monkeypatch) -> list[str]:
    """Record every file the cache decodes (in this process: ``workers=1``)."""
    seen: list[str] = []
    original = DecodeRecipe.decode

    def counting(self, path):
        seen.append(str(path))
        return original(self, path)

    monkeypatch.setattr(DecodeRecipe, "decode", counting)
    return seen


@pytest.mark.parametrize("size, dtype", [(32, np.uint8), (20, np.float32)], ids=["same", "resized"])
def test_cached_images_are_the_loaders_images_to_the_bit(files, tmp_path, size, dtype):
    # 32x32 PNGs at 32: nothing resized, stored as 8-bit codes; at 20: Lanczos values, float32.
    cache = decoded_cache(files, DecodeRecipe("crop", size), tmp_path, workers=1, log=print)
    assert len(cache) == 40 and cache.image_size == size
    got = cache.read(np.array([3, 0, 39, 3]))
    assert got.dtype == dtype and got.shape == (4, size, size, 3)
    values = decoded.EIGHT_BIT_VALUES[got] if dtype == np.uint8 else got
    for row, index in zip(values, (3, 0, 39, 3), strict=True):
        np.testing.assert_array_equal(row, load_image(files[index], size))


def test_letterboxed_images_and_their_decoded_sizes(tmp_path):
    path = tmp_path / "wide.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (30, 50, 3), dtype=np.uint8)).save(path)
    cache = decoded_cache([path], DecodeRecipe("letterbox", 24), tmp_path / "c", workers=1)
    expected, _ = letterbox_image(load_image(path), 24)
    np.testing.assert_array_equal(cache.read([0])[0], expected)
    assert cache.sizes.tolist() == [[50, 30]]


def test_a_second_open_decodes_nothing_and_a_changed_file_is_not_read_stale(
    files, tmp_path, monkeypatch
):
    recipe = DecodeRecipe("crop", 32)
    folder = tmp_path / "copies"
    folder.mkdir()
    copies = []
    for f in files[:6]:
        copies.append(folder / f.name)
        copies[-1].write_bytes(f.read_bytes())
    seen = _decodes(monkeypatch)
    lines: list[str] = []
    first = decoded_cache(copies, recipe, tmp_path / "c", workers=1, log=lines.append)
    assert len(seen) == 6 and "decoding 6 training images" in lines[0]
    again = decoded_cache(copies, recipe, tmp_path / "c", workers=1, log=lines.append)
    assert len(seen) == 6 and len(lines) == 2  # reused: silent, nothing decoded
    assert again.directory == first.directory
    # Another image under the same name (new content and mtime): another cache, decoded again.
    copies[2].write_bytes(files[10].read_bytes())
    os.utime(copies[2], ns=(1, 1))
    changed = decoded_cache(copies, recipe, tmp_path / "c", workers=1, log=lines.append)
    assert changed.directory != first.directory and len(seen) == 12
    assert not np.array_equal(changed.read([2]), first.read([2]))
    np.testing.assert_array_equal(
        decoded.EIGHT_BIT_VALUES[changed.read([2])[0]], load_image(files[10], 32)
    )
    # Another recipe (side) is another cache too.
    assert decoded_cache(copies, DecodeRecipe("crop", 16), tmp_path / "c", workers=1).directory
    assert len({p.name for p in (tmp_path / "c").iterdir()}) == 3


def test_an_interrupted_build_resumes_and_a_damaged_shard_is_decoded_again(
    files, tmp_path, monkeypatch
):
    monkeypatch.setattr(decoded, "MAX_SHARD_IMAGES", 8)  # 40 images: five shards
    recipe = DecodeRecipe("crop", 32)
    cache = decoded_cache(files, recipe, tmp_path, workers=1, log=lambda _: None)
    expected = cache.read(np.arange(40))
    # Interrupted before its manifest, with shard 3 unwritten: only shard 3 is decoded again.
    (cache.directory / decoded.MANIFEST).unlink()
    (cache.directory / "images-00003.npy").unlink()
    seen = _decodes(monkeypatch)
    resumed = decoded_cache(files, recipe, tmp_path, workers=1, log=lambda _: None)
    assert seen == [str(f) for f in files[24:32]]
    np.testing.assert_array_equal(resumed.read(np.arange(40)), expected)
    # A truncated shard behind a finished manifest: said, and decoded again.
    shard = cache.directory / "images-00001.npy"
    shard.write_bytes(shard.read_bytes()[:200])
    lines: list[str] = []
    repaired = decoded_cache(files, recipe, tmp_path, workers=1, log=lines.append)
    assert "damaged" in lines[0] and seen[8:] == [str(f) for f in files[8:16]]
    np.testing.assert_array_equal(repaired.read(np.arange(40)), expected)
    # Deleted while in use: a DataError naming the shard, not a crash in NumPy.
    shard.unlink()
    with pytest.raises(DataError, match="images-00001"):
        repaired.read([9])
    with pytest.raises(DataError, match="out of range"):
        repaired.read([40])


def test_worker_processes_write_the_same_cache(files, tmp_path, monkeypatch):
    monkeypatch.setattr(decoded, "MAX_SHARD_IMAGES", 16)  # three shards over two processes
    recipe = DecodeRecipe("crop", 20)
    here = decoded_cache(files, recipe, tmp_path / "a", workers=1, log=lambda _: None)
    lines: list[str] = []
    spawned = decoded_cache(files, recipe, tmp_path / "b", workers=2, log=lines.append)
    assert "2 processes" in lines[0]
    np.testing.assert_array_equal(spawned.read(np.arange(40)), here.read(np.arange(40)))


def test_stream_prefetches_in_order(files, tmp_path):
    cache = decoded_cache(files, DecodeRecipe("crop", 32), tmp_path, workers=1)
    shares = [np.array([5, 1]), np.array([0]), np.array([39, 38, 37])]
    got = list(cache.stream(shares, prefetch=1))
    for share, images in zip(shares, got, strict=True):
        np.testing.assert_array_equal(images, cache.read(share))
    assert list(cache.stream([])) == []


@pytest.mark.parametrize("workers", [1, 2])
def test_a_corrupt_or_missing_file_is_named(files, tmp_path, monkeypatch, workers):
    monkeypatch.setattr(decoded, "MAX_SHARD_IMAGES", 2)  # two shards: a process each
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    recipe = DecodeRecipe("crop", 32)
    with pytest.raises(DataError, match=r"bad\.png"):
        decoded_cache([*files[:3], bad], recipe, tmp_path / "c", workers=workers)
    with pytest.raises(DataError, match=r"gone\.png"):
        decoded_cache([tmp_path / "gone.png"], recipe, tmp_path / "c", workers=workers)
    with pytest.raises(DataError, match="no images"):
        decoded_cache([], recipe, tmp_path / "c")


def test_a_set_of_8_bit_and_resized_shards_reads_as_float32(files, tmp_path, monkeypatch):
    # Two 32x32 PNGs kept at 32 (8-bit codes) and two 48x48 ones resized to 32 (float32).
    monkeypatch.setattr(decoded, "MAX_SHARD_IMAGES", 2)
    rng = np.random.default_rng(1)
    large = []
    for k in range(2):
        large.append(tmp_path / f"large{k}.png")
        Image.fromarray(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(large[-1])
    mixed = [*files[:2], *large]
    cache = decoded_cache(mixed, DecodeRecipe("crop", 32), tmp_path / "c", workers=1)
    assert [d.name for d in cache.dtypes] == ["uint8", "float32"] and not cache.exact_uint8
    got = cache.read(np.array([3, 0, 2, 1]))
    assert got.dtype == np.float32
    for row, index in zip(got, (3, 0, 2, 1), strict=True):
        np.testing.assert_array_equal(row, load_image(mixed[index], 32))
    # A shard cut short after the cache was opened: named, not garbage.
    shard = cache.directory / "images-00001.npy"
    shard.write_bytes(shard.read_bytes()[:-100])
    with pytest.raises(DataError, match=r"images-00001\.npy is shorter"):
        cache.read([3])


def test_an_unwritable_cache_folder_is_named(files, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(DataError, match=r"cannot create the decoded cache.*--stream-cache DIR"):
        decoded_cache(files[:2], DecodeRecipe("crop", 32), blocker / "cache", workers=1)
