"""The results card: what came out of a run, in one glance (FP / base / refined top-1, the method, how it
was computed); before any run, what the app does. A model without a classifier shows its features'
cosine similarity to the FP model instead of top-1 (the run file's ``metrics["quality"]``)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFrame, QGridLayout, QHBoxLayout, QLabel, QVBoxLayout, QWidget

from engine.evaluate import FEATURE_COSINE, TOP1, quality_key, quality_of
from engine.provenance import describe
from engine.search.config import preset_label

INTRO = ("<b>CPT-V Studio</b> refines an already-quantized Vision Transformer: the search nudges its "
         "quantization scales, all blocks together and then block by block, so that the quantized model's "
         "outputs come closer to the full-precision model's. "
         "Press Start, or open a run file: its top-1 accuracy before and after the search appears here.")
ROWS = (("test", "Test", "fp", "base", "refined"),
        ("heldout", "Held-out", "heldout_fp", "heldout_base", "heldout_refined"))   # + _top1 / _feature_cosine
MEASURES = {TOP1: ("", "top-1 (%)", "top-1 points"),       # corner header, what the numbers are, the delta's unit
            FEATURE_COSINE: ("Feature cosine %", "cosine similarity (%) of the features to the FP model's "
                             "(the model has no classifier; mean over images)", "cosine points")}
HEADERS = ("", "Full precision", "Quantized", "After search", "Won back")
TIPS = ("", "The original model, unquantized: the ceiling.",
        "The quantized model before the search (the base quantizer's scales).",
        "The quantized model with the scales the search chose.",
        "After search − quantized, in top-1 points. Positive = the search recovered accuracy.")


class ResultsCard(QFrame):
    """Filled by ``show_run(run)``; empty (with a hint) before a run finishes."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("resultsCard")
        self.setFrameShape(QFrame.Shape.StyledPanel)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(12, 8, 12, 8)
        outer.setSpacing(4)
        self.title = QLabel("Results", objectName="cardTitle")
        self.title.setWordWrap(True)      # a long timm name and bit-width label must not widen the window
        outer.addWidget(self.title)
        self.hint = QLabel(INTRO, objectName="intro")      # the app in three lines, until a run is on screen
        self.hint.setWordWrap(True)
        outer.addWidget(self.hint)
        grid_holder = QWidget()
        self.grid = QGridLayout(grid_holder)
        self.grid.setContentsMargins(0, 2, 0, 2)
        self.grid.setHorizontalSpacing(18)
        self.grid.setVerticalSpacing(2)
        self.cells: dict[tuple[str, int], QLabel] = {}
        self.headers: list[QLabel] = []
        for col, (text, tip) in enumerate(zip(HEADERS, TIPS)):
            header = QLabel(text, objectName="cardHeader")
            header.setToolTip(tip)
            header.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            self.grid.addWidget(header, 0, col)
            self.headers.append(header)
        for row, (key, label, *_rest) in enumerate(ROWS, start=1):
            name = QLabel(label, objectName="cardRowName")
            name.setToolTip("Test: the split read only once, at the end. Held-out: images the search may "
                            "watch (never the test split)." if key == "test" else
                            "Images disjoint from the test split; measured after every block step.")
            self.grid.addWidget(name, row, 0)
            for col in range(1, len(HEADERS)):
                cell = QLabel("–", objectName="cardValue")
                cell.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                self.grid.addWidget(cell, row, col)
                self.cells[(key, col)] = cell
        self.details = QLabel("", objectName="cardDetails")
        self.details.setWordWrap(True)
        self.details.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.details.setToolTip("The run's size and method, its file, and how it was computed (package version "
                                "and commit, torch, timm, device, threads, compile mode): what to rerun with.")
        row = QHBoxLayout()            # the details beside the numbers: a short screen keeps its height for plots
        row.setSpacing(24)
        row.addWidget(grid_holder)
        row.addWidget(self.details, 1)
        outer.addLayout(row)
        self.clear()

    def clear(self) -> None:
        for cell in self.cells.values():
            cell.setText("–")
            cell.setProperty("sign", "")
            _repolish(cell)
        self.title.setText("Results")
        self._measure(TOP1)
        self.details.setText("")
        self.hint.setVisible(True)
        self.setProperty("filled", False)

    def show_run(self, run: Any, source: str = "") -> None:
        metrics = dict(run.metrics or {})
        quality = self.quality = quality_of(metrics)   # top-1; a file without the key is an older top-1 run
        self._measure(quality)
        for key, _label, *which in ROWS:
            values = [metrics.get(quality_key(quality, w)) for w in which]
            for col, value in enumerate(values, start=1):
                self.cells[(key, col)].setText(_pct(value))
            delta = _delta(values[1], values[2])
            cell = self.cells[(key, 4)]
            cell.setText("–" if delta is None else f"{delta:+.2f}")
            cell.setProperty("sign", "" if delta is None else "pos" if delta > 0 else "neg" if delta < 0 else "")
            _repolish(cell)
        self.title.setText(f"Results — {run_summary(run)}")
        search = run.search or {}
        lines = [f"Strategy {search.get('strategy', '?')}, result from the {search.get('select', '?')} step, "
                 f"seed {run.seed}" if search else f"No search, seed {run.seed}"]
        sizes = []
        if metrics.get("n_test"):
            sizes.append(f"{int(metrics['n_test']):,} test images")
        if metrics.get("evaluations"):
            sizes.append(f"{int(metrics['evaluations']):,} evaluations")
        if metrics.get("search_seconds") is not None:
            sizes.append(f"search {format_seconds(float(metrics['search_seconds']))}")
        if source:
            sizes.append(f"file {Path(source).name}")
        lines += [" · ".join(sizes), f"Computed: {describe(run.provenance)}"]
        if quality == FEATURE_COSINE:
            lines.insert(0, "No classifier: the numbers are the features' cosine similarity to the full-precision "
                            "model (%, mean over images), not top-1")
        self.details.setText("\n".join(line for line in lines if line))
        self.hint.setVisible(False)
        self.setProperty("filled", True)

    def _measure(self, quality: str) -> None:
        """Name what the numbers are (corner header, tooltips) for ``quality``."""
        self.quality = quality
        corner, what, points = MEASURES.get(quality, MEASURES[TOP1])
        self.headers[0].setText(corner)
        self.headers[0].setToolTip(what.capitalize() if corner else "")
        self.headers[4].setToolTip(f"After search − quantized, in {points}. Positive = the search recovered "
                                   f"{'accuracy' if quality == TOP1 else 'similarity to the FP model'}.")

    def value(self, row: str, column: str) -> str:
        """The text shown in a cell (tests): row 'test'|'heldout', column a header name."""
        return self.cells[(row, HEADERS.index(column))].text()


def run_summary(run: Any) -> str:
    """``digits-vit, omse W4A3, Guided (recommended)``: the run and the method that made it."""
    method = preset_label(run.search.get("preset")) if run.search else "no search"
    return f"{run.model_name}, {run.quant.quantizer} {run.quant.bits_label}, {method}"


def _pct(value: Any) -> str:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return "–"
    return f"{value:.2f}" if math.isfinite(value) else "–"


def _delta(base: Any, refined: Any) -> float | None:
    try:
        base, refined = float(base), float(refined)
    except (TypeError, ValueError):
        return None
    return refined - base if math.isfinite(base) and math.isfinite(refined) else None


def format_seconds(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _repolish(widget: QWidget) -> None:
    widget.style().unpolish(widget)
    widget.style().polish(widget)
