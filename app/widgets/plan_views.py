"""The two views of a bit plan: the plans ``plan`` explored (held-out top-1 against mean bits) and the plan's
widths as a blocks × kinds table.

Both draw what the engine read or measured (``engine.plan.summary``, ``engine.plan.table``); a point of the
Pareto plot whose widths are known is a plan to search from: clicking it emits ``plan_clicked``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QRectF, Qt, Signal
from PySide6.QtGui import QFont, QFontMetricsF
from PySide6.QtWidgets import QComboBox, QWidget

from engine.plan.file import BitPlan
from engine.plan.summary import PLANNED, ExploredPlan, budget_of, explored_plans
from engine.plan.table import PlanTable, plan_table

from app.widgets.plot_card import PlotCard, colour, empty_message, plot_widget, set_title
from app.widgets.plot_style import INK, style

EMPTY = "No plan to show: press Plan, or open a plan file (.json) or a plan's run file."
FP_INK = "#27ae60"


@dataclass(frozen=True)
class KindStyle:
    label: str
    symbol: str             # pyqtgraph's
    mark: str               # the same symbol in the note's legend
    ink: str
    size: int
    hollow: bool = False


# drawn in this order, the plan last (on top)
KINDS = {
    "uniform": KindStyle("uniform WxAy", "s", "■", "#7f8c8d", 8),
    "uniform-calibrated": KindStyle("uniform at the budget, calibrated", "s", "□", "#2c3e50", 11, hollow=True),
    "random": KindStyle("random plans of the budget", "t", "▼", colour(1), 10),
    "weights-front": KindStyle("Lagrangian front, weights", "d", "◆", colour(0), 10),
    "activations-front": KindStyle("Lagrangian front, activations", "d", "◆", colour(2), 10),
    "planned-composed": KindStyle("the plan, composed scales", "star", "☆", colour(3), 16, hollow=True),
    PLANNED: KindStyle("the plan, calibrated", "star", "★", "#c0392b", 20),
}
# the chooser's text, the axis label, the ExploredPlan field
AXES = {"both": ("x: (W + A) / 2", "mean bits, (W + A) / 2", "mean_bits"),
        "weights": ("x: W", "mean weight bits", "mean_w_bits"),
        "activations": ("x: A", "mean activation bits", "mean_a_bits")}


def _look(kind: str) -> KindStyle:
    return KINDS.get(kind, KindStyle(kind, "o", "●", colour(4), 8))


def _tip(x: float, y: float, data: ExploredPlan) -> str:
    click = "\nClick: search from this plan." if data.widths is not None else ""
    return (f"{_look(data.kind).label}\nW {data.mean_w_bits:.3f} bits, "
            f"A {data.mean_a_bits:.3f} bits\nheld-out top-1 {data.heldout_top1:.2f}%{click}")


class ParetoView(PlotCard):
    """Held-out top-1 of every plan explored against its mean bits, one symbol per kind of plan."""

    plan_clicked = Signal(object)     # the ExploredPlan clicked (its widths known)

    def __init__(self, parent: QWidget | None = None) -> None:
        self.widget = plot_widget("planParetoPlot")
        super().__init__("planPareto", self.widget, parent)
        self.axis = QComboBox(objectName="planParetoAxis")
        self.axis.setToolTip("What the horizontal axis shows: both budgets' mean, or one of them.")
        for key, (text, _, _) in AXES.items():
            self.axis.addItem(text, key)
        self.axis.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.axis.currentIndexChanged.connect(lambda _i: self.redraw())
        self.controls.addWidget(self.axis)
        self.plan: BitPlan | None = None
        self.scatters: dict[str, pg.ScatterPlotItem] = {}    # per kind, as drawn
        self.redraw()

    def show_plan(self, plan: BitPlan | None) -> None:
        self.plan = plan
        self.redraw()

    def redraw(self) -> None:
        plot = self.widget.getPlotItem()
        plot.clear()
        _, axis_text, field = AXES[self.axis.currentData()]
        style(plot, "", axis_text, "held-out top-1 (%)")
        explored = explored_plans(self.plan) if self.plan is not None else []
        self.scatters = {}
        if not explored:
            set_title(plot, "Plans explored")
            empty_message(plot, EMPTY if self.plan is None else "This plan keeps no explored plans (not made by plan).")
            self.note.setText("")
            self.set_rows([])
            return
        for kind in sorted({p.kind for p in explored}, key=lambda k: list(KINDS).index(k) if k in KINDS else -1):
            self.scatters[kind] = self._scatter(plot, [p for p in explored if p.kind == kind], field)
        self._lines(plot, field)
        plot.enableAutoRange()
        budget = budget_of(self.plan)
        set_title(plot, "Held-out top-1 vs mean bits",
                  f"budget W{budget[0]:g}A{budget[1]:g}" if budget else self.plan.bits_label)
        keys = " &nbsp; ".join(f'<span style="color:{_look(kind).ink}">{_look(kind).mark} {_look(kind).label} '
                               f'({len(scatter.data)})</span>' for kind, scatter in self.scatters.items())
        self.note.setText(f"{keys}<br>Each point a plan measured on held-out. Click one whose tip offers it to "
                          "search from that plan with the settings on the left.")
        self.set_rows([{"kind": p.kind, "mean_w_bits": p.mean_w_bits, "mean_a_bits": p.mean_a_bits,
                        "heldout_top1": p.heldout_top1, "widths_known": p.widths is not None} for p in explored])

    def _scatter(self, plot: pg.PlotItem, plans: list[ExploredPlan], field: str) -> pg.ScatterPlotItem:
        look = _look(plans[0].kind)
        brush = pg.mkBrush(255, 255, 255, 0) if look.hollow else pg.mkBrush(look.ink)
        scatter = pg.ScatterPlotItem(x=[getattr(p, field) for p in plans], y=[p.heldout_top1 for p in plans],
                                     data=plans, symbol=look.symbol, size=look.size, brush=brush,
                                     pen=pg.mkPen(look.ink, width=1.6 if look.hollow else 1), hoverable=True,
                                     tip=_tip)
        scatter.sigClicked.connect(lambda _item, points, _ev: self.click(points[0].data()) if len(points) else None)
        plot.addItem(scatter)
        return scatter

    def _lines(self, plot: pg.PlotItem, field: str) -> None:
        """FP's held-out top-1 across, the budget's mean bits upright (on the axis shown)."""
        budget = budget_of(self.plan)
        if budget is not None:
            at = getattr(ExploredPlan("budget", *budget, float("nan"), None), field)
            plot.addItem(pg.InfiniteLine(at, angle=90, label="budget", labelOpts={"position": 0.3, "color": INK},
                                         pen=pg.mkPen(INK, width=1, style=Qt.PenStyle.DashLine)))
        fp = self.plan.info.get("heldout_fp_top1")
        if fp is not None:
            plot.addItem(pg.InfiniteLine(float(fp), angle=0, label=f"FP {float(fp):.1f}",
                                         labelOpts={"position": 0.05, "color": FP_INK, "anchors": [(0, 1), (0, 1)]},
                                         pen=pg.mkPen(FP_INK, width=1.2, style=Qt.PenStyle.DotLine)))

    def click(self, plan: ExploredPlan) -> bool:
        """Ask for a search from ``plan`` when its widths are known."""
        if plan.widths is None:
            return False
        self.plan_clicked.emit(plan)
        return True


class PlanBitsView(PlotCard):
    """The plan's width of every point, kinds (rows) × blocks (columns) as the Diagnose tab's table; the other
    points in the note."""

    def __init__(self, parent: QWidget | None = None) -> None:
        self.widget = pg.GraphicsLayoutWidget()
        self.widget.setObjectName("planBitsPlot")
        self.widget.setMinimumHeight(200)
        super().__init__("planBits", self.widget, parent)
        self.table: PlanTable | None = None
        self.redraw()

    def show_plan(self, plan: BitPlan | None) -> None:
        self.table = plan_table(plan.points) if plan is not None else None
        self.redraw()

    def redraw(self) -> None:
        layout = self.widget.ci
        layout.clear()
        plot = layout.addPlot(row=0, col=0)
        style(plot, "", "transformer block", "")
        table = self.table
        if table is None or table.bits.size == 0:
            set_title(plot, "Bits per point")
            empty_message(plot, EMPTY)
            self.note.setText("")
            self.set_rows([])
            return
        set_title(plot, "Bits per point", f"{table.n_blocks} blocks × {len(table.kinds)} kinds")
        lo, hi = float(np.nanmin(table.bits)), float(np.nanmax(table.bits))
        cmap = pg.colormap.get("viridis")
        self._cells(plot, table, cmap, lo, max(hi, lo + 1))
        layout.addItem(pg.ColorBarItem(values=(lo, max(hi, lo + 1)), colorMap=cmap, interactive=False, width=14,
                                       label="bits"), row=0, col=1)
        others = ", ".join(f"{name} {bits}" for name, bits in table.others)
        self.note.setText(f"Outside the blocks: {others}." if others else "Every point is in a block.")
        self.set_rows(self._rows(table), columns=("block", "kind", "point", "bits"))

    @staticmethod
    def _rows(table: PlanTable) -> list[dict[str, Any]]:
        rows = [{"block": b, "kind": kind, "point": table.names[b][k], "bits": int(table.bits[b, k])}
                for b in range(table.n_blocks) for k, kind in enumerate(table.kinds) if table.names[b][k]]
        return rows + [{"block": "", "kind": "", "point": name, "bits": bits} for name, bits in table.others]

    @staticmethod
    def _cells(plot: pg.PlotItem, table: PlanTable, cmap: pg.ColorMap, lo: float, hi: float) -> None:
        bits = table.bits
        known = np.isfinite(bits)
        rgba = cmap.map(((np.where(known, bits, lo) - lo) / (hi - lo)).ravel(), mode="byte").reshape(*bits.shape, 4)
        rgba[~known] = (225, 225, 225, 255)
        image = pg.ImageItem(np.ascontiguousarray(rgba))    # axis 0 = blocks = x, axis 1 = kinds = y
        image.setRect(QRectF(-0.5, -0.5, table.n_blocks, len(table.kinds)))
        plot.addItem(image)
        font = QFont()
        font.setPointSize(9)
        for (block, kind), value in np.ndenumerate(bits):
            if not known[block, kind]:
                continue
            r, g, b = rgba[block, kind, :3].astype(float)
            text = pg.TextItem(str(int(value)), color="#ffffff" if 0.299 * r + 0.587 * g + 0.114 * b < 140 else INK,
                               anchor=(0.5, 0.5))
            text.setFont(font)
            text.setPos(block, kind)
            plot.addItem(text)
        plot.setMouseEnabled(x=False, y=False)
        plot.hideButtons()
        plot.showGrid(x=False, y=False)
        plot.getViewBox().invertY(True)
        plot.getAxis("bottom").setTicks([[(b, str(b)) for b in range(table.n_blocks)]])
        left = plot.getAxis("left")
        left.setTicks([list(enumerate(table.kinds))])
        left.setWidth(max(QFontMetricsF(left.style["tickFont"] or left.font()).horizontalAdvance(k)
                          for k in table.kinds) + 16)
        plot.setRange(xRange=(-0.5, table.n_blocks - 0.5), yRange=(-0.5, len(table.kinds) - 0.5), padding=0)
