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
    "inversecoder.comparison",  # the report's M -> InverseCoder table, with its paired statistics
    "inversecoder.step_records",
    "inversecoder.cli",
    "inversecoder.train_worker",  # an entry point, as cli: each process of a launched training job
    "inversecoder.plan",
    "inversecoder.tiny_model",
)


def imported_modules(folder: Path, package: str) -> dict[str, set[str]]:
    """Per file of `folder` (the package `package`), the inversecoder modules it imports: absolute and
    relative imports, and `importlib.import_module("...")` with a literal name."""
    found: dict[str, set[str]] = {}
    for path in sorted(folder.rglob("*.py")):
        names: set[str] = set()
        parts = [*package.split("."), *path.relative_to(folder).parent.parts]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: resolved against the file's own package
                    up = parts[: len(parts) - (node.level - 1)] if node.level - 1 < len(parts) else ["<above the root>"]
                    base = ".".join([*up, *([node.module] if node.module else [])])
                names.add(base)
                names.update(f"{base}.{alias.name}" for alias in node.names)
            elif (
                isinstance(node, ast.Call)
                and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module"
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            ):
                names.add(node.args[0].value)
        found[str(path.relative_to(folder.parent))] = {name for name in names if name.startswith(("inversecoder", "<"))}
    return found


@pytest.mark.parametrize("package", ["builders", "trainers", "eval", "hub_cards"])
def test_a_package_imports_only_the_core_and_itself(package):
    allowed = ("inversecoder.core", f"inversecoder.{package}")
    crossing = {
        path: sorted(name for name in names if not name.startswith(allowed))
        for path, names in imported_modules(REPO / PACKAGES[package], f"inversecoder.{package}").items()
    }
    assert {path: names for path, names in crossing.items() if names} == {}


def test_the_core_imports_nothing_above_it():
    crossing = {
        path: sorted(name for name in names if not name.startswith("inversecoder.core"))
        for path, names in imported_modules(REPO / PACKAGES["core"], "inversecoder.core").items()
    }
    assert {path: names for path, names in crossing.items() if names} == {}


def test_only_the_top_layer_lives_beside_the_core():
    modules = {p.stem for p in (REPO / "inversecoder").glob("*.py")} - {"__init__"}
    assert {f"inversecoder.{m}" for m in modules} <= set(TOP)


def test_the_import_reader_sees_relative_and_dynamic_imports(tmp_path):
    room = tmp_path / "builders"
    room.mkdir()
    (room / "sneaky.py").write_text(
        "import importlib\nfrom ..eval import harness\nfrom . import stages\n"
        "importlib.import_module('inversecoder.trainers.recipe')\n"
    )
    (names,) = imported_modules(room, "inversecoder.builders").values()
    assert {"inversecoder.eval.harness", "inversecoder.builders.stages", "inversecoder.trainers.recipe"} <= names
