"""The progress of a job that counts its measurements (Diagnose, Plan): the engine's ``Stage`` and ``Measured``
events on the panel's progress bar and status line."""
from __future__ import annotations

import logging

from PySide6.QtWidgets import QLabel, QProgressBar

from engine.diagnose import Measured
from engine.events import Stage

log = logging.getLogger(__name__)


def show_measuring(items: list, progress: QProgressBar, status: QLabel, doing: str) -> None:
    """``doing`` names the work in the status line ("Diagnosing"); a stage is busy, a measurement counts."""
    for item in items:
        if isinstance(item, Stage):
            log.info("%s: %s", doing, item.message)
            progress.setRange(0, 0)
            status.setText(f"{doing}: {item.message}…")
        elif isinstance(item, Measured):
            progress.setRange(0, item.total)
            progress.setValue(item.done)
            progress.setFormat(f"{item.done} / {item.total} measurements")
            status.setText(f"{doing}: {item.what}")
