"""Library ▸ Run library… / New sweep…: a sweep runs as a job of the main window, like a search.

A mixin of MainWindow. ``engine.sweep.run_sweep`` is one generator of sweep events wrapping each
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

from engine.library import LibraryRow
from engine.sweep import (PlannedRun, RunDone, RunFailed, RunProgress, RunStarted, SweepFinished, SweepGrid,
                          SweepStarted, describe)

from app import errors
from app.jobs.job import Job, PauseChanged
from app.jobs.sweep import SweepBackend, SweepJob
from app.run.state import FAILED, FINISHED, PREPARING, STOPPED, RunState

log = logging.getLogger("app.window.main_window")


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
    def _build_library_menu(self) -> None:
        menu = self.menuBar().addMenu("&Library")
        self.library_action = self._action(menu, "Run &library…", self.show_library, "Ctrl+L",
                                           "The workspace's run files in a table, with comparison views.")
        self.sweep_action = self._action(menu, "New &sweep…", self.new_sweep, "Ctrl+Shift+S",
                                         "Search quantizers × bit-widths × seeds into the workspace folder.")
        self.library_window = None
        self._sweep = SweepCount(total=0)

    def show_library(self):
        """The run library window (one per main window, created on first use)."""
        if self.library_window is None:
            from app.library.window import LibraryWindow
            self.library_window = LibraryWindow(main=self, parent=self)   # a window of its own, closed with this one
        self.library_window.show()
        self.library_window.raise_()
        return self.library_window

    def new_sweep(self):
        return self.show_library().show_sweep_dialog()

    def start_sweep(self, grid: SweepGrid, workspace: str | Path, backend: SweepBackend = SweepBackend()) -> bool:
        """Search every run of ``grid`` with the run panel's other settings, into ``workspace``, on ``backend``."""
        if self._busy():
            return False
        try:
            spec, config = self.run_panel.spec(), self.run_panel.search_config()
        except ValueError as exc:
            self._error(exc, "Sweep")
            return False
        workspace = Path(workspace)
        self._sweep = SweepCount(total=len(grid.cells()), strategy=config.strategy)
        self._last = None
        self.state = RunState()
        self.results.clear()
        self.state.mark(PREPARING)
        self.state.stage = "planning the sweep"
        log.info("sweep: %s × %s × seeds %s into %s on %s", ",".join(grid.quantizers), ",".join(grid.bits),
                 ",".join(map(str, grid.seeds)), workspace, backend.label)
        self._start_job(SweepJob(grid, spec, config, workspace, self._search_fn, backend), self._sweep_events,
                        self._sweep_ended)
        self._sweep_status("planning…")
        return True

    def _sweep_status(self, text: str) -> None:
        self.statusBar().showMessage(f"Sweep: {text}")
        self.sweep_progress.emit(text, self._sweep.done, self._sweep.total)

    def _sweep_events(self, items: list) -> None:
        for item in items:
            if isinstance(item, RunProgress):
                if item.run.index == self._sweep.followed:
                    self._run_event(item.event)
            elif isinstance(item, PauseChanged):
                self._run_event(item)
            else:
                self._sweep_step(item)

    def _sweep_step(self, item: Any) -> None:
        line = describe(item)
        if line:
            log.log(logging.WARNING if isinstance(item, RunFailed) else logging.INFO, "%s", line)
        count = self._sweep
        if isinstance(item, SweepStarted):
            count.total, count.done = len(item.runs), sum(run.done for run in item.runs)
            self._sweep_status(f"{count.done} of {count.total} runs already in the workspace")
        elif isinstance(item, RunStarted):
            self.state = RunState(strategy=count.strategy)   # each run of the sweep gets fresh live plots
            self.state.mark(PREPARING)
            self.state.stage = f"{item.run.label}: loading and calibrating"
            self.results.clear()
            where = f" on {item.worker.host}" if item.worker else ""
            count.followed = item.run.index
            count.label = f"{_named(item.run)}{where}"
            self._sweep_status(f"{count.label}…")
        elif isinstance(item, RunDone):
            count.done += 1
            if item.run.index == count.followed:
                self.state.saved = True         # the sweep wrote the run's file
                if self.state.run is not None:
                    self.results.show_run(self.state.run, str(item.run.path))
            self._sweep_status(f"{_named(item.run)} done → {item.run.path.name}")
            self.sweep_run_done.emit(str(item.run.path))
        elif isinstance(item, RunFailed):
            count.done += 1
            count.failed += 1
            if item.run.index == count.followed:
                self.state.mark(FAILED, f"{item.run.label}: {item.error}")
            self._sweep_status(f"{_named(item.run)} failed: {item.error}")
            self.sweep_run_failed.emit(LibraryRow(file=item.run.path.name, error=item.error))
        elif isinstance(item, SweepFinished):
            failed = f" ({count.failed} failed, see the log)" if count.failed else ""
            self._sweep_status(f"finished: {len(item.rows)} runs{failed} in {item.seconds:.0f} s")

    def _sweep_ended(self, job: Job) -> None:
        if job.outcome == "finished":
            if self.state.status != FAILED:     # else the run on view failed, and says why
                self.state.mark(FINISHED if self.state.run is not None else STOPPED)
        elif job.outcome == "stopped":
            self.state.mark(STOPPED)
            self._sweep_status(f"stopped; {self._sweep.done} of {self._sweep.total} runs done. "
                               "Start the same sweep again to resume it.")
        else:
            problem = errors.describe(job.error)
            self.state.mark(FAILED, f"{problem.title}: {problem.message}")
            self._sweep_status(f"failed: {problem.title}")
            self._error(job.error, "The sweep")
        self._refresh()
        self.sweep_ended.emit(job.outcome)


def _named(run: PlannedRun) -> str:
    """How the status line names a run of the sweep, e.g. "run 2 of 4 (minmax W4A8 s0)"."""
    return f"run {run.index} of {run.total} ({run.label})"
