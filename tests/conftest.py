"""Shared fixtures."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest


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
