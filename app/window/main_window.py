"""The main window: a thin view over the engine's events.

Every long piece of work (a search, a sweep, Evaluate scales…, Export…, Diagnose) starts on the window's one
``JobRunner`` (``self.jobs``) with two callbacks: one for the events drained on each redraw tick, one for the
end. The search's own controls live here; the menus' other actions are controllers given the window's run
view and the runner: ``files`` (File ▸ Open/Save/Evaluate/Recent), ``exports`` (File ▸ Export…) and
``sweeps`` (Library ▸ Run library… / New sweep…).
"""
from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, TypeVar

from PySide6.QtCore import QTimer, Qt, Signal
from PySide6.QtGui import QAction, QCloseEvent, QKeySequence
from PySide6.QtWidgets import (QLabel, QMainWindow, QMessageBox, QSizePolicy, QSplitter, QTabWidget, QVBoxLayout,
                               QWidget)

from engine.search.config import preset_label
from engine.search.events import BlockDone, Stage, Started

from app import errors, files
from app.jobs.job import Job, PauseChanged
from app.jobs.runner import JobRunner
from app.jobs.search import SearchJob
from app.responsiveness import freeze_startup_objects
from app.run.controls import ControlBar
from app.run.diagnose_panel import DiagnosePanel
from app.run.panel import RunPanel
from app.run.plan_panel import PlanPanel
from app.run.plots import PlotsPanel
from app.run.results_card import ResultsCard, run_summary
from app.run.state import FAILED, FINISHED, PAUSED, PREPARING, RUNNING, STOPPED, STOPPING, RunState
from app.widgets.screen import fit_to_screen
from app.window import about
from app.window.export_actions import ExportActions
from app.window.file_actions import FileActions
from app.window.log_panel import LogPanel
from app.window.plan_actions import PlanActions
from app.window.sweep_actions import SweepActions

log = logging.getLogger(__name__)
T = TypeVar("T")
REDRAW_MS = 50   # 20 Hz
DEFAULT_SIZE = (1440, 900)
LOG_LINES_PX = 48    # the log's least height: two lines


class MainWindow(QMainWindow):
    """``search_fn(spec, config, checkpoint=..., resume=...)`` yields engine events (the engine's run_search)."""

    run_finished = Signal(object)     # the RunRecord
    run_stopped = Signal()
    run_failed = Signal(object)       # the exception
    run_ended = Signal(str)           # "finished" | "stopped" | "failed"
    evaluation_ended = Signal(str)    # Evaluate scales…: "finished" | "failed"
    export_ended = Signal(str)        # File ▸ Export…: "finished" | "stopped" | "failed"
    sweep_progress = Signal(str, int, int)   # text, runs done, runs in the sweep
    sweep_run_done = Signal(str)      # a sweep wrote this run file
    sweep_run_failed = Signal(object) # a sweep's run failed: its LibraryRow, whose error says why
    sweep_ended = Signal(str)         # "finished" | "stopped" | "failed"

    def __init__(self, search_fn: Callable[..., Any] | None = None, interactive: bool = True) -> None:
        super().__init__()
        self.setWindowTitle("CPT-V Studio")
        self.setObjectName("mainWindow")
        self.interactive = interactive       # False: errors are logged, never a modal dialog (--quit-when-done)
        self.search_fn = search_fn
        self.state = RunState()              # the run view's state: the search, the sweep's run or the file shown
        self.last_run: tuple[Any, Any, Path] | None = None   # (spec, config, checkpoint) that Resume continues
        self._close_when_stopped = False
        self._pausing = False
        self.recent = files.RecentFiles()
        self.jobs = JobRunner(self)
        self.files = FileActions(self, self.jobs)
        self.exports = ExportActions(self, self.jobs)
        self.sweeps = SweepActions(self, self.jobs)
        self.plans = PlanActions(self)
        self._build()
        self.jobs.started.connect(lambda _job: self.refresh())
        self.jobs.freed.connect(self._job_freed)
        self.redraw_timer = QTimer(self)     # drains the log and the running job's events
        self.redraw_timer.setInterval(REDRAW_MS)
        self.redraw_timer.timeout.connect(self._tick)
        self.redraw_timer.start()
        self.refresh()
        freeze_startup_objects()

    # ------------------------------------------------------------------ layout

    def _build(self) -> None:
        self.run_panel = RunPanel()
        self.controls = ControlBar()
        self.results = ResultsCard()
        self.plots = PlotsPanel()
        self.log_panel = LogPanel()
        self.diagnose = DiagnosePanel(self.jobs, self.show_error)
        self.plan = PlanPanel(self.jobs, self.plans.run_spec, self.show_error)
        self.plan.search_requested.connect(self.plans.search_from)

        search = QWidget(objectName="searchPage")        # the search's outcome over its plots
        search_layout = QVBoxLayout(search)
        search_layout.setContentsMargins(0, 4, 0, 0)
        search_layout.setSpacing(6)
        search_layout.addWidget(self.results)
        search_layout.addWidget(self.plots, 1)
        right = QWidget()
        right_layout = QVBoxLayout(right)
        right_layout.setContentsMargins(6, 6, 6, 0)
        right_layout.setSpacing(6)
        right_layout.addWidget(self.controls)
        self.view_tabs = QTabWidget(objectName="runTabs")
        self.view_tabs.addTab(search, "Search")
        self.view_tabs.addTab(self.diagnose, "Diagnose")   # the run on screen, once it has finished
        self.view_tabs.addTab(self.plan, "Plan")           # mixed precision: a bit plan, and a search from it
        right_layout.addWidget(self.view_tabs, 1)

        self.log_panel.setMinimumHeight(LOG_LINES_PX)
        vertical = QSplitter(Qt.Orientation.Vertical)
        vertical.addWidget(right)
        vertical.addWidget(self.log_panel)
        vertical.setStretchFactor(0, 5)
        vertical.setStretchFactor(1, 1)
        vertical.setSizes([900, LOG_LINES_PX])     # more when dragged

        splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.addWidget(self.run_panel)
        splitter.addWidget(vertical)
        splitter.setStretchFactor(0, 0)
        splitter.setStretchFactor(1, 1)
        self.setCentralWidget(splitter)

        self.controls.start.clicked.connect(self.start)
        self.controls.pause.clicked.connect(self.pause)
        self.controls.resume.clicked.connect(self.resume)
        self.controls.stop.clicked.connect(self.stop)
        self._build_menus()
        self.on_screen = QLabel(objectName="onScreen")      # what the window shows; status tips pass over it
        self.on_screen.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.statusBar().addWidget(self.on_screen, 1)
        self.say("Built-in demo selected: press Start to see a search on handwritten digits.")
        fit_to_screen(self, DEFAULT_SIZE)

    def _build_menus(self) -> None:
        menu = self.menuBar().addMenu("&File")
        self.open_action = self._action(menu, "&Open run…", self.files.open_run, QKeySequence.StandardKey.Open,
                                        "Show a saved run file's plots and results without re-running it.")
        self.resume_action = self._action(menu, "&Resume run…", self.resume_run, "Ctrl+Shift+R",
                                          "Continue a stopped run from its checkpoint.")
        self.save_action = self._action(menu, "&Save scales…", self.files.save_scales, QKeySequence.StandardKey.Save,
                                        "Write the run (base and refined scales, history, metrics) to an HDF5 file.")
        self.evaluate_action = self._action(menu, "&Evaluate scales on the selected model…",
                                            self.files.evaluate_scales, None, "Put a run file's refined scales into the model and data selected "
                                            "on the left and measure test top-1 (like engine eval --scales).")
        self.export_action = self._action(menu, "E&xport…", self.exports.export_run, "Ctrl+E",
                                          "Write a run file's model as ONNX QDQ or AIMET encodings and compare it "
                                          "in onnxruntime (like engine export).")
        self.recent_menu = menu.addMenu("Recent files")
        self.recent_menu.aboutToShow.connect(lambda: self.files.fill_recent(self.recent_menu))
        menu.addSeparator()
        self._action(menu, "&Quit", self.close, QKeySequence.StandardKey.Quit, "Close the window.")
        run = self.menuBar().addMenu("&Run")
        self._action(run, "&Start", self.start, "Ctrl+R", "Start a search with the settings on the left.")
        self._action(run, "&Pause", self.pause, "Ctrl+P", "Pause after the current evaluation.")
        self._action(run, "Res&ume", self.resume, "Ctrl+U", "Continue a paused or stopped run.")
        self._action(run, "S&top", self.stop, "Ctrl+.", "Stop; the checkpoint is kept.")
        library = self.menuBar().addMenu("&Library")
        self.library_action = self._action(library, "Run &library…", self.sweeps.show_library, "Ctrl+L",
                                           "The workspace's run files in a table, with comparison views.")
        self.sweep_action = self._action(library, "New &sweep…", self.sweeps.new_sweep, "Ctrl+Shift+S",
                                         "Search quantizers × bit-widths × seeds into the workspace folder.")
        helpm = self.menuBar().addMenu("&Help")
        self._action(helpm, "&About CPT-V Studio", self._about, None, "")

    def _action(self, menu, text, slot, shortcut, tip) -> QAction:
        action = QAction(text, self)
        if shortcut is not None:
            action.setShortcut(QKeySequence(shortcut))
        action.setStatusTip(tip)
        action.setToolTip(tip)
        action.triggered.connect(lambda _checked=False: slot())
        menu.addAction(action)
        return action

    # ------------------------------------------------------------------ run control

    def start(self) -> bool:
        """Start a new run with the form's settings; False (after a dialog) if they are invalid."""
        if self.jobs.busy:
            return False
        settings = self.run_settings("Start")
        return settings is not None and self.start_run(*settings)

    def start_run(self, spec: Any, config: Any) -> bool:
        """A new run of ``spec`` and ``config`` (Start, or the Plan tab's search from a plan), on the Search tab."""
        if self.jobs.busy:
            return False
        self.state = RunState()
        self.results.clear()
        self.view_tabs.setCurrentIndex(0)
        return self._launch(spec, config, files.new_checkpoint_path(spec), resume=None)

    def resume(self) -> bool:
        """Continue a paused run, or the last stopped/failed run from its checkpoint."""
        if self.jobs.resume():
            self._pausing = False
            return True
        if self.jobs.busy or self.last_run is None:
            return False
        spec, config, checkpoint = self.last_run
        return self._launch(spec, config, checkpoint, resume=checkpoint if checkpoint.exists() else None)

    def resume_run(self, path: str | Path | None = None) -> bool:
        """Resume run…: continue a checkpoint chosen in a file dialog (or given)."""
        if self.jobs.busy:
            return False
        path = Path(path) if path else files.ask_resume(self)
        if path is None:
            return False
        try:
            if not path.exists():
                raise FileNotFoundError(f"checkpoint not found: {path}")
            resumable = files.read_checkpoint(path, self)
        except (OSError, ValueError) as exc:
            self.show_error(exc, f"Resume {path.name}")
            return False
        if resumable is None:   # its weights file moved and the user cancelled the dialog
            return False
        spec, config, history = resumable
        now = self.run_panel.spec()
        spec = replace(spec, device=now.device, compile=now.compile)   # continue as chosen now
        self.run_panel.set_values(spec, config)
        self.recent.add(path)
        self.state = RunState()
        self.state.load_history(history)          # the steps done before the stop, drawn at once
        self.results.clear()
        return self._launch(spec, config, path, resume=path)

    def _launch(self, spec: Any, config: Any, checkpoint: Path, resume: Path | None) -> bool:
        self.last_run = (spec, config, checkpoint)
        self.state.mark(PREPARING)
        self.state.stage = "resuming from the checkpoint" if resume else "starting"
        log.info("%s %s, %s %s, preset %s; checkpoint %s", "resuming" if resume else "starting", spec.model,
                 spec.quant.quantizer, spec.quant.bits_label, getattr(config, "preset", "?"), checkpoint)
        self.say(f"{'Resuming' if resume else 'Searching'}: {spec.model}, {spec.quant.quantizer} "
                 f"{spec.quant.bits_label}, {preset_label(getattr(config, 'preset', None))}, seed {spec.seed}.")
        self.state.strategy = getattr(config, "strategy", "")
        self.jobs.start(SearchJob(spec, config, checkpoint, resume, self.search_fn), self._run_events,
                        self._search_ended)
        return True

    def pause(self) -> None:
        if self.state.status in (PREPARING, RUNNING) and self.jobs.pause():
            self._pausing = True
            self.refresh()

    def stop(self) -> None:
        if self.jobs.stop() and self.jobs.shows_run():
            self._pausing = False
            self.state.mark(STOPPING)
            self.refresh()

    # ------------------------------------------------------------------ the redraw timer

    def _tick(self) -> None:
        self.log_panel.drain()
        ended = self.jobs.poll()
        if ended is None:
            if self.jobs.shows_run():
                self.refresh()
        elif self._close_when_stopped:
            self.close()

    def _job_freed(self, _job: Job) -> None:
        """The runner is idle again: the buttons say so before the job's end callback writes its outcome."""
        self._pausing = False
        self.log_panel.drain()
        self.refresh()

    def _run_events(self, items: list) -> None:
        for item in items:
            self.show_run_event(item)

    def show_run_event(self, item: Any) -> None:
        """One search event (or a pause mark) folded into the run view's state (a search's or a sweep's run)."""
        if isinstance(item, PauseChanged):
            self.state.mark(PAUSED if item.paused else RUNNING)
            self._pausing = False
            return
        self.state.apply(item)
        _log_event(item, self.state)
        if self.state.status == RUNNING and self.jobs.stop_requested:
            self.state.status = STOPPING

    def _search_ended(self, job: Job) -> None:
        """The search's end: the results card, or the reason it stopped or failed."""
        run = self.state.run
        if job.outcome == "finished" and run is not None:
            self.state.mark(FINISHED)
            self.results.show_run(run)
            self.refresh()
            self.say(f"Finished: {run_summary(run)}. File ▸ Save scales… keeps it.")
            self.run_finished.emit(run)
        elif job.outcome == "stopped" or (job.outcome == "finished" and run is None):
            self.state.mark(STOPPED)
            self.refresh()
            self.say("Stopped: Resume continues from the last checkpoint.")
            self.run_stopped.emit()
        else:
            problem = errors.describe(job.error)
            self.state.mark(FAILED, f"{problem.title}: {problem.message}")
            self.refresh()
            self.say(f"The search failed: {problem.title}.")
            self.show_error(job.error, "The search")
            self.run_failed.emit(job.error)
        self.run_ended.emit(job.outcome if job.outcome != "finished" or run is not None else "stopped")

    def refresh(self) -> None:
        """Buttons, actions, plots and the Diagnose tab follow the run view's state and the runner."""
        idle = not self.jobs.busy
        can_resume = self.last_run is not None and self.state.status in (STOPPED, FAILED)
        evaluating = self.jobs.busy and not self.jobs.shows_run()
        self.controls.set_buttons(self.state.status, can_resume)
        if evaluating:
            self.controls.start.setEnabled(False)
            self.controls.resume.setEnabled(False)
        else:
            self.controls.update_from(self.state, self._pausing)
        self.plots.update_from(self.state, force=self.state.status not in (RUNNING, PREPARING))
        self.run_panel.set_editable(idle)
        self.save_action.setEnabled(self.state.run is not None)
        for action in (self.open_action, self.resume_action, self.evaluate_action, self.export_action,
                       self.sweep_action):
            action.setEnabled(idle)
        self.diagnose.set_run(self.state.run, self.state.source_path)
        self.plan.update_buttons()

    # ------------------------------------------------------------------ errors, closing

    def show_error(self, exc: BaseException, context: str) -> None:
        """The error's dialog (a log line only in a non-interactive window)."""
        errors.show_error(self, exc, context, interactive=self.interactive)

    def read_form(self, read: Callable[[], T], context: str) -> T | None:
        """What ``read`` reads from a form or dialog; None after telling the user what is wrong (its
        ValueError names the entry)."""
        try:
            return read()
        except ValueError as exc:
            self.show_error(exc, context)
            return None

    def run_settings(self, context: str) -> tuple[Any, Any] | None:
        """The run panel's ``(RunSpec, SearchConfig)``, or None after telling the user what is wrong."""
        return self.read_form(lambda: (self.run_panel.spec(), self.run_panel.search_config()), context)

    def say(self, text: str) -> None:
        """The status bar's account of what is on screen (a run file, the search running, its end)."""
        self.statusBar().clearMessage()
        self.on_screen.setText(text)
        self.on_screen.setToolTip(text)

    def _about(self) -> None:
        about.show_about(self)

    def closeEvent(self, event: QCloseEvent) -> None:
        if not self.jobs.busy:
            if not self.files.may_close_with_result():
                event.ignore()
                return
            self.redraw_timer.stop()
            self.log_panel.detach()
            event.accept()
            return
        if not self._close_when_stopped:
            if self.interactive:
                answer = QMessageBox.question(
                    self, "Stop the search?",
                    "A search is running. Stop it and close the window?\n\nIts last checkpoint is kept in\n"
                    f"{files.checkpoint_dir()}\nso File ▸ Resume run… can continue it later.",
                    QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, QMessageBox.StandardButton.No)
                if answer != QMessageBox.StandardButton.Yes:
                    event.ignore()
                    return
            self._close_when_stopped = True
            self.stop()
        event.ignore()   # closes itself once the worker has left the generator (see _tick)


def _log_event(event: Any, state: RunState) -> None:
    """One log line per milestone (the log panel then tells the run's story), never per candidate."""
    if isinstance(event, BlockDone):
        name = state.block_names[event.block_index] if 0 <= event.block_index < state.n_blocks else "?"
        log.info("step %d (pass %d, %s): loss %.5g, held-out top-1 %.2f%% (base %.2f%%)", event.step,
                 event.pass_index + 1, name, event.best_loss, event.heldout_top1, state.heldout_base_top1)
    elif isinstance(event, Started):
        log.info("search started on %s: %d blocks, %d passes, %d evaluations%s; held-out top-1 FP %.2f%%, "
                 "quantized %.2f%%", event.device, len(event.block_names), event.passes, event.total_evaluations,
                 f", resumed after step {event.resumed_from_step}" if event.resumed_from_step else "",
                 event.heldout_fp_top1, event.heldout_base_top1)
    elif isinstance(event, Stage):
        log.info("%s", event.message)
