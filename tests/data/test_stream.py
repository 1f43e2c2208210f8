"""Streamed training data: lazy folder records, seeded epoch orders, per-host chunk shares,
errors."""

from __future__ import annotations

import numpy as np
import pytest

from diffisp.data.folder import load_folder
from diffisp.data.generate import write_image_folder
from diffisp.data.source import chunk_plan, epoch_order
from diffisp.data.stream import (
    FolderSource,
    host_chunk,
    iter_chunks,
    stream_folder,
)
from diffisp.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_image_folder(tmp_path_factory.mktemp("stream") / "images", 200, num_classes=4)


def test_generated_folder_is_deterministic(tmp_path):
    a = write_image_folder(tmp_path / "a", 8, num_classes=2, image_size=16, seed=5)
    b = write_image_folder(tmp_path / "b", 8, num_classes=2, image_size=16, seed=5)
    files = sorted(p.relative_to(a) for p in a.rglob("*.png"))
    assert len(files) == 8 and files[1].as_posix() == "class_00/0000002.png"
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    with pytest.raises(ConfigError, match="at least 2 \\* num_classes"):
        write_image_folder(tmp_path / "c", 3, num_classes=2)


def test_streamed_records_equal_the_in_memory_loader(folder):
    streamed = stream_folder(folder, num_train=120, num_test=30, seed=3)
    loaded = load_folder(folder, num_train=120, num_test=30, seed=3)
    assert streamed.num_train == 120 and streamed.num_classes == 4
    np.testing.assert_array_equal(streamed.test_images, loaded.test_images)
    np.testing.assert_array_equal(streamed.test_labels, loaded.test_labels)
    for i in (0, 57, 119):
        image, label = streamed.train[i]
        np.testing.assert_array_equal(image, loaded.train_images[i])
        assert label == loaded.train_labels[i]


def test_every_image_once_per_epoch_in_a_seeded_order(folder):
    source = stream_folder(folder, num_train=96, num_test=8, seed=0).train
    order = epoch_order(7, 0, 0, len(source))
    assert sorted(order) == list(range(96))
    np.testing.assert_array_equal(order, epoch_order(7, 0, 0, 96))  # same seed and epoch
    assert not np.array_equal(order, epoch_order(7, 0, 1, 96))  # another epoch
    assert not np.array_equal(order, epoch_order(8, 0, 0, 96))  # another seed
    chunks = chunk_plan(order, chunk_size=32, batch_size=16)
    got = list(iter_chunks(source, chunks, num_threads=3))
    assert [len(c.indices) for c in got] == [32, 32, 32]
    np.testing.assert_array_equal(np.concatenate([c.indices for c in got]), order)
    assert got[1].images.shape == (32, 32, 32, 3) and got[1].images.dtype == np.float32
    np.testing.assert_array_equal(got[1].labels, source.labels[got[1].indices])


def test_chunk_plan_drops_only_the_incomplete_batch():
    chunks = chunk_plan(np.arange(100), chunk_size=32, batch_size=16)
    assert [len(c) for c in chunks] == [32, 32, 32]  # 96 of 100: 4 left, as in memory
    two_hosts = chunk_plan(np.arange(100), chunk_size=32, batch_size=16, process_count=2)
    assert [len(c) for c in two_hosts] == [64, 32]  # whole batches on both hosts
    with pytest.raises(ConfigError, match="multiple of batch_size"):
        chunk_plan(np.arange(100), chunk_size=30, batch_size=16)
    with pytest.raises(DataError, match="fewer than one batch"):
        chunk_plan(np.arange(10), chunk_size=32, batch_size=16)


def test_two_hosts_take_disjoint_halves_of_every_chunk(folder):
    source = stream_folder(folder, num_train=128, num_test=8, seed=0).train
    chunks = chunk_plan(epoch_order(0, 0, 0, 128), chunk_size=32, batch_size=16, process_count=2)
    hosts = [
        list(iter_chunks(source, chunks, process_index=p, process_count=2, num_threads=2))
        for p in (0, 1)
    ]
    for chunk, first, second in zip(chunks, *hosts, strict=True):
        assert not set(first.indices) & set(second.indices)
        np.testing.assert_array_equal(np.concatenate([first.indices, second.indices]), chunk)
    np.testing.assert_array_equal(host_chunk(np.arange(6), 1, 3), [2, 3])
    with pytest.raises(ConfigError, match="process_index 2"):
        host_chunk(np.arange(6), 2, 2)


def test_corrupt_file_is_named(folder, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    files = [*sorted(folder.rglob("*.png"))[:3], bad]
    source = FolderSource(files, np.zeros(4, np.int32), 32)
    with pytest.raises(DataError, match=r"bad\.png"):
        list(iter_chunks(source, [np.arange(4)], num_threads=2))
    with pytest.raises(DataError, match="empty"):
        FolderSource([], np.zeros(0, np.int32), 32)


def test_a_hosts_chunk_orders_the_chunk_all_hosts_join_to(folder):
    import jax

    from diffisp.capture.low_light import LowLight
    from diffisp.data.source import StreamOptions

    data = stream_folder(folder, num_train=128, num_test=8, seed=0)
    plan = chunk_plan(epoch_order(0, 0, 0, 128), chunk_size=32, batch_size=16, process_count=2)
    options = StreamOptions(chunk_size=32, sample_count=8, process_index=1, process_count=2)
    source = data.train_source(LowLight(), jax.random.key(0), options)
    chunks = list(source.chunks(plan, captured=False))
    assert [c.clean.shape[0] for c in chunks] == [32, 32]  # this host's half of each
    # The trainer joins both hosts' halves: every step of the 64-image chunk is visited.
    assert all(c.host_local and c.order.tolist() == list(range(64)) for c in chunks)
