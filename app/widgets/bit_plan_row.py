"""The run panel's bit-plan row: uniform widths, or a mixed plan (a plan file, or the plan of the run shown).

The plan's points keep their own widths and the form's W and A set every point it leaves out, as
``python -m engine search --plan PLAN`` takes them. Without this row a mixed run opened or resumed in the
window would rerun at uniform widths on Start.
"""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QFileDialog, QHBoxLayout, QLineEdit, QPushButton, QWidget

from engine.plan import PlanFileError, load_plan

from app.errors import show_error

UNIFORM_TEXT = "uniform: every point at W and A"


class BitPlanRow(QWidget):
    """The plan's ``points`` (``(name, bits)`` pairs; () when uniform) and the model it was made for."""

    opened = Signal(object)   # the BitPlan read from a file: the panel takes its quantizer and base widths

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.points: tuple[tuple[str, int], ...] = ()
        self.model: str | None = None
        self.text = QLineEdit(objectName="bitPlan", readOnly=True, placeholderText=UNIFORM_TEXT)
        self.text.setToolTip("Mixed precision: the points of a plan (from python -m engine plan, the Plan tab, or a "
                             "run file) keep their widths; W and A set the rest.")
        open_button = QPushButton("Open…", objectName="openBitPlan")
        open_button.setToolTip("A plan file (.json) or a run file (.h5) whose widths to search with")
        open_button.clicked.connect(self._open)
        uniform_button = QPushButton("Uniform", objectName="uniformBitPlan")
        uniform_button.setToolTip("Forget the plan: every point at W and A")
        uniform_button.clicked.connect(lambda: self.set_plan((), None, ""))
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.text, 1)
        row.addWidget(open_button)
        row.addWidget(uniform_button)

    def set_plan(self, points, model: str | None, source: str) -> None:
        self.points, self.model = tuple(points), (model if points else None)
        self.text.setText(f"{source}: {len(self.points)} points" if self.points else "")
        self.text.setCursorPosition(0)     # a narrow field shows where the plan came from first
        self.text.setToolTip(f"{len(self.points)} points at their own widths, from {source}; W and A set the rest"
                             if self.points else UNIFORM_TEXT)

    def check_model(self, model: str) -> None:
        """ValueError when the plan was made for another model than the one selected."""
        if self.points and self.model != model:
            raise ValueError(f"the bit plan is for {self.model}, not for the model selected ({model}): open "
                             "another plan, or press Uniform")

    def open_file(self, path: str) -> bool:
        """Take the plan in ``path``; False after a dialog naming what is wrong with the file."""
        try:
            plan = load_plan(path)
        except (PlanFileError, OSError) as exc:
            show_error(self, exc, "Bit plan")
            return False
        self.set_plan(plan.points, plan.model, Path(path).name)
        self.opened.emit(plan)
        return True

    def _open(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Bit plan", "", "Plans (*.json *.h5);;All files (*)")
        if path:
            self.open_file(path)
