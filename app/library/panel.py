"""The run library: a workspace folder of run files as a sortable, filterable table with file actions.

The folder is the user's choice, remembered in QSettings (default ``~/CPT-V runs``). Reading is
``engine.library.scan_workspace``, off the GUI thread (a ``BackgroundCall``: a folder of big run files
takes seconds); a file that does not load is a row saying why, never an error dialog, so one bad file
cannot hide the others.
"""
from __future__ import annotations

import logging
from pathlib import Path

from PySide6.QtCore import QSettings, Qt, QUrl, Signal
from PySide6.QtGui import QDesktopServices, QKeySequence, QShortcut
from PySide6.QtWidgets import (QAbstractItemView, QFileDialog, QHBoxLayout, QHeaderView, QLabel, QLineEdit,
                               QMessageBox, QProgressBar, QPushButton, QTableView, QVBoxLayout, QWidget)

from engine.library import LibraryRow, scan_workspace, write_csv

from app import files
from app.jobs.background import BackgroundCall
from app.library.model import FIELDS, LibraryModel, LibraryProxy

log = logging.getLogger(__name__)
WORKSPACE_KEY = "library/workspace"


def default_workspace() -> Path:
    return Path.home() / "CPT-V runs"


def saved_workspace() -> Path:
    value = QSettings().value(WORKSPACE_KEY, "")
    return Path(str(value)) if value else default_workspace()


class LibraryPanel(QWidget):
    """Workspace bar, filter, table and actions. ``open_requested`` carries a run file's path."""

    rows_changed = Signal(object)          # list[LibraryRow]: every row of the workspace
    selection_changed = Signal(object)     # list[LibraryRow]: the readable rows selected
    open_requested = Signal(object)        # Path
    sweep_requested = Signal()
    export_requested = Signal(object)      # Path: export the selected run (ONNX QDQ / AIMET)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("libraryPanel")
        self.workspace = saved_workspace()
        self.model = LibraryModel(self)
        self.proxy = LibraryProxy(self)
        self.proxy.setSourceModel(self.model)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addLayout(self._workspace_bar())
        layout.addLayout(self._action_bar())
        self.table = QTableView(objectName="libraryTable")
        self.table.setModel(self.proxy)
        self.table.setSortingEnabled(True)
        self.table.sortByColumn(FIELDS.index("file"), Qt.SortOrder.AscendingOrder)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.table.setAlternatingRowColors(True)
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        self.table.doubleClicked.connect(lambda _i: self.open_selected())
        self.table.selectionModel().selectionChanged.connect(lambda *_a: self._selection_changed())
        layout.addWidget(self.table, 1)
        self.sweep_label = QLabel("", objectName="sweepStatus")
        self.sweep_progress = QProgressBar(objectName="sweepProgress")
        self.sweep_progress.setVisible(False)
        bottom = QHBoxLayout()
        bottom.addWidget(self.sweep_label, 1)
        bottom.addWidget(self.sweep_progress, 1)
        layout.addLayout(bottom)
        QShortcut(QKeySequence(QKeySequence.StandardKey.Delete), self.table, activated=self.delete_selected)
        self._scanner = BackgroundCall("library-scan", self)
        self.failed: dict[str, LibraryRow] = {}   # the running sweep's failed runs (no file), by file name
        self.folder.setText(str(self.workspace))   # read by refresh(), once the owner has connected the signals

    def _workspace_bar(self) -> QHBoxLayout:
        bar = QHBoxLayout()
        bar.addWidget(QLabel("Workspace"))
        self.folder = QLineEdit(objectName="workspaceFolder")
        self.folder.setReadOnly(True)
        self.folder.setToolTip("The folder whose run files (.h5) the library lists; sweeps write into it.")
        bar.addWidget(self.folder, 1)
        choose = QPushButton("Choose…", objectName="chooseWorkspace")
        choose.setToolTip("Pick another workspace folder (remembered).")
        choose.clicked.connect(lambda: self.choose_workspace())
        bar.addWidget(choose)
        self.filter = QLineEdit(objectName="libraryFilter")
        self.filter.setPlaceholderText("Filter: e.g. omse W4A8")
        self.filter.setToolTip("Shows the rows whose text holds every word typed (any column).")
        self.filter.setClearButtonEnabled(True)
        self.filter.textChanged.connect(self.proxy.set_filter_text)
        bar.addWidget(self.filter, 1)
        return bar

    def _action_bar(self) -> QHBoxLayout:
        bar = QHBoxLayout()
        specs = (("open", "Open run", "Show the run in the main window (plots and results card).", self.open_selected),
                 ("export_run", "Export run…", "Write the selected run's model as ONNX QDQ or AIMET encodings.",
                  self.export_selected),
                 ("delete", "Delete file…", "Delete the selected run files (asks first).", self.delete_selected),
                 ("reveal", "Reveal in file manager", "Open the workspace folder.", self.reveal),
                 ("export", "Export CSV…", "Write the table as shown (filter and order) to a CSV file.",
                  self.export_csv),
                 ("refresh", "Refresh", "Read the workspace folder again.", self.refresh),
                 ("sweep", "New sweep…", "Search a grid of quantizers × bit-widths × seeds into this workspace.",
                  self.sweep_requested.emit))
        self.buttons: dict[str, QPushButton] = {}
        for key, text, tip, slot in specs:
            button = QPushButton(text, objectName=f"library_{key}")
            button.setToolTip(tip)
            button.clicked.connect(lambda _c=False, s=slot: s())
            bar.addWidget(button)
            self.buttons[key] = button
        bar.insertStretch(5, 1)
        self.count = QLabel("", objectName="libraryCount")
        bar.insertWidget(5, self.count)
        return bar

    # ---------------------------------------------------------------- workspace

    def set_workspace(self, folder: str | Path, remember: bool = True) -> None:
        self.workspace = Path(folder)
        self.failed.clear()
        if remember:
            QSettings().setValue(WORKSPACE_KEY, str(self.workspace))
        self.refresh()

    def choose_workspace(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Workspace folder (run files)", str(self.workspace))
        if folder:
            self.set_workspace(folder)

    def refresh(self) -> None:
        """Scan the folder again, in the background (one file at a time can be slow); the table is
        replaced, keeping the selection by file name, and ``rows_changed`` fires when the scan is in."""
        self.folder.setText(str(self.workspace))
        self.count.setText("reading the workspace…")
        workspace = self.workspace
        self._scanner.request(lambda: _read_workspace(workspace), self._show_rows, self._scan_failed)

    @property
    def scanning(self) -> bool:
        """A scan is under way (its rows are not in the table yet)."""
        return self._scanner.pending

    def add_failed(self, row: LibraryRow) -> None:
        """A run of the sweep failed before writing its file: a row that says why, until the file appears."""
        self.failed[row.file] = row
        self.refresh()

    def _show_rows(self, rows: list[LibraryRow] | None) -> None:
        selected = {row.file for row in self.selected_rows(readable_only=False)}
        files = {row.file for row in rows or []}
        self.failed = {file: row for file, row in self.failed.items() if file not in files}
        self.model.set_rows([*(rows or []), *self.failed.values()], frozenset(self.failed))
        self.select_files(selected)
        failed = f", {len(self.failed)} failed in the sweep" if self.failed else ""
        if rows is None:
            self.count.setText("folder not found (a sweep creates it)" + failed)
        else:
            bad = sum(not row.ok for row in rows)
            self.count.setText(f"{len(rows)} run file{'s' if len(rows) != 1 else ''}"
                               + (f", {bad} unreadable" if bad else "") + failed)
        self.table.resizeColumnsToContents()
        self._update_buttons()
        self.rows_changed.emit(rows or [])

    def _scan_failed(self, exc: BaseException) -> None:
        """The folder itself could not be listed (a file that does not load is a row, not this)."""
        log.warning("could not read the workspace %s: %s", self.workspace, exc)
        self._show_rows([])
        self.count.setText(f"could not read the folder: {exc}")

    # ---------------------------------------------------------------- selection

    def selected_rows(self, readable_only: bool = True) -> list[LibraryRow]:
        rows = [self.proxy.row_at(index.row()) for index in self.table.selectionModel().selectedRows()]
        rows.sort(key=lambda r: r.file)
        return [r for r in rows if r.ok] if readable_only else rows

    def select_files(self, names) -> int:
        """Select the rows of these file names (e.g. a matrix cell's runs); returns how many."""
        names = set(names)
        selection = self.table.selectionModel()
        selection.clearSelection()
        first = None
        for i in range(self.proxy.rowCount()):
            if self.proxy.row_at(i).file in names:
                selection.select(self.proxy.index(i, 0), selection.SelectionFlag.Select | selection.SelectionFlag.Rows)
                first = i if first is None else first
        if first is not None:
            self.table.scrollTo(self.proxy.index(first, 0))
        return len(self.selected_rows(readable_only=False))

    def _selection_changed(self) -> None:
        self._update_buttons()
        self.selection_changed.emit(self.selected_rows())

    def _update_buttons(self) -> None:
        chosen = self.selected_rows(readable_only=False)
        one_readable = len([r for r in chosen if r.ok]) == 1
        self.buttons["open"].setEnabled(one_readable)
        self.buttons["export_run"].setEnabled(one_readable)
        self.buttons["delete"].setEnabled(bool(chosen))
        self.buttons["export"].setEnabled(self.proxy.rowCount() > 0)

    def path_of(self, row: LibraryRow) -> Path:
        return self.workspace / row.file

    # ---------------------------------------------------------------- actions

    def open_selected(self) -> None:
        rows = self.selected_rows()
        if len(rows) == 1:
            self.open_requested.emit(self.path_of(rows[0]))

    def export_selected(self) -> None:
        rows = self.selected_rows()
        if len(rows) == 1:
            self.export_requested.emit(self.path_of(rows[0]))

    def delete_selected(self) -> list[Path]:
        rows = self.selected_rows(readable_only=False)
        if not rows:
            return []
        names = "\n".join(row.file for row in rows[:12]) + ("\n…" if len(rows) > 12 else "")
        answer = QMessageBox.question(self, "Delete run files?",
                                      f"Delete {len(rows)} run file{'s' if len(rows) > 1 else ''} from\n"
                                      f"{self.workspace}?\n\n{names}\n\nThis cannot be undone.",
                                      QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
                                      QMessageBox.StandardButton.No)
        if answer != QMessageBox.StandardButton.Yes:
            return []
        deleted = []
        for row in rows:
            if self.failed.pop(row.file, None) is not None:
                continue                      # a failed run's row: no file to delete
            path = self.path_of(row)
            try:
                path.unlink()
                deleted.append(path)
                log.info("deleted %s", path)
            except OSError as exc:
                QMessageBox.warning(self, "Delete failed", f"{path} could not be deleted:\n{exc}")
        self.refresh()
        return deleted

    def reveal(self) -> None:
        """The workspace folder in the system's file manager (no portable way to select one file)."""
        QDesktopServices.openUrl(QUrl.fromLocalFile(str(self.workspace)))

    def export_csv(self, path: str | Path | None = None) -> Path | None:
        if path is None:
            chosen, _ = QFileDialog.getSaveFileName(self, "Export the library as CSV",
                                                    str(Path(files.last_dir()) / "run-library.csv"),
                                                    "CSV files (*.csv);;All files (*)")
            if not chosen:
                return None
            path = Path(chosen)
            files.remember_dir(path)
        written = write_csv(self.proxy.visible_rows(), path)
        log.info("exported %d library rows to %s", self.proxy.rowCount(), written)
        return written

    def set_sweep_status(self, text: str, done: int | None = None, total: int | None = None) -> None:
        self.sweep_label.setText(text)
        active = done is not None and total is not None
        self.sweep_progress.setVisible(active)
        if active:
            self.sweep_progress.setRange(0, max(total, 1))
            self.sweep_progress.setValue(done)
            self.sweep_progress.setFormat(f"{done} of {total} runs")


def _read_workspace(folder: Path) -> list[LibraryRow] | None:
    """The workspace's rows (pool thread); None when the folder does not exist (yet)."""
    return scan_workspace(folder) if folder.is_dir() else None
