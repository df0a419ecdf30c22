"""Turning the engine's exceptions into dialogs that name the problem and what to do about it."""
from __future__ import annotations

import logging
import traceback
from dataclasses import dataclass

from PySide6.QtWidgets import QMessageBox, QWidget

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Problem:
    title: str        # short: the dialog's title and first line
    message: str      # the engine's own words (names the file / layer / model)
    hint: str         # what to try next
    kind: str         # "model" | "weights" | "data" | "scales" | "checkpoint" | "memory" | "file" | "export"
                      # | "sweep" | "other"


def _is_out_of_memory(exc: BaseException) -> bool:
    try:
        import torch
        if isinstance(exc, torch.OutOfMemoryError):
            return True
    except (ImportError, AttributeError):  # pragma: no cover - very old torch
        pass
    return isinstance(exc, (RuntimeError, MemoryError)) and (
        isinstance(exc, MemoryError) or "out of memory" in str(exc).lower())


def _engine_class(module: str, name: str):
    try:
        return getattr(__import__(module, fromlist=[name]), name)
    except (ImportError, AttributeError):
        return None


def describe(exc: BaseException) -> Problem:
    """A user-facing description of an exception raised by the engine or by a file operation."""
    text = str(exc) or type(exc).__name__
    if _is_out_of_memory(exc):
        return Problem("Out of memory during the search", text,
                       "Lower the batch size or the calibration size, close other programs using the GPU, "
                       "or choose the CPU as device. The checkpoint of the last finished block step is kept: "
                       "Resume continues from it.", "memory")
    model_error = _engine_class("engine.models", "ModelLoadError")
    if model_error is not None and isinstance(exc, model_error):
        lowered = text.lower()
        if "download" in lowered:
            return Problem("The pretrained weights could not be downloaded", text,
                           "Connect to the network, or give a local weights file instead.", "weights")
        if "weight" in lowered or "state dict" in lowered or "safetensors" in lowered or ".pth" in lowered:
            return Problem("The weights file could not be used", text,
                           "Choose a .safetensors or .pth state dict saved from the same timm architecture, "
                           "or clear the weights field to use the model's own weights.", "weights")
        return Problem("The model could not be loaded", text,
                       "Check the model name (a timm name such as deit_small_patch16_224, or the built-in "
                       "digits-vit demo).", "model")
    data_error = _engine_class("engine.data", "DataError")
    if data_error is not None and isinstance(exc, data_error):
        return Problem("The data folder could not be used", text,
                       "Pick an ImageNet-style folder holding train/<class>/* and val/<class>/* images, "
                       "or clear the field to use the built-in digits.", "data")
    scale_errors = tuple(c for c in (_engine_class("engine.quant", "ScaleMismatch"),
                                     _engine_class("engine.scalefile", "ScaleFileError")) if c is not None)
    if scale_errors and isinstance(exc, scale_errors):
        return Problem("The scale file does not fit", text,
                       "Open a run file made for the same model and quantizer, or change the model "
                       "in the run panel to the one the file was made for.", "scales")
    export_problem = _export_problem(exc, text)
    if export_problem is not None:
        return export_problem
    ray_hint = _engine_class("engine.sweep_ray", "INSTALL_HINT")
    if ray_hint and isinstance(exc, ValueError) and ray_hint in text:
        return Problem("The ray extra is not installed", text, "Install it (on every machine of the cluster), "
                       "or run the sweep in this process (Run on, in the sweep form).", "sweep")
    if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError)):
        return Problem("A file could not be read or written", text,
                       "Check the path and its permissions.", "file")
    if isinstance(exc, OSError):
        return Problem("A file could not be read or written", text, "Check the path, the disk space and "
                       "that the file is a CPT-V run file (.h5).", "file")
    if isinstance(exc, ValueError) and "checkpoint" in text.lower():
        return Problem("The checkpoint cannot continue this run", text,
                       "Choose the checkpoint of the run you want to continue (File ▸ Resume run… restores its "
                       "settings), or press Start for a new run.", "checkpoint")
    if isinstance(exc, ValueError):
        return Problem("Invalid setting", text, "Check the settings in the run panel.", "other")
    return Problem(f"Unexpected error ({type(exc).__name__})", text,
                   "The details below say where it happened; the app keeps running.", "other")


def _export_problem(exc: BaseException, text: str) -> Problem | None:
    """A run the export formats cannot express (``ExportError`` names the point, the scheme and a quantizer
    that exports), or the export extra missing (``load_export``'s message names what to install)."""
    install_hint = _engine_class("engine.export", "INSTALL_HINT")
    if install_hint and isinstance(exc, ValueError) and install_hint in text:
        return Problem("The export extra is not installed", text, "Install it, then export again.", "export")
    export_error = _engine_class("engine.export.onnx_qdq", "ExportError")
    if export_error is not None and isinstance(exc, export_error):
        return Problem("This run cannot be exported", text, "Choose another format, or quantize with a quantizer "
                       "that exports (see docs/export.md, its table of quantizers and formats).", "export")
    return None


def show_error(parent: QWidget | None, exc: BaseException, context: str = "", interactive: bool = True) -> Problem:
    """Log the problem and (when interactive) show a modal dialog naming it."""
    problem = describe(exc)
    where = f"{context}: " if context else ""
    log.error("%s%s — %s", where, problem.title, problem.message)
    if interactive:
        box = QMessageBox(QMessageBox.Icon.Critical, problem.title,
                          f"<b>{_escape(where + problem.title)}</b>", QMessageBox.StandardButton.Ok, parent)
        box.setInformativeText(f"{_escape(problem.message)}<br><br>{_escape(problem.hint)}")
        box.setDetailedText("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
        box.setObjectName(f"errorDialog_{problem.kind}")
        _exec(box)
    return problem


def _exec(box: QMessageBox) -> None:
    """One place the dialog is run, so tests can replace it (``monkeypatch.setattr(errors, "_exec", ...)``)."""
    box.exec()


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\n", "<br>")
