"""The layers as the README draws them: the core at the bottom, four packages on it, the workflow on top.

Read from the source (every import statement, lazy ones inside functions included), so a shortcut
across packages fails here rather than in a reviewer's head.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = {
    "builders": "builders",
    "trainers": "trainers",
    "eval": "eval",
    "hub_cards": "hub_cards",
    "core": "inversecoder/core",
}
TOP = (
    "inversecoder.workflow",
    "inversecoder.step_records",
    "inversecoder.cli",
    "inversecoder.plan",
    "inversecoder.tiny_model",
)


def imported_modules(folder: Path) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in sorted(folder.rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
                names.update(f"{node.module}.{alias.name}" for alias in node.names)
        found[str(path.relative_to(REPO))] = {name for name in names if name.startswith("inversecoder")}
    return found


@pytest.mark.parametrize("package", ["builders", "trainers", "eval", "hub_cards"])
def test_a_package_imports_only_the_core_and_itself(package):
    allowed = ("inversecoder.core", f"inversecoder.{package}")
    crossing = {
        path: sorted(name for name in names if not name.startswith(allowed))
        for path, names in imported_modules(REPO / PACKAGES[package]).items()
    }
    assert {path: names for path, names in crossing.items() if names} == {}


def test_the_core_imports_nothing_above_it():
    crossing = {
        path: sorted(name for name in names if not name.startswith("inversecoder.core"))
        for path, names in imported_modules(REPO / PACKAGES["core"]).items()
    }
    assert {path: names for path, names in crossing.items() if names} == {}


def test_only_the_top_layer_lives_beside_the_core():
    modules = {p.stem for p in (REPO / "inversecoder").glob("*.py")} - {"__init__"}
    assert {f"inversecoder.{m}" for m in modules} <= set(TOP)
