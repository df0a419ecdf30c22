"""A comparison plot with its own "Save PNG" and "Save CSV": the frame every comparison view shares.

A card draws data the engine computed (``engine.library``) and keeps the flat rows it drew, so
Save CSV writes exactly the numbers on screen (through ``engine.library.write_csv``).
"""
from __future__ import annotations

import logging
import os
import textwrap
from pathlib import Path
from typing import Any, Sequence

import pyqtgraph as pg
from PySide6.QtWidgets import (QFileDialog, QFrame, QHBoxLayout, QLabel, QPushButton, QVBoxLayout,
                               QWidget)

from engine.library import write_csv

from app import files
from app.widgets.plot_style import INK

log = logging.getLogger(__name__)

# One colour per run or quantizer, readable on white and distinct for the colour-blind (Okabe–Ito).
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442")
EMPTY_TEXT = "Nothing to show yet"
EMPTY_LINE = 32    # characters per line of an empty plot's note


def colour(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def set_title(plot: pg.PlotItem, title: str, subtitle: str = "") -> None:
    sub = f'<br><span style="font-size:9pt">{subtitle}</span>' if subtitle else ""
    plot.setTitle(f'<span style="font-size:11pt; font-weight:600">{title}</span>{sub}', color=INK)


class PlotCard(QFrame):
    """``body`` (a pyqtgraph widget) under a bar of choosers and the two save buttons, and a note."""

    def __init__(self, name: str, body: QWidget, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName(f"{name}Card")
        self.name = name
        self.body = body
        self.rows: list[dict[str, Any]] = []          # what Save CSV writes: the data drawn
        self.columns: Sequence[str] | None = None
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        bar = QHBoxLayout()
        bar.setContentsMargins(4, 0, 4, 0)
        self.controls = QHBoxLayout()              # views add their own choosers here
        bar.addLayout(self.controls)
        bar.addStretch(1)
        bar.addWidget(QLabel("Save"))               # "Save [PNG…] [CSV…]": room for the choosers of a narrow card
        self.png_button = QPushButton("PNG…", objectName=f"{name}SavePng")
        self.png_button.setToolTip("Save this plot as a PNG image.")
        self.png_button.clicked.connect(lambda: self.save_png())
        self.csv_button = QPushButton("CSV…", objectName=f"{name}SaveCsv")
        self.csv_button.setToolTip("Save the numbers this plot shows as CSV.")
        self.csv_button.clicked.connect(lambda: self.save_csv())
        bar.addWidget(self.png_button)
        bar.addWidget(self.csv_button)
        layout.addLayout(bar)
        self.note = QLabel(EMPTY_TEXT, objectName="hint")   # under the buttons, the card's whole width to wrap in
        self.note.setWordWrap(True)
        self.note.setContentsMargins(4, 0, 4, 0)
        layout.addWidget(self.note)
        layout.addWidget(body, 1)
        self.set_rows([])

    def set_rows(self, rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> None:
        self.rows, self.columns = list(rows), columns
        self.csv_button.setEnabled(bool(self.rows))

    def _ask(self, caption: str, suffix: str, kind: str) -> Path | None:
        suggested = Path(files.last_dir()) / f"{self.name}.{suffix}"
        path, _ = QFileDialog.getSaveFileName(self, caption, str(suggested), f"{kind} (*.{suffix});;All files (*)")
        if not path:
            return None
        path = Path(path)
        if path.suffix.lower() != f".{suffix}":
            path = path.with_name(f"{path.name}.{suffix}")
        files.remember_dir(path)
        return path

    def save_png(self, path: str | Path | None = None) -> Path | None:
        """The plot as it is on screen (``grab``), so the image matches what the user sees."""
        path = Path(path) if path else self._ask("Save plot as PNG", "png", "PNG images")
        if path is None:
            return None
        if not self.body.grab().save(str(path), "PNG"):
            raise OSError(f"could not write {path}")
        log.info("saved %s", path)
        return path

    def save_csv(self, path: str | Path | None = None) -> Path | None:
        if not self.rows:
            return None
        path = Path(path) if path else self._ask("Save plot data as CSV", "csv", "CSV files")
        if path is None:
            return None
        write_csv(self.rows, path, self.columns)
        log.info("saved %s", path)
        return path


def plot_widget(name: str) -> pg.PlotWidget:
    widget = pg.PlotWidget(objectName=name)
    widget.setMinimumHeight(180)
    return widget


def empty_message(plot: pg.PlotItem, text: str) -> pg.TextItem:
    """A centred grey note in an empty plot (e.g. "select two runs in the library"), in short lines so
    that it fits a narrow plot."""
    item = pg.TextItem("\n".join(textwrap.wrap(text, EMPTY_LINE)), color="#7f8c8d", anchor=(0.5, 0.5))
    plot.addItem(item)
    item.setPos(0.5, 0.5)
    plot.getViewBox().setRange(xRange=(0, 1), yRange=(0, 1), padding=0)
    return item


def short_names(names: Sequence[str]) -> list[str]:
    """Legend labels: the file names without what they all share ('digits-vit_', '.h5')."""
    stems = [n.rsplit(".", 1)[0] if n.lower().endswith((".h5", ".hdf5")) else n for n in names]
    if len(stems) < 2:
        return stems
    prefix = os.path.commonprefix(stems)
    cut = prefix.rfind("_") + 1
    return [s[cut:] or s for s in stems]
