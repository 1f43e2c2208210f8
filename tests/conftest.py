"""Shared fixtures."""

from __future__ import annotations

import atexit
import fcntl
import os
import shutil
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest
from helpers import TINY_CLI_ARGS

# The commands' persistent XLA cache stays off: tests must neither fill the user's cache nor
# depend on what an earlier session left in it (tests/test_cli_cache.py turns it on itself).
os.environ["DIFFISP_XLA_CACHE"] = "0"
# Nor the user's data caches (downloads, decoded training images): one empty folder per test
# process, removed at exit (tests/data/conftest.py gives each data test its own).
os.environ["DIFFISP_CACHE"] = tempfile.mkdtemp(prefix="diffisp-tests-")
atexit.register(shutil.rmtree, os.environ["DIFFISP_CACHE"], ignore_errors=True)


@pytest.fixture
def images() -> jax.Array:
    """Eight 12x12 RGB images spanning the whole [0, 1] range."""
    return jax.random.uniform(jax.random.key(0), (8, 12, 12, 3), dtype=jnp.float32)


@pytest.fixture
def saved_figures(monkeypatch) -> list:
    """The matplotlib figures :mod:`diffisp.report.figures` would have written, kept open."""
    from diffisp.report import figures

    kept = []

    def keep(fig, path):
        kept.append(fig)
        return path

    monkeypatch.setattr(figures, "_save", keep)
    return kept


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory) -> Path:
    """The run directory of one tiny ``diffisp demo`` (``TINY_CLI_ARGS``), made once per session.

    Shared by the CLI and the report tests: treat it as read-only (copy it to write into it).
    Under pytest-xdist a session fixture runs once per worker, so the first worker to get here
    runs the demo into the temp folder the workers share, under a file lock, and the others wait
    for it and reuse it. (``--dist loadgroup`` cannot do this: with pytest 9, xdist 3.8's group
    suffix on the node id is silently lost.)
    """
    from diffisp.cli import main

    worker = os.environ.get("PYTEST_XDIST_WORKER")
    root = tmp_path_factory.getbasetemp()
    root = root.parent if worker else root  # basetemp/popen-gwN -> basetemp, shared
    out, done = root / "shared-demo" / "run", root / "shared-demo.ok"
    with open(root / "shared-demo.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, also on failure
        if not done.exists():
            assert main(["demo", *TINY_CLI_ARGS, "--out", str(out)]) == 0
            done.touch()
    return out
