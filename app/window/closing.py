"""The question the main window asks before closing on a finished run that is in no file.

A search can take hours on a real model; its refined scales exist only in memory until File ▸ Save
scales… writes them, so closing the window without a word would lose them.
"""
from __future__ import annotations

from PySide6.QtWidgets import QMessageBox, QWidget

SAVE, DISCARD, CANCEL = "save", "discard", "cancel"
_ANSWERS = {QMessageBox.StandardButton.Save: SAVE, QMessageBox.StandardButton.Discard: DISCARD}


def ask_unsaved(parent: QWidget | None, run_name: str) -> str:
    """Save / Discard / Cancel for the unsaved run ``run_name``; closing the box (Esc) is Cancel."""
    buttons = QMessageBox.StandardButton
    box = QMessageBox(QMessageBox.Icon.Question, "Save the result?", "<b>The last run has not been saved.</b>",
                      buttons.Save | buttons.Discard | buttons.Cancel, parent)
    box.setInformativeText(f"Its refined scales ({run_name}) are lost when the window closes. "
                           "Save them to a run file first?")
    box.setDefaultButton(buttons.Save)
    box.setEscapeButton(buttons.Cancel)
    box.setObjectName("unsavedDialog")
    return _ANSWERS.get(_exec(box), CANCEL)


def _exec(box: QMessageBox) -> QMessageBox.StandardButton:
    """One place the question is run, so tests can answer it (``monkeypatch.setattr(closing, "_exec", ...)``)."""
    return QMessageBox.StandardButton(box.exec())
