"""Live plots (pyqtgraph), redrawn from a RunState on the GUI timer, never once per event.

- Loss per candidate evaluation, with the best-so-far line, the base model's loss and dashed lines
  between block steps.
- Held-out top-1 per block: one bar per transformer block (its latest block step), in the order the
  search visits them (last to first), with the full-precision and the base (quantized, unrefined)
  accuracy as reference lines.
- The population of the block under search, after each evaluation: its best, median and worst
  member's loss (a band between best and worst); for the guided search, the current point and the
  cycle's children (for CMA-ES, the best so far and the generation).
"""
from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtGui import QColor, QFont
from PySide6.QtWidgets import QGridLayout, QWidget

from engine.search.config import GUIDED

from app.run.state import RunState
from app.widgets.plot_style import INK, style

LOSS = QColor(52, 101, 164, 110)
BEST = "#c0392b"
BASE = "#7f8c8d"
FP = "#27ae60"
BOUNDARY = QColor(140, 140, 140, 110)
ACC_TITLE = "Held-out top-1 after each block's step"
# A model without a classifier (num_classes=0) is measured by its features' cosine to the FP model's.
ACC_TITLES = {"top1": (ACC_TITLE, "top-1 (%)"),
              "feature_cosine": ("Held-out feature cosine after each block step", "feature cosine (%)")}
WON = "#2e86c1"      # a block step at or above the base accuracy
LOST = "#e67e22"     # below it
POP_BEST, POP_MEDIAN, POP_WORST = "#1e8449", "#6c3483", "#a569bd"
POP_AXIS_PX = 56     # losses of one block step need few digits: the room goes to the title

def population_words(strategy: str) -> str:
    """What the population plot shows for a strategy: the evolutions keep a population; guided shows the
    point it stands on and the cycle's children, CMA-ES its best so far and the generation."""
    if strategy == "cmaes":
        return "Best + generation"
    if strategy in GUIDED:
        return "Point + children"
    return "Population"


def population_key(where: str) -> str:
    return (f'<br><span style="font-size:9pt">{where}: <span style="color:{POP_BEST}">━ best</span> '
            f'<span style="color:{POP_MEDIAN}">━ median</span> <span style="color:{POP_WORST}">╍ worst</span></span>')


class RangeKeeper:
    """Keeps a plot's view range still while the data stays inside it and fills a fair part of it.

    pyqtgraph's auto-range moves the view on every new point, which re-lays out the axis ticks
    each redraw; this moves it only when needed. A user's zoom or pan switches it off until
    ``reset()`` (a new run), and the plot's own "A" button gives back pyqtgraph's auto-range.
    """

    def __init__(self, plot: pg.PlotItem) -> None:
        self.view = plot.getViewBox()
        self.view.disableAutoRange()
        self.user = False
        self.view.sigRangeChangedManually.connect(self._manual)

    def _manual(self, *_args) -> None:
        self.user = True

    def reset(self) -> None:
        self.user = False
        self.view.disableAutoRange()

    def fit(self, x: tuple[float, float] | None, y: tuple[float, float] | None) -> None:
        if self.user or any(self.view.autoRangeEnabled()):
            return
        current = self.view.viewRange()
        new = {}
        for key, wanted, (c0, c1) in (("xRange", x, current[0]), ("yRange", y, current[1])):
            if wanted is None or not all(map(math.isfinite, wanted)):
                continue
            lo, hi = wanted
            span = max(hi - lo, abs(hi) * 1e-2, 1e-9)   # a flat curve gets ticks of at most 4 significant digits
            if not (c0 <= lo and hi <= c1 and (c1 - c0) <= 2.5 * span):
                pad = 0.0 if key == "xRange" else 0.12 * span
                new[key] = (lo - pad, hi + pad)
        if new:
            self.view.setRange(padding=0, **new)


class PlotsPanel(QWidget):
    """Three plots; ``update_from(state)`` redraws from the latest state."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("plotsPanel")
        layout = QGridLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(6)

        self.loss_widget = pg.PlotWidget(objectName="lossPlot")
        self.loss_plot = self.loss_widget.getPlotItem()
        style(self.loss_plot, "Fitness loss of each candidate (lower = closer to full precision)",
                    "candidate evaluation", "loss")
        self.loss_widget.setToolTip("Every dot is one candidate set of scales the search tried. The red line is the "
                                    "best loss so far; grey dashed lines separate block steps; the flat grey line "
                                    "is the loss of the quantized model before the search.")
        # Top right: a run fills the plot from the left and its losses fall, so that corner stays empty.
        self.loss_legend = legend = self.loss_plot.addLegend(offset=(-10, 10), labelTextSize="9pt", colCount=2)
        legend.setBrush(pg.mkBrush(255, 255, 255, 200))
        self.boundaries = pg.PlotDataItem(pen=pg.mkPen(BOUNDARY, width=1, style=pg.QtCore.Qt.PenStyle.DashLine),
                                          connect="pairs")
        self.loss_plot.addItem(self.boundaries, ignoreBounds=True)
        self.base_loss_line = pg.InfiniteLine(angle=0, pen=pg.mkPen(BASE, width=1.5, style=pg.QtCore.Qt.PenStyle.DotLine))
        self.base_loss_line.setVisible(False)
        self.loss_plot.addItem(self.base_loss_line)
        # Candidates as a thin line, not symbols: a curve is several times cheaper to update and paint.
        self.loss_points = self.loss_plot.plot([], [], pen=pg.mkPen(LOSS, width=1), name="candidate loss")
        self.best_curve = self.loss_plot.plot([], [], pen=pg.mkPen(BEST, width=2.2), name="best so far",
                                              stepMode=None)
        legend.addItem(pg.PlotDataItem(pen=pg.mkPen(BASE, width=1.5, style=pg.QtCore.Qt.PenStyle.DotLine)),
                       "before the search")
        legend.addItem(pg.PlotDataItem(pen=pg.mkPen(BOUNDARY, width=1, style=pg.QtCore.Qt.PenStyle.DashLine)),
                       "next block step")

        self.acc_widget = pg.PlotWidget(objectName="accuracyPlot")
        self.acc_plot = self.acc_widget.getPlotItem()
        style(self.acc_plot, ACC_TITLE, "transformer block, in the order searched", "top-1 (%)")
        self.acc_widget.setToolTip("Accuracy on held-out images (never the test split) measured after the search "
                                   "finished a block. Green line: full-precision model; grey: quantized model "
                                   "before the search. Blue bars: at or above the grey line (accuracy won back); "
                                   "orange: below it.")
        self.acc_plot.setMouseEnabled(x=False, y=True)
        self.bars = pg.BarGraphItem(x=[], height=[], width=0.7, brush=WON)
        self.acc_plot.addItem(self.bars)
        self.fp_line = pg.InfiniteLine(angle=0, pen=pg.mkPen(FP, width=2))
        self.base_line = pg.InfiniteLine(angle=0, pen=pg.mkPen(BASE, width=2, style=pg.QtCore.Qt.PenStyle.DashLine))
        for line in (self.fp_line, self.base_line):
            line.setVisible(False)
            self.acc_plot.addItem(line)
        self._legend_values: tuple = ()
        self.bar_labels: list[pg.TextItem] = []

        self.pop_widget = pg.PlotWidget(objectName="populationPlot")
        self.pop_plot = self.pop_widget.getPlotItem()
        style(self.pop_plot, "Population", "evaluation within this block step", "loss")
        self.pop_plot.getAxis("left").setWidth(POP_AXIS_PX)
        self.pop_widget.setToolTip("The candidate scale sets kept for the block under search, after each evaluation: "
                                   "the loss of the best, the median and the worst member (shaded between best and "
                                   "worst). A step starts with every member equal; a candidate better than the "
                                   "worst replaces it, a worse one is dropped at once, so lines that lie on top of "
                                   "each other mean those members share one loss. A narrowing band means the "
                                   "population converges. With the guided search (the default) the members are "
                                   "the block's current scales and the cycle's candidates, one per step size "
                                   "along the gradient's direction.")
        # The key is in the title (as in the accuracy plot): a legend box would sit on the flat lines.
        self.pop_max = self.pop_plot.plot([], [], pen=pg.mkPen(POP_WORST, width=2.5,
                                                               style=pg.QtCore.Qt.PenStyle.DashLine))
        self.pop_median = self.pop_plot.plot([], [], pen=pg.mkPen(POP_MEDIAN, width=2))
        self.pop_min = self.pop_plot.plot([], [], pen=pg.mkPen(POP_BEST, width=1.5))
        self.pop_band = pg.FillBetweenItem(self.pop_min, self.pop_max, brush=pg.mkBrush(142, 68, 173, 40))
        self.pop_plot.addItem(self.pop_band)
        for z, curve in enumerate((self.pop_max, self.pop_median, self.pop_min), start=1):
            curve.setZValue(z)             # the best member on top: it is the one that moves first
        self.pop_note = pg.TextItem("", color=BASE, anchor=(0.5, 0.5))
        self.pop_plot.addItem(self.pop_note)

        layout.addWidget(self.loss_widget, 0, 0, 1, 2)
        layout.addWidget(self.acc_widget, 1, 0)
        layout.addWidget(self.pop_widget, 1, 1)
        layout.setRowStretch(0, 5)
        layout.setRowStretch(1, 4)
        layout.setColumnStretch(0, 3)
        layout.setColumnStretch(1, 2)
        self._drawn_version = -1
        self._n_blocks = -1
        self._pop_key: tuple = ()
        self._acc_key: tuple = ()
        self._state_id = 0
        self._n_edges = -1
        self._drawn_at = 0.0
        self.loss_range = RangeKeeper(self.loss_plot)
        self.pop_range = RangeKeeper(self.pop_plot)

    # ---------------------------------------------------------------- redraw

    MIN_INTERVAL_S = 0.1   # plots redraw at 10 Hz at most during a search (text and progress at 20 Hz)

    def update_from(self, state: RunState, force: bool = False) -> bool:
        """Redraw if the state changed since the last call; returns whether it drew."""
        if state.version == self._drawn_version and id(state) == self._state_id:
            return False
        now = time.monotonic()
        if not force and now - self._drawn_at < self.MIN_INTERVAL_S and id(state) == self._state_id:
            return False
        self._drawn_version, self._drawn_at = state.version, now
        if id(state) != self._state_id:           # a new run or a file: fit the views again
            self._state_id = id(state)
            self._n_edges = -1
            self.loss_range.reset()
            self.pop_range.reset()
        self._draw_loss(state)
        self._draw_accuracy(state)
        self._draw_population(state)
        return True

    def _draw_loss(self, state: RunState) -> None:
        x, loss, best = state.eval_number.view(), state.loss.view(), state.best_loss.view()
        self.loss_points.setData(x, loss)
        self.best_curve.setData(x, best)
        edges = state.block_boundaries()
        if len(edges) != self._n_edges:           # lines reach far beyond any loss; the view clips them
            self._n_edges = len(edges)
            self.boundaries.setData(np.repeat(edges, 2), np.tile([-1e12, 1e12], len(edges)))
        finite = loss[np.isfinite(loss)]
        if len(finite):
            low, high = float(finite.min()), float(finite.max())
            if math.isfinite(state.base_loss):
                low, high = min(low, state.base_loss), max(high, state.base_loss)
            self.loss_range.fit((0.0, float(max(state.total_evaluations, x[-1]))), (low, high))
        if math.isfinite(state.base_loss):
            self.base_loss_line.setValue(state.base_loss)
            self.base_loss_line.setVisible(True)
        else:
            self.base_loss_line.setVisible(False)

    def _draw_accuracy(self, state: RunState) -> None:
        key = (len(state.steps), state.steps[-1].heldout_top1 if state.steps else None, state.n_blocks,
               state.heldout_fp_top1, state.heldout_base_top1, state.quality, id(state))
        if key == self._acc_key:
            return                                # the bars change once per block step only
        self._acc_key = key
        top1, _ = state.latest_heldout_per_block()
        n = state.n_blocks
        if n != self._n_blocks:
            self._n_blocks = n
            ticks = [(visit_position(i, n), _short_block(name)) for i, name in enumerate(state.block_names)]
            self.acc_plot.getAxis("bottom").setTicks([ticks])
            self.acc_plot.setXRange(-0.6, max(n, 1) - 0.4, padding=0)
            for label in self.bar_labels:
                self.acc_plot.removeItem(label)
            self.bar_labels = []
            for i in range(n):
                label = pg.TextItem("", color="w", anchor=(0.5, 0.0))   # inside the bar's top: never cut off
                label.setFont(_small_font())
                self.acc_plot.addItem(label)
                self.bar_labels.append(label)
        done = np.isfinite(top1)
        x = visit_position(np.flatnonzero(done), n)
        heights = top1[done]
        refs = [v for v in (state.heldout_fp_top1, state.heldout_base_top1) if math.isfinite(v)]
        for line, value in ((self.fp_line, state.heldout_fp_top1), (self.base_line, state.heldout_base_top1)):
            line.setVisible(math.isfinite(value))
            if math.isfinite(value):
                line.setValue(value)
        legend_values = (state.heldout_fp_top1, state.heldout_base_top1, state.quality)
        if legend_values != self._legend_values:   # the reference lines are explained in the title
            self._legend_values = legend_values
            keys = []
            if math.isfinite(state.heldout_fp_top1):
                keys.append(f'<span style="color:{FP}">━ full precision {state.heldout_fp_top1:.2f}</span>')
            if math.isfinite(state.heldout_base_top1):
                keys.append(f'<span style="color:{BASE}">╍ before the search {state.heldout_base_top1:.2f}</span>')
            subtitle = f'<br><span style="font-size:9pt">{" &nbsp; ".join(keys)}</span>' if keys else ""
            title, axis = ACC_TITLES.get(state.quality, ACC_TITLES["top1"])
            self.acc_plot.setTitle(f'<span style="font-size:11pt; font-weight:600">{title}</span>{subtitle}',
                                   color=INK)
            self.acc_plot.getAxis("left").setLabel(axis, **{"font-size": "10pt", "color": INK})
        values = list(heights) + refs
        bottom = 0.0
        if values:
            low, high = min(values), max(values)
            span = max(high - low, 1.0)
            # Zoom in on the range that matters (the axis says where it starts); bars rise from its bottom.
            bottom, top = max(0.0, low - 0.6 * span), high + 0.1 * span
            self.acc_plot.setYRange(bottom, top, padding=0)
        base = state.heldout_base_top1
        brushes = [pg.mkBrush(WON if not math.isfinite(base) or h >= base else LOST) for h in heights]
        self.bars.setOpts(x=x, y0=bottom, height=heights - bottom, width=0.7, brushes=brushes or None,
                          brush=WON, pen=pg.mkPen(None), pens=None)
        for i, label in enumerate(self.bar_labels):
            if i < len(top1) and math.isfinite(top1[i]):
                label.setText(f"{top1[i]:.1f}")
                label.setPos(visit_position(i, n), top1[i])
            else:
                label.setText("")

    def _draw_population(self, state: RunState) -> None:
        x = state.pop_x.view() - (state.pop_x.view()[0] - 1 if len(state.pop_x) else 0)
        self.pop_min.setData(x, state.pop_min.view())
        self.pop_max.setData(x, state.pop_max.view())
        self.pop_median.setData(x, state.pop_median.view())
        live = bool(len(x))
        if live:
            steps = max(state.passes * state.n_blocks, 1)
            per_step = max((state.total_evaluations - 1) // steps, len(x), 2)
            self.pop_range.fit((1.0, float(per_step)), (float(state.pop_min.view().min()),
                                                        float(state.pop_max.view().max())))
        key = (live, state.block_index, state.pass_index, state.run is not None, state.strategy)
        if key == self._pop_key:
            return
        self._pop_key = key                       # titles and ranges change once per block step only
        title = f'<span style="font-size:11pt; font-weight:600">{population_words(state.strategy)}</span>'
        if live:
            name = state.block_names[state.block_index] if 0 <= state.block_index < state.n_blocks else "?"
            where = f"block {_short_block(name)}, pass {state.pass_index + 1}"
            self.pop_plot.setTitle(title + population_key(where), color=INK)
            self.pop_note.setVisible(False)
        else:
            self.pop_plot.setTitle(title, color=INK)
            self.pop_note.setText("shown live during a search" if state.run is not None else "")
            self.pop_note.setVisible(True)
            self.pop_note.setPos(0.5, 0.5)
            self.pop_plot.getViewBox().setRange(xRange=(0, 1), yRange=(0, 1), padding=0)

    # ---------------------------------------------------------------- data access (tests, export)

    def data(self) -> dict[str, np.ndarray]:
        """The arrays currently drawn."""
        bars = self.bars.opts
        y0 = bars.get("y0", 0) or 0
        heights = np.asarray(bars.get("height", []), float)
        return {"loss_x": self.loss_points.xData if self.loss_points.xData is not None else np.zeros(0),
                "loss": _y(self.loss_points), "best": _y(self.best_curve),
                "bar_x": np.asarray(bars.get("x", []), float), "bar_top1": heights + y0,
                "population_min": _y(self.pop_min), "population_median": _y(self.pop_median),
                "population_max": _y(self.pop_max)}


def _y(curve: pg.PlotDataItem) -> np.ndarray:
    return curve.yData if curve.yData is not None else np.zeros(0)


def visit_position(block: Any, n_blocks: int) -> Any:
    """Where a block's bar stands: the search visits the blocks last to first, so the bars fill in left
    to right as it goes."""
    return n_blocks - 1 - block


def _short_block(name: str) -> str:
    """'blocks.11' -> '11', 'layers.2.blocks.1' -> '2.1'."""
    parts = [p for p in name.split(".") if p.isdigit()]
    return ".".join(parts) if parts else name


def _small_font() -> QFont:
    font = QFont()
    font.setPointSize(8)
    return font
