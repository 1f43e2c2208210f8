"""CIFAR-10: reader, download/extraction (all-or-nothing), discovery, subsetting."""

from __future__ import annotations

import functools
import os
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest

from diffisp.data import cifar as cifar_module
from diffisp.data import download_cifar10, find_cifar10, load_dataset, read_cifar10
from diffisp.data import loader as loader_module
from diffisp.data.download import extract_cifar10
from diffisp.errors import DataError


def _write(path: Path, obj: object) -> None:
    path.write_bytes(pickle.dumps(obj, protocol=2))


def _batch(path: Path) -> dict:
    with path.open("rb") as f:
        return pickle.load(f, encoding="bytes")


# --- reader -------------------------------------------------------------------------------


def test_read_round_trip_shapes_and_names(make_cifar):
    arrays = read_cifar10(make_cifar(per_batch=20, num_test=30))
    assert arrays.train_images.shape == (100, 32, 32, 3)
    assert arrays.train_images.dtype == np.uint8
    assert arrays.train_labels.shape == (100,) and arrays.train_labels.dtype == np.int32
    assert arrays.test_images.shape == (30, 32, 32, 3)
    assert arrays.class_names[0] == "airplane" and len(arrays.class_names) == 10
    assert arrays.train_images.flags.c_contiguous


def test_read_pixel_layout_is_channel_major_rows_to_nhwc(make_cifar):
    root = make_cifar()
    batch = _batch(root / "data_batch_2")
    y, x = np.mgrid[0:32, 0:32]
    red, green, blue = y * 8, x * 8, np.full((32, 32), 7)
    # The file stores 1024 red values (row-major), then 1024 green, then 1024 blue.
    batch[b"data"][3] = np.concatenate([red.ravel(), green.ravel(), blue.ravel()]).astype(np.uint8)
    _write(root / "data_batch_2", batch)

    image = read_cifar10(root).train_images[20 + 3]  # batch 2 starts after batch 1's 20 rows
    np.testing.assert_array_equal(image[..., 0], red)  # red grows down the rows
    np.testing.assert_array_equal(image[..., 1], green)  # green grows along the columns
    np.testing.assert_array_equal(image[..., 2], blue)


def test_read_accepts_numpy1_pickles(make_cifar):
    # The real files name the array reconstructor numpy.core.multiarray (NumPy 1.x).
    root = make_cifar()
    path = root / "test_batch"
    raw = path.read_bytes()
    assert b"numpy._core.multiarray" in raw
    path.write_bytes(raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    assert read_cifar10(root).test_images.shape == (20, 32, 32, 3)


def _python2_pickle(data: np.ndarray, labels: list[int]) -> bytes:
    """A batch pickled the way the real files were: Python 2 str opcodes, NumPy 1.x names.

    Opcodes: ``c`` global, ``U``/``T`` str, ``K``/``M`` 1-/2-byte int, ``J`` 4-byte int,
    ``N`` None, ``\x89`` False, ``(`` mark, ``t``/``\x85``/``\x86``/``\x87`` tuples,
    ``R`` call, ``b`` set state, ``}``/``]`` empty dict/list, ``u``/``e`` fill them.
    """

    def text(b: bytes) -> bytes:  # SHORT_BINSTRING: a Python 2 str
        return b"U" + bytes([len(b)]) + b

    dtype = (
        b"cnumpy\ndtype\n" + text(b"u1") + b"K\x00K\x01\x87R"
        b"(K\x03" + text(b"|") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
    )
    raw = data.tobytes()
    array = (
        b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n"
        b"K\x00\x85"
        + text(b"b")
        + b"\x87R(K\x01"
        + b"M"
        + struct.pack("<H", data.shape[0])
        + b"M\x00\x0c\x86"  # shape (N, 3072)
        + dtype
        + b"\x89T"
        + struct.pack("<i", len(raw))
        + raw
        + b"tb"
    )
    label_list = b"](" + b"".join(b"K" + bytes([v]) for v in labels) + b"e"
    return b"\x80\x02}(" + text(b"data") + array + text(b"labels") + label_list + b"u."


def test_read_accepts_python2_pickles(make_cifar):
    root = make_cifar()
    data = np.random.default_rng(1).integers(0, 256, (20, 3072), dtype=np.uint8)
    labels = [i % 10 for i in range(20)]
    (root / "test_batch").write_bytes(_python2_pickle(data, labels))
    arrays = read_cifar10(root)
    np.testing.assert_array_equal(
        arrays.test_images, data.reshape(20, 3, 32, 32).transpose(0, 2, 3, 1)
    )
    assert arrays.test_labels.tolist() == labels


def test_read_refuses_pickles_that_would_run_code(make_cifar, tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("this must never run",))

    root = make_cifar()
    _write(root / "data_batch_1", {b"data": Evil(), b"labels": []})
    with pytest.raises(
        DataError, match=r"data_batch_1 is not a CIFAR-10 file: refusing to load global .*print"
    ):
        read_cifar10(root)


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        (lambda b: b"this is not a pickle", "corrupt"),
        (lambda b: pickle.dumps(b)[:-50], "corrupt"),  # truncated pickle
        (lambda b: pickle.dumps([1, 2, 3]), "not a CIFAR-10 batch"),
        (lambda b: pickle.dumps({b"data": b[b"data"]}), "b'labels'"),
        (lambda b: pickle.dumps({**b, b"data": b[b"data"][:, :3000]}), r"shape \(N, 3072\)"),
        (lambda b: pickle.dumps({**b, b"data": b[b"data"].astype(np.float32)}), "uint8"),
        (lambda b: pickle.dumps({**b, b"labels": b[b"labels"][:-1]}), "one per image"),
        (lambda b: pickle.dumps({**b, b"labels": [10] * len(b[b"labels"])}), r"\[0, 10\)"),
        (lambda b: pickle.dumps({**b, b"labels": [-1] * len(b[b"labels"])}), r"\[0, 10\)"),
    ],
)
def test_read_rejects_bad_batches_naming_the_file(make_cifar, corrupt, message):
    root = make_cifar()
    path = root / "data_batch_3"
    path.write_bytes(corrupt(_batch(path)))
    with pytest.raises(DataError, match=message) as info:
        read_cifar10(root)
    assert "data_batch_3" in str(info.value)


@pytest.mark.parametrize("name", ["data_batch_5", "test_batch", "batches.meta"])
def test_read_missing_file(make_cifar, name):
    root = make_cifar()
    (root / name).unlink()
    with pytest.raises(DataError, match=f"{name} is missing"):
        read_cifar10(root)


def test_read_bad_meta(make_cifar):
    root = make_cifar()
    _write(root / "batches.meta", {b"label_names": [b"a", b"b"]})
    with pytest.raises(DataError, match=r"batches\.meta.*10 names"):
        read_cifar10(root)


def test_read_missing_directory(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_cifar10(tmp_path / "nope")


# --- download and extraction --------------------------------------------------------------


def test_download_from_file_url(make_tarball, md5, isolated_cache):
    tarball = make_tarball()
    target = download_cifar10(url=tarball.as_uri(), md5=md5(tarball), progress=False)
    assert target == isolated_cache / "cifar-10-batches-py"
    assert read_cifar10(target).train_images.shape == (100, 32, 32, 3)
    assert os.listdir(isolated_cache) == ["cifar-10-batches-py"]  # temp files cleaned up
    # A second call finds the data and does not download (this URL would fail).
    assert download_cifar10(url="file:///nonexistent.tar.gz", md5="0") == target


def test_download_with_progress_bar(make_tarball, md5, isolated_cache):
    tarball = make_tarball()
    download_cifar10(url=tarball.as_uri(), md5=md5(tarball), progress=True)
    assert os.listdir(isolated_cache) == ["cifar-10-batches-py"]


def test_download_wrong_checksum_leaves_nothing(make_tarball, isolated_cache):
    tarball = make_tarball()
    with pytest.raises(DataError, match=r"checksum mismatch.*expected 0123"):
        download_cifar10(url=tarball.as_uri(), md5="0123" + "0" * 28, progress=False)
    assert os.listdir(isolated_cache) == []


def test_download_truncated_tarball_leaves_nothing(make_tarball, md5, tmp_path, isolated_cache):
    tarball = make_tarball()
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(tarball.read_bytes()[: tarball.stat().st_size // 2])
    # The right checksum of the wrong (truncated) file: extraction itself must catch it.
    with pytest.raises(DataError, match="corrupt or truncated"):
        download_cifar10(url=truncated.as_uri(), md5=md5(truncated), progress=False)
    assert os.listdir(isolated_cache) == []


def test_download_unreachable_url(tmp_path, isolated_cache):
    with pytest.raises(DataError, match=r"could not download CIFAR-10.*Without network access"):
        download_cifar10(url=(tmp_path / "missing.tar.gz").as_uri(), progress=False)
    assert os.listdir(isolated_cache) == []


def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size = kind, link, 0 if kind != tarfile.REGTYPE else 3
    return info


@pytest.mark.parametrize(
    ("member", "message"),
    [
        (_member("cifar-10-batches-py/../../evil.txt"), "unsafe path"),
        (_member("/tmp/evil.txt"), "unsafe path"),
        (_member("evil.txt"), "outside cifar-10-batches-py"),
        (_member("cifar-10-batches-py/link", tarfile.SYMTYPE, "/etc/passwd"), "link"),
        (_member("cifar-10-batches-py/hard", tarfile.LNKTYPE, "/etc/passwd"), "link"),
    ],
)
def test_download_unsafe_tarball_leaves_nothing(
    make_tarball, md5, tmp_path, isolated_cache, member, message
):
    tarball = make_tarball(extra=[member])
    with pytest.raises(DataError, match=message):
        download_cifar10(url=tarball.as_uri(), md5=md5(tarball), progress=False)
    assert os.listdir(isolated_cache) == []
    assert not (tmp_path / "evil.txt").exists()


def test_extract_rejects_incomplete_tarball(make_cifar, tmp_path):
    root = make_cifar()
    (root / "data_batch_4").unlink()
    tarball = tmp_path / "incomplete.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        tar.add(root, arcname="cifar-10-batches-py")
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(DataError, match="lacks data_batch_4"):
        extract_cifar10(tarball, dest)
    assert os.listdir(dest) == []


def test_extract_checks_md5(make_tarball, tmp_path):
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(DataError, match="checksum mismatch"):
        extract_cifar10(make_tarball(), dest, md5="f" * 32)
    assert os.listdir(dest) == []


def test_download_to_unwritable_cache(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(DataError, match="cannot write to the cache directory"):
        download_cifar10(blocker / "cache", url="file:///x", progress=False)


# --- discovery and load_dataset -----------------------------------------------------------


def test_find_in_data_dir_cache_and_batch_folder(make_cifar, tmp_path, isolated_cache):
    assert find_cifar10(tmp_path / "empty") is None
    in_data_dir = make_cifar(parent=tmp_path / "data")
    assert find_cifar10(tmp_path / "data") == in_data_dir
    assert find_cifar10(in_data_dir) == in_data_dir  # data_dir pointing at the batches
    assert find_cifar10() is None
    in_cache = make_cifar(parent=isolated_cache)
    assert find_cifar10() == in_cache
    assert find_cifar10(tmp_path / "empty") == in_cache  # data_dir first, then the cache


def test_find_extracts_a_tarball_left_in_data_dir(make_tarball, md5, tmp_path, monkeypatch):
    tarball = make_tarball(name="cifar-10-python.tar.gz")
    with pytest.raises(DataError, match="checksum mismatch"):  # not the official file
        find_cifar10(tmp_path)
    monkeypatch.setattr(cifar_module, "CIFAR10_MD5", md5(tarball))
    assert find_cifar10(tmp_path) == tmp_path / "cifar-10-batches-py"


def test_load_auto_picks_up_cifar_in_data_dir(make_cifar, tmp_path):
    make_cifar(parent=tmp_path / "data")
    ds = load_dataset("auto", data_dir=tmp_path / "data")
    assert ds.name == "cifar10" and not ds.is_standin
    assert "CIFAR-10" in ds.description and "NOT" not in ds.description
    assert ds.train_images.shape == (100, 32, 32, 3) and ds.test_images.shape == (20, 32, 32, 3)
    assert ds.train_images.dtype == np.float32
    assert ds.train_images.min() >= 0.0 and ds.train_images.max() <= 1.0
    raw = read_cifar10(tmp_path / "data" / "cifar-10-batches-py")
    np.testing.assert_allclose(ds.train_images, raw.train_images / 255, atol=1e-7)
    np.testing.assert_array_equal(ds.train_labels, raw.train_labels)


def test_load_auto_picks_up_cifar_in_cache(make_cifar, isolated_cache):
    make_cifar(parent=isolated_cache)
    assert load_dataset("auto", num_train=10, num_test=10).name == "cifar10"


def test_load_subset_is_seeded_and_stratified(make_cifar, tmp_path):
    make_cifar(parent=tmp_path)
    ds = load_dataset("cifar10", data_dir=tmp_path, num_train=30, num_test=15, seed=3)
    assert np.bincount(ds.train_labels, minlength=10).tolist() == [3] * 10
    assert sorted(np.bincount(ds.test_labels, minlength=10)) == [1] * 5 + [2] * 5
    again = load_dataset("cifar10", data_dir=tmp_path, num_train=30, num_test=15, seed=3)
    np.testing.assert_array_equal(ds.train_images, again.train_images)
    other = load_dataset("cifar10", data_dir=tmp_path, num_train=30, num_test=15, seed=4)
    assert not np.array_equal(ds.train_images, other.train_images)
    # The test subset does not depend on num_train.
    more = load_dataset("cifar10", data_dir=tmp_path, num_train=50, num_test=15, seed=3)
    np.testing.assert_array_equal(ds.test_images, more.test_images)


def test_load_more_than_available_is_an_error(make_cifar, tmp_path):
    make_cifar(parent=tmp_path)
    with pytest.raises(DataError, match="requested 101 CIFAR-10 train images but only 100"):
        load_dataset("cifar10", data_dir=tmp_path, num_train=101)
    with pytest.raises(DataError, match="requested 21 CIFAR-10 test images but only 20"):
        load_dataset("cifar10", data_dir=tmp_path, num_test=21)


def test_load_resizes_to_image_size(make_cifar, tmp_path):
    make_cifar(parent=tmp_path)
    ds = load_dataset("cifar10", data_dir=tmp_path, num_train=10, num_test=10, image_size=16)
    assert ds.train_images.shape == (10, 16, 16, 3) and ds.image_size == 16
    assert "resized to 16x16" in ds.description


def test_load_cifar10_missing_explains_how_to_get_it(tmp_path):
    with pytest.raises(DataError) as info:
        load_dataset("cifar10", data_dir=tmp_path)
    message = str(info.value)
    assert "CIFAR-10 not found" in message and str(tmp_path) in message
    assert "download=True" in message and "cifar-10-python.tar.gz" in message
    assert "c58f30108f718f92721af3b95e74349a" in message and "builtin" in message


def test_load_auto_corrupt_cifar_is_an_error_not_a_fallback(make_cifar, tmp_path):
    root = make_cifar(parent=tmp_path)
    (root / "test_batch").write_bytes(b"garbage")
    with pytest.raises(DataError, match="test_batch is not the official CIFAR-10 file"):
        load_dataset("auto", data_dir=tmp_path)


def test_fake_extracted_cifar_is_not_labelled_real(make_cifar, tmp_path, capsys):
    # Right names, right format, other content: refused before anything is unpickled.
    root = make_cifar(parent=tmp_path, trusted=False)
    with pytest.raises(DataError, match=r"data_batch_1 is not the official CIFAR-10 file: MD5"):
        load_dataset("cifar10", data_dir=tmp_path)
    with pytest.raises(DataError, match="not the official CIFAR-10"):
        load_dataset("auto", data_dir=tmp_path)
    (root / "data_batch_1").unlink()
    with pytest.raises(DataError, match=r"data_batch_1 is missing"):
        load_dataset("cifar10", data_dir=tmp_path)


def test_every_extracted_file_has_an_official_checksum():
    from diffisp.data.download import CIFAR10_FILE_MD5, EXPECTED_FILES

    assert set(CIFAR10_FILE_MD5) == set(EXPECTED_FILES)
    assert all(len(md5) == 32 and int(md5, 16) >= 0 for md5 in CIFAR10_FILE_MD5.values())


def test_load_with_download(make_tarball, md5, tmp_path, monkeypatch):
    tarball = make_tarball()
    fake = functools.partial(download_cifar10, url=tarball.as_uri(), md5=md5(tarball))
    monkeypatch.setattr(loader_module, "download_cifar10", fake)
    target = tmp_path / "downloads"
    ds = load_dataset("cifar10", data_dir=target, download=True, num_train=10, num_test=10)
    assert ds.name == "cifar10"
    assert (target / "cifar-10-batches-py" / "data_batch_1").is_file()


def test_tar_data_filter_is_a_second_line_of_defence(make_tarball, md5, tmp_path, monkeypatch):
    from diffisp.data import download as download_module

    monkeypatch.setattr(download_module, "_check_members", lambda source, members: None)
    tarball = make_tarball(extra=[_member("cifar-10-batches-py/../../evil.txt")])
    with pytest.raises(DataError, match=r"refusing to extract.*unsafe member"):
        download_cifar10(tmp_path / "cache2", url=tarball.as_uri(), md5=md5(tarball))
    assert not (tmp_path / "evil.txt").exists()
    assert os.listdir(tmp_path / "cache2") == []
