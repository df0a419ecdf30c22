"""Side by side (loss curves, per-block held-out accuracy, scale-shift heatmaps) and one layer in detail.

Both take runs selected in the library as (name, RunRecord) pairs and draw what
``engine.library.side_by_side`` / ``layer_view`` return. Each run keeps one colour in every plot,
and the colour key sits in the plot's title, so no legend box covers the data.
"""
from __future__ import annotations

import logging
from typing import Any, Sequence

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QRectF, Qt
from PySide6.QtWidgets import QComboBox, QGridLayout, QLabel, QSpinBox, QWidget

from engine.library import NamedRun, SideBySide, layer_view, load_run_model, side_by_side

from app.jobs.background import BackgroundCall
from app.widgets.plot_card import PlotCard, colour, empty_message, plot_widget, set_title, short_names
from app.widgets.plot_style import style

log = logging.getLogger(__name__)
HEAT = pg.colormap.get("viridis")
NO_DATA = (225, 225, 225, 255)
SELECT_HINT = "Select two or more runs in the library (Ctrl/Shift-click) to compare them here."


def _keys(names: Sequence[str]) -> str:
    """The colour key of the runs, for a plot's subtitle."""
    return " &nbsp; ".join(f'<span style="color:{colour(i)}">━ {name}</span>' for i, name in enumerate(names))


def _block_label(block: str) -> str:
    parts = [p for p in block.split(".") if p.isdigit()]
    return ".".join(parts) if parts else block


class SideBySideView(QWidget):
    """Three cards for the selected runs: loss curves, per-block held-out top-1, scale shift."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("sideBySide")
        self.loss_widget = plot_widget("sideLossPlot")
        self.loss = PlotCard("sideLoss", self.loss_widget)
        self.blocks_widget = plot_widget("sideBlocksPlot")
        self.blocks = PlotCard("sideBlocks", self.blocks_widget)
        self.shift_widget = pg.GraphicsLayoutWidget()
        self.shift_widget.setObjectName("sideShiftPlot")
        self.shift_widget.setMinimumHeight(220)
        self.shift = PlotCard("sideShift", self.shift_widget)
        layout = QGridLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.setSpacing(8)
        layout.addWidget(self.loss, 0, 0)
        layout.addWidget(self.blocks, 0, 1)
        layout.addWidget(self.shift, 1, 0, 1, 2)
        layout.setRowStretch(0, 1)
        layout.setRowStretch(1, 1)
        self.data: SideBySide | None = None
        self.show_runs([])

    def show_runs(self, runs: Sequence[NamedRun]) -> None:
        self.data = side_by_side(runs) if runs else None
        names = short_names([name for name, _ in runs])
        self._draw_loss(names)
        self._draw_blocks(names)
        self._draw_shift(names)

    def _draw_loss(self, names: list[str]) -> None:
        plot = self.loss_widget.getPlotItem()
        plot.clear()
        style(plot, "Fitness loss per candidate evaluation", "candidate evaluation", "loss")
        data = self.data
        if data is None:
            plot.setLogMode(y=False)
            empty_message(plot, SELECT_HINT)
            self.loss.set_rows([])
            self.loss.note.setText("")
            return
        positive = np.concatenate([run.loss[run.loss > 0] for run in data.runs])
        log_scale = positive.size > 0 and positive.max() > 20 * positive.min()   # runs orders of magnitude apart
        plot.setLogMode(y=bool(log_scale))
        plot.getAxis("left").setLabel("loss (log scale)" if log_scale else "loss", **{"font-size": "10pt"})
        for i, run in enumerate(data.runs):
            x = np.arange(1, len(run.loss) + 1)
            keep = run.loss > 0 if log_scale else np.isfinite(run.loss)
            plot.plot(x[keep], run.loss[keep], pen=pg.mkPen(colour(i), width=1.8))
        plot.enableAutoRange()
        set_title(plot, "Fitness loss per candidate evaluation", _keys(names))
        self.loss.note.setText("Lower = the quantized model's outputs are closer to full precision."
                               + (" Log scale: the runs' losses differ by orders of magnitude." if log_scale else ""))
        self.loss.set_rows(list(data.loss_rows()))

    def _draw_blocks(self, names: list[str]) -> None:
        plot = self.blocks_widget.getPlotItem()
        plot.clear()
        style(plot, "Held-out top-1 per block", "transformer block (last step that searched it)", "held-out top-1 (%)")
        data = self.data
        if data is None:
            empty_message(plot, SELECT_HINT)
            self.blocks.set_rows([])
            self.blocks.note.setText("")
            return
        n = len(data.runs)
        width = 0.8 / max(n, 1)
        values = []
        for i, run in enumerate(data.runs):
            ok = np.isfinite(run.block_heldout)
            x = np.flatnonzero(ok) + (i - (n - 1) / 2) * width
            values.extend(run.block_heldout[ok])
            base = run.metrics.get("heldout_base_top1")
            if base is not None and np.isfinite(base):
                values.append(float(base))
                plot.addItem(pg.InfiniteLine(float(base), angle=0,
                                             pen=pg.mkPen(colour(i), width=1.2, style=Qt.PenStyle.DashLine)))
            run_bars = (x, run.block_heldout[ok])
            self._bars(plot, run_bars, width, colour(i))
        low, high = (min(values), max(values)) if values else (0.0, 100.0)
        span = max(high - low, 1.0)
        bottom = max(0.0, low - 0.25 * span)
        for item in plot.items:
            if isinstance(item, pg.BarGraphItem):
                item.setOpts(y0=bottom, height=item.opts["tops"] - bottom)
        plot.setYRange(bottom, min(high + 0.1 * span, 100.5), padding=0)
        plot.setXRange(-0.6, len(data.blocks) - 0.4, padding=0)
        plot.getAxis("bottom").setTicks([[(j, _block_label(b)) for j, b in enumerate(data.blocks)]])
        set_title(plot, "Held-out top-1 per block", _keys(names))
        self.blocks.note.setText("Bars: held-out top-1 after the last step that searched the block. Dashed: each "
                                 "run's base quantizer (before the search).")
        self.blocks.set_rows(list(data.block_rows()))

    @staticmethod
    def _bars(plot: pg.PlotItem, bars: tuple[np.ndarray, np.ndarray], width: float, ink: str) -> None:
        x, tops = bars
        item = pg.BarGraphItem(x=x, y0=0, height=tops, width=width * 0.92, brush=pg.mkBrush(ink),
                               pen=pg.mkPen(None))
        item.opts["tops"] = np.asarray(tops, float)
        plot.addItem(item)

    def _draw_shift(self, names: list[str]) -> None:
        layout = self.shift_widget.ci
        layout.clear()
        data = self.data
        if data is None or not data.layers:
            plot = layout.addPlot()
            style(plot, "How far the search moved the scales", "", "")
            empty_message(plot, SELECT_HINT if data is None else "These runs hold no base scales (no search).")
            self.shift.set_rows([])
            self.shift.note.setText("")
            return
        finite = np.concatenate([r.shift[np.isfinite(r.shift)] for r in data.runs])
        hi = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
        title = layout.addLabel('<span style="font-size:11pt; font-weight:600">How far the search moved the '
                                'scales: mean |ln(refined / base)| per layer and block</span>',
                                row=0, col=0, colspan=len(data.runs) + 1)
        title.setMaximumHeight(24)
        for i, (run, name) in enumerate(zip(data.runs, names)):
            plot = layout.addPlot(row=1, col=i)
            style(plot, "", "block", "")
            set_title(plot, f'<span style="color:{colour(i)}">{name}</span>')
            plot.setMouseEnabled(x=False, y=False)
            plot.hideButtons()
            plot.showGrid(x=False, y=False)
            plot.getViewBox().invertY(True)
            norm = np.clip(np.nan_to_num(run.shift, nan=0.0) / hi, 0, 1)
            rgba = HEAT.map(norm.ravel(), mode="byte").reshape(*run.shift.shape, 4)
            rgba[~np.isfinite(run.shift)] = NO_DATA
            image = pg.ImageItem(np.ascontiguousarray(rgba))          # rows = blocks = x
            image.setRect(QRectF(-0.5, -0.5, len(data.blocks), len(data.layers)))
            plot.addItem(image)
            plot.getAxis("bottom").setTicks([[(j, _block_label(b)) for j, b in enumerate(data.blocks)]])
            left = plot.getAxis("left")
            left.setTicks([list(enumerate(data.layers))])
            if i == 0:
                left.setWidth(130)
            else:
                left.setStyle(showValues=False)
                left.setWidth(6)
            plot.setRange(xRange=(-0.5, len(data.blocks) - 0.5), yRange=(-0.5, len(data.layers) - 0.5), padding=0)
        bar = pg.ColorBarItem(values=(0, hi), colorMap=HEAT, interactive=False, width=14,
                              label="mean |ln(refined/base)|")
        layout.addItem(bar, row=1, col=len(data.runs))
        self.shift.note.setText("0 = scale unchanged; ln 2 ≈ 0.69 = halved or doubled. Grey: no base scale to "
                                "compare (the layer's point was not part of the run).")
        self.shift.set_rows(list(data.shift_rows()))


class LayerDetailView(PlotCard):
    """One layer's weight histogram with every selected run's quantization grid over it."""

    def __init__(self, parent: QWidget | None = None, load_model: Any = load_run_model) -> None:
        self.widget = plot_widget("layerPlot")
        super().__init__("layerView", self.widget, parent)
        self.layer = QComboBox(objectName="layerChoice")
        self.layer.setToolTip("The Linear layer (or patch embedding) whose weights are shown.")
        self.layer.setMinimumContentsLength(18)
        self.channel = QSpinBox(objectName="layerChannel")
        self.channel.setToolTip("Weights are quantized per output channel: each channel has its own grid.")
        for text, widget in (("Layer", self.layer), ("Channel", self.channel)):
            self.controls.addWidget(QLabel(text))
            self.controls.addWidget(widget)
        self.layer.currentIndexChanged.connect(lambda _i: self.redraw())
        self.channel.valueChanged.connect(lambda _v: self.redraw())
        self._load_model = load_model
        self._loader = BackgroundCall("layer-weights", self)
        self._models: dict[str, Any] = {}          # run name -> its rebuilt model (weights for the histogram)
        self.runs: list[NamedRun] = []
        self.redraw()

    def show_runs(self, runs: Sequence[NamedRun]) -> None:
        self.runs = list(runs)
        self._models = {k: v for k, v in self._models.items() if k in {name for name, _ in runs}}
        current = self.layer.currentText()
        self.layer.blockSignals(True)
        self.layer.clear()
        if runs:
            names = [name for name, role, _ in runs[0][1].scales.points() if role == "weight"]
            self.layer.addItems(names)
            preferred = current if current in names else next((n for n in names if n.endswith("attn.qkv")), "")
            self.layer.setCurrentIndex(max(self.layer.findText(preferred), 0))
        self.layer.blockSignals(False)
        self.redraw()

    @property
    def loading(self) -> bool:
        """The runs' weights are being rebuilt for the chosen layer (the plot still shows the last one)."""
        return self._loader.pending

    def redraw(self) -> None:
        """Draw the chosen layer; the weights come from rebuilt models, so the view is computed in the background."""
        if not self.runs or not self.layer.currentText():
            self._loader.cancel()
            plot = self._clear_plot()
            empty_message(plot, SELECT_HINT.replace("two or more runs", "one or more runs"))
            self.set_rows([])
            return
        layer = self.layer.currentText()
        point = self.runs[0][1].scales[layer]["weight"]
        channels = int(point.scale.size)
        self.channel.blockSignals(True)
        self.channel.setRange(0, max(channels - 1, 0))
        self.channel.setEnabled(channels > 1)
        self.channel.blockSignals(False)
        runs, channel, models = list(self.runs), self.channel.value() if channels > 1 else None, dict(self._models)
        if any(name not in models for name, _ in runs):
            self.note.setText("Rebuilding the runs' models to read their weights…")
        self._loader.request(lambda: _layer_with_weights(runs, layer, channel, models, self._load_model),
                             self._show, self._failed)

    def _clear_plot(self) -> pg.PlotItem:
        plot = self.plot = self.widget.getPlotItem()
        plot.clear()
        style(plot, "Weights of one layer and each run's quantization grid", "weight value", "weights per bin")
        return plot

    def _show(self, answer: tuple[Any, str, dict[str, Any]]) -> None:
        view, note, models = answer
        names = {name for name, _ in self.runs}
        self._models = {name: model for name, model in models.items() if name in names}
        self._draw(self._clear_plot(), view, note)

    def _failed(self, exc: BaseException) -> None:
        log.warning("no layer view: %s", exc)
        empty_message(self._clear_plot(), f"This layer cannot be shown: {exc}")
        self.note.setText("")
        self.set_rows([])

    def _draw(self, plot: pg.PlotItem, view: Any, note: str) -> None:
        names = short_names([run.name for run in view.runs])
        top = 1.0
        rows: list[dict[str, Any]] = []
        if view.edges is not None:
            counted = [run.counts for run in view.runs if run.counts is not None]
            same = len(counted) > 1 and all(np.array_equal(counted[0], c) for c in counted[1:])
            for i, run in enumerate(view.runs):
                if run.counts is None:
                    continue
                top = max(top, float(run.counts.max()))
                ink = pg.mkColor("#7f8c8d" if same else colour(i))   # one shared histogram in grey
                fill = pg.mkColor(ink)
                fill.setAlpha(45)
                plot.plot(view.edges, run.counts, stepMode="center", fillLevel=0, brush=fill,
                          pen=pg.mkPen(ink, width=1.4))
                rows += [{"run": run.name, "kind": "histogram", "x": float(a), "x_hi": float(b), "count": int(c)}
                         for a, b, c in zip(view.edges[:-1], view.edges[1:], run.counts)]
        xs: list[float] = [float(v) for v in view.edges[[0, -1]]] if view.edges is not None else []
        for i, run in enumerate(view.runs):
            lane = top * (1.06 + 0.07 * i)          # each run's grid levels as a row of ticks above the bars
            ink = colour(i)
            grid = run.refined
            if grid.levels is not None:
                plot.plot(grid.levels, np.full(grid.levels.size, lane), pen=None, symbol="|", symbolSize=11,
                          symbolPen=pg.mkPen(ink, width=1.2))
                rows += [{"run": run.name, "kind": "level", "scales": "refined", "x": float(v)} for v in grid.levels]
            for kind, g, dash in (("refined", grid, Qt.PenStyle.DashLine), ("base", run.base, Qt.PenStyle.DotLine)):
                if g is None:
                    continue
                for bound in (g.lo, g.hi):
                    plot.addItem(pg.InfiniteLine(bound, angle=90, pen=pg.mkPen(ink, width=1.6, style=dash)))
                    xs.append(bound)
                rows += [{"run": run.name, "kind": "clip", "scales": kind, "x": g.lo, "x_hi": g.hi,
                          "bits": g.bits, "scale": g.scale, "zero_point": g.zero_point}]
        if xs:
            lo, hi = float(min(xs)), float(max(xs))        # float32 edges overflow pyqtgraph's limit checks
            pad = 0.04 * (hi - lo or 1.0)
            plot.setXRange(lo - pad, hi + pad, padding=0)
        plot.setYRange(0, top * (1.1 + 0.07 * len(view.runs)), padding=0)
        where = f"{view.layer}" + (f", output channel {view.channel}" if view.channel is not None else "")
        set_title(plot, f"Weights of {where} and each run's grid", _keys(names))
        self.note.setText(note + ("Grey: the weights (the same in every run). " if view.edges is not None and same
                                  else "Filled: each run's weight histogram. ") + "Ticks on top: the run's quantization levels; dashed: its "
                          "clip bounds after the search; dotted: before it (base).")
        self.set_rows(rows, columns=("run", "kind", "scales", "x", "x_hi", "count", "bits", "scale", "zero_point"))


def _layer_with_weights(runs: list[NamedRun], layer: str, channel: int | None, models: dict[str, Any],
                        load_model: Any) -> tuple[Any, str, dict[str, Any]]:
    """The layer view with each run's weight histogram, ``models`` (by run name) filled as they are rebuilt.

    Runs in a BackgroundCall's thread: rebuilding and hashing a model takes seconds on a real ViT. When a
    run's weights cannot be rebuilt (file not found, another model), the grids alone still help; the
    note says why.
    """
    names = {id(record): name for name, record in runs}

    def loader(record: Any) -> Any:
        name = names[id(record)]
        if name not in models:
            models[name] = load_model(record)
        return models[name]

    try:
        return layer_view(runs, layer, "weight", channel, load_model=loader), "", models
    except Exception as exc:       # noqa: BLE001 - weights not found, another model: grids alone still help
        log.warning("no weight histogram for %s: %s", layer, exc)
        return layer_view(runs, layer, "weight", channel), f"No weight histogram ({exc}); grids only. ", models
