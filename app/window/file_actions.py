"""File ▸ Save scales…, Open run…, Evaluate scales…, Recent files: the main window's file actions.

A controller the main window owns: it shows files in the window's run view and starts Evaluate scales… on
the window's job runner. Reading and writing run files is quick HDF5 I/O done on the GUI thread; anything that needs the
model (Evaluate scales…) runs in the worker thread.
"""
from __future__ import annotations

import logging
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from PySide6.QtWidgets import QMenu

from engine.events import Stage

from app import errors, files
from app.jobs.evaluate import EvaluateJob
from app.jobs.job import Job
from app.jobs.runner import JobRunner
from app.run.results_card import run_summary
from app.run.state import RunState
from app.window import closing
from app.window.view import WindowView

log = logging.getLogger(__name__)


class FileActions:
    """Save scales…, Open run…, Evaluate scales… and Recent files of ``window``, whose run view they fill;
    the evaluation runs on ``jobs``."""

    def __init__(self, window: WindowView, jobs: JobRunner) -> None:
        self.window = window
        self.jobs = jobs
        self.evaluation: Any = None       # the last Evaluate scales… result (ScalesEvaluated)
        self._discarded_run: Any = None   # the unsaved run the user chose to lose when closing

    def save_scales(self, path: str | Path | None = None) -> Path | None:
        """Save scales…: write the shown run (base + refined scales, history, metrics) to HDF5."""
        window = self.window
        state = window.state
        if state.run is None:
            return None
        path = Path(path) if path else files.ask_save_run(window, files.suggested_run_name(state.run))
        if path is None:
            return None
        from engine.scalefile import save_run
        try:
            written = Path(save_run(path, state.run) or path)
        except (OSError, ValueError) as exc:
            window.show_error(exc, "Save scales")
            return None
        state.saved = True
        state.source_path = str(written)     # File ▸ Export… offers this file
        window.recent.add(written)
        log.info("saved the run to %s", written)
        window.say(f"Showing {written.name}: {run_summary(state.run)}.")
        window.statusBar().showMessage(f"Saved {written}", 8000)
        return written

    def may_close_with_result(self) -> bool:
        """Closing loses no result the user wants: asks Save / Discard / Cancel while the finished run is in
        no file (once per run); Save closes only if the file was written. A non-interactive window never asks."""
        run = self.window.state.run
        if not self.window.state.unsaved or run is self._discarded_run:
            return True
        if not self.window.interactive:
            log.warning("closing with an unsaved result (%s %s)", run.quant.quantizer, run.quant.bits_label)
            return True
        answer = closing.ask_unsaved(self.window, f"{run.model_name}, {run.quant.quantizer} {run.quant.bits_label}")
        if answer == closing.SAVE:
            return self.save_scales() is not None
        if answer == closing.DISCARD:
            self._discarded_run = run
        return answer == closing.DISCARD

    def _run_file(self, path: str | Path | None) -> Path | None:
        """The run file to act on: ``path``, else the user's pick; None when busy or cancelled."""
        if self.jobs.busy:
            return None
        return Path(path) if path else files.ask_open_run(self.window)

    def open_run(self, path: str | Path | None = None) -> bool:
        """Open run…: show a run file's history plots and results card (no model work)."""
        path = self._run_file(path)
        if path is None:
            return False
        from engine.scalefile import load_run
        try:
            run = load_run(path)
        except (OSError, ValueError, KeyError) as exc:
            self.window.show_error(exc, f"Open {path.name}")
            return False
        window = self.window
        window.state = RunState.from_record(run, str(path))
        window.last_run = None
        window.results.show_run(run, str(path))
        window.recent.add(path)
        settings = self._show_settings(run)
        window.refresh()
        window.say(f"Showing {path.name}: {run_summary(run)}."
                 + (" The settings on the left are the run's own: Start reruns it." if settings else ""))
        return True

    def _show_settings(self, run) -> bool:
        """Fill the run panel with the run's own settings (the device and compile mode stay as chosen: they
        change how a run computes, not what); False when the file records no settings the panel can show."""
        from engine.rebuild import recorded_spec
        from engine.search.config import SearchConfig

        known = {f.name for f in fields(SearchConfig)}     # the file also records what the run resolved
        try:
            spec = replace(recorded_spec(run), device=self.window.run_panel.spec().device)
            config = SearchConfig.from_dict({k: v for k, v in run.search.items() if k in known}) if run.search else None
        except (TypeError, ValueError) as exc:
            log.warning("the run panel keeps its settings: the file's are not this version's (%s)", exc)
            return False
        self.window.run_panel.set_values(spec, config)
        return True

    def evaluate_scales(self, path: str | Path | None = None) -> bool:
        """Evaluate scales…: measure a run file's scales on the selected model, in the worker thread."""
        path = self._run_file(path)
        if path is None:
            return False
        spec = self.window.read_form(self.window.run_panel.spec, "Evaluate scales")
        if spec is None:
            return False
        self.evaluation = None
        log.info("evaluating the scales of %s on %s", path, spec.model)
        return self.jobs.start(EvaluateJob(spec, path), self._evaluation_events, self._evaluation_ended) is not None

    def _evaluation_events(self, items: list) -> None:
        for item in items:
            if isinstance(item, Stage):
                self.window.controls.status.setText(f"Evaluating scales: {item.message}…")

    def _evaluation_ended(self, job: Job) -> None:
        result = self.evaluation = job.result
        status = self.window.controls.status
        if job.outcome == "finished" and result is not None:
            text = (f"{Path(result.path).name} on {result.model} ({result.bits}): test top-1 "
                    f"{result.quant_top1:.2f}% (full precision {result.fp_top1:.2f}%, n={result.n_test:,})")
            log.info("%s", text)
            status.setText(text)
        elif job.outcome == "failed":
            status.setText(f"Evaluating the scales failed: {errors.describe(job.error).title}")
            self.window.show_error(job.error, "Evaluate scales")
        self.window.evaluation_ended.emit(job.outcome)

    def fill_recent(self, menu: QMenu) -> None:
        """The Recent files menu, filled as it opens: a run file opens, a checkpoint resumes."""
        menu.clear()
        items = self.window.recent.list()
        for item in items:
            action = menu.addAction(item)
            handler = self.window.resume_run if item.endswith(".ckpt") else self.open_run
            action.triggered.connect(lambda _c=False, p=item, h=handler: h(p))
        if not items:
            menu.addAction("(none)").setEnabled(False)

