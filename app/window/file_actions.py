"""File ▸ Save scales…, Open run…, Evaluate scales…, Recent files: the main window's file actions.

A mixin of MainWindow (it uses the window's state, jobs, results card and error dialogs).
Reading and writing run files is quick HDF5 I/O done on the GUI thread; anything that needs the
model (Evaluate scales…) runs in the worker thread.
"""
from __future__ import annotations

import logging
from dataclasses import fields, replace
from pathlib import Path

from engine.search.events import Stage

from app import errors, files
from app.jobs.evaluate import EvaluateJob
from app.jobs.job import Job
from app.run.results_card import run_summary
from app.run.state import RunState
from app.window import closing

log = logging.getLogger("app.window.main_window")


class FileActions:
    def save_scales(self, path: str | Path | None = None) -> Path | None:
        """Save scales…: write the shown run (base + refined scales, history, metrics) to HDF5."""
        if self.state.run is None:
            return None
        path = Path(path) if path else files.ask_save_run(self, files.suggested_run_name(self.state.run))
        if path is None:
            return None
        from engine.scalefile import save_run
        try:
            written = Path(save_run(path, self.state.run) or path)
        except (OSError, ValueError) as exc:
            self._error(exc, "Save scales")
            return None
        self.state.saved = True
        self.state.source_path = str(written)     # File ▸ Export… offers this file
        self.recent.add(written)
        log.info("saved the run to %s", written)
        self.say(f"Showing {written.name}: {run_summary(self.state.run)}.")
        self.statusBar().showMessage(f"Saved {written}", 8000)
        return written

    def _may_close_with_result(self) -> bool:
        """Closing loses no result the user wants: asks Save / Discard / Cancel while the finished run is in
        no file (once per run); Save closes only if the file was written. A non-interactive window never asks."""
        run = self.state.run
        if not self.state.unsaved or run is self._discarded_run:
            return True
        if not self.interactive:
            log.warning("closing with an unsaved result (%s %s)", run.quant.quantizer, run.quant.bits_label)
            return True
        answer = closing.ask_unsaved(self, f"{run.model_name}, {run.quant.quantizer} {run.quant.bits_label}")
        if answer == closing.SAVE:
            return self.save_scales() is not None
        if answer == closing.DISCARD:
            self._discarded_run = run
        return answer == closing.DISCARD

    def _run_file(self, path: str | Path | None) -> Path | None:
        """The run file to act on: ``path``, else the user's pick; None when busy or cancelled."""
        if self._busy():
            return None
        return Path(path) if path else files.ask_open_run(self)

    def open_run(self, path: str | Path | None = None) -> bool:
        """Open run…: show a run file's history plots and results card (no model work)."""
        path = self._run_file(path)
        if path is None:
            return False
        from engine.scalefile import load_run
        try:
            run = load_run(path)
        except (OSError, ValueError, KeyError) as exc:
            self._error(exc, f"Open {path.name}")
            return False
        self.state = RunState.from_record(run, str(path))
        self._last = None
        self.results.show_run(run, str(path))
        self.recent.add(path)
        settings = self._show_settings(run)
        self._refresh()
        self.say(f"Showing {path.name}: {run_summary(run)}."
                 + (" The settings on the left are the run's own: Start reruns it." if settings else ""))
        return True

    def _show_settings(self, run) -> bool:
        """Fill the run panel with the run's own settings (the device and compile mode stay as chosen: they
        change how a run computes, not what); False when the file records no settings the panel can show."""
        from engine.rebuild import recorded_spec
        from engine.search.config import SearchConfig

        known = {f.name for f in fields(SearchConfig)}     # the file also records what the run resolved
        try:
            spec = replace(recorded_spec(run), device=self.run_panel.spec().device)
            config = SearchConfig.from_dict({k: v for k, v in run.search.items() if k in known}) if run.search else None
        except (TypeError, ValueError) as exc:
            log.warning("the run panel keeps its settings: the file's are not this version's (%s)", exc)
            return False
        self.run_panel.set_values(spec, config)
        return True

    def evaluate_scales(self, path: str | Path | None = None) -> bool:
        """Evaluate scales…: measure a run file's scales on the selected model, in the worker thread."""
        path = self._run_file(path)
        if path is None:
            return False
        try:
            spec = self.run_panel.spec()
        except ValueError as exc:
            self._error(exc, "Evaluate scales")
            return False
        self.evaluation = None
        log.info("evaluating the scales of %s on %s", path, spec.model)
        self._start_job(EvaluateJob(spec, path), self._evaluation_events, self._evaluation_ended)
        return True

    def _evaluation_events(self, items: list) -> None:
        for item in items:
            if isinstance(item, Stage):
                self.controls.status.setText(f"Evaluating scales: {item.message}…")

    def _evaluation_ended(self, job: Job) -> None:
        result = self.evaluation = job.result
        if job.outcome == "finished" and result is not None:
            text = (f"{Path(result.path).name} on {result.model} ({result.bits}): test top-1 "
                    f"{result.quant_top1:.2f}% (full precision {result.fp_top1:.2f}%, n={result.n_test:,})")
            log.info("%s", text)
            self.controls.status.setText(text)
        elif job.outcome == "failed":
            self.controls.status.setText(f"Evaluating the scales failed: {errors.describe(job.error).title}")
            self._error(job.error, "Evaluate scales")
        self.evaluation_ended.emit(job.outcome)

    def _fill_recent(self) -> None:
        self.recent_menu.clear()
        items = self.recent.list()
        for item in items:
            action = self.recent_menu.addAction(item)
            handler = self.resume_run if item.endswith(".ckpt") else self.open_run
            action.triggered.connect(lambda _c=False, p=item, h=handler: h(p))
        if not items:
            self.recent_menu.addAction("(none)").setEnabled(False)

