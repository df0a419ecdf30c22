"""The results card: what came out of a run, in one glance (FP / base / refined top-1, time, device)."""
from __future__ import annotations

import math
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFrame, QGridLayout, QLabel, QVBoxLayout, QWidget

from engine.search.config import preset_label

ROWS = (("test", "Test", "fp_top1", "base_top1", "refined_top1"),
        ("heldout", "Held-out", "heldout_fp_top1", "heldout_base_top1", "heldout_refined_top1"))
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
        outer.addWidget(self.title)
        self.hint = QLabel("Top-1 accuracy (%) of the full-precision, quantized and refined model appears here "
                           "when a run finishes, or when you open a run file.", objectName="hint")
        self.hint.setWordWrap(True)
        outer.addWidget(self.hint)
        grid_holder = QWidget()
        self.grid = QGridLayout(grid_holder)
        self.grid.setContentsMargins(0, 2, 0, 2)
        self.grid.setHorizontalSpacing(18)
        self.grid.setVerticalSpacing(2)
        self.cells: dict[tuple[str, int], QLabel] = {}
        for col, (text, tip) in enumerate(zip(HEADERS, TIPS)):
            header = QLabel(text, objectName="cardHeader")
            header.setToolTip(tip)
            header.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            self.grid.addWidget(header, 0, col)
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
        outer.addWidget(grid_holder)
        self.details = QLabel("", objectName="cardDetails")
        self.details.setWordWrap(True)
        self.details.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        outer.addWidget(self.details)
        self.clear()

    def clear(self) -> None:
        for cell in self.cells.values():
            cell.setText("–")
            cell.setProperty("sign", "")
            _repolish(cell)
        self.title.setText("Results")
        self.details.setText("")
        self.hint.setVisible(True)
        self.setProperty("filled", False)

    def show_run(self, run: Any, source: str = "") -> None:
        metrics = dict(run.metrics or {})
        for key, _label, fp, base, refined in ROWS:
            values = [metrics.get(fp), metrics.get(base), metrics.get(refined)]
            for col, value in enumerate(values, start=1):
                self.cells[(key, col)].setText(_pct(value))
            delta = _delta(values[1], values[2])
            cell = self.cells[(key, 4)]
            cell.setText("–" if delta is None else f"{delta:+.2f}")
            cell.setProperty("sign", "" if delta is None else "pos" if delta > 0 else "neg" if delta < 0 else "")
            _repolish(cell)
        quant = run.quant
        self.title.setText(f"Results — {run.model_name}, {quant.quantizer} {quant.bits_label}")
        parts = []
        if metrics.get("n_test"):
            parts.append(f"{int(metrics['n_test']):,} test images")
        if metrics.get("evaluations"):
            parts.append(f"{int(metrics['evaluations']):,} candidate evaluations")
        if metrics.get("search_seconds") is not None:
            parts.append(f"search {format_seconds(float(metrics['search_seconds']))}")
        if metrics.get("device"):
            parts.append(f"on {metrics['device']}")
        search = run.search or {}
        if search:
            parts.append(f"{preset_label(search.get('preset'))} ({search.get('strategy', '?')}), result from {search.get('select', '?')} step, "
                         f"seed {run.seed}")
        if source:
            parts.append(f"file: {source}")
        self.details.setText(" · ".join(parts))
        self.hint.setVisible(False)
        self.setProperty("filled", True)

    def value(self, row: str, column: str) -> str:
        """The text shown in a cell (tests): row 'test'|'heldout', column a header name."""
        return self.cells[(row, HEADERS.index(column))].text()


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
