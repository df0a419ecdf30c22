"""The run library window: the workspace's runs and the views that put them next to each other.

Tabs: Runs (the table), Accuracy vs bit-width and Quantizer × bits (over every readable run),
Side by side and Layer (over the runs selected in the table, read in the background), Diagnose (one selected
run: its saved diagnosis, or one measured in the main window's worker). The window only wires the pieces:
numbers and files come from ``engine.library``, sweeps from the main window.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

from PySide6.QtWidgets import QMainWindow, QMessageBox, QTabWidget, QWidget

from engine.library import LibraryRow, NamedRun
from engine.scalefile import load_run

from app.jobs.background import BackgroundCall
from app.library.bits_views import AccuracyVsBitsView, BitsMatrixView
from app.library.panel import LibraryPanel
from app.library.run_views import LayerDetailView, SideBySideView
from app.library.sweep_dialog import SweepDialog
from app.run.diagnose_panel import DiagnosePanel
from app.widgets.screen import fit_to_screen

log = logging.getLogger(__name__)
DEFAULT_SIZE = (1400, 850)


class LibraryWindow(QMainWindow):
    """``main``: the MainWindow that opens runs and runs sweeps (None: a read-only library)."""

    def __init__(self, main: Any = None, workspace: str | Path | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("libraryWindow")
        self.setWindowTitle("CPT-V Studio: run library")
        self.main = main
        self.panel = LibraryPanel()
        self.accuracy = AccuracyVsBitsView()
        self.matrix = BitsMatrixView()
        self.side = SideBySideView()
        self.layer = LayerDetailView()
        self.diagnose = DiagnosePanel(main.jobs if main is not None else None,
                                      main.show_error if main is not None else None,
                                      empty_text="Select one run in the Runs tab to diagnose it.")
        self.tabs = QTabWidget(objectName="libraryTabs")
        for widget, title in ((self.panel, "Runs"), (self.accuracy, "Accuracy vs bit-width"),
                              (self.matrix, "Quantizer × bits"), (self.side, "Side by side"), (self.layer, "Layer"),
                              (self.diagnose, "Diagnose")):
            self.tabs.addTab(widget, title)
        self.setCentralWidget(self.tabs)
        self._records: dict[str, tuple[float, Any]] = {}     # file -> (mtime, RunRecord)
        self._selected: list[LibraryRow] = []
        self._drawn: dict[str, tuple] = {}                   # view -> the selection it shows
        self.sweep_dialog: SweepDialog | None = None
        self._reader = BackgroundCall("library-records", self)

        self.panel.rows_changed.connect(self._rows_changed)
        self.panel.selection_changed.connect(self._selection_changed)
        self.panel.open_requested.connect(self.open_run)
        self.panel.sweep_requested.connect(self.show_sweep_dialog)
        self.panel.export_requested.connect(self.export_run)
        self.matrix.cell_activated.connect(self.select_runs)
        self.tabs.currentChanged.connect(lambda _i: self._update_selection_views())
        if main is not None:
            main.sweep_progress.connect(self.panel.set_sweep_status)
            main.sweep_run_done.connect(lambda _path: self.panel.refresh())
            main.sweep_run_failed.connect(self.panel.add_failed)
            main.sweep_ended.connect(lambda _kind: self.panel.refresh())
        else:
            self.panel.buttons["sweep"].setEnabled(False)
            self.panel.buttons["export_run"].setToolTip("Export runs from the main window's library.")
            self.panel.buttons["open"].setToolTip("Open runs from the main window's library.")
        if workspace is not None:
            self.panel.set_workspace(workspace, remember=False)
        else:
            self.panel.refresh()
        fit_to_screen(self, DEFAULT_SIZE)

    # ---------------------------------------------------------------- data

    @property
    def loading(self) -> bool:
        """The view on screen is still reading the selected runs (or rebuilding their models)."""
        return self._reader.pending or (self.tabs.currentWidget() is self.layer and self.layer.loading)

    def _rows_changed(self, rows: list[LibraryRow]) -> None:
        self.accuracy.show_rows(rows)
        self.matrix.show_rows(rows)
        names = {row.file for row in rows}
        self._records = {k: v for k, v in self._records.items() if k in names}

    def _selection_changed(self, rows: list[LibraryRow]) -> None:
        self._selected = list(rows)
        self._update_selection_views()

    def _update_selection_views(self) -> None:
        """Redraw the side-by-side or layer view when it is on screen and the selection changed; the run
        files are read in the background (a few hundred ms each)."""
        current = self.tabs.currentWidget()
        files = tuple((row.file, self.panel.path_of(row)) for row in self._selected)
        self.diagnose.set_run(None, files[0][1] if len(files) == 1 and self._selected[0].ok else None)
        for name, view in (("side", self.side), ("layer", self.layer)):
            if current is view and self._drawn.get(name) != files:
                cache = dict(self._records)
                self._reader.request(lambda: read_records(files, cache),
                                     lambda answer: self._show_records(name, view, files, answer),
                                     lambda exc: log.warning("the selected runs could not be read: %s", exc))
                return
        self._reader.cancel()           # the view on screen shows the selection already

    def _show_records(self, name: str, view: Any, files: tuple, answer: tuple[list[NamedRun], dict]) -> None:
        runs, cache = answer
        names = {row.file for row in self.panel.model.rows()}
        self._records = {file: entry for file, entry in cache.items() if file in names}
        self._drawn[name] = files
        view.show_runs(runs)

    # ---------------------------------------------------------------- actions

    def select_runs(self, files) -> int:
        """Select these run files in the table and show it (a matrix cell was double-clicked)."""
        self.panel.filter.clear()
        n = self.panel.select_files(files)
        self.tabs.setCurrentWidget(self.panel)
        return n

    def show_tab(self, view: QWidget) -> None:
        self.tabs.setCurrentWidget(view)
        self._update_selection_views()

    def open_run(self, path: Path) -> bool:
        if self.main is None:
            return False
        if self.main.jobs.busy:
            QMessageBox.information(self, "Busy", "A search or sweep is running; open the run when it has ended.")
            return False
        opened = self.main.files.open_run(path)
        if opened:
            self.main.raise_()
            self.main.activateWindow()
        return opened

    def export_run(self, path: Path) -> Any:
        """The main window's export dialog on this run file (the export runs in its worker)."""
        if self.main is None:
            return None
        if self.main.jobs.busy:
            QMessageBox.information(self, "Busy", "A search or sweep is running; export the run when it has ended.")
            return None
        return self.main.exports.export_run(path)

    def show_sweep_dialog(self) -> SweepDialog | None:
        """The sweep form, filled from the run panel; Start hands the grid to the main window."""
        if self.main is None:
            return None
        settings = self.main.run_settings("Sweep")
        if settings is None:
            return None
        spec, config = settings
        dialog = self.sweep_dialog = SweepDialog(spec, config, self.panel.workspace, self)
        dialog.accepted.connect(lambda: self._start_sweep(dialog))
        dialog.open()
        return dialog

    def _start_sweep(self, dialog: SweepDialog) -> bool:
        grid = self.main.read_form(dialog.grid, "Sweep")
        if grid is None:
            return False
        started = self.main.sweeps.start_sweep(grid, self.panel.workspace, dialog.backend())
        if started:
            dialog.remember()
            self.panel.failed.clear()         # the failures of an earlier sweep
            self.panel.set_sweep_status("Sweep starting…", 0, len(grid.cells()))
        return started


def read_records(files: Sequence[tuple[str, Path]], cache: dict[str, tuple[float, Any]]
                 ) -> tuple[list[NamedRun], dict[str, tuple[float, Any]]]:
    """The runs of (file name, path) pairs, each read once per file version: ``cache`` (file -> (mtime,
    record)) is filled as files are read and returned with them. A file that does not load is left out."""
    runs = []
    for file, path in files:
        try:
            mtime = path.stat().st_mtime
            cached = cache.get(file)
            if cached is None or cached[0] != mtime:
                cached = cache[file] = (mtime, load_run(path))
            runs.append((file, cached[1]))
        except (OSError, ValueError, KeyError) as exc:
            log.warning("%s left out of the comparison: %s", path, exc)
    return runs, cache
