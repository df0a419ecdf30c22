"""The run library's table: a Qt model over ``engine.library.scan_workspace`` rows.

The rows come from the engine unchanged; this file only decides how they look and sort. Sorting is
by value, not by text: numbers as numbers, bit-widths by (weight bits, activation bits), and empty
cells (a quantize-only file has no refined top-1) last in either direction.
"""
from __future__ import annotations

from typing import Any, Sequence

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QSortFilterProxyModel, Qt
from PySide6.QtGui import QColor

from engine.library import LibraryRow
from engine.search.config import preset_label

# (LibraryRow field, header, tooltip, text format)
COLUMNS: tuple[tuple[str, str, str, str], ...] = (
    ("file", "File", "The run file inside the workspace folder.", "{}"),
    ("model", "Model", "The model the run quantized.", "{}"),
    ("quantizer", "Quantizer", "The base quantizer that set the starting scales.", "{}"),
    ("bits", "Bits", "Weight and activation bit-widths (sorted by weight bits, then activation bits); a mixed "
     "plan's element-weighted mean bits, its widths on hover.", "{}"),
    ("seed", "Seed", "Seed of calibration sampling and of the search.", "{}"),
    ("preset", "Method", "The search preset that made the run (Guided (recommended), CPT-V paper, Null baseline); "
     "empty for a plain quantization (no search).", "{}"),
    ("fp_top1", "FP top-1", "Full-precision test top-1 (%).", "{:.2f}"),
    ("base_top1", "Base top-1", "Test top-1 (%) of the quantized model before the search.", "{:.2f}"),
    ("refined_top1", "Refined top-1", "Test top-1 (%) after the search.", "{:.2f}"),
    ("delta", "Δ", "Refined − base, in points: what the search won back.", "{:+.2f}"),
    ("evaluations", "Evaluations", "Candidate evaluations the search spent.", "{:,}"),
    ("seconds", "Time (s)", "Search wall time in seconds.", "{:.1f}"),
    ("date", "Date", "When the run file was written (UTC).", "{}"),
    ("computed", "Computed with", "How the run was computed: package version and commit, torch, timm, device, "
     "threads, compile mode.", "{}"),
)
FIELDS = tuple(c[0] for c in COLUMNS)
ROW_ROLE = Qt.ItemDataRole.UserRole + 1          # the LibraryRow behind a table row
ERROR_INK = QColor("#c0392b")
GAIN_INK, LOSS_INK = QColor("#1e8449"), QColor("#c0392b")


class LibraryModel(QAbstractTableModel):
    """One table row per run file; an unreadable file, or a sweep's run that failed (no file), is a row
    whose model cell says why."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self._rows: list[LibraryRow] = []
        self._failed: frozenset[str] = frozenset()

    def set_rows(self, rows: Sequence[LibraryRow], failed: frozenset[str] = frozenset()) -> None:
        """``failed``: the files of ``rows`` that are a sweep's failed runs rather than unreadable files."""
        self.beginResetModel()
        self._rows = list(rows)
        self._failed = failed
        self.endResetModel()

    def rows(self) -> list[LibraryRow]:
        return list(self._rows)

    def row(self, index: int) -> LibraryRow:
        return self._rows[index]

    def rowCount(self, parent: QModelIndex = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self._rows)

    def columnCount(self, parent: QModelIndex = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if orientation != Qt.Orientation.Horizontal or not 0 <= section < len(COLUMNS):
            return None
        if role == Qt.ItemDataRole.DisplayRole:
            return COLUMNS[section][1]
        if role == Qt.ItemDataRole.ToolTipRole:
            return COLUMNS[section][2]
        return None

    def data(self, index: QModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        row = self._rows[index.row()]
        name, _, _, fmt = COLUMNS[index.column()]
        if role == ROW_ROLE:
            return row
        if not row.ok:
            failed = row.file in self._failed
            if role == Qt.ItemDataRole.DisplayRole and name == "model":
                return f"{'failed' if failed else 'unreadable'}: {row.error}"
            if role == Qt.ItemDataRole.ForegroundRole:
                return ERROR_INK
            if role == Qt.ItemDataRole.ToolTipRole:
                return (f"The sweep's search of {row.file} failed:\n{row.error}" if failed
                        else f"{row.file} could not be read:\n{row.error}")
            return None
        value = getattr(row, name)
        if role == Qt.ItemDataRole.DisplayRole:
            if value is None:
                return ""
            return _date(value) if name == "date" else preset_label(value) if name == "preset" else fmt.format(value)
        if role == Qt.ItemDataRole.TextAlignmentRole and isinstance(value, (int, float)) and name != "seed":
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        if role == Qt.ItemDataRole.ForegroundRole and name == "delta" and value:
            return GAIN_INK if value > 0 else LOSS_INK
        if role == Qt.ItemDataRole.ToolTipRole and name in ("date", "computed", "preset"):
            return value
        if role == Qt.ItemDataRole.ToolTipRole and name == "bits":
            return row.plan           # a mixed plan's points off its base widths
        return None

    def sort_key(self, index: int, column: int) -> Any:
        """The value a column sorts by (None: an empty cell)."""
        row = self._rows[index]
        name = FIELDS[column]
        if name == "bits":
            return None if row.w_bits is None else (row.w_bits, row.a_bits or 0, row.bits or "")
        if name == "model" and not row.ok:
            return "~unreadable"   # after every model name
        if name == "preset" and row.preset is not None:
            return preset_label(row.preset)
        return getattr(row, name)


def _date(value: str) -> str:
    """'2026-11-26T21:55:03.123+00:00' -> '2026-11-26 21:55'."""
    return value.replace("T", " ")[:16]


class LibraryProxy(QSortFilterProxyModel):
    """Sorts by value; the filter keeps rows whose text holds every word typed (any column)."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self._words: list[str] = []
        self.setDynamicSortFilter(True)

    def set_filter_text(self, text: str) -> None:
        if hasattr(self, "beginFilterChange"):        # Qt >= 6.9; invalidateFilter() is deprecated there
            self.beginFilterChange()
            self._words = text.lower().split()
            self.endFilterChange(QSortFilterProxyModel.Direction.Rows)
        else:                                         # pragma: no cover - older Qt
            self._words = text.lower().split()
            self.invalidateFilter()

    def filterAcceptsRow(self, source_row: int, source_parent: QModelIndex) -> bool:
        if not self._words:
            return True
        model = self.sourceModel()
        text = " ".join(str(model.data(model.index(source_row, c), Qt.ItemDataRole.DisplayRole) or "")
                        for c in range(model.columnCount())).lower()
        return all(word in text for word in self._words)

    def lessThan(self, left: QModelIndex, right: QModelIndex) -> bool:
        model: LibraryModel = self.sourceModel()
        a, b = model.sort_key(left.row(), left.column()), model.sort_key(right.row(), right.column())
        if a is None or b is None:        # empty cells last, whichever the order
            descending = self.sortOrder() == Qt.SortOrder.DescendingOrder
            return (a is not None) != descending if (a is None) != (b is None) else False
        try:
            return a < b
        except TypeError:
            return str(a) < str(b)

    def row_at(self, proxy_row: int) -> LibraryRow:
        return self.sourceModel().row(self.mapToSource(self.index(proxy_row, 0)).row())

    def visible_rows(self) -> list[LibraryRow]:
        """The rows as shown: filtered and in display order (what Export CSV writes)."""
        return [self.row_at(i) for i in range(self.rowCount())]
