"""Every tab of the app at the screen sizes people have: the screenshots of docs/app.md and what the
layout test checks (tests/test_app_layout.py).

``python -m app.screens RUN.h5 LIBRARY_DIR [--out docs/screens]`` opens RUN.h5 (a run file holding its
diagnosis) in the main window and a copy of LIBRARY_DIR's run files in the library, at 1366×768 and
1600×1000, saves one PNG per tab and size (``search-1366x768.png``…), and prints whatever does not fit
(``misfits``): it exits 1 if anything does not. A window takes what a framed window can of each screen
(``app.widgets.screen.window_size``), as it does when the app starts there.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator

from app.widgets.screen import window_size

SIZES = ((1366, 768), (1600, 1000))   # screens
SLACK = 2           # pixels of rounding a fit may be off by
NARROWEST = 24      # characters a line of wrapped text must have room for
COMBO_FRAME = 30    # a combo box's arrow and margins, beside its text


def misfits(window: Any, size: tuple[int, int]) -> list[str]:
    """What does not fit ``window`` as laid out now at ``size``: the window grown past it, a widget reaching
    past the window, a label clipped (help cut short, a title wider than its room), tab titles without room,
    and in every plot a title, axis label, legend or note wider than the plot or tick labels that overlap."""
    from PySide6.QtWidgets import QAbstractScrollArea, QComboBox, QLabel, QSplitter, QTabBar, QWidget
    import pyqtgraph as pg

    found: list[str] = []
    if window.width() > size[0] or window.height() > size[1]:
        found.append(f"the window grew to {window.width()}×{window.height()} (needs at least "
                     f"{window.minimumSizeHint().width()}×{window.minimumSizeHint().height()}), past {size[0]}×{size[1]}")
    frame = window.rect().adjusted(-SLACK, -SLACK, SLACK, SLACK)
    for widget in window.findChildren(QWidget):
        if not widget.isVisible() or widget.isWindow() or _scrolls(widget, QAbstractScrollArea):
            continue
        name = _name(widget)
        rect = widget.rect().translated(widget.mapTo(window, widget.rect().topLeft()))
        if not rect.isEmpty() and not frame.contains(rect):
            found.append(f"{name} reaches past the window ({_box(rect)} in {window.width()}×{window.height()})")
        if isinstance(widget, QLabel) and widget.text():
            found += _label_misfits(widget, name)
        elif isinstance(widget, QComboBox) and widget.sizeAdjustPolicy() != QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon:
            needed = widget.fontMetrics().horizontalAdvance(widget.currentText()) + COMBO_FRAME
            if needed > widget.width() + SLACK:     # (the run panel's combos may elide a GPU's long name)
                found.append(f"{name} cuts its choice {widget.currentText()!r}: needs {needed} px, has {widget.width()}")
        elif isinstance(widget, QSplitter) and any(widget.sizes()) and 0 in widget.sizes():
            found.append(f"{name}: a pane is squeezed to nothing (sizes {widget.sizes()})")
        elif isinstance(widget, QTabBar):
            needed = sum(widget.tabSizeHint(i).width() for i in range(widget.count()))
            if needed > widget.width() + SLACK:
                found.append(f"{name}: its tab titles need {needed} px, it has {widget.width()}")
        elif isinstance(widget, pg.GraphicsView):
            found += [f"{name}: {problem}" for problem in plot_misfits(widget)]
    return found


def _scrolls(widget: Any, scroll_area: type) -> bool:
    """Inside a scroll area's viewport, where reaching past the edge is what scrolling is for."""
    parent = widget.parentWidget()
    while parent is not None:
        grand = parent.parentWidget()
        if isinstance(grand, scroll_area) and parent is grand.viewport():
            return True
        parent = grand
    return False


def _label_misfits(label: Any, name: str) -> list[str]:
    room = label.contentsRect()
    if label.wordWrap():
        needed = label.heightForWidth(label.width())
        if needed > label.height() + SLACK:
            return [f"{name} needs {needed} px of height, has {label.height()}: {label.text()[:60]!r}"]
        metrics = label.fontMetrics()
        if room.width() < min(metrics.horizontalAdvance(_plain(label.text())), NARROWEST * metrics.averageCharWidth()):
            return [f"{name} is squeezed into a {room.width()} px column: {label.text()[:60]!r}"]
        return []
    needed = label.sizeHint().width() - (label.width() - room.width())
    if needed > room.width() + SLACK:
        return [f"{name} is cut: needs {needed} px, has {room.width()}: {label.text()[:60]!r}"]
    return []


def plot_misfits(view: Any) -> list[str]:
    """Titles, axis labels and legends wider than their plot, text items beyond the view, crowded ticks."""
    import pyqtgraph as pg

    found = []
    visible = view.mapToScene(view.viewport().rect()).boundingRect().adjusted(-SLACK, -SLACK, SLACK, SLACK)
    for item in view.scene().items():
        if not item.isVisible() or not _shown(item):
            continue
        if isinstance(item, pg.PlotItem):
            # a title wider than the view widens its plot past the view's edge, which cuts both
            width = min(item.sceneBoundingRect().width(), visible.width() - 2 * SLACK)
            title = item.titleLabel
            if title.isVisible() and title.text and title.item.boundingRect().width() > width + SLACK:
                found.append(f"title {_plain(title.text)!r} is wider than its plot ({width:.0f} px)")
            elif not visible.contains(item.sceneBoundingRect()):
                found.append(f"a plot reaches past its view ({item.sceneBoundingRect().width():.0f} px wide in "
                             f"{visible.width():.0f})")
        elif isinstance(item, pg.AxisItem):
            found += _axis_misfits(item)
        elif isinstance(item, pg.LegendItem):
            box = item.parentItem().sceneBoundingRect() if item.parentItem() is not None else visible
            if not box.adjusted(-SLACK, -SLACK, SLACK, SLACK).contains(item.sceneBoundingRect()):
                found.append("a legend reaches past its plot")
        elif isinstance(item, pg.TextItem) and item.toPlainText().strip():
            box = item.sceneBoundingRect()
            holder = _view_box(item)
            room = holder.sceneBoundingRect() if holder is not None else visible
            if not room.adjusted(-SLACK, -SLACK, SLACK, SLACK).contains(box):
                found.append(f"text {item.toPlainText()[:40]!r} is cut by its plot's edge")
    return found


def _axis_misfits(axis: Any) -> list[str]:
    found = []
    if axis.label.isVisible() and axis.labelText:
        length = axis.width() if axis.orientation in ("top", "bottom") else axis.height()
        if axis.label.boundingRect().width() > length + SLACK:
            found.append(f"axis label {axis.labelText!r} is longer than its axis ({length:.0f} px)")
    ticks = axis._tickLevels
    if not ticks or not axis.style["showValues"] or axis.linkedView() is None:
        return found
    metrics = _metrics(axis)
    vertical = axis.orientation in ("left", "right")
    view = axis.linkedView()
    positions = sorted(value for value, _text in ticks[0] if _in_range(view, value, vertical))
    texts = {value: text for value, text in ticks[0]}
    span = view.viewRange()[1 if vertical else 0]
    pixels = (view.height() if vertical else view.width()) / max(span[1] - span[0], 1e-12)
    for a, b in zip(positions, positions[1:]):
        gap = (b - a) * pixels
        need = metrics.height() if vertical else (metrics.horizontalAdvance(texts[a]) + metrics.horizontalAdvance(texts[b])) / 2
        if gap + SLACK < need:
            found.append(f"tick labels {texts[a]!r} and {texts[b]!r} overlap ({gap:.0f} px apart, need {need:.0f})")
            break
    return found


def _in_range(view: Any, value: float, vertical: bool) -> bool:
    low, high = view.viewRange()[1 if vertical else 0]
    return low <= value <= high


def _metrics(axis: Any) -> Any:
    from PySide6.QtGui import QFontMetricsF

    return QFontMetricsF(axis.style["tickFont"] or axis.font())


def _view_box(item: Any) -> Any:
    import pyqtgraph as pg

    parent = item.parentItem()
    while parent is not None and not isinstance(parent, pg.ViewBox):
        parent = parent.parentItem()
    return parent


def _shown(item: Any) -> bool:
    parent = item.parentItem()
    while parent is not None:
        if not parent.isVisible():
            return False
        parent = parent.parentItem()
    return True


def _plain(html: str) -> str:
    from PySide6.QtGui import QTextDocumentFragment

    return QTextDocumentFragment.fromHtml(html).toPlainText()


def _name(widget: Any) -> str:
    return widget.objectName() or type(widget).__name__


def _box(rect: Any) -> str:
    return f"{rect.left()},{rect.top()} {rect.width()}×{rect.height()}"


# ---------------------------------------------------------------------- the tabs, shown one by one

def main_tabs(window: Any) -> Iterator[str]:
    """Shows each tab of the main window in turn; yields its name."""
    for index, name in enumerate(("search", "diagnose")):
        window.view_tabs.setCurrentIndex(index)
        yield name


def library_tabs(library: Any, files: list[str]) -> Iterator[str]:
    """Shows each tab of the library in turn, the runs ``files`` selected (the first alone for Diagnose);
    yields its name."""
    from app.jobs.background import wait_for

    for name, page in (("library-runs", library.panel), ("library-accuracy", library.accuracy),
                       ("library-matrix", library.matrix), ("library-side-by-side", library.side),
                       ("library-layer", library.layer), ("library-diagnose", library.diagnose)):
        library.panel.select_files(files[:1] if page is library.diagnose else files)
        library.show_tab(page)
        wait_for(lambda: not library.loading, timeout_s=300)
        yield name


def settle(window: Any, size: tuple[int, int]) -> None:
    """Resize ``window`` to ``size`` and let layout and redraws finish."""
    from PySide6.QtWidgets import QApplication

    window.resize(*size)
    for _ in range(6):
        QApplication.processEvents()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.screens")
    parser.add_argument("run", type=Path, help="a run file holding its diagnosis (diagnose --into-run)")
    parser.add_argument("library", type=Path, help="a folder of run files for the library")
    parser.add_argument("--out", type=Path, default=Path("docs/screens"), help="where the PNGs go")
    parser.add_argument("--select", default="", help="comma-separated parts of the file names to select "
                        "in this order (default: every run); the first one's diagnosis is shown")
    args = parser.parse_args(argv)
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    home = Path(tempfile.mkdtemp(prefix="cptv-screens-"))
    os.environ["XDG_CONFIG_HOME"] = str(home / "config")      # never the user's own settings
    os.environ["XDG_DATA_HOME"] = str(home / "data")
    workspace = home / "CPT-V runs"
    workspace.mkdir()
    for path in sorted(args.library.glob("*.h5")):
        shutil.copy2(path, workspace / path.name)
    run = Path(shutil.copy2(args.run, home / args.run.name))

    from app.application import make_application
    from app.jobs.background import wait_for
    from app.library.window import DEFAULT_SIZE as LIBRARY_SIZE, LibraryWindow
    from app.window.main_window import DEFAULT_SIZE as MAIN_SIZE, MainWindow

    app = make_application([])
    window = MainWindow(interactive=False)
    window.show()
    window.files.open_run(run)
    library = LibraryWindow(window, workspace=workspace)
    library.show()
    wait_for(lambda: not library.panel.scanning)
    readable = sorted(row.file for row in library.panel.model.rows() if row.ok)
    parts = [part for part in args.select.split(",") if part] or [""]
    files = list(dict.fromkeys(file for part in parts for file in readable if part in file))
    args.out.mkdir(parents=True, exist_ok=True)
    bad = 0
    for screen in SIZES:
        for shown, tabs, wanted in ((window, main_tabs(window), MAIN_SIZE),
                                    (library, library_tabs(library, files), LIBRARY_SIZE)):
            for name in tabs:
                size = window_size(screen, wanted)
                settle(shown, size)
                path = args.out / f"{name}-{screen[0]}x{screen[1]}.png"
                shown.grab().save(str(path), "PNG")
                problems = misfits(shown, size)
                bad += len(problems)
                print(path, *(f"\n  {p}" for p in problems))
    library.close()
    window.close()
    app.processEvents()
    shutil.rmtree(home, ignore_errors=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
