"""Deployment formats for a run's scales: ONNX QDQ (checked in onnxruntime) and AIMET encodings.

The formats need the ``export`` extra (onnx, onnxruntime); this package's root imports neither, so the
CLI lists the command without them and ``load_export`` says what to install.
"""
from __future__ import annotations

from types import ModuleType

from ..errors import MissingExtra
from .formats import FORMATS

__all__ = ["FORMATS", "load_export"]


def load_export() -> ModuleType:
    """``engine.export.run`` (export_run, Exported); MissingExtra naming the extra when onnx or
    onnxruntime is missing."""
    try:
        from . import run
    except ModuleNotFoundError as exc:
        if exc.name not in ("onnx", "onnxruntime"):
            raise
        raise MissingExtra("export", f"export needs {exc.name}") from None
    return run
