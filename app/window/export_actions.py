"""File ▸ Export…: a run file's model as ONNX QDQ or AIMET encodings, written in the worker thread.

A controller the main window owns, the same shape as Evaluate scales…: a run file in, the engine's ``Stage`` events,
one ``Exported`` event out (files written and, when the run's data loads, the parity check in
onnxruntime), run on the window's job runner. The library's "Export run…" opens the same dialog on the
selected file.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

from PySide6.QtWidgets import (QCheckBox, QComboBox, QDialog, QDialogButtonBox, QFileDialog, QFormLayout,
                               QHBoxLayout, QLineEdit, QPushButton, QWidget)

from engine.events import Stage

from app import errors, files
from app.jobs.export import ExportJob
from app.jobs.job import Job
from app.jobs.runner import JobRunner
from app.window.view import WindowView

log = logging.getLogger(__name__)

FORMAT_CHOICES = (("ONNX QDQ (QuantizeLinear / DequantizeLinear pairs)", "onnx-qdq"),
                  ("AIMET encodings (FP ONNX model + .encodings JSON)", "aimet"))
SCALE_CHOICES = (("Refined (after the search)", False), ("Base (before the search)", True))


def suggested_output(run: Path, fmt: str, use_base: bool) -> Path:
    """Next to the run file, named after it, the format and the scales, so exports of one run do not
    overwrite each other."""
    return run.with_name(f"{run.stem}-{'base' if use_base else 'refined'}-{fmt}.onnx")


class ExportDialog(QDialog):
    """The run file, format, scales, output path and parity check of one export."""

    def __init__(self, run: Path | None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Export the quantized model")
        self.setObjectName("exportDialog")
        self.run_path = QLineEdit(str(run) if run else "", objectName="exportRun")
        self.format = QComboBox(objectName="exportFormat")
        for text, fmt in FORMAT_CHOICES:
            self.format.addItem(text, fmt)
        self.scales = QComboBox(objectName="exportScales")
        for text, use_base in SCALE_CHOICES:
            self.scales.addItem(text, use_base)
        self.scales.setToolTip("A quantize run (no search) holds one set of scales: export it as Refined.")
        self.out = QLineEdit(objectName="exportOut")
        self.check = QCheckBox("Compare with the fake-quant model in onnxruntime on the run's test split",
                               objectName="exportCheck")
        self.check.setChecked(True)
        self.check.setToolTip("Skipped (with a log line) when the run's data does not load here.")

        form = QFormLayout(self)
        form.addRow("Run file", _with_browse(self.run_path, self._browse_run))
        form.addRow("Format", self.format)
        form.addRow("Scales", self.scales)
        form.addRow("Output", _with_browse(self.out, self._browse_out))
        form.addRow(self.check)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.button(QDialogButtonBox.StandardButton.Ok).setText("Export")
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)
        for signal in (self.run_path.editingFinished, self.format.currentIndexChanged,
                       self.scales.currentIndexChanged):
            signal.connect(self._suggest_output)
        self._suggest_output()

    def _suggest_output(self) -> None:
        run = self.run_path.text().strip()
        if run:
            self.out.setText(str(suggested_output(Path(run), self.format.currentData(), self.scales.currentData())))

    def _browse_run(self) -> None:
        path = files.ask_open_run(self)
        if path is not None:
            self.run_path.setText(str(path))
            self._suggest_output()

    def _browse_out(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export to", self.out.text(), "ONNX model (*.onnx)")
        if path:
            self.out.setText(path)

    def request(self) -> ExportJob:
        """The export the form describes; a ValueError naming an empty or missing field."""
        run, out = self.run_path.text().strip(), self.out.text().strip()
        if not run:
            raise ValueError("choose the run file (.h5) to export")
        if not Path(run).is_file():
            raise ValueError(f"run file not found: {run}")
        if not out:
            raise ValueError("choose the output path of the exported model (.onnx)")
        return ExportJob(Path(run), Path(out), self.format.currentData(), self.scales.currentData(),
                             None if self.check.isChecked() else False)


def _with_browse(field: QLineEdit, browse: Callable[[], None]) -> QWidget:
    row = QWidget()
    layout = QHBoxLayout(row)
    layout.setContentsMargins(0, 0, 0, 0)
    layout.addWidget(field, 1)
    button = QPushButton("Browse…")
    button.clicked.connect(lambda _c=False: browse())
    layout.addWidget(button)
    return row


def exported_text(result: Any) -> str:
    """One line for the log and the status: what was written and, when checked, the parity."""
    written = ", ".join(Path(f).name for f in result.files)
    text = (f"exported the {result.scales} scales ({result.n_points} quantization points, opset {result.opset}) "
            f"as {result.format} to {written}")
    return f"{text}; {result.parity.summary()}" if result.parity is not None else f"{text}; no parity check"


class ExportActions:
    """File ▸ Export… of ``window`` (its status line, error dialogs and ``export_ended`` signal), run on ``jobs``."""

    def __init__(self, window: WindowView, jobs: JobRunner) -> None:
        self.window = window
        self.jobs = jobs
        self.dialog: ExportDialog | None = None    # the last export dialog opened
        self.result: Any = None                    # the engine's Exported of the last export

    def export_run(self, path: str | Path | None = None) -> ExportDialog | None:
        """File ▸ Export…: the export dialog on ``path`` (default: the shown run's saved file); Export
        starts the job. None when busy."""
        if self.jobs.busy:
            return None
        source = self.window.state.source_path
        run = Path(path) if path else (Path(source) if source else None)
        dialog = self.dialog = ExportDialog(run, self.window)
        dialog.accepted.connect(lambda: self._export_from(dialog))
        dialog.open()
        return dialog

    def _export_from(self, dialog: ExportDialog) -> bool:
        request = self.window.read_form(dialog.request, "Export")
        return request is not None and self.start_export(request)

    def start_export(self, request: ExportJob) -> bool:
        """Run the engine's export of ``request`` in the worker thread."""
        if self.jobs.busy:
            return False
        self.result = None
        log.info("exporting %s as %s to %s", request.run, request.fmt, request.out)
        return self.jobs.start(request, self._export_events, self._export_ended) is not None

    def _export_events(self, items: list) -> None:
        for item in items:
            if isinstance(item, Stage):
                self.window.controls.status.setText(f"Exporting: {item.message}…")

    def _export_ended(self, job: Job) -> None:
        self.result = job.result
        status = self.window.controls.status
        if job.outcome == "finished" and job.result is not None:
            text = exported_text(job.result)
            log.info("%s", text)
            status.setText(text)
        elif job.outcome == "failed":
            status.setText(f"The export failed: {errors.describe(job.error).title}")
            self.window.show_error(job.error, "Export")
        self.window.export_ended.emit(job.outcome)
