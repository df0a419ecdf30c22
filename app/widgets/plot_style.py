"""The look every plot of the app shares: white background, dark ink, 10 pt axes, a light grid."""
from __future__ import annotations

import pyqtgraph as pg
from PySide6.QtGui import QFont

pg.setConfigOptions(antialias=True, background="w", foreground="#333333")

INK = "#333333"


def style(plot: pg.PlotItem, title: str, bottom: str, left: str) -> None:
    """One look (fonts, grid, axis labels, no SI prefixes) for the live plots and the comparison views."""
    font = QFont()
    font.setPointSize(10)
    plot.setTitle(f'<span style="font-size:11pt; font-weight:600">{title}</span>', color=INK)
    for name, text in (("bottom", bottom), ("left", left)):
        axis = plot.getAxis(name)
        axis.setLabel(text, **{"font-size": "10pt", "color": INK})
        axis.setTickFont(font)
        axis.setTextPen(INK)
        if hasattr(axis, "setSIPrefixEnableRanges"):   # else enableAutoSIPrefix(False) itself picks a prefix for
            axis.setSIPrefixEnableRanges(())             # the range shown: a unit-less 0…0.03 would read 0…30
        axis.enableAutoSIPrefix(False)
    plot.showGrid(x=True, y=True, alpha=0.15)
    plot.getAxis("left").setWidth(74)   # room for five-digit losses next to the label
