"""The Diagnose tab of one run (in the run window and in the library): its saved diagnosis, or a new one.

A run file that holds a ``/diagnosis`` group is shown at once (``engine.diagnose.load_diagnosis``, no
model work). Diagnose measures the run in a ``DiagnoseJob`` started on the main window's ``JobRunner``
(one job at a time, whoever starts it), with progress from the engine's ``Measured`` events; Stop closes the engine's generator
between two measurements. The three views draw the ``Diagnosis`` the engine returns.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QResizeEvent, QShowEvent
from PySide6.QtWidgets import (QCheckBox, QHBoxLayout, QLabel, QProgressBar, QPushButton, QSplitter,
                               QStackedLayout, QTabWidget, QVBoxLayout, QWidget)

from engine.diagnose import DiagnoseConfig, Diagnosis, load_diagnosis
from engine.scalefile import ScaleFileError

from app import errors
from app.jobs.diagnose import DiagnoseJob
from app.jobs.job import Job
from app.jobs.runner import JobRunner
from app.widgets.diagnose_views import HeatmapView, SensitiveBarsView, WhatIfView, summary
from app.widgets.measure_progress import show_measuring

log = logging.getLogger(__name__)
NO_RUN = "No finished run on screen: run a search, or open a run file, to diagnose it."
STACKED_HEIGHT = 600    # the views' height from which the sensitive points and the what-if both fit, one over the other
UNSAVED = ("This run is in no file yet: Diagnose measures it, but the result is not kept (File ▸ Save scales… "
           "first to keep it in the run file).")


class DiagnosePanel(QWidget):
    """``jobs``: the main window's job runner, and ``show_error`` its error dialog; None: saved diagnoses
    only. ``empty_text``: what to say while no run is given."""

    ended = Signal(str)      # the job's outcome: "finished" | "stopped" | "failed"

    def __init__(self, jobs: JobRunner | None = None,
                 show_error: Callable[[BaseException, str], None] | None = None, empty_text: str = NO_RUN,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("diagnosePanel")
        self.jobs = jobs
        self.show_error = show_error
        self.empty_text = empty_text
        self.config = DiagnoseConfig()           # the CLI's defaults
        self.diagnosis: Diagnosis | None = None
        self.job: Job | None = None              # the job this panel started, while it runs
        self._record: Any = None                 # the run to diagnose: a RunRecord in no file, or
        self._path: Path | None = None           # its run file
        self._stale = True                       # the saved diagnosis of the run is still to be read

        self.diagnose_button = QPushButton("Diagnose", objectName="diagnoseButton")
        self.diagnose_button.setToolTip("Measure every quantization point of this run (SQNR, sensitivity, recovery; "
                                        "base and refined scales) and the what-if bit-widths, on held-out images "
                                        "(like python -m engine diagnose RUN.h5). About two minutes on the demo.")
        self.diagnose_button.clicked.connect(lambda: self.start())
        self.stop_button = QPushButton("Stop", objectName="diagnoseStop")
        self.stop_button.setToolTip("Stop after the current measurement; nothing is kept.")
        self.stop_button.clicked.connect(lambda: self.stop())
        self.keep = QCheckBox("Keep the result in the run file", objectName="diagnoseKeep")
        self.keep.setChecked(True)
        self.keep.setToolTip("Adds a /diagnosis group to the run file (atomically; the run loads as before), so "
                             "the next time the run is shown its diagnosis is read back, not measured again.")
        self.progress = QProgressBar(objectName="diagnoseProgress")
        self.progress.setTextVisible(True)
        self.progress.setFormat("")
        self.status = QLabel("", objectName="diagnoseStatus")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.heatmap, self.bars, self.whatif = HeatmapView(), SensitiveBarsView(), WhatIfView()
        self._layout()
        self._show_run()

    def _layout(self) -> None:
        bar = QHBoxLayout()
        for widget in (self.diagnose_button, self.stop_button, self.keep):
            bar.addWidget(widget)
        bar.addWidget(self.progress, 1)
        self.side_split = QSplitter(Qt.Orientation.Vertical)
        self.side_split.addWidget(self.bars)
        self.side_split.addWidget(self.whatif)
        self.side_split.setSizes([1, 1])
        self.side_tabs = QTabWidget(objectName="diagnoseSideTabs")   # instead, when short
        side = QWidget()
        self.side = QStackedLayout(side)           # one of the two holds the views, the other is empty
        self.side.addWidget(self.side_split)
        self.side.addWidget(self.side_tabs)
        self.views = QSplitter(Qt.Orientation.Horizontal)
        self.views.addWidget(self.heatmap)
        self.views.addWidget(side)
        self.views.setSizes([700, 700])
        self._stacked = True
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addLayout(bar)
        layout.addWidget(self.status)
        layout.addWidget(self.views, 1)

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        self._arrange(self.views.height() >= STACKED_HEIGHT)

    def _arrange(self, stacked: bool) -> None:
        """The sensitive points over the what-if where the height allows both, else as two tabs: on a
        short screen either alone would be too small to read."""
        if stacked == self._stacked:
            return
        self._stacked = stacked
        if stacked:
            for view in (self.bars, self.whatif):
                self.side_split.addWidget(view)
                view.show()                  # a tab that was not on top was hidden
            self.side_split.setSizes([1, 1])   # halves: the sensitive points need the height as much
        else:
            for view, title in ((self.bars, "Most sensitive points"), (self.whatif, "What-if bit-widths")):
                self.side_tabs.addTab(view, title)
        self.side.setCurrentWidget(self.side_split if stacked else self.side_tabs)

    # ------------------------------------------------------------------ which run

    def set_run(self, record: Any = None, path: str | Path | None = None) -> None:
        """The run to show: its file (``path``), or a finished run in no file yet (``record``). Cheap when
        nothing changed; the saved diagnosis is read when the tab is on screen."""
        path = Path(path) if path else None
        if path != self._path or (path is None and record is not self._record):
            self._record, self._path, self._stale = record, path, True
            if self.job is None and self.isVisible():
                self._show_run()
        self._update_buttons()

    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        if self._stale and self.job is None:
            self._show_run()

    def _show_run(self) -> None:
        """The run's saved diagnosis, or why there is none."""
        self._stale = False
        diagnosis, text = None, self.empty_text
        if self._path is not None:
            try:
                diagnosis = load_diagnosis(self._path)
                text = f"Saved in {self._path.name}: {summary(diagnosis)}"
            except (OSError, ScaleFileError) as exc:
                text = str(exc)
        elif self._record is not None:
            text = UNSAVED
        self._show(diagnosis, text)

    def _show(self, diagnosis: Diagnosis | None, text: str) -> None:
        self.diagnosis = diagnosis
        for view in (self.heatmap, self.bars, self.whatif):
            view.show_diagnosis(diagnosis)
        self.status.setText(text)
        self._update_buttons()

    def _update_buttons(self) -> None:
        has_run = self._path is not None or self._record is not None
        runner_free = self.jobs is not None and not self.jobs.busy
        self.diagnose_button.setEnabled(has_run and runner_free and self.job is None)
        self.stop_button.setEnabled(self.job is not None and not self.job.stop_requested)
        self.keep.setEnabled(self.jobs is not None and self._path is not None and self.job is None)
        if self.jobs is None:
            self.diagnose_button.setToolTip("Diagnose runs from the main window's library.")

    # ------------------------------------------------------------------ the job

    def start(self) -> bool:
        """Diagnose the run on the job runner; False when there is nothing to diagnose or the runner is busy."""
        if self.jobs is None or (self._path is None and self._record is None) or self.job is not None:
            return False
        if self.jobs.busy:
            self.status.setText("Busy: a search, sweep or export is running; diagnose when it has ended.")
            return False
        job = DiagnoseJob(self._path or self._record, self.config, keep_in_run=self.keep.isChecked())
        log.info("diagnosing %s", self._path or "the run on screen")
        self.progress.setRange(0, 0)
        self.status.setText("Diagnosing: starting…")
        self.job = self.jobs.start(job, self._events, self._ended)
        self._update_buttons()
        return True

    def stop(self) -> None:
        if self.job is not None and not self.job.stop_requested:
            self.job.stop()
            self.status.setText("Stopping after the current measurement…")
            self._update_buttons()

    def _events(self, items: list) -> None:
        show_measuring(items, self.progress, self.status, "Diagnosing")

    def _ended(self, job: Job) -> None:
        self.job = None
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setFormat("")
        kept = job.kind.path if job.kind.keep_in_run else None
        same_run = job.kind.run is self._record if job.kind.path is None else job.kind.path == self._path
        if job.outcome == "finished" and job.result is not None and same_run:
            self.progress.setValue(1)
            where = f"kept in {kept.name}" if kept is not None else "not kept in a file"
            log.info("diagnosed in %.1f s (%s)", job.result.seconds, where)
            self._show(job.result, f"Diagnosed ({where}): {summary(job.result)}")
        elif job.outcome == "failed":
            problem = errors.describe(job.error)
            self.status.setText(f"The diagnosis failed: {problem.title}: {problem.message}")
            if self.show_error is not None:
                self.show_error(job.error, "Diagnose")
        else:
            self._show_run()            # stopped (nothing kept), or the run changed meanwhile
            if job.outcome == "stopped":
                self.status.setText("Stopped: nothing was kept. " + self.status.text())
        self._update_buttons()
        self.ended.emit(job.outcome)
