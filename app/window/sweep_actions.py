"""Library ▸ Run library… / New sweep…: a sweep runs as a job of the main window, like a search.

A controller the main window owns. ``engine.sweep.run_sweep`` is one generator of sweep events wrapping each
run's search events (``SweepJob``), so Pause/Stop act between events as for a search. Each run's
search events feed the window's live plots, exactly as a single search does; the sweep events move
the library's progress bar and refresh its table as run files appear.

On a Ray cluster several runs go at once and their events interleave: the run view follows one run
(the one that started last), since plots of two runs at once would be one meaningless curve; the
status line and the library count every run, and a run that fails is a row of the library's table
and a line of the log, while the rest of the grid goes on.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PySide6.QtWidgets import QWidget

from engine.library import LibraryRow
from engine.sweep import (PlannedRun, RunDone, RunFailed, RunProgress, RunStarted, SweepFinished, SweepGrid,
                          SweepStarted, describe)

from app import errors
from app.jobs.job import Job, PauseChanged
from app.jobs.runner import JobRunner
from app.jobs.sweep import SweepBackend, SweepJob
from app.run.state import FAILED, FINISHED, PREPARING, STOPPED, RunState
from app.window.view import WindowView

log = logging.getLogger(__name__)


@dataclass
class SweepCount:
    """Where the sweep in progress stands, for the status line and the library's progress bar."""
    total: int
    done: int = 0
    failed: int = 0
    label: str = ""        # the run the view follows, e.g. "run 2 of 4 (minmax W4A8 s0) on node-1"
    followed: int = 0      # that run's index (1-based; 0: none yet): only its search events reach the view
    strategy: str = ""     # the search strategy of every run (the plots say what its population is)


class SweepActions:
    """Library ▸ Run library… / New sweep… of ``window``, whose run view follows the sweep's runs; the sweep
    runs on ``jobs``."""

    def __init__(self, window: WindowView, jobs: JobRunner) -> None:
        self.window = window
        self.jobs = jobs
        self.library_window: QWidget | None = None     # the LibraryWindow, created on first use
        self.count = SweepCount(total=0)

    def show_library(self):
        """The run library window (one per main window, created on first use)."""
        if self.library_window is None:
            from app.library.window import LibraryWindow
            window = self.window                # a window of its own, closed with the main window
            self.library_window = LibraryWindow(main=window, parent=window)
        self.library_window.show()
        self.library_window.raise_()
        return self.library_window

    def new_sweep(self):
        return self.show_library().show_sweep_dialog()

    def start_sweep(self, grid: SweepGrid, workspace: str | Path, backend: SweepBackend = SweepBackend()) -> bool:
        """Search every run of ``grid`` with the run panel's other settings, into ``workspace``, on ``backend``."""
        window = self.window
        if self.jobs.busy:
            return False
        settings = window.run_settings("Sweep")
        if settings is None:
            return False
        spec, config = settings
        workspace = Path(workspace)
        self.count = SweepCount(total=len(grid.cells()), strategy=config.strategy)
        window.last_run = None
        window.state = RunState()
        window.results.clear()
        window.state.mark(PREPARING)
        window.state.stage = "planning the sweep"
        log.info("sweep: %s × %s × seeds %s into %s on %s", ",".join(grid.quantizers), ",".join(grid.bits),
                 ",".join(map(str, grid.seeds)), workspace, backend.label)
        self.jobs.start(SweepJob(grid, spec, config, workspace, window.search_fn, backend), self._sweep_events,
                        self._sweep_ended)
        self._sweep_status("planning…")
        return True

    def _sweep_status(self, text: str) -> None:
        self.window.statusBar().showMessage(f"Sweep: {text}")
        self.window.sweep_progress.emit(text, self.count.done, self.count.total)

    def _sweep_events(self, items: list) -> None:
        for item in items:
            if isinstance(item, RunProgress):
                if item.run.index == self.count.followed:
                    self.window.show_run_event(item.event)
            elif isinstance(item, PauseChanged):
                self.window.show_run_event(item)
            else:
                self._sweep_step(item)

    def _sweep_step(self, item: Any) -> None:
        line = describe(item)
        if line:
            log.log(logging.WARNING if isinstance(item, RunFailed) else logging.INFO, "%s", line)
        count, window = self.count, self.window
        if isinstance(item, SweepStarted):
            count.total, count.done = len(item.runs), sum(run.done for run in item.runs)
            self._sweep_status(f"{count.done} of {count.total} runs already in the workspace")
        elif isinstance(item, RunStarted):
            window.state = RunState(strategy=count.strategy)   # each run of the sweep gets fresh live plots
            window.state.mark(PREPARING)
            window.state.stage = f"{item.run.label}: loading and calibrating"
            window.results.clear()
            where = f" on {item.worker.host}" if item.worker else ""
            count.followed = item.run.index
            count.label = f"{_named(item.run)}{where}"
            self._sweep_status(f"{count.label}…")
        elif isinstance(item, RunDone):
            count.done += 1
            if item.run.index == count.followed:
                window.state.saved = True         # the sweep wrote the run's file
                if window.state.run is not None:
                    window.results.show_run(window.state.run, str(item.run.path))
            self._sweep_status(f"{_named(item.run)} done → {item.run.path.name}")
            window.sweep_run_done.emit(str(item.run.path))
        elif isinstance(item, RunFailed):
            count.done += 1
            count.failed += 1
            if item.run.index == count.followed:
                window.state.mark(FAILED, f"{item.run.label}: {item.error}")
            self._sweep_status(f"{_named(item.run)} failed: {item.error}")
            window.sweep_run_failed.emit(LibraryRow(file=item.run.path.name, error=item.error))
        elif isinstance(item, SweepFinished):
            failed = f" ({count.failed} failed, see the log)" if count.failed else ""
            self._sweep_status(f"finished: {len(item.rows)} runs{failed} in {item.seconds:.0f} s")

    def _sweep_ended(self, job: Job) -> None:
        state = self.window.state
        if job.outcome == "finished":
            if state.status != FAILED:     # else the run on view failed, and says why
                state.mark(FINISHED if state.run is not None else STOPPED)
        elif job.outcome == "stopped":
            state.mark(STOPPED)
            self._sweep_status(f"stopped; {self.count.done} of {self.count.total} runs done. "
                               "Start the same sweep again to resume it.")
        else:
            problem = errors.describe(job.error)
            state.mark(FAILED, f"{problem.title}: {problem.message}")
            self._sweep_status(f"failed: {problem.title}")
            self.window.show_error(job.error, "The sweep")
        self.window.refresh()
        self.window.sweep_ended.emit(job.outcome)


def _named(run: PlannedRun) -> str:
    """How the status line names a run of the sweep, e.g. "run 2 of 4 (minmax W4A8 s0)"."""
    return f"run {run.index} of {run.total} ({run.label})"
