"""The package's layers: no module imports from a layer above its own (see ``diffisp/__init__``)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import diffisp

ROOT = Path(diffisp.__file__).parent

# Rank of each top-level part of the package; a module may import only ranks <= its own, and
# the two parts of rank 4 (data, models) not each other.
LAYERS = {
    "errors": 0,
    "util": 0,
    "__init__": 0,
    "ops": 1,
    "capture": 2,
    "isp": 3,
    "data": 4,
    "models": 4,
    "training": 5,
    "experiments": 6,
    "report": 7,
    "cli": 8,
}


def _part(dotted: str) -> str:
    parts = dotted.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(path: Path) -> list[tuple[int, str]]:
    """Every ``diffisp`` module imported anywhere in ``path`` (function-level imports too)."""
    module = "diffisp." + ".".join(path.relative_to(ROOT).with_suffix("").parts)
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.startswith("diffisp")]
        elif isinstance(node, ast.ImportFrom) and node.level:  # relative import
            base = module.rsplit(".", node.level)[0]
            out.append((node.lineno, f"{base}.{node.module}" if node.module else base))
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("diffisp"):
            if node.module == "diffisp":  # from diffisp import ops, ...
                out += [(node.lineno, f"diffisp.{a.name}") for a in node.names]
            else:
                out.append((node.lineno, node.module))
    return out


MODULES = sorted(ROOT.rglob("*.py"))


def test_every_module_belongs_to_a_layer():
    unknown = {
        _part("diffisp." + p.relative_to(ROOT).parts[0].removesuffix(".py")) for p in MODULES
    }
    assert unknown <= set(LAYERS), f"modules outside every layer: {unknown - set(LAYERS)}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_imports_a_layer_above_it(path):
    own = _part("diffisp." + ".".join(path.relative_to(ROOT).with_suffix("").parts))
    bad = []
    for line, target in _imports(path):
        other = _part(target)
        if other not in LAYERS:
            continue  # e.g. `from diffisp import __version__`
        above = LAYERS[other] > LAYERS[own]
        sideways = LAYERS[other] == LAYERS[own] == LAYERS["data"] and other != own
        if above or sideways:
            bad.append(f"line {line}: {target} ({other}, above {own})")
    assert not bad, "\n".join(bad)


def test_the_checker_sees_a_violation(tmp_path, monkeypatch):
    """The test above can fail: an upward import in a fake module is reported."""
    fake_root = tmp_path / "diffisp"
    (fake_root / "ops").mkdir(parents=True)
    bad = fake_root / "ops" / "bad.py"
    bad.write_text("def f():\n    from diffisp.training.loop import Trainer\n")
    monkeypatch.setattr(f"{__name__}.ROOT", fake_root)
    with pytest.raises(AssertionError, match="training"):
        test_no_module_imports_a_layer_above_it(bad)
