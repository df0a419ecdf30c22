"""glibc's malloc thresholds are a process-wide setting: entry points set them once at start, library
functions never (issue 24): a library call would change the process of whoever imported it."""
from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

import engine.cli
from engine.allocator import keep_freed_memory

ROOT = Path(__file__).resolve().parent.parent
ENTRY_POINTS = {("engine/cli.py", "main"), ("app/application.py", "run_app"), ("engine/sweep/ray_backend.py", "search_cell"),
                ("engine/bench/memory.py", "_fresh_process_entry")}


def calls_by_function(path: Path, name: str) -> set[str]:
    """Names of the top-level functions of ``path`` whose body calls ``name``."""
    callers = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            if any(isinstance(call, ast.Call) and getattr(call.func, "id", getattr(call.func, "attr", None)) == name
                   for call in ast.walk(node)):
                callers.add(node.name)
        elif any(isinstance(call, ast.Call) and getattr(call.func, "id", None) == name for call in ast.walk(node)):
            callers.add("<module or class>")
    return callers


def test_only_entry_points_set_the_malloc_thresholds():
    callers = {(str(path.relative_to(ROOT)), function)
               for folder in ("engine", "app") for path in sorted((ROOT / folder).rglob("*.py"))
               for function in calls_by_function(path, "keep_freed_memory")}
    assert callers == ENTRY_POINTS


def test_the_cli_sets_them_before_the_command_runs(monkeypatch, tmp_path):
    if not sys.platform.startswith("linux"):
        pytest.skip("glibc only")
    assert keep_freed_memory()
    calls = []
    monkeypatch.setattr(engine.cli, "keep_freed_memory", lambda: calls.append("thresholds"))
    monkeypatch.setattr("engine.commands.make_folder.run", lambda args: calls.append("command") or 0)
    assert engine.cli.main(["make-folder", str(tmp_path / "images")]) == 0
    assert calls == ["thresholds", "command"]
