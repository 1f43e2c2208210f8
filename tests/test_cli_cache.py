"""The commands' persistent compilation cache: where it goes, and how it is turned off."""

from __future__ import annotations

import jax
import pytest

from diffisp.cli import use_compilation_cache


@pytest.fixture
def restored_cache_dir():
    before = jax.config.jax_compilation_cache_dir
    yield
    jax.config.update("jax_compilation_cache_dir", before)


def test_the_cache_lives_in_the_diffisp_cache_unless_jax_is_told_otherwise(
    tmp_path, monkeypatch, restored_cache_dir
):
    monkeypatch.setenv("DIFFISP_XLA_CACHE", "1")
    monkeypatch.setenv("DIFFISP_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
    jax.config.update("jax_compilation_cache_dir", None)
    assert use_compilation_cache() == tmp_path / "cache" / "xla"
    assert jax.config.jax_compilation_cache_dir == str(tmp_path / "cache" / "xla")
    # JAX_COMPILATION_CACHE_DIR reaches JAX's config when jax is imported: left alone.
    jax.config.update("jax_compilation_cache_dir", str(tmp_path / "own"))
    assert use_compilation_cache() == tmp_path / "own"
    assert jax.config.jax_compilation_cache_dir == str(tmp_path / "own")


def test_zero_turns_the_cache_off(monkeypatch, restored_cache_dir):
    monkeypatch.setenv("DIFFISP_XLA_CACHE", "0")
    jax.config.update("jax_compilation_cache_dir", None)
    assert use_compilation_cache() is None
    assert jax.config.jax_compilation_cache_dir is None
