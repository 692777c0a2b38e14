"""The package's layout rules, read from the source (README "Layout").

Each package of tfquant has a layer; a module imports only from its own package and from
layers below it, at module level and inside functions alike (a lazy import hides a cycle,
it does not remove it). ``tfquant/__init__.py`` and ``__main__`` are the faces above all.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent / "tfquant"

# Lowest first. A unit is a top-level module or subpackage of tfquant.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors", "_signals", "_keras"),
    ("_files", "progress"),
    ("quantizers",),
    ("layers",),
    ("optimizers", "models", "graph", "distribute"),
    ("callbacks",),
    ("methods",),
    ("zoo", "datasets", "saving"),
    ("converters",),
    ("train",),
    ("cli",),
)
LAYER = {unit: level for level, units in enumerate(LAYERS) for unit in units}
FACES = {"__init__", "__main__"}


def _unit(path: pathlib.Path) -> str:
    return path.relative_to(ROOT).with_suffix("").parts[0]


def _imported_units(tree: ast.AST) -> set[str]:
    units = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "tfquant":
                names = [f"tfquant.{alias.name}" for alias in node.names]
            else:
                names = [node.module]
        else:
            continue
        units.update(n.split(".")[1] for n in names if n.startswith("tfquant."))
    return units


def _modules() -> list[pathlib.Path]:
    return sorted(p for p in ROOT.rglob("*.py") if _unit(p) not in FACES)


def test_every_package_has_a_layer():
    units = {_unit(p) for p in _modules()}
    assert units - set(LAYER) == set(), "give each new package a layer in LAYERS and README"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_only_downward(path):
    unit = _unit(path)
    above = {
        imported
        for imported in _imported_units(ast.parse(path.read_text()))
        if imported != unit and LAYER.get(imported, -1) >= LAYER[unit]
    }
    assert not above, (
        f"{path.relative_to(ROOT.parent)} (layer {LAYER[unit]}, {unit}) imports "
        f"{sorted(above)} from its own layer or above"
    )


def test_no_relative_imports():
    # Relative imports would escape the check above; the package uses absolute ones.
    offenders = [
        str(p.relative_to(ROOT.parent))
        for p in ROOT.rglob("*.py")
        for node in ast.walk(ast.parse(p.read_text()))
        if isinstance(node, ast.ImportFrom) and node.level > 0
    ]
    assert offenders == []
