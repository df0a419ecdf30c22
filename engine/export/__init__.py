"""Deployment formats for a run's scales: ONNX QDQ (checked in onnxruntime) and AIMET encodings."""
from .onnx_qdq import ExportError
from .run import FORMATS, Exported, export_run

__all__ = ["FORMATS", "ExportError", "Exported", "export_run"]
