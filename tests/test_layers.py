"""The subpackages stack in layers and no layer imports one above it (so there is no import
cycle between them): core at the bottom; kernels, models, train and dist above it; benches;
ci, then report; the command line on top."""

import ast
from pathlib import Path

from tests.conftest import ROOT

LAYERS = {"core": 0, "kernels": 1, "models": 2, "train": 3, "dist": 4, "benches": 5, "ci": 6,
          "history": 7, "report": 8, "cli": 9}


def _arrows():
    """(from subpackage, to subpackage, 'file:line') for every import between two of them,
    including imports inside functions."""
    package = Path(ROOT, "llmbench")
    for path in package.rglob("*.py"):
        parts = path.relative_to(package).parts
        if len(parts) < 2:  # llmbench/__init__.py, __main__.py: above every layer
            continue
        source = parts[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for name in names:
                bits = name.split(".")
                if bits[0] == "llmbench" and len(bits) > 1 and bits[1] in LAYERS \
                        and bits[1] != source:
                    yield source, bits[1], f"{path.relative_to(ROOT)}:{node.lineno}"


def test_every_subpackage_has_a_layer():
    found = {p.name for p in Path(ROOT, "llmbench").iterdir()
             if p.is_dir() and (p / "__init__.py").exists()}
    assert found == set(LAYERS)


def test_no_layer_imports_one_above_it():
    upward = sorted({f"{a} -> {b}: {where}" for a, b, where in _arrows()
                     if LAYERS[b] > LAYERS[a]})
    assert upward == []
