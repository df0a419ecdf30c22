"""Library ▸ Run library… / New sweep…: a sweep runs in the main window's worker, like a search.

A mixin of MainWindow. ``engine.sweep.run_sweep`` is one generator of sweep events wrapping each
run's search events, so the same SearchRunner (QThread) consumes it and Pause/Stop act between
events. Each run's search events feed the window's live plots, exactly as a single search does;
the sweep events move the library's progress bar and refresh its table as run files appear.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from engine.sweep import (RunDone, RunProgress, RunStarted, SweepFinished, SweepGrid, SweepStarted,
                          describe, run_sweep)

from . import errors
from .run_state import FAILED, FINISHED, PAUSED, PREPARING, RUNNING, STOPPED, STOPPING, RunState
from .worker import Outcome, PauseChanged, SearchRunner

log = logging.getLogger("app.main_window")


class SweepActions:
    def _build_library_menu(self) -> None:
        menu = self.menuBar().addMenu("&Library")
        self.library_action = self._action(menu, "Run &library…", self.show_library, "Ctrl+L",
                                           "The workspace's run files in a table, with comparison views.")
        self.sweep_action = self._action(menu, "New &sweep…", self.new_sweep, "Ctrl+Shift+S",
                                         "Search quantizers × bit-widths × seeds into the workspace folder.")
        self.library_window = None
        self._sweep: dict[str, Any] = {}

    def show_library(self):
        """The run library window (one per main window, created on first use)."""
        if self.library_window is None:
            from .library_window import LibraryWindow
            self.library_window = LibraryWindow(main=self, parent=self)   # a window of its own, closed with this one
        self.library_window.show()
        self.library_window.raise_()
        return self.library_window

    def new_sweep(self):
        return self.show_library().show_sweep_dialog()

    def start_sweep(self, grid: SweepGrid, workspace: str | Path) -> bool:
        """Search every run of ``grid`` with the run panel's other settings, into ``workspace``."""
        if self._busy():
            return False
        try:
            spec, config = self.run_panel.spec(), self.run_panel.search_config()
        except ValueError as exc:
            self._error(exc, "Sweep")
            return False
        from .main_window import default_search_fn
        search_fn = self._search_fn or default_search_fn()
        workspace = Path(workspace)
        self._sweep = {"done": 0, "total": len(grid.cells()), "label": "", "workspace": workspace}
        self.runner = SearchRunner(lambda: run_sweep(grid, spec, config, workspace, search_fn=search_fn),
                                   kind="sweep", parent=self)
        self._last = None
        self.state = RunState()
        self.results.clear()
        self.state.mark(PREPARING)
        self.state.stage = "planning the sweep"
        log.info("sweep: %s × %s × seeds %s into %s", ",".join(grid.quantizers), ",".join(grid.bits),
                 ",".join(map(str, grid.seeds)), workspace)
        self.runner.start()
        self._sweep_status("planning…")
        self._refresh()
        return True

    def _sweep_status(self, text: str) -> None:
        s = self._sweep
        self.statusBar().showMessage(f"Sweep: {text}")
        self.sweep_progress.emit(text, s.get("done", 0), s.get("total", 0))

    def _sweep_tick(self, items: list) -> None:
        outcome = None
        for item in items:
            if isinstance(item, Outcome):
                outcome = item
            elif isinstance(item, PauseChanged):
                self.state.mark(PAUSED if item.paused else RUNNING)
                self._pausing = False
            elif isinstance(item, RunProgress):
                self._sweep_event(item.event)
            else:
                self._sweep_step(item)
        if outcome is not None:
            self._sweep_ended(outcome)

    def _sweep_event(self, event: Any) -> None:
        from .main_window import _log_event
        self.state.apply(event)
        _log_event(event, self.state)
        if self.state.status == RUNNING and self.runner is not None and self.runner.stop_requested:
            self.state.status = STOPPING

    def _sweep_step(self, item: Any) -> None:
        line = describe(item)
        if line:
            log.info("%s", line)
        s = self._sweep
        if isinstance(item, SweepStarted):
            s["total"], s["done"] = len(item.runs), sum(run.done for run in item.runs)
            self._sweep_status(f"{s['done']} of {s['total']} runs already in the workspace")
        elif isinstance(item, RunStarted):
            self.state = RunState()             # each run of the sweep gets fresh live plots
            self.state.mark(PREPARING)
            self.state.stage = f"{item.run.label}: loading and calibrating"
            self.results.clear()
            s["label"] = f"run {item.run.index} of {item.run.total} ({item.run.label})"
            self._sweep_status(f"{s['label']}…")
        elif isinstance(item, RunDone):
            s["done"] += 1
            self.state.saved = True             # the sweep wrote the run's file
            if self.state.run is not None:
                self.results.show_run(self.state.run, str(item.run.path))
            self._sweep_status(f"{s['label']} done → {item.run.path.name}")
            self.sweep_run_done.emit(str(item.run.path))
        elif isinstance(item, SweepFinished):
            self._sweep_status(f"finished: {len(item.rows)} runs in {item.seconds:.0f} s")

    def _sweep_ended(self, outcome: Outcome) -> None:
        runner, self.runner = self.runner, None
        runner.wait(5000)
        runner.deleteLater()
        self._pausing = False
        self.log_panel.drain()
        if outcome.kind == "finished":
            self.state.mark(FINISHED if self.state.run is not None else STOPPED)
        elif outcome.kind == "stopped":
            self.state.mark(STOPPED)
            self._sweep_status(f"stopped; {self._sweep.get('done', 0)} of {self._sweep.get('total', 0)} runs done. "
                               "Start the same sweep again to resume it.")
        else:
            problem = errors.describe(outcome.error)
            self.state.mark(FAILED, f"{problem.title}: {problem.message}")
            self._sweep_status(f"failed: {problem.title}")
            self._error(outcome.error, "The sweep")
        self._refresh()
        self.sweep_ended.emit(outcome.kind)
        if self._close_when_stopped:
            self.close()
