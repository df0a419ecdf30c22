"""The main window: a thin view over the engine's events, and the one place jobs start and end.

Every long piece of work (a search, a sweep, Evaluate scales…, Export…) is a ``Job`` started by
``_start_job`` with two callbacks: one for the events drained on each redraw tick, one for the end.
The menus' actions (file, export, library and sweeps) are mixins that start their jobs the same way.
"""
from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

from PySide6.QtCore import QTimer, Qt, Signal
from PySide6.QtGui import QAction, QCloseEvent, QKeySequence
from PySide6.QtWidgets import (QLabel, QMainWindow, QMessageBox, QSizePolicy, QSplitter, QTabWidget, QVBoxLayout,
                               QWidget)

from engine.search.config import preset_label
from engine.search.events import BlockDone, Stage, Started

from app import errors, files
from app.jobs.job import Job, JobKind, PauseChanged
from app.jobs.search import SearchJob
from app.responsiveness import freeze_startup_objects
from app.run.controls import ControlBar
from app.run.diagnose_panel import DiagnosePanel
from app.run.panel import RunPanel
from app.run.plots import PlotsPanel
from app.run.results_card import ResultsCard, run_summary
from app.run.state import FAILED, FINISHED, PAUSED, PREPARING, RUNNING, STOPPED, STOPPING, RunState
from app.widgets.screen import fit_to_screen
from app.window import about
from app.window.export_actions import ExportActions
from app.window.file_actions import FileActions
from app.window.log_panel import LogPanel
from app.window.sweep_actions import SweepActions

log = logging.getLogger(__name__)
REDRAW_MS = 50   # 20 Hz
DEFAULT_SIZE = (1440, 900)
LOG_LINES_PX = 48    # the log's least height: two lines


class MainWindow(FileActions, ExportActions, SweepActions, QMainWindow):
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
        self._search_fn = search_fn
        self.state = RunState()
        self.runner: Job | None = None       # the job running now (None: idle)
        self._observer: tuple[Callable[[list], None], Callable[[Job], None]] | None = None
        self._last: tuple[Any, Any, Path] | None = None   # (spec, config, checkpoint) of the last run
        self._close_when_stopped = False
        self._discarded_run: Any = None     # the unsaved run the user chose to lose when closing
        self._pausing = False
        self.evaluation = None
        self.export_result = None         # the engine's Exported of the last File ▸ Export…
        self.export_dialog = None
        self.recent = files.RecentFiles()
        self._build()
        self._timer = QTimer(self)
        self._timer.setInterval(REDRAW_MS)
        self._timer.timeout.connect(self._tick)
        self._timer.start()
        self._refresh()
        freeze_startup_objects()

    # ------------------------------------------------------------------ layout

    def _build(self) -> None:
        self.run_panel = RunPanel()
        self.controls = ControlBar()
        self.results = ResultsCard()
        self.plots = PlotsPanel()
        self.log_panel = LogPanel()
        self.diagnose = DiagnosePanel(host=self)

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
        self.open_action = self._action(menu, "&Open run…", self.open_run, QKeySequence.StandardKey.Open,
                                        "Show a saved run file's plots and results without re-running it.")
        self.resume_action = self._action(menu, "&Resume run…", self.resume_run, "Ctrl+Shift+R",
                                          "Continue a stopped run from its checkpoint.")
        self.save_action = self._action(menu, "&Save scales…", self.save_scales, QKeySequence.StandardKey.Save,
                                        "Write the run (base and refined scales, history, metrics) to an HDF5 file.")
        self.evaluate_action = self._action(menu, "&Evaluate scales on the selected model…", self.evaluate_scales,
                                            None, "Put a run file's refined scales into the model and data selected "
                                            "on the left and measure test top-1 (like engine eval --scales).")
        self.export_action = self._action(menu, "E&xport…", self.export_run, "Ctrl+E",
                                          "Write a run file's model as ONNX QDQ or AIMET encodings and compare it "
                                          "in onnxruntime (like engine export).")
        self.recent_menu = menu.addMenu("Recent files")
        self.recent_menu.aboutToShow.connect(self._fill_recent)
        menu.addSeparator()
        self._action(menu, "&Quit", self.close, QKeySequence.StandardKey.Quit, "Close the window.")
        run = self.menuBar().addMenu("&Run")
        self._action(run, "&Start", self.start, "Ctrl+R", "Start a search with the settings on the left.")
        self._action(run, "&Pause", self.pause, "Ctrl+P", "Pause after the current evaluation.")
        self._action(run, "Res&ume", self.resume, "Ctrl+U", "Continue a paused or stopped run.")
        self._action(run, "S&top", self.stop, "Ctrl+.", "Stop; the checkpoint is kept.")
        self._build_library_menu()
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
        if self._busy():
            return False
        try:
            spec, config = self.run_panel.spec(), self.run_panel.search_config()
        except ValueError as exc:
            self._error(exc, "Start")
            return False
        checkpoint = files.new_checkpoint_path(spec)
        self.state = RunState()
        self.results.clear()
        return self._launch(spec, config, checkpoint, resume=None)

    def resume(self) -> bool:
        """Continue a paused run, or the last stopped/failed run from its checkpoint."""
        if self.runner is not None and self.runner.paused:
            self.runner.resume()
            self._pausing = False
            return True
        if self._busy() or self._last is None:
            return False
        spec, config, checkpoint = self._last
        return self._launch(spec, config, checkpoint, resume=checkpoint if checkpoint.exists() else None)

    def resume_run(self, path: str | Path | None = None) -> bool:
        """Resume run…: continue a checkpoint chosen in a file dialog (or given)."""
        if self._busy():
            return False
        path = Path(path) if path else files.ask_resume(self)
        if path is None:
            return False
        try:
            if not path.exists():
                raise FileNotFoundError(f"checkpoint not found: {path}")
            resumable = files.read_checkpoint(path, self)
        except (OSError, ValueError) as exc:
            self._error(exc, f"Resume {path.name}")
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
        self._last = (spec, config, checkpoint)
        self.state.mark(PREPARING)
        self.state.stage = "resuming from the checkpoint" if resume else "starting"
        log.info("%s %s, %s %s, preset %s; checkpoint %s", "resuming" if resume else "starting", spec.model,
                 spec.quant.quantizer, spec.quant.bits_label, getattr(config, "preset", "?"), checkpoint)
        self.say(f"{'Resuming' if resume else 'Searching'}: {spec.model}, {spec.quant.quantizer} "
                 f"{spec.quant.bits_label}, {preset_label(getattr(config, 'preset', None))}, seed {spec.seed}.")
        self.state.strategy = getattr(config, "strategy", "")
        self._start_job(SearchJob(spec, config, checkpoint, resume, self._search_fn), self._run_events,
                        self._search_ended)
        return True

    def _start_job(self, kind: JobKind, on_events: Callable[[list], None], on_end: Callable[[Job], None]) -> None:
        """Run ``kind`` in the worker thread: ``on_events(events)`` on each redraw tick while it runs,
        ``on_end(job)`` once it has ended (the job's outcome, result and error are then final)."""
        self.runner = Job(kind, parent=self)
        self._observer = (on_events, on_end)
        self.runner.start()
        self._refresh()

    def pause(self) -> None:
        if self.runner is not None and self.state.status in (PREPARING, RUNNING) and not self.runner.paused:
            self.runner.pause()
            self._pausing = True
            self._refresh()

    def stop(self) -> None:
        if self.runner is not None and not self.runner.stop_requested:
            self.runner.stop()
            if not self.runner.kind.shows_run:
                return
            self._pausing = False
            self.state.mark(STOPPING)
            self._refresh()

    def _busy(self) -> bool:
        return self.runner is not None

    # ------------------------------------------------------------------ the redraw timer

    def _tick(self) -> None:
        self.log_panel.drain()
        job = self.runner
        if job is None:
            return
        on_events, on_end = self._observer
        on_events(job.events())
        if not job.done:
            if job.kind.shows_run:
                self._refresh()
            return
        self.runner = None
        job.wait(5000)             # the worker has already left the generator; this is the thread's exit
        job.deleteLater()
        self._pausing = False
        self.log_panel.drain()
        self._refresh()            # before on_end, which may write the status line a refresh rewrites
        on_end(job)
        if self._close_when_stopped:
            self.close()

    def _run_events(self, items: list) -> None:
        for item in items:
            self._run_event(item)

    def _run_event(self, item: Any) -> None:
        """One search event (or a pause mark) folded into the run view's state (a search's or a sweep's run)."""
        if isinstance(item, PauseChanged):
            self.state.mark(PAUSED if item.paused else RUNNING)
            self._pausing = False
            return
        self.state.apply(item)
        _log_event(item, self.state)
        if self.state.status == RUNNING and self.runner is not None and self.runner.stop_requested:
            self.state.status = STOPPING

    def _search_ended(self, job: Job) -> None:
        """The search's end: the results card, or the reason it stopped or failed."""
        run = self.state.run
        if job.outcome == "finished" and run is not None:
            self.state.mark(FINISHED)
            self.results.show_run(run)
            self._refresh()
            self.say(f"Finished: {run_summary(run)}. File ▸ Save scales… keeps it.")
            self.run_finished.emit(run)
        elif job.outcome == "stopped" or (job.outcome == "finished" and run is None):
            self.state.mark(STOPPED)
            self._refresh()
            self.say("Stopped: Resume continues from the last finished block step.")
            self.run_stopped.emit()
        else:
            problem = errors.describe(job.error)
            self.state.mark(FAILED, f"{problem.title}: {problem.message}")
            self._refresh()
            self.say(f"The search failed: {problem.title}.")
            self._error(job.error, "The search")
            self.run_failed.emit(job.error)
        self.run_ended.emit(job.outcome if job.outcome != "finished" or run is not None else "stopped")

    def _refresh(self) -> None:
        can_resume = self._last is not None and self.state.status in (STOPPED, FAILED)
        evaluating = self.runner is not None and not self.runner.kind.shows_run
        self.controls.set_buttons(self.state.status, can_resume)
        if evaluating:
            self.controls.start.setEnabled(False)
            self.controls.resume.setEnabled(False)
        else:
            self.controls.update_from(self.state, self._pausing)
        self.plots.update_from(self.state, force=self.state.status not in (RUNNING, PREPARING))
        self.run_panel.set_editable(self.runner is None)
        self.save_action.setEnabled(self.state.run is not None)
        self.open_action.setEnabled(self.runner is None)
        self.resume_action.setEnabled(self.runner is None)
        self.evaluate_action.setEnabled(self.runner is None)
        self.export_action.setEnabled(self.runner is None)
        self.diagnose.set_run(self.state.run, self.state.source_path)
        self.sweep_action.setEnabled(self.runner is None)

    # ------------------------------------------------------------------ errors, closing

    def _error(self, exc: BaseException, context: str) -> None:
        errors.show_error(self, exc, context, interactive=self.interactive)

    def say(self, text: str) -> None:
        """The status bar's account of what is on screen (a run file, the search running, its end)."""
        self.statusBar().clearMessage()
        self.on_screen.setText(text)
        self.on_screen.setToolTip(text)

    def _about(self) -> None:
        about.show_about(self)

    def closeEvent(self, event: QCloseEvent) -> None:
        if self.runner is None:
            if not self._may_close_with_result():
                event.ignore()
                return
            self._timer.stop()
            self.log_panel.detach()
            event.accept()
            return
        if not self._close_when_stopped:
            if self.interactive:
                answer = QMessageBox.question(
                    self, "Stop the search?",
                    "A search is running. Stop it and close the window?\n\nThe checkpoint of the last finished "
                    f"block step is kept in\n{files.checkpoint_dir()}\nso File ▸ Resume run… can continue it later.",
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
