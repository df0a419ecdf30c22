"""engine/ never imports Qt, pyqtgraph or app/: every engine module imports with those blocked."""
import pkgutil
import subprocess
import sys
from pathlib import Path

import engine

BLOCKER = """
import builtins, importlib, sys
real_import = builtins.__import__
def guarded(name, *args, **kwargs):
    if name.split('.')[0] in ('PySide6', 'PyQt5', 'PyQt6', 'pyqtgraph', 'shiboken6', 'app'):
        raise ImportError('engine imported ' + name)
    return real_import(name, *args, **kwargs)
builtins.__import__ = guarded
for name in sys.argv[1:]:
    importlib.import_module(name)
"""


def engine_modules() -> list[str]:
    root = Path(engine.__file__).parent
    return [m.name for m in pkgutil.walk_packages([str(root)], "engine.") if m.name != "engine.__main__"]


def test_engine_imports_without_qt():
    modules = engine_modules()
    assert len(modules) > 10
    result = subprocess.run([sys.executable, "-c", BLOCKER, *modules], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
