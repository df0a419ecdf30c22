"""Turning the engine's exceptions into dialogs that name the problem and what to do about it."""
from __future__ import annotations

import logging
import traceback
from dataclasses import dataclass

from PySide6.QtWidgets import QMessageBox, QWidget

from engine.data import DataError
from engine.errors import CheckpointError, ExportError, MissingExtra
from engine.models import ModelLoadError, WeightsDownloadError, WeightsFileError
from engine.quant import ScaleMismatch
from engine.scalefile import ScaleFileError
from engine.search.resume import WeightsMissing

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Problem:
    title: str        # short: the dialog's title and first line
    message: str      # the engine's own words (names the file / layer / model)
    hint: str         # what to try next
    kind: str         # "model" | "weights" | "data" | "scales" | "checkpoint" | "memory" | "file" | "export"
                      # | "sweep" | "other"


def _is_out_of_memory(exc: BaseException) -> bool:
    """torch's own type (CUDA and the CPU allocator raise it), or Python's."""
    import torch

    return isinstance(exc, (getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError), MemoryError))


def describe(exc: BaseException) -> Problem:
    """A user-facing description of an exception raised by the engine or by a file operation."""
    text = str(exc) or type(exc).__name__
    if _is_out_of_memory(exc):
        return Problem("Out of memory during the search", text,
                       "Lower the batch size or the calibration size, close other programs using the GPU, "
                       "or choose the CPU as device. The last checkpoint is kept: "
                       "Resume continues from it.", "memory")
    if isinstance(exc, WeightsDownloadError):
        return Problem("The pretrained weights could not be downloaded", text,
                       "Connect to the network, or give a local weights file instead.", "weights")
    if isinstance(exc, (WeightsFileError, WeightsMissing)):
        return Problem("The weights file could not be used", text,
                       "Choose a .safetensors or .pth state dict saved from the same timm architecture, "
                       "or clear the weights field to use the model's own weights.", "weights")
    if isinstance(exc, ModelLoadError):
        return Problem("The model could not be loaded", text,
                       "Check the model name (a timm name such as deit_small_patch16_224, or a built-in "
                       "one: digits-vit, digits-swin).", "model")
    if isinstance(exc, DataError):
        return Problem("The data folder could not be used", text,
                       "Pick an ImageNet-style folder holding train/<class>/* and val/<class>/* images, "
                       "or clear the field to use the built-in digits.", "data")
    if isinstance(exc, (ScaleMismatch, ScaleFileError)):
        return Problem("The scale file does not fit", text,
                       "Open a run file made for the same model and quantizer, or change the model "
                       "in the run panel to the one the file was made for.", "scales")
    export_problem = _export_problem(exc, text)
    if export_problem is not None:
        return export_problem
    if isinstance(exc, MissingExtra) and exc.extra == "ray":
        return Problem("The ray extra is not installed", text, "Install it (on every machine of the cluster), "
                       "or run the sweep in this process (Run on, in the sweep form).", "sweep")
    if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError)):
        return Problem("A file could not be read or written", text,
                       "Check the path and its permissions.", "file")
    if isinstance(exc, OSError):
        return Problem("A file could not be read or written", text, "Check the path, the disk space and "
                       "that the file is a CPT-V run file (.h5).", "file")
    if isinstance(exc, CheckpointError):
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
    if isinstance(exc, MissingExtra) and exc.extra == "export":
        return Problem("The export extra is not installed", text, "Install it, then export again.", "export")
    if isinstance(exc, ExportError):
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
