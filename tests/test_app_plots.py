"""The live plots drawn from a RunState fed with engine events (no search: seconds)."""
from __future__ import annotations

import app_conftest_helpers  # noqa: F401  (offscreen Qt, isolated settings; before Qt)

import numpy as np
from PySide6.QtCore import QPointF

from app.run.plots import PlotsPanel
from app.run.state import RunState
from engine.search.events import BlockDone, Evaluated, Started

NAMES = ("blocks.0", "blocks.1")


def _state(total: int, populations: list[np.ndarray], block: int = 1) -> RunState:
    """A run of ``total`` evaluations, ``len(populations)`` of them done in one block step; each candidate's
    loss is its population's best (a falling curve, as a search's)."""
    state = RunState()
    state.apply(Started(NAMES, 1, total, 97.0, 80.0, float(populations[0].max()), "cpu", 0))
    best = np.inf
    for i, population in enumerate(populations):
        best = min(best, float(population.min()))
        state.apply(Evaluated(i + 2, 0, block, 0, float(population.min()), best, population))
    return state


def _panel(qtbot) -> PlotsPanel:
    panel = PlotsPanel()
    qtbot.addWidget(panel)
    panel.resize(1000, 640)
    panel.show()
    qtbot.waitExposed(panel)
    return panel


def test_population_plot_draws_best_median_and_worst_member(qtbot):
    populations = [np.array([3.0, 3.0, 3.0, 3.0]), np.array([2.0, 3.0, 3.0, 3.0]),
                   np.array([1.5, 2.0, 3.0, 3.0]), np.array([1.5, 2.0, 2.5, 3.0])]
    panel = _panel(qtbot)
    assert panel.update_from(_state(10, populations), force=True)
    data = panel.data()
    np.testing.assert_array_equal(data["population_min"], [p.min() for p in populations])
    np.testing.assert_array_equal(data["population_median"], [np.median(p) for p in populations])
    np.testing.assert_array_equal(data["population_max"], [p.max() for p in populations])
    pens = [curve.opts["pen"] for curve in (panel.pop_min, panel.pop_median, panel.pop_max)]
    assert len({(pen.color().name(), pen.style()) for pen in pens}) == 3      # three lines told apart
    title = panel.pop_plot.titleLabel.text
    assert all(key in title for key in ("best", "median", "worst"))


def test_loss_legend_sits_top_right_clear_of_the_first_evaluations(qtbot):
    """While a run starts, its first (and highest) losses are drawn at the left of the loss plot."""
    populations = [np.full(5, 1.0 / (1 + 0.2 * i)) for i in range(30)]
    panel = _panel(qtbot)
    state = _state(100, populations)
    panel.update_from(state, force=True)
    qtbot.wait(50)                                   # one layout pass places the legend
    view = panel.loss_plot.getViewBox()
    legend, area = panel.loss_legend.sceneBoundingRect(), view.sceneBoundingRect()
    assert legend.left() > area.center().x() and legend.top() < area.center().y()
    points = [view.mapViewToScene(QPointF(x, y)) for x, y in zip(state.eval_number.view(), state.loss.view())]
    assert not any(legend.contains(point) for point in points)


def test_held_out_bars_stand_in_the_order_the_search_visits_the_blocks(qtbot):
    """Blocks are searched last to first: the last block's bar stands leftmost, so the bars fill in left to right."""
    state = _state(10, [np.array([1.0, 2.0])])
    state.apply(BlockDone(1, 0, 1, 1.0, 85.0, 2))           # blocks.1 first
    panel = _panel(qtbot)
    panel.update_from(state, force=True)
    assert panel.data()["bar_x"].tolist() == [0.0]
    state.apply(BlockDone(2, 0, 0, 1.0, 90.0, 3))           # then blocks.0, to its right
    panel.update_from(state, force=True)
    data = panel.data()
    assert dict(zip(data["bar_x"].tolist(), data["bar_top1"].tolist())) == {0.0: 85.0, 1.0: 90.0}
    ticks = panel.acc_plot.getAxis("bottom")._tickLevels[0]
    assert sorted(ticks) == [(0, "1"), (1, "0")]


def test_population_plot_says_what_it_shows_for_a_strategy_without_a_population(qtbot):
    from app.screens import plot_misfits

    panel = _panel(qtbot)
    panel.resize(880, 470)                              # the Search tab's plots on a 1366×768 screen
    names = ("layers.2.blocks.5", "layers.3.blocks.1")  # Swin's long block names
    for strategy, words in (("guided", "Point + children"), ("guided-null", "Point + children"),
                            ("cmaes", "Best + generation"), ("evolution", "Population")):
        state = RunState()
        state.apply(Started(names, 10, 100, 97.0, 80.0, 3.0, "cpu", 0))
        state.apply(Evaluated(2, 9, 0, 0, 1.0, 1.0, np.array([3.0, 2.0, 1.0])))
        state.strategy = strategy
        panel.update_from(state, force=True)
        qtbot.wait(20)
        title = panel.pop_plot.titleLabel.text
        assert words in title and "block 2.5, pass 10" in title, strategy
        assert not plot_misfits(panel.pop_widget), strategy


def test_restyling_a_plot_of_small_values_keeps_their_scale(qtbot):
    """Styling again a plot that shows 0…0.03 (a view redrawn on resize) must not turn its ticks into 0…30."""
    import pyqtgraph as pg

    from app.widgets.plot_style import style

    widget = pg.PlotWidget()
    qtbot.addWidget(widget)
    plot = widget.getPlotItem()
    plot.plot([0.0, 0.03], [0.0, 1.0])
    plot.setXRange(0.0, 0.03, padding=0)
    style(plot, "title", "loss", "")
    assert plot.getAxis("bottom").autoSIPrefixScale == 1.0
