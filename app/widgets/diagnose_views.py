"""The three views of a diagnosis: blocks × point kinds, the most sensitive points, the what-if curve.

Each is a ``PlotCard`` (Save PNG / Save CSV) that draws an ``engine.diagnose.Diagnosis`` as measured;
like the engine's own result object, a view only selects, sorts and takes the difference of two
tables (refined − base), so its CSV holds exactly the numbers on screen.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QRectF, Qt
from PySide6.QtGui import QFont, QFontMetricsF
from PySide6.QtWidgets import QComboBox, QLabel, QSpinBox, QWidget

from engine.diagnose import Diagnosis

from app.widgets.plot_card import PlotCard, colour, empty_message, plot_widget, set_title
from app.widgets.plot_style import INK, style

NO_DATA = (225, 225, 225, 255)
SHORT_PLOT = 140     # the least height of the bars and the what-if, one over the other until the panel is short
ROW_PX = 18          # a bar's row in the sensitive points' chart: room for its name under the last one
SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")
EMPTY = "No diagnosis to show: press Diagnose, or open a run whose file holds one."
DIFFERENCE = "difference"
TABLE_INK = {"base": "#95a5a6", "refined": colour(0), "calibrated": colour(0)}
FP_INK, NONE_INK, RANDOM_INK = "#27ae60", "#7f8c8d", colour(1)


@dataclass(frozen=True)
class Metric:
    short: str              # the chooser's text
    label: str              # axis and colour-bar text
    help: str               # the card's note
    worse_when_high: bool   # colours run from good to bad in both directions


METRICS = {
    "sensitivity": Metric("sensitivity", "loss, only this point quantized",
                          "Sensitivity: the fitness loss with only this point quantized (every other point in FP). "
                          "Higher = the point does more damage by itself; it ranks the points.", True),
    "sqnr_db": Metric("SQNR", "SQNR (dB)", "SQNR of the point's fake-quant output against its input, in the fully "
                      "quantized model (dB; about 6 dB per bit). Lower = noisier.", False),
    "recovery": Metric("recovery", "loss recovered, only this point in FP",
                       "Recovery: the loss that goes away when only this point is left in FP. Negative after a "
                       "search: the other scales were tuned around its error.", True),
}


def table_label(name: str) -> str:
    return {"base": "base (before the search)", "refined": "refined (after the search)",
            "calibrated": "calibrated (no search)"}.get(name, name)


def display_power(values: np.ndarray) -> int:
    """The power of ten the cells are shown in, so that small losses read as 1.31 rather than 0.0131."""
    finite = np.abs(values[np.isfinite(values)])
    top = float(finite.max()) if finite.size else 0.0
    return int(math.floor(math.log10(top))) if 0 < top < 0.1 else 0


def format_value(value: float, power: int = 0) -> str:
    if math.isnan(value):
        return "–"
    if math.isinf(value):
        return "∞" if value > 0 else "−∞"
    shown = value / 10.0 ** power
    text = f"{shown:.1f}" if power == 0 and abs(shown) >= 10 else f"{shown:.2f}"
    return text.lstrip("-") if float(text) == 0 else text     # no "-0.00"


def power_label(power: int) -> str:
    return f" (×10{str(power).translate(SUPERSCRIPT)})" if power else ""


def _reversed(cmap: pg.ColorMap) -> pg.ColorMap:
    positions, colours = cmap.getStops(mode="byte")
    return pg.ColorMap(1.0 - positions[::-1], colours[::-1])


def _choices(combo: QComboBox, items: list[tuple[str, str]]) -> None:
    """Refill ``combo`` keeping the current choice when it is still offered."""
    current = combo.currentData()
    combo.blockSignals(True)
    combo.clear()
    for text, data in items:
        combo.addItem(text, data)
    combo.setCurrentIndex(max(combo.findData(current), 0) if current is not None else 0)
    combo.blockSignals(False)


class _DiagnosisCard(PlotCard):
    """A card over one Diagnosis; ``redraw`` draws the current one with the card's choices."""

    def __init__(self, name: str, body: QWidget, parent: QWidget | None = None) -> None:
        super().__init__(name, body, parent)
        self.diagnosis: Diagnosis | None = None

    def show_diagnosis(self, diagnosis: Diagnosis | None) -> None:
        self.diagnosis = diagnosis
        self.redraw()

    def _combo(self, name: str, tip: str) -> QComboBox:
        combo = QComboBox(objectName=name)
        combo.setToolTip(tip)
        combo.currentIndexChanged.connect(lambda _i: self.redraw())
        self.controls.addWidget(combo)
        return combo

    def redraw(self) -> None:
        raise NotImplementedError


class HeatmapView(_DiagnosisCard):
    """Point kinds (rows) × blocks (columns), coloured by one metric of one set of scales, or by the
    difference refined − base; every cell carries its number where the cells are wide enough."""

    def __init__(self, parent: QWidget | None = None) -> None:
        self.widget = pg.GraphicsLayoutWidget()
        self.widget.setObjectName("diagnoseHeatmapPlot")
        self.widget.setMinimumHeight(200)
        super().__init__("diagnoseHeatmap", self.widget, parent)
        self.metric_choice = self._combo("diagnoseMetric", "What the colours show.")
        _choices(self.metric_choice, [(metric.short, key) for key, metric in METRICS.items()])
        self.scales_choice = self._combo("diagnoseScales", "Which scales: before the search, after it, or the change.")
        self._numbers: list[pg.TextItem] = []     # each cell's number, shown where the cells have room
        self.redraw()

    def values(self) -> tuple[np.ndarray, str]:
        """Per point, what the cells show, and its title."""
        d, metric, scales = self.diagnosis, self.metric_choice.currentData(), self.scales_choice.currentData()
        names = list(d.tables)
        if scales == DIFFERENCE:
            after, before = d.tables[names[-1]], d.tables[names[0]]
            with np.errstate(invalid="ignore"):
                return getattr(after, metric) - getattr(before, metric), f"{names[-1]} − {names[0]} (the search's change)"
        return np.asarray(getattr(d.tables[scales], metric), float), table_label(scales)

    def redraw(self) -> None:
        layout = self.widget.ci
        layout.clear()
        plot = layout.addPlot(row=0, col=0)
        d = self.diagnosis
        if d is None:
            self._numbers = []
            style(plot, "Blocks × point kinds", "", "")
            empty_message(plot, EMPTY)
            self.note.setText("")
            self.set_rows([])
            return
        names = list(d.tables)
        _choices(self.scales_choice, [(n, n) for n in names]
                 + ([(f"{names[-1]} − {names[0]}", DIFFERENCE)] if len(names) > 1 else []))
        key, difference = self.metric_choice.currentData(), self.scales_choice.currentData() == DIFFERENCE
        metric = METRICS[key]
        values, what = self.values()
        grid, kinds = d.grid(values), d.kinds
        style(plot, "", "transformer block", "")
        power = display_power(grid)
        name = f"Change in {metric.short}" if difference else metric.short[0].upper() + metric.short[1:]
        set_title(plot, name + power_label(power), what)
        cmap, lo, hi = self._colours(grid / 10.0 ** power, metric, difference)
        self._numbers = self._draw_cells(plot, grid, kinds, cmap, lo, hi, power)
        plot.getViewBox().sigResized.connect(lambda box: self._fit_numbers(box, grid.shape[0]))
        bar = pg.ColorBarItem(values=(lo, hi), colorMap=cmap, interactive=False, width=14,
                              label=("change in " if difference else "") + metric.label + power_label(power))
        layout.addItem(bar, row=0, col=1)
        self.note.setText(("Blue: the search made it better; red: worse. " if difference else "")
                          + "Grey: no such point, or ∞ (the point changes nothing). Stem and head: in the bars.")
        self.widget.setToolTip(metric.help)
        self.set_rows([{"block": p.block, "kind": p.kind, "point": p.name, "metric": key,
                        "scales": DIFFERENCE if difference else self.scales_choice.currentData(), "value": float(v)}
                       for p, v in zip(d.points, values) if 0 <= p.block < d.n_blocks],
                      columns=("block", "kind", "point", "metric", "scales", "value"))

    @staticmethod
    def _colours(grid: np.ndarray, metric: Metric, difference: bool) -> tuple[pg.ColorMap, float, float]:
        """Diverging around 0 for a difference, else over the finite range; bad is always red / bright."""
        finite = grid[np.isfinite(grid)]
        if difference:
            cmap = pg.colormap.get("CET-D1")
            reach = float(np.abs(finite).max()) if finite.size and np.abs(finite).max() > 0 else 1.0
            lo, hi = -reach, reach
        else:
            cmap = pg.colormap.get("viridis")
            lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
            hi = hi if hi > lo else lo + 1.0
        return (cmap if metric.worse_when_high else _reversed(cmap)), lo, hi

    def _fit_numbers(self, box: pg.ViewBox, n_blocks: int) -> None:
        """Each cell's number where the cells are wide enough for it (many blocks in a narrow pane: colours only)."""
        room = box.width() / max(n_blocks, 1)
        widest = max((item.boundingRect().width() for item in self._numbers), default=0.0)
        for item in self._numbers:
            item.setVisible(room >= widest)

    @staticmethod
    def _draw_cells(plot: pg.PlotItem, grid: np.ndarray, kinds: list[str], cmap: pg.ColorMap, lo: float,
                    hi: float, power: int) -> list[pg.TextItem]:
        n_blocks, n_kinds = grid.shape
        finite = np.isfinite(grid)
        shown = np.where(finite, grid, 0.0) / 10.0 ** power
        norm = np.clip((np.where(finite, shown, lo) - lo) / (hi - lo), 0, 1)
        rgba = cmap.map(norm.ravel(), mode="byte").reshape(n_blocks, n_kinds, 4)
        rgba[~finite] = NO_DATA
        image = pg.ImageItem(np.ascontiguousarray(rgba))          # axis 0 = blocks = x, axis 1 = kinds = y
        image.setRect(QRectF(-0.5, -0.5, n_blocks, n_kinds))
        plot.addItem(image)
        font = QFont()
        font.setPointSize(8)
        numbers = []
        for (block, kind), value in np.ndenumerate(grid):
            r, g, b = rgba[block, kind, :3].astype(float)
            ink = "#ffffff" if 0.299 * r + 0.587 * g + 0.114 * b < 140 else INK
            text = pg.TextItem(format_value(value, power), color=ink, anchor=(0.5, 0.5))
            text.setFont(font)
            text.setPos(block, kind)
            plot.addItem(text)
            numbers.append(text)
        plot.setMouseEnabled(x=False, y=False)
        plot.hideButtons()
        plot.showGrid(x=False, y=False)
        plot.getViewBox().invertY(True)
        plot.getAxis("bottom").setTicks([[(j, str(j)) for j in range(n_blocks)]])
        left = plot.getAxis("left")
        left.setTicks([list(enumerate(kinds))])
        left.setWidth(max(QFontMetricsF(left.style["tickFont"] or left.font()).horizontalAdvance(k) for k in kinds) + 16)
        plot.setRange(xRange=(-0.5, n_blocks - 0.5), yRange=(-0.5, n_kinds - 0.5), padding=0)
        return numbers


class SensitiveBarsView(_DiagnosisCard):
    """The N most sensitive points, most sensitive on top, with each set of scales' bar side by side."""

    def __init__(self, parent: QWidget | None = None) -> None:
        self.widget = plot_widget("diagnoseBarsPlot")
        self.widget.setMinimumHeight(SHORT_PLOT)
        super().__init__("diagnoseBars", self.widget, parent)
        self.controls.addWidget(QLabel("ranked by"))
        self.ranked_by = self._combo("diagnoseRankedBy", "Whose sensitivity orders the points.")
        self.count = QSpinBox(objectName="diagnoseCount", minimum=1, maximum=200, value=12, prefix="show ")
        self.count.setToolTip("How many points to show (as many as the plot's height has room for).")
        self.count.valueChanged.connect(lambda _v: self.redraw())
        self.controls.addWidget(self.count)
        self._fit = 0                      # the rows that fitted when last drawn
        self.widget.getPlotItem().getViewBox().sigResized.connect(lambda _box: self._refit())
        self.redraw()

    def _rows_that_fit(self) -> int:
        """Rows whose names can stand one under the other in the plot's height (all of them before it has one)."""
        height = self.widget.getPlotItem().getViewBox().height()
        return max(1, int(height // ROW_PX)) if height > ROW_PX else self.count.maximum()

    def _refit(self) -> None:
        if self.diagnosis is not None and self._rows_that_fit() != self._fit:
            self.redraw()

    def redraw(self) -> None:
        plot = self.widget.getPlotItem()
        plot.clear()
        style(plot, "Most sensitive points", METRICS["sensitivity"].label, "")
        d = self.diagnosis
        if d is None:
            empty_message(plot, EMPTY)
            self.note.setText("")
            self.set_rows([])
            return
        names = list(d.tables)
        _choices(self.ranked_by, [(n, n) for n in reversed(names)])
        ranked_by = self.ranked_by.currentData()
        wanted = min(self.count.value(), len(d.points))
        self._fit = self._rows_that_fit()
        order = d.most_sensitive(min(wanted, self._fit), ranked_by)
        thickness = 0.8 / len(names)
        for j, (name, table) in enumerate(d.tables.items()):
            offset = (j - (len(names) - 1) / 2) * thickness
            plot.addItem(pg.BarGraphItem(x0=0, x1=table.sensitivity[order], y=np.arange(len(order)) + offset,
                                         height=thickness * 0.9, brush=pg.mkBrush(TABLE_INK.get(name, colour(j))),
                                         pen=pg.mkPen(None)))
        plot.getViewBox().invertY(True)
        left = plot.getAxis("left")
        left.setTicks([[(i, d.points[p].name) for i, p in enumerate(order)]])
        left.setWidth(max(140, 7 * max(len(d.points[p].name) for p in order)))
        plot.setYRange(-0.6, len(order) - 0.4, padding=0)
        plot.enableAutoRange(x=True)
        plot.setMouseEnabled(x=True, y=False)
        keys = " &nbsp; ".join(f'<span style="color:{TABLE_INK.get(n, colour(j))}">■ {n}</span>'
                               for j, n in enumerate(names))
        set_title(plot, f"The {len(order)} most sensitive points", f"ranked by the {ranked_by} scales")
        cut = (f" Showing {len(order)} of {wanted}: a taller window shows more." if len(order) < wanted else "")
        self.note.setText(f"{keys} &nbsp; Bars: loss with only this point quantized (higher = more damage "
                          f"alone).{cut}")
        self.widget.setToolTip(METRICS["sensitivity"].help)
        self.set_rows(self._rows(d, order), columns=("rank", "point", "where", "kind",
                                                      *(f"sensitivity_{n}" for n in names)))

    @staticmethod
    def _rows(d: Diagnosis, order: list[int]) -> list[dict[str, Any]]:
        return [{"rank": rank + 1, "point": d.points[p].name, "where": d.points[p].where(d.n_blocks),
                 "kind": d.points[p].kind, **{f"sensitivity_{n}": float(t.sensitivity[p]) for n, t in d.tables.items()}}
                for rank, p in enumerate(order)]


class WhatIfView(_DiagnosisCard):
    """Held-out top-1 with the K most sensitive points raised, against K random points, over K or over
    the activation points' mean bit-width."""

    def __init__(self, parent: QWidget | None = None) -> None:
        self.widget = plot_widget("diagnoseWhatIfPlot")
        self.widget.setMinimumHeight(SHORT_PLOT)
        super().__init__("diagnoseWhatIf", self.widget, parent)
        self.axis_choice = self._combo("diagnoseWhatIfAxis", "What the horizontal axis counts.")
        _choices(self.axis_choice, [("points raised (K)", "k"), ("mean activation bits", "bits")])
        self.redraw()

    def redraw(self) -> None:
        plot = self.widget.getPlotItem()
        plot.clear()
        by_bits = self.axis_choice.currentData() == "bits"
        style(plot, "What-if bit-widths", "mean bit-width of the activation points" if by_bits
              else "K points raised", "top-1 (%)")
        d = self.diagnosis
        w = d.whatif if d is not None else None
        if w is None:
            empty_message(plot, EMPTY if d is None else
                          "This diagnosis has no what-if (python -m engine diagnose --raise 1,2,4,8,16).")
            self.note.setText("")
            self.set_rows([])
            return
        positions = np.arange(len(w.k), dtype=float)
        x_top = w.mean_act_bits_top if by_bits else positions
        x_random = w.mean_act_bits_random if by_bits else positions
        for x, draws in zip(x_random, w.top1_random):
            plot.plot(np.full(len(draws), x), draws, pen=None, symbol="o", symbolSize=5,
                      symbolBrush=pg.mkBrush(255, 255, 255, 0), symbolPen=pg.mkPen(RANDOM_INK, width=1))
        plot.plot(x_random, w.top1_random_mean, pen=pg.mkPen(RANDOM_INK, width=2, style=Qt.PenStyle.DashLine),
                  symbol="s", symbolSize=7, symbolBrush=RANDOM_INK, symbolPen=None)
        plot.plot(x_top, w.top1_top, pen=pg.mkPen(colour(0), width=2.4), symbol="o", symbolSize=8,
                  symbolBrush=colour(0), symbolPen=None)
        for value, ink in ((d.fp_top1, FP_INK), (w.top1_none, NONE_INK)):
            plot.addItem(pg.InfiniteLine(value, angle=0, pen=pg.mkPen(ink, width=1.5, style=Qt.PenStyle.DotLine)))
        if not by_bits:
            plot.getAxis("bottom").setTicks([[(i, str(int(k))) for i, k in enumerate(w.k)]])
        values = np.concatenate([w.top1_top, w.top1_random.ravel(), [d.fp_top1, w.top1_none]])
        span = max(float(values.max() - values.min()), 1.0)
        plot.setYRange(float(values.min()) - 0.08 * span, min(float(values.max()) + 0.08 * span, 100.5), padding=0)
        plot.enableAutoRange(x=True)
        set_title(plot, f"K points raised to {w.to_bits} bits", f"held-out top-1, {d.n_heldout:,} images")
        self.note.setText(f'<span style="color:{colour(0)}">━ K most sensitive ({w.ranked_by})</span> &nbsp; '
                          f'<span style="color:{RANDOM_INK}">╍ K random: the mean, and a circle per draw '
                          f'({w.top1_random.shape[1]} per K)</span> &nbsp; '
                          f'<span style="color:{FP_INK}">┈ FP {d.fp_top1:.1f}</span> &nbsp; '
                          f'<span style="color:{NONE_INK}">┈ none raised {w.top1_none:.1f}</span>')
        self.widget.setToolTip(f"Held-out top-1 with the K points ranked most sensitive raised to {w.to_bits} bits "
                               "(calibrated there by the same quantizer), against as many points drawn at random. "
                               "A hint for mixed precision, measured.")
        self.set_rows(self._rows(d))

    @staticmethod
    def _rows(d: Diagnosis) -> list[dict[str, Any]]:
        w = d.whatif
        return [{"k": int(k), "to_bits": w.to_bits, "ranked_by": w.ranked_by, "heldout_top1_top": float(top),
                 "heldout_top1_random_mean": float(mean),
                 **{f"heldout_top1_random_{i + 1}": float(v) for i, v in enumerate(draws)},
                 "mean_act_bits_top": float(bits_top), "mean_act_bits_random": float(bits_random),
                 "heldout_top1_none": w.top1_none, "heldout_fp_top1": d.fp_top1}
                for k, top, mean, draws, bits_top, bits_random in zip(
                    w.k, w.top1_top, w.top1_random_mean, w.top1_random, w.mean_act_bits_top, w.mean_act_bits_random)]


def summary(d: Diagnosis) -> str:
    """One line over the views: what was diagnosed, on what, and the loss of every table."""
    tables = ", ".join(f"{name}: loss {t.loss_all:.4g}, held-out {t.top1_all:.1f}%" for name, t in d.tables.items())
    return (f"{d.model_name} · {d.quantizer} {d.bits} · {len(d.points)} points · {tables} (FP {d.fp_top1:.1f}%) · "
            f"{d.n_calibration} calibration / {d.n_heldout:,} held-out images · {d.seconds:.0f} s")
