"""The torch extra: the installed versions are the tested pins, and the core never needs it."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def _pins(extra: str) -> dict[str, str]:
    deps = tomllib.loads(PYPROJECT.read_text())["project"]["optional-dependencies"][extra]
    return dict(dep.split("==") for dep in deps)


@pytest.mark.parametrize("package", sorted(_pins("torch")))
def test_the_torch_extra_is_installed_at_its_pins(package):
    assert version(package) == _pins("torch")[package]


def test_the_core_imports_no_torch():
    code = (
        "import sys, diffisp.cli, diffisp.models.external, diffisp.experiments.tune; "
        "print(sorted(m for m in ('torch', 'torchax', 'onnx2torch') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
