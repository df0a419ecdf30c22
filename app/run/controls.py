"""Start / Pause / Resume / Stop buttons, the progress bar and the status line."""
from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QHBoxLayout, QLabel, QProgressBar, QPushButton, QVBoxLayout, QWidget

from app.run.results_card import format_seconds
from app.run.state import (FAILED, FINISHED, IDLE, LOADED, PAUSED, PREPARING, RUNNING, STOPPED, STOPPING,
                        RunState)

STATUS_TEXT = {
    IDLE: "Ready. Choose a model and settings on the left, then press Start.",
    LOADED: "Showing a run file.",
    FINISHED: "Finished.",
    STOPPED: "Stopped. Resume continues from the last checkpoint (every block step, every check of the joint phase).",
    FAILED: "The run failed (see the message and the log below).",
}


class ControlBar(QWidget):
    """Buttons on top, then the progress bar, then one status line."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("controlBar")
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.setSpacing(4)
        row = QHBoxLayout()
        row.setSpacing(6)
        self.start = QPushButton("Start", objectName="startButton")
        self.start.setToolTip("Quantize the model with the chosen settings, then run the CPT-V search (Ctrl+R).")
        self.pause = QPushButton("Pause", objectName="pauseButton")
        self.pause.setToolTip("Pause after the current candidate evaluation (Ctrl+P).")
        self.resume = QPushButton("Resume", objectName="resumeButton")
        self.resume.setToolTip("Continue a paused run, or a stopped one from its checkpoint.")
        self.stop = QPushButton("Stop", objectName="stopButton")
        self.stop.setToolTip("Stop after the current evaluation. The last checkpoint (every block step, every "
                             "check of the joint phase) is kept, so Resume can continue later.")
        for button in (self.start, self.pause, self.resume, self.stop):
            button.setMinimumWidth(84)
            row.addWidget(button)
        self.start.setDefault(True)
        row.addStretch(1)
        self.elapsed = QLabel("", objectName="elapsedLabel")
        self.elapsed.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        row.addWidget(self.elapsed)
        outer.addLayout(row)
        self.progress = QProgressBar(objectName="progressBar")
        self.progress.setTextVisible(True)
        self.progress.setFormat("")
        self.progress.setToolTip("Candidate evaluations done out of the run's total.")
        outer.addWidget(self.progress)
        self.status = QLabel(STATUS_TEXT[IDLE], objectName="statusLine")
        self.status.setWordWrap(True)
        outer.addWidget(self.status)
        self.set_buttons(IDLE, can_resume=False)

    def set_buttons(self, status: str, can_resume: bool) -> None:
        active = status in (PREPARING, RUNNING, PAUSED, STOPPING)
        self.start.setEnabled(not active)
        self.pause.setEnabled(status in (PREPARING, RUNNING))
        self.resume.setEnabled(status == PAUSED or (not active and can_resume))
        self.stop.setEnabled(status in (PREPARING, RUNNING, PAUSED))

    def update_from(self, state: RunState, pausing: bool = False) -> None:
        status = state.status
        if status == PREPARING:
            self.progress.setRange(0, 0)          # busy: loading, calibrating
            self.progress.setFormat("")
            self.status.setText(f"Preparing: {state.stage}…")
            self.elapsed.setText("")
            return
        total = max(state.total_evaluations, 1)
        self.progress.setRange(0, total)
        self.progress.setValue(min(state.evaluations, total))
        n_blocks = state.n_blocks
        if state.evaluations and n_blocks and status in (RUNNING, PAUSED, STOPPING, STOPPED):
            block = state.block_names[state.block_index] if 0 <= state.block_index < n_blocks else "?"
            # Blocks are visited last to first: the k-th block of a pass is index n_blocks - k.
            position = n_blocks - state.block_index if 0 <= state.block_index < n_blocks else 0
            self.progress.setFormat(f"pass {state.pass_index + 1} of {state.passes} · block {position} of "
                                    f"{n_blocks} ({block}) · {state.evaluations:,} / {state.total_evaluations:,} "
                                    f"evaluations")
        elif state.total_evaluations:
            self.progress.setFormat(f"{state.evaluations:,} / {state.total_evaluations:,} evaluations")
        else:
            self.progress.setFormat("")
        elapsed = state.elapsed()
        eta = state.eta()
        text = f"elapsed {format_seconds(elapsed)}" if state.started_at is not None else ""
        if eta is not None:
            text += f" · ETA {format_seconds(eta)}"
        self.elapsed.setText(text)
        if status == RUNNING:
            self.status.setText("Pausing after the current evaluation…" if pausing else
                                f"Searching on {state.device}: each dot in the loss plot is one candidate; the bars "
                                f"fill in as each block step finishes.")
        elif status == PAUSED:
            self.status.setText("Paused. Resume continues from here; Stop ends the run and keeps its checkpoint.")
        elif status == STOPPING:
            self.status.setText("Stopping after the current evaluation…")
        elif status == FAILED:
            self.status.setText(f"The run failed: {state.error}" if state.error else STATUS_TEXT[FAILED])
        elif status == LOADED:
            self.status.setText(f"Showing the run file {state.source_path}." if state.source_path else STATUS_TEXT[LOADED])
        elif status == FINISHED:
            self.status.setText("Finished. File ▸ Save scales… writes the refined scales (HDF5).")
        else:
            self.status.setText(STATUS_TEXT.get(status, status))
