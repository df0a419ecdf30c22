"""app/ modules import each other in one direction: no cycle, counting imports inside functions too.

A cycle (the window importing the application that imports the window, …) works only as long as
every import in it stays lazy; this reads the sources, so it costs no Qt and no torch.
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "app"


def app_modules() -> dict[str, Path]:
    """Dotted name -> file of every module and package of app/."""
    modules = {}
    for path in APP.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def imported_app_modules(name: str, path: Path, known: set[str]) -> set[str]:
    """The app modules ``name`` imports anywhere in its source (absolute or relative, `from x import module`)."""
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


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle as a path [a, b, …, a], or [] when the graph has none (depth-first search)."""
    state: dict[str, int] = {}      # 1: on the current path, 2: finished
    path: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return []

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return []


def app_import_graph() -> dict[str, set[str]]:
    modules = app_modules()
    return {name: imported_app_modules(name, path, set(modules)) for name, path in modules.items()}


def test_app_modules_import_each_other_without_a_cycle():
    graph = app_import_graph()
    assert len(graph) > 20 and graph["app.window.main_window"] >= {"app.jobs.job", "app.run.state"}
    assert find_cycle(graph) == [], " -> ".join(find_cycle(graph))


def test_the_cycle_finder_sees_a_lazy_import_cycle(tmp_path, monkeypatch):
    """The check above can fail: a function-level import back into the window is a cycle."""
    package = tmp_path / "app"
    (package / "window").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "window" / "__init__.py").write_text("")
    (package / "application.py").write_text("def run():\n    from app.window.main_window import MainWindow\n")
    (package / "window" / "main_window.py").write_text("def launch():\n    from ..application import run\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    monkeypatch.setattr(sys.modules[__name__], "APP", package)
    assert find_cycle(app_import_graph()) == ["app.application", "app.window.main_window", "app.application"]


@pytest.mark.parametrize("source, expected", [
    ("from app import errors, files", {"app.errors", "app.files"}),
    ("from . import closing", {"app.window.closing"}),
    ("from ..jobs.job import Job", {"app.jobs.job"}),
    ("import app.run.state", {"app.run.state"}),
])
def test_imports_are_resolved_to_modules(tmp_path, source, expected):
    path = tmp_path / "sweep_actions.py"
    path.write_text(source + "\n")
    known = {"app", "app.errors", "app.files", "app.window", "app.window.closing", "app.jobs", "app.jobs.job",
             "app.run", "app.run.state"}
    assert imported_app_modules("app.window.sweep_actions", path, known) == expected
