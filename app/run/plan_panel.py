"""The Plan tab: a bit plan for a budget of mean bits (mixed precision), made here or read from a file.

*Plan* runs the engine's ``plan`` (``PlanJob``) on the main window's ``JobRunner`` for the model, data, quantizer
and seed chosen on the left, with progress from its ``Measured`` events; *Open plan…* reads a plan file (.json)
or a run file (.h5). The views draw the plan; clicking a plan of the Pareto plot asks the window for a search
from it (``search_requested``).
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any, Callable

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QFileDialog, QHBoxLayout, QLabel, QLineEdit, QProgressBar, QPushButton, QSpinBox,
                               QSplitter, QVBoxLayout, QWidget)

from engine.commands.plan import bits_set, budget
from engine.plan import BitPlan, PlanFileError, load_plan, save_plan
from engine.plan.run import DEFAULT_BITS_SET, DEFAULT_FRONT_POINTS, DEFAULT_IMAGES, DEFAULT_RANDOM_DRAWS, PlanConfig
from engine.plan.summary import ExploredPlan, plan_of
from engine.scalefile import ScaleFileError

from app import errors, files
from app.jobs.job import Job
from app.jobs.plan import PlanJob
from app.jobs.runner import JobRunner
from app.widgets.measure_progress import show_measuring
from app.widgets.plan_views import ParetoView, PlanBitsView

log = logging.getLogger(__name__)
PLAN_FILES = "Plan files (*.json);;Run files (*.h5 *.hdf5);;All files (*)"


def _parsed(parse: Callable[[str], Any], text: str, what: str) -> Any:
    """The engine's own flag parsers, their error as the ValueError a form read raises."""
    try:
        return parse(text)
    except argparse.ArgumentTypeError as exc:
        raise ValueError(f"{what}: {exc}") from None


def _spin(name: str, low: int, high: int, value: int, tip: str, special: str = "") -> QSpinBox:
    spin = QSpinBox(objectName=name, minimum=low, maximum=high, value=value)
    spin.setToolTip(tip)
    if special:
        spin.setSpecialValueText(special)
    return spin


class PlanPanel(QWidget):
    """``jobs`` and ``run_spec`` (the run panel's RunSpec, or None after telling the user why) come from the main
    window; ``show_error`` is its error dialog."""

    search_requested = Signal(object)   # a BitPlan to search from
    ended = Signal(str)                 # the plan job's outcome

    def __init__(self, jobs: JobRunner, run_spec: Callable[[], Any], show_error: Callable[[BaseException, str], None],
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("planPanel")
        self.jobs, self.run_spec, self.show_error = jobs, run_spec, show_error
        self.plan: BitPlan | None = None
        self.job: Job | None = None
        self.budget = QLineEdit("W4A3", objectName="planBudget")
        self.budget.setToolTip("Mean weight and activation bits, each weighted by element count: W4A3, W3.5A3.25.")
        self.widths = QLineEdit(",".join(map(str, DEFAULT_BITS_SET)), objectName="planWidths")
        self.widths.setToolTip("The widths a point may take, comma-separated.")
        self.images = _spin("planImages", 1, 100_000, DEFAULT_IMAGES, "Calibration images that score each cost.")
        self.heldout = _spin("planHeldout", 0, 1_000_000, 0, "Held-out images that check the plans.", "all")
        self.front_points = _spin("planFrontPoints", 0, 100, DEFAULT_FRONT_POINTS,
                                  "Lagrangian plans measured on held-out along each front (weights, activations).")
        self.random_draws = _spin("planRandomDraws", 0, 100, DEFAULT_RANDOM_DRAWS,
                                  "Random plans of the same budget measured on held-out, to compare with.")
        self.plan_button = self._button("Plan", "planButton", self.start, "Choose a width per quantization point for "
                                        "the budget (model, data, quantizer and seed from the left), like python -m "
                                        "engine plan; checked on held-out, never on the test split.")
        self.stop_button = self._button("Stop", "planStop", self.stop, "Stop after the current measurement.")
        self.open_button = self._button("Open plan…", "planOpen", self.open_plan, "Show a plan file (.json) or the "
                                        "plan of a run file (.h5).")
        self.save_button = self._button("Save plan…", "planSave", self.save_plan, "Write the plan shown as a plan "
                                        "file (what python -m engine search --plan reads).")
        self.search_button = self._button("Search from the plan", "planSearch", self.search_planned, "Start a search "
                                          "from the plan shown with the settings on the left (as search --plan).")
        self.progress = QProgressBar(objectName="planProgress")
        self.progress.setFormat("")
        self.status = QLabel("", objectName="planStatus")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.pareto, self.bits = ParetoView(), PlanBitsView()
        self.pareto.plan_clicked.connect(self._explored_clicked)
        self._layout()
        self.show_plan(None, "No plan yet: set a budget and press Plan, or open a plan file.")

    def _button(self, text: str, name: str, slot: Callable[[], Any], tip: str) -> QPushButton:
        button = QPushButton(text, objectName=name)
        button.setToolTip(tip)
        button.clicked.connect(lambda: slot())
        return button

    def _layout(self) -> None:
        form = QHBoxLayout()
        for label, widget in (("Budget", self.budget), ("Widths", self.widths), ("Images", self.images),
                              ("Held-out", self.heldout), ("Front", self.front_points), ("Random", self.random_draws)):
            form.addWidget(QLabel(label))
            form.addWidget(widget)
        form.addStretch(1)
        bar = QHBoxLayout()
        for button in (self.plan_button, self.stop_button, self.open_button, self.save_button, self.search_button):
            bar.addWidget(button)
        bar.addWidget(self.progress, 1)
        views = QSplitter(Qt.Orientation.Horizontal)
        views.addWidget(self.pareto)
        views.addWidget(self.bits)
        views.setSizes([700, 700])
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addLayout(form)
        layout.addLayout(bar)
        layout.addWidget(self.status)
        layout.addWidget(views, 1)

    def config(self) -> PlanConfig:
        """The form as the engine's PlanConfig; ValueError naming the entry at fault."""
        w_bits, a_bits = _parsed(budget, self.budget.text(), "Budget")
        return PlanConfig(w_bits, a_bits, _parsed(bits_set, self.widths.text(), "Widths"), self.images.value(),
                          self.heldout.value() or None, self.front_points.value(), self.random_draws.value())

    # ------------------------------------------------------------------ what is shown

    def show_plan(self, plan: BitPlan | None, text: str) -> None:
        self.plan = plan
        self.pareto.show_plan(plan)
        self.bits.show_plan(plan)
        self.status.setText(text)
        self.update_buttons()

    def update_buttons(self) -> None:
        free = not self.jobs.busy
        self.plan_button.setEnabled(free)
        self.open_button.setEnabled(self.job is None)
        self.stop_button.setEnabled(self.job is not None and not self.job.stop_requested)
        self.save_button.setEnabled(self.plan is not None)
        self.search_button.setEnabled(free and self.plan is not None)

    def open_plan(self, path: str | Path | None = None) -> BitPlan | None:
        if path is None:
            chosen, _ = QFileDialog.getOpenFileName(self, "Open a plan", files.last_dir(), PLAN_FILES)
            if not chosen:
                return None
            path = chosen
        path = Path(path)
        files.remember_dir(path)
        try:
            plan = load_plan(path)
        except (OSError, PlanFileError, ScaleFileError) as exc:
            self.show_error(exc, f"Open {path.name}")
            return None
        self.show_plan(plan, f"{path.name}: {_summary(plan)}")
        return plan

    def save_plan(self, path: str | Path | None = None) -> Path | None:
        if self.plan is None:
            return None
        if path is None:
            chosen, _ = QFileDialog.getSaveFileName(self, "Save the plan", str(Path(files.last_dir()) / "plan.json"),
                                                    PLAN_FILES.split(";;")[0])
            if not chosen:
                return None
            path = chosen
        written = save_plan(path, self.plan)
        files.remember_dir(written)
        self.status.setText(f"Saved {written}. " + self.status.text())
        return written

    # ------------------------------------------------------------------ searching from a plan

    def search_planned(self) -> None:
        if self.plan is not None:
            self.search_requested.emit(self.plan)

    def _explored_clicked(self, explored: ExploredPlan) -> None:
        if self.plan is not None and explored.widths is not None:
            self.search_requested.emit(self.plan if explored.widths == self.plan.points
                                       else plan_of(self.plan, explored.widths))

    # ------------------------------------------------------------------ the job

    def start(self) -> bool:
        """Plan on the job runner; False when the form is wrong (after a dialog) or the runner is busy."""
        if self.jobs.busy:
            return False
        try:
            config = self.config()
        except ValueError as exc:
            self.show_error(exc, "Plan")
            return False
        spec = self.run_spec()
        if spec is None:
            return False
        log.info("planning %s %s for W%gA%g", spec.model, spec.quant.quantizer, config.budget_w_bits,
                 config.budget_a_bits)
        self.progress.setRange(0, 0)
        self.status.setText("Planning: starting…")
        self.job = self.jobs.start(PlanJob(spec, config), self._events, self._ended)
        self.update_buttons()
        return True

    def stop(self) -> None:
        if self.job is not None and not self.job.stop_requested:
            self.job.stop()
            self.status.setText("Stopping after the current measurement…")
            self.update_buttons()

    def _events(self, items: list) -> None:
        show_measuring(items, self.progress, self.status, "Planning")

    def _ended(self, job: Job) -> None:
        self.job = None
        self.progress.setRange(0, 1)
        self.progress.setValue(1 if job.outcome == "finished" else 0)
        self.progress.setFormat("")
        if job.outcome == "finished" and job.result is not None:
            self.show_plan(job.result.plan, f"Planned in {job.result.seconds:.0f} s: {_summary(job.result.plan)}")
        elif job.outcome == "failed":
            problem = errors.describe(job.error)
            self.status.setText(f"The plan failed: {problem.title}: {problem.message}")
            self.show_error(job.error, "Plan")
        else:
            self.status.setText("Stopped: nothing was kept.")
        self.update_buttons()
        self.ended.emit(job.outcome)


def _summary(plan: BitPlan) -> str:
    """One line: whose plan, its means and held-out numbers as the planner recorded them."""
    info = plan.info
    parts = [f"{plan.model} · {plan.quantizer} · {len(plan.points)} points"]
    if info.get("mean_w_bits") is not None:
        parts.append(f"mean W{info['mean_w_bits']:.2f}A{info['mean_a_bits']:.2f}")
    numbers = [(key, label) for key, label in (("heldout_planned_top1", "plan"), ("heldout_uniform_top1", "uniform"),
                                               ("heldout_fp_top1", "FP")) if info.get(key) is not None]
    if numbers:
        parts.append("held-out " + ", ".join(f"{label} {info[key]:.1f}%" for key, label in numbers))
    return " · ".join(parts)
