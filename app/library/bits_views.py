"""Accuracy vs bit-width and the quantizer × bit-width matrix: the two views over the whole library.

Both draw ``engine.library.accuracy_vs_bits`` points (library rows averaged over seeds) of one
(model, preset) setting at a time; averaging across settings would hide what the user compares.
"""
from __future__ import annotations

import math
from dataclasses import replace
from typing import Sequence

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QRectF, Qt, Signal
from PySide6.QtGui import QFont
from PySide6.QtWidgets import QComboBox, QLabel, QWidget

from engine.library import BitsMatrix, BitsPoint, LibraryRow, accuracy_vs_bits, bits_matrix, by_setting
from engine.search.config import PRESET_ALIASES, preset_label

from app.widgets.plot_card import PlotCard, colour, empty_message, plot_widget, set_title
from app.widgets.plot_style import style

Setting = tuple[str, "str | None"]


def _setting_label(setting: Setting) -> str:
    model, preset = setting
    return f"{model} · {preset_label(preset) if preset else 'no search'}"


def _bits_order(points: Sequence[BitsPoint]) -> list[str]:
    return list(dict.fromkeys(p.bits for p in sorted(points, key=lambda p: (p.w_bits, p.a_bits, p.bits))))


class _SettingCard(PlotCard):
    """A card with a "model · preset" chooser, shown when the library holds more than one setting."""

    def __init__(self, name: str, parent: QWidget | None = None) -> None:
        self.widget = plot_widget(f"{name}Plot")
        self.plot = self.widget.getPlotItem()
        super().__init__(name, self.widget, parent)
        self.setting = QComboBox(objectName=f"{name}Setting")
        self.setting.setToolTip("Model and search method (preset): runs of different settings are never averaged "
                                "together.")
        self.setting.currentIndexChanged.connect(lambda _i: self.redraw())
        self.controls.addWidget(self.setting)
        self.settings: dict[Setting, list[BitsPoint]] = {}

    def show_rows(self, rows: Sequence[LibraryRow]) -> None:
        """Aggregate the library's rows (engine) and draw the chosen setting."""
        # an alias (a run file's ``default``) is the same method as its name (``guided``): one setting
        rows = [replace(row, preset=PRESET_ALIASES.get(row.preset, row.preset)) for row in rows]
        self.settings = by_setting(accuracy_vs_bits(rows))
        current = self.setting.currentData()
        self.setting.blockSignals(True)
        self.setting.clear()
        # Searched settings first (the point of the view), then by size.
        order = sorted(self.settings, key=lambda s: (s[1] is None, -len(self.settings[s]), str(s)))
        for setting in order:
            self.setting.addItem(_setting_label(setting), setting)
        index = self.setting.findData(current) if current is not None else -1
        self.setting.setCurrentIndex(max(index, 0))
        self.setting.setVisible(len(order) > 1)
        self.setting.blockSignals(False)
        self.redraw()

    def points(self) -> list[BitsPoint]:
        setting = self.setting.currentData()
        return self.settings.get(setting, []) if setting is not None else []

    def redraw(self) -> None:
        raise NotImplementedError


class AccuracyVsBitsView(_SettingCard):
    """One line per quantizer over bit-widths: refined solid, base dashed, min–max bars over seeds."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("accuracyVsBits", parent)
        self.widget.setToolTip("Test top-1 of every quantizer at every bit-width. Solid: after the search; dashed: "
                               "the base quantizer before it. Points are the mean over seeds; the bars span the "
                               "lowest to the highest seed.")
        self.redraw()

    def redraw(self) -> None:
        plot = self.plot
        plot.clear()
        if plot.legend is None:
            plot.addLegend(offset=(-10, -10), labelTextSize="9pt", colCount=1)
            plot.legend.setBrush(pg.mkBrush(255, 255, 255, 220))
            plot.legend.setPen(pg.mkPen("#c5ccd6"))
        legend = plot.legend
        legend.clear()
        style(plot, "Test top-1 vs bit-width", "bit-width (weights W, activations A)", "test top-1 (%)")
        points = self.points()
        if not points:
            empty_message(plot, "No readable run files in the workspace yet: run a sweep.")
            self.note.setText("Mean over seeds per quantizer and bit-width.")
            self.set_rows([])
            return
        bits = _bits_order(points)
        quantizers = list(dict.fromkeys(p.quantizer for p in points))
        step = 0.08 if len(quantizers) > 1 else 0.0
        low, high = math.inf, -math.inf
        for qi, quantizer in enumerate(quantizers):
            mine = sorted((p for p in points if p.quantizer == quantizer), key=lambda p: bits.index(p.bits))
            x = np.array([bits.index(p.bits) for p in mine], float) + (qi - (len(quantizers) - 1) / 2) * step
            ink = colour(qi)
            for kind, dash, symbol in (("base", Qt.PenStyle.DashLine, "t"), ("refined", Qt.PenStyle.SolidLine, "o")):
                keep = [getattr(p, f"{kind}_mean") is not None for p in mine]
                if not any(keep):
                    continue
                xs = x[keep]
                mean = np.array([getattr(p, f"{kind}_mean") for p, k in zip(mine, keep) if k])
                lo = np.array([getattr(p, f"{kind}_min") for p, k in zip(mine, keep) if k])
                hi = np.array([getattr(p, f"{kind}_max") for p, k in zip(mine, keep) if k])
                low, high = min(low, lo.min()), max(high, hi.max())
                width = 2.4 if kind == "refined" else 1.6
                plot.addItem(pg.ErrorBarItem(x=xs, y=mean, top=hi - mean, bottom=mean - lo, beam=0.06,
                                             pen=pg.mkPen(ink, width=1.2)))
                name = f"{quantizer}" if kind == "refined" else None
                plot.plot(xs, mean, pen=pg.mkPen(ink, width=width, style=dash), symbol=symbol, symbolSize=8,
                          symbolBrush=ink if kind == "refined" else "w", symbolPen=pg.mkPen(ink, width=1.4), name=name)
        legend.addItem(pg.PlotDataItem(pen=pg.mkPen("#555555", width=2.4), symbol="o", symbolBrush="#555555",
                                       symbolPen="#555555"), "after the search")
        legend.addItem(pg.PlotDataItem(pen=pg.mkPen("#555555", width=1.6, style=Qt.PenStyle.DashLine),
                                       symbol="t", symbolBrush="w", symbolPen="#555555"), "base quantizer")
        plot.getAxis("bottom").setTicks([list(enumerate(bits))])
        span = max(high - low, 1.0)
        plot.setXRange(-0.5, len(bits) - 0.5, padding=0)
        # Room at the bottom for the legend (low bit-widths sit left, so the lower right is free).
        plot.setYRange(max(0.0, low - 0.35 * span), min(high + 0.07 * span, 103.0), padding=0)
        model, preset = self.setting.currentData()
        seeds = sorted({p.n for p in points})
        set_title(plot, "Test top-1 vs bit-width",
                  f"{_setting_label((model, preset))} · mean over {'/'.join(map(str, seeds))} seed(s), "
                  f"bars: lowest to highest seed")
        self.note.setText(f"{len(points)} points from {sum(p.n for p in points)} runs.")
        self.set_rows([p.to_row() for p in points])


VALUES = (("refined_mean", "refined top-1"), ("delta_mean", "Δ refined − base"), ("base_mean", "base top-1"))
SEQUENTIAL = pg.ColorMap([0.0, 1.0], [(240, 246, 252), (33, 102, 172)])
DIVERGING = pg.ColorMap([0.0, 0.5, 1.0], [(202, 0, 32), (247, 247, 247), (5, 113, 176)])
NO_RUN = (230, 230, 230, 255)


class BitsMatrixView(_SettingCard):
    """Quantizer × bit-width cells coloured by a value; double-clicking a cell selects its runs."""

    cell_activated = Signal(object)      # tuple of run file names

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("bitsMatrix", parent)
        self.value = QComboBox(objectName="bitsMatrixValue")
        for key, label in VALUES:
            self.value.addItem(label, key)
        self.value.setToolTip("What colours the cells: mean refined top-1, or what the search won back (Δ).")
        self.value.currentIndexChanged.connect(lambda _i: self.redraw())
        self.controls.insertWidget(0, QLabel("Colour by"))
        self.controls.insertWidget(1, self.value)
        self.widget.setToolTip("Mean over seeds per quantizer and bit-width. Double-click a cell to select its "
                               "runs in the library.")
        self.plot.setMouseEnabled(x=False, y=False)
        self.plot.hideButtons()
        self.plot.getViewBox().invertY(True)
        self.image = pg.ImageItem()
        self.matrix: BitsMatrix | None = None
        self.widget.scene().sigMouseClicked.connect(self._clicked)
        self.redraw()

    def redraw(self) -> None:
        plot = self.plot
        plot.clear()
        style(plot, "Quantizer × bit-width", "bit-width", "")
        plot.getAxis("left").setWidth(90)
        points = self.points()
        key = self.value.currentData() if hasattr(self, "value") else "refined_mean"
        if not points:
            self.matrix = None
            empty_message(plot, "No readable run files in the workspace yet.")
            self.set_rows([])
            return
        m = self.matrix = bits_matrix(points, key)
        nq, nb = len(m.quantizers), len(m.bits)
        finite = m.values[np.isfinite(m.values)]
        if key == "delta_mean":
            reach = max(float(np.abs(finite).max()) if finite.size else 1.0, 0.5)
            cmap, lo, hi = DIVERGING, -reach, reach
        else:
            cmap = SEQUENTIAL
            lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
            hi = hi if hi > lo else lo + 1.0
        norm = np.clip((np.nan_to_num(m.values, nan=lo) - lo) / (hi - lo), 0, 1)
        rgba = cmap.map(norm.ravel(), mode="byte").reshape(nq, nb, 4)
        rgba[~np.isfinite(m.values)] = NO_RUN
        self.image = pg.ImageItem(np.ascontiguousarray(rgba.transpose(1, 0, 2)))   # ImageItem: x first
        self.image.setRect(QRectF(-0.5, -0.5, nb, nq))
        plot.addItem(self.image)
        font = QFont()
        font.setPointSize(11 if nb * nq <= 30 else 9)
        for i in range(nq):
            for j in range(nb):
                v = m.values[i, j]
                text = "no run" if not math.isfinite(v) else (f"{v:+.2f}" if key == "delta_mean" else f"{v:.2f}")
                dark = math.isfinite(v) and (key != "delta_mean" and norm[i, j] > 0.55 or
                                             key == "delta_mean" and abs(norm[i, j] - 0.5) > 0.3)
                n = len(m.files[i][j])
                label = pg.TextItem(html=f'<div style="text-align:center">{text}<br>'
                                         f'<span style="font-size:8pt">{n} run{"s" if n != 1 else ""}</span></div>'
                                    if n else text, color="w" if dark else "#222222", anchor=(0.5, 0.5))
                label.setColor("w" if dark else "#222222")
                label.setFont(font)
                label.setPos(j, i)
                plot.addItem(label)
        plot.getAxis("bottom").setTicks([list(enumerate(m.bits))])
        plot.getAxis("left").setTicks([list(enumerate(m.quantizers))])
        plot.getAxis("left").setLabel("quantizer", **{"font-size": "10pt"})
        plot.showGrid(x=False, y=False)
        plot.setRange(xRange=(-0.5, nb - 0.5), yRange=(-0.5, nq - 0.5), padding=0.02)
        model, preset = self.setting.currentData()
        label = dict(VALUES)[key]
        set_title(plot, f"Quantizer × bit-width: {label}",
                  f"{_setting_label((model, preset))} · mean over seeds · double-click a cell for its runs")
        self.note.setText(f"Colour scale {lo:.2f} … {hi:.2f}" + (" (red: lost, blue: won back)"
                                                                  if key == "delta_mean" else ""))
        self.set_rows(m.rows())

    def _clicked(self, event) -> None:
        if not event.double() or self.matrix is None:
            return
        pos = self.plot.getViewBox().mapSceneToView(event.scenePos())
        self.activate_cell(int(round(pos.y())), int(round(pos.x())))

    def activate_cell(self, quantizer_index: int, bits_index: int) -> tuple[str, ...]:
        """Emit the run files behind one cell (row = quantizer, column = bit-width)."""
        m = self.matrix
        if m is None or not (0 <= quantizer_index < len(m.quantizers) and 0 <= bits_index < len(m.bits)):
            return ()
        found = m.files[quantizer_index][bits_index]
        if found:
            self.cell_activated.emit(found)
        return found
