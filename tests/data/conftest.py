"""Fixtures for the data tests: an isolated cache and small data sets in the real formats."""

from __future__ import annotations

import hashlib
import io
import pickle
import tarfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import diffisp.data.cifar as cifar_module

CIFAR_CLASSES = [
    b"airplane",
    b"automobile",
    b"bird",
    b"cat",
    b"deer",
    b"dog",
    b"frog",
    b"horse",
    b"ship",
    b"truck",
]


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point $DIFFISP_CACHE at an empty folder, so no test sees (or fills) the real cache."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("DIFFISP_CACHE", str(cache))
    return cache


def cifar_batch(n: int, rng: np.random.Generator) -> dict[bytes, object]:
    """One batch in the CIFAR-10 python format: labels cycle through the 10 classes."""
    return {
        b"batch_label": b"synthetic batch",
        b"labels": [int(i % 10) for i in range(n)],
        b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        b"filenames": [f"img_{i}.png".encode() for i in range(n)],
    }


def write_pickle(path: Path, obj: object) -> None:
    # Protocol 2, like the original files (written by Python 2's cPickle).
    path.write_bytes(pickle.dumps(obj, protocol=2))


@pytest.fixture
def make_cifar(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Path]:
    """``make_cifar(parent=..., per_batch=20, num_test=20)`` writes cifar-10-batches-py.

    The loader only accepts files with the official CIFAR-10 checksums; unless ``trusted`` is
    False, the checksums of the generated files are made the expected ones for this test.
    """

    def make(
        parent: Path | None = None, per_batch: int = 20, num_test: int = 20, trusted: bool = True
    ) -> Path:
        rng = np.random.default_rng(0)
        root = (parent or tmp_path / "src") / "cifar-10-batches-py"
        root.mkdir(parents=True)
        for i in range(1, 6):
            write_pickle(root / f"data_batch_{i}", cifar_batch(per_batch, rng))
        write_pickle(root / "test_batch", cifar_batch(num_test, rng))
        meta = {b"label_names": CIFAR_CLASSES, b"num_cases_per_batch": per_batch, b"num_vis": 3072}
        write_pickle(root / "batches.meta", meta)
        if trusted:
            checksums = {p.name: md5_hex(p) for p in root.iterdir()}
            monkeypatch.setattr(cifar_module, "CIFAR10_FILE_MD5", checksums)
        return root

    return make


@pytest.fixture
def make_tarball(tmp_path: Path, make_cifar: Callable[..., Path]) -> Callable[..., Path]:
    """``make_tarball(extra=[TarInfo, ...])`` packs a generated set like the official tarball.

    Extra members are appended after ``cifar-10-batches-py/`` (regular files get ``x`` bytes).
    """

    def make(extra: list[tarfile.TarInfo] | None = None, name: str = "cifar.tar.gz") -> Path:
        batches = make_cifar()
        dest = tmp_path / name
        with tarfile.open(dest, "w:gz") as tar:
            tar.add(batches, arcname="cifar-10-batches-py")
            for info in extra or []:
                tar.addfile(info, io.BytesIO(b"x" * info.size) if info.isfile() else None)
        return dest

    return make


def md5_hex(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture
def md5() -> Callable[[Path], str]:
    """The hex MD5 of a file."""
    return md5_hex
