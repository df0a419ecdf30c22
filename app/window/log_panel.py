"""The log panel: engine log records, forwarded thread-safely to a read-only text view."""
from __future__ import annotations

import logging
import queue

from PySide6.QtGui import QFontDatabase
from PySide6.QtWidgets import QPlainTextEdit

ENGINE_LOGGERS = ("engine", "app")


class QueueHandler(logging.Handler):
    """A logging.Handler any thread may call: it formats the record and queues the line."""

    def __init__(self, level: int = logging.INFO) -> None:
        super().__init__(level)
        self.lines: "queue.SimpleQueue[tuple[int, str]]" = queue.SimpleQueue()
        self.setFormatter(logging.Formatter("%(asctime)s  %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.put((record.levelno, self.format(record)))
        except Exception:  # pragma: no cover - logging must never raise
            self.handleError(record)


class LogPanel(QPlainTextEdit):
    """Shows the engine's (and the app's) log messages; ``drain()`` runs on the GUI timer."""

    MAX_LINES = 5000

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setObjectName("logPanel")
        self.setReadOnly(True)
        self.setMaximumBlockCount(self.MAX_LINES)
        self.setLineWrapMode(QPlainTextEdit.LineWrapMode.WidgetWidth)
        font = QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont)
        font.setPointSize(max(9, font.pointSize()))
        self.setFont(font)
        self.setPlaceholderText("Engine messages (loading, calibration, checkpoints, warnings) appear here.")
        self.setToolTip("Log messages from the engine: what it loads, calibrates and saves, and any warnings.")
        self.handler = QueueHandler()
        self._loggers = [logging.getLogger(name) for name in ENGINE_LOGGERS]
        for logger in self._loggers:
            logger.addHandler(self.handler)
            if logger.getEffectiveLevel() > logging.INFO:
                logger.setLevel(logging.INFO)

    def detach(self) -> None:
        for logger in self._loggers:
            logger.removeHandler(self.handler)

    def drain(self) -> int:
        """Append every queued line; returns how many."""
        lines = []
        try:
            while True:
                level, text = self.handler.lines.get_nowait()
                lines.append(f'<span style="color:{_colour(level)}">{_escape(text)}</span>')
        except queue.Empty:
            pass
        if lines:
            self.appendHtml("<br>".join(lines))
            bar = self.verticalScrollBar()
            bar.setValue(bar.maximum())
        return len(lines)


def _colour(level: int) -> str:
    if level >= logging.ERROR:
        return "#c0392b"
    if level >= logging.WARNING:
        return "#b9770e"
    return "#2c3e50"


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")

