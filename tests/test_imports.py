"""engine/ and app/ modules import each other in one direction: no cycle, counting imports inside functions too.

A cycle (the window importing the application that imports the window, a reader importing the package
that imports the reader, …) works only as long as every import in it stays lazy or in the right order;
this reads the sources, so it costs no Qt and no torch. None is allowed: a type that two modules share
lives in a module below both (e.g. engine/data/splits.py below the folder and synthetic readers).
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("engine", "app")

def project_modules() -> dict[str, Path]:
    """Dotted name -> file of every module and package under PACKAGES."""
    modules = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def imported_modules(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules ``name`` imports anywhere in its source (absolute or relative, `from x import module`)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        found.update(t for t in targets if t in known and t != name)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {name: imported_modules(name, path, set(modules)) for name, path in modules.items()}


def find_cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """Every import circle: the strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def test_engine_and_app_modules_import_each_other_without_a_cycle():
    graph = import_graph()
    assert sum(name.startswith("app") for name in graph) > 20 and sum(name.startswith("engine") for name in graph) > 60
    assert graph["app.window.main_window"] >= {"app.jobs.runner", "app.run.state"}
    # the graph sees a package's own modules: the readers take the shared types from below, not the package
    assert "engine.data.splits" in graph["engine.data.folders"] and "engine.data" not in graph["engine.data.folders"]
    assert "engine.sweep.cell" in graph["engine.sweep.ray_backend"]
    assert [sorted(cycle) for cycle in find_cycles(graph)] == []


def test_the_cycle_finder_sees_a_lazy_import_cycle(tmp_path, monkeypatch):
    """The check above can fail: a function-level import back into the window is a cycle."""
    package = tmp_path / "app"
    (package / "window").mkdir(parents=True)
    (tmp_path / "engine").mkdir()
    (package / "__init__.py").write_text("")
    (package / "window" / "__init__.py").write_text("")
    (package / "application.py").write_text("def run():\n    from app.window.main_window import MainWindow\n")
    (package / "window" / "main_window.py").write_text("def launch():\n    from ..application import run\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert find_cycles(import_graph()) == [{"app.application", "app.window.main_window"}]


@pytest.mark.parametrize("source, expected", [
    ("from app import errors, files", {"app.errors", "app.files"}),
    ("from . import closing", {"app.window.closing"}),
    ("from ..jobs.job import Job", {"app.jobs.job"}),
    ("import app.run.state", {"app.run.state"}),
    ("from .. import window", {"app.window"}),   # a module importing its own package: the package is the target
])
def test_imports_are_resolved_to_modules(tmp_path, source, expected):
    path = tmp_path / "sweep_actions.py"
    path.write_text(source + "\n")
    known = {"app", "app.errors", "app.files", "app.window", "app.window.closing", "app.jobs", "app.jobs.job",
             "app.run", "app.run.state"}
    assert imported_modules("app.window.sweep_actions", path, known) == expected


def test_no_test_file_imports_another():
    """Shared builders live in tests/helpers.py (and app_conftest_helpers.py): a test module imported by
    another is collected under two names, and its module fixtures run twice."""
    tests = Path(__file__).resolve().parent
    names = {path.stem for path in tests.glob("test_*.py")}
    offenders = {}
    for path in sorted(tests.glob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                targets = [node.module]
            else:
                continue
            found = [t for t in targets if t.removeprefix("tests.") in names]
            if found:
                offenders.setdefault(path.name, []).extend(found)
    assert offenders == {}
