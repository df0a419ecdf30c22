"""Deployment formats for a run's scales: ONNX QDQ (checked in onnxruntime) and AIMET encodings.

The formats need the ``export`` extra (onnx, onnxruntime); this package's root imports neither, so the
CLI lists the command without them and ``load_export`` says what to install.
"""
from __future__ import annotations

from types import ModuleType

FORMATS = ("onnx-qdq", "aimet")
INSTALL_HINT = "pip install 'cptv-studio[export]' (or pip install -e '.[export]' in a checkout)"


def load_export() -> ModuleType:
    """``engine.export.run`` (export_run, Exported); a ValueError naming the extra when onnx or
    onnxruntime is missing."""
    try:
        from . import run
    except ModuleNotFoundError as exc:
        if exc.name not in ("onnx", "onnxruntime"):
            raise
        raise ValueError(f"export needs {exc.name}: {INSTALL_HINT}") from None
    return run
