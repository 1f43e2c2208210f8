"""COCO and VOC sets streamed from a decoded cache: the in-memory set's images, boxes and slots
exactly; subsets drawn before decoding; what cannot stream."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from helpers import write_voc_from_scenes
from PIL import Image

from diffisp.data.decoded import EIGHT_BIT_VALUES
from diffisp.data.detection_loader import load_detection
from diffisp.data.detection_stream import StreamedDetection
from diffisp.data.scenes import write_scenes_coco
from diffisp.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> dict[str, str]:
    out = tmp_path_factory.mktemp("scenes")
    write_scenes_coco(out / "coco", num_train=14, num_test=5, image_size=32, seed=3)
    write_voc_from_scenes(out / "coco", out / "voc")
    return {"coco": f"coco:{out / 'coco'}", "voc": f"voc:{out / 'voc'}"}


@pytest.mark.parametrize("kind", ["coco", "voc"])
@pytest.mark.parametrize("size", [32, 40], ids=["kept", "letterboxed"])
def test_a_streamed_set_is_the_in_memory_set(scenes, tmp_path, kind, size):
    kwargs = dict(num_train=9, num_test=4, image_size=size, seed=1)
    memory = load_detection(scenes[kind], **kwargs)
    lines: list[str] = []
    streamed = load_detection(scenes[kind], **kwargs, stream_cache=tmp_path, log=lines.append)
    assert isinstance(streamed, StreamedDetection) and "decoding 9 training images" in lines[0]
    assert (streamed.num_train, streamed.num_test, streamed.image_size) == (9, 4, size)
    assert streamed.max_objects == memory.max_objects
    assert streamed.class_names == memory.class_names
    images = streamed.train_cache.read(np.arange(9))
    assert images.dtype == (np.uint8 if size == 32 else np.float32)
    if images.dtype == np.uint8:
        images = EIGHT_BIT_VALUES[images]
    np.testing.assert_array_equal(images, memory.train_images)
    np.testing.assert_array_equal(streamed.test_images, memory.test_images)
    for split in ("train", "test"):
        for name, array in memory.targets(split).items():
            np.testing.assert_array_equal(streamed.targets(split)[name], array, err_msg=name)
    assert streamed.train_info == memory.train_info and streamed.test_info == memory.test_info
    assert (streamed.skipped, streamed.clipped) == (memory.skipped, memory.clipped)
    # A second run reads the cache: nothing decoded, the same set.
    again = load_detection(scenes[kind], **kwargs, stream_cache=tmp_path, log=lines.append)
    assert len(lines) == 2 and again.train_cache.directory == streamed.train_cache.directory


def test_only_the_subset_is_decoded(scenes, tmp_path):
    # A corrupt image outside the drawn subset is never read, in memory or streamed.
    root = tmp_path / "coco"
    shutil.copytree(scenes["coco"].removeprefix("coco:"), root)
    kwargs = dict(num_train=4, num_test=2, image_size=32, seed=0)
    used = {i.file for i in load_detection(f"coco:{root}", **kwargs).train_info}
    unused = next(
        p
        for p in sorted((root / "images" / "train").iterdir())
        if p.relative_to(root / "images").as_posix() not in used
    )
    unused.write_bytes(b"not a png")
    assert load_detection(f"coco:{root}", **kwargs).num_train == 4
    assert load_detection(f"coco:{root}", **kwargs, stream_cache=tmp_path / "c").num_train == 4
    with pytest.raises(DataError, match=unused.name):  # the whole split reads it
        load_detection(f"coco:{root}", image_size=32, seed=0, stream_cache=tmp_path / "c")


def test_generated_scenes_do_not_stream(tmp_path):
    with pytest.raises(ConfigError, match="do not stream"):
        load_detection("scenes", num_train=4, num_test=2, stream_cache=tmp_path)


def test_a_streamed_size_mismatch_names_the_image(scenes, tmp_path):
    root = tmp_path / "coco"
    shutil.copytree(scenes["coco"].removeprefix("coco:"), root)
    victim = sorted((root / "images" / "train").iterdir())[0]
    Image.new("RGB", (20, 32)).save(victim)
    with pytest.raises(DataError, match=rf"{victim.name} is 20x32 but its annotation says 32x32"):
        load_detection(f"coco:{root}", image_size=32, seed=0, stream_cache=tmp_path / "c")


def test_the_streamed_chunks_carry_the_in_memory_rows(scenes, tmp_path):
    import jax

    from diffisp.capture.low_light import LowLight
    from diffisp.data.source import InMemorySource, StreamOptions, chunk_plan, epoch_order

    kwargs = dict(num_train=9, num_test=4, image_size=40, seed=1)
    memory = load_detection(scenes["coco"], **kwargs)
    streamed = load_detection(scenes["coco"], **kwargs, stream_cache=tmp_path)
    key = jax.random.key(0)
    reference = InMemorySource(memory.train_images, memory.targets("train"), LowLight(), key)
    options = StreamOptions(chunk_size=4, sample_count=3)
    source = streamed.train_source(LowLight(), key, options)
    plan = chunk_plan(epoch_order(0, 0, 0, 9), 4, batch_size=2)
    for indices, chunk in zip(plan, source.chunks(plan, captured=True), strict=True):
        np.testing.assert_array_equal(chunk.clean, memory.train_images[indices])
        np.testing.assert_array_equal(chunk.captured, reference.captured[indices])
        for name, array in memory.targets("train").items():
            np.testing.assert_array_equal(chunk.targets[name], array[indices])
    np.testing.assert_array_equal(source.head(3, captured=True), reference.captured[:3])
    with pytest.raises(DataError, match="keeps its first 3 images"):
        source.head(4, captured=False)
    whole = streamed.train_source(LowLight(), key, StreamOptions(chunk_size=4, sample_count=16))
    assert whole.head(100, captured=False).shape[0] == 9  # as in memory: the whole set
