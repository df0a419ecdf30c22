"""The sweep form: which quantizers × bit-widths × seeds to search into the workspace folder, and where.

Everything else a run needs (model, data, calibration size, preset and search options, device) is
shared by every run of the sweep and taken from the main window's run panel, so there is one
place to set it. The form only builds an ``engine.sweep.SweepGrid`` and a ``SweepBackend`` (this
process, or a Ray cluster); the main window runs them.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import QSettings, Qt, QTimer
from PySide6.QtWidgets import (QComboBox, QDialog, QDialogButtonBox, QDoubleSpinBox, QFormLayout, QLabel,
                               QLineEdit, QListWidget, QListWidgetItem, QVBoxLayout, QWidget)

from engine.pipeline import RunSpec
from engine.quant import available_quantizers
from engine.search.config import preset_label
from engine.sweep import CellResources, SweepGrid, load_ray, plan_sweep

from app.jobs.background import BackgroundCall
from app.jobs.sweep import SweepBackend

DEFAULT_QUANTIZERS = ("minmax", "percentile", "omse")
DEFAULT_BITS = "W8A8, W4A8, W4A3"
DEFAULT_SEEDS = "0, 1"
SETTINGS_KEY = "sweep/last"           # the last grid started: starting it again resumes it
PLAN_DELAY_MS = 250                   # re-plan once typing pauses, not on every keystroke


class SweepDialog(QDialog):
    """Collects a SweepGrid; ``accepted`` means "start it" (``grid()`` then returns it)."""

    def __init__(self, spec: RunSpec, config: Any, workspace: Path, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("sweepDialog")
        self.setWindowTitle("New sweep")
        self.spec, self.config, self.workspace = spec, config, Path(workspace)
        layout = QVBoxLayout(self)
        intro = QLabel("Search every combination below, each into its own run file in the workspace: one run "
                       "after another in this process, or several at once on a Ray cluster. Runs already in the "
                       "folder are skipped, so starting the same sweep again resumes it.", objectName="hint")
        intro.setWordWrap(True)
        layout.addWidget(intro)
        form = QFormLayout()
        self.quantizers = QListWidget(objectName="sweepQuantizers")
        self.quantizers.setToolTip("Base quantizers to compare (tick one or more).")
        last = QSettings().value(SETTINGS_KEY)
        last = last if isinstance(last, dict) else {}
        chosen = str(last.get("quantizers", "")).split(",") if last else DEFAULT_QUANTIZERS
        for name in available_quantizers():
            item = QListWidgetItem(name)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(Qt.CheckState.Checked if name in chosen else Qt.CheckState.Unchecked)
            self.quantizers.addItem(item)
        self.quantizers.setMaximumHeight(150)
        form.addRow("Quantizers", self.quantizers)
        self.bits = QLineEdit(str(last.get("bits", DEFAULT_BITS)), objectName="sweepBits")
        self.bits.setToolTip("Bit-widths separated by commas: W<weight bits>A<activation bits>.")
        form.addRow("Bit-widths", self.bits)
        self.seeds = QLineEdit(str(last.get("seeds", DEFAULT_SEEDS)), objectName="sweepSeeds")
        self.seeds.setToolTip("Seeds separated by commas; the views show the mean and spread over them.")
        form.addRow("Seeds", self.seeds)
        self._add_backend_rows(form, last)
        layout.addLayout(form)
        shared = QLabel(self._shared_text(), objectName="sweepShared")
        shared.setWordWrap(True)
        shared.setTextFormat(Qt.TextFormat.RichText)
        layout.addWidget(shared)
        self.plan = QLabel("", objectName="sweepPlan")
        self.plan.setWordWrap(True)
        layout.addWidget(self.plan)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Cancel)
        self.start = self.buttons.addButton("Start sweep", QDialogButtonBox.ButtonRole.AcceptRole)
        self.start.setObjectName("sweepStart")
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        layout.addWidget(self.buttons)
        self._planner = BackgroundCall("sweep-plan", self)
        self._plan_timer = QTimer(self, singleShot=True, interval=PLAN_DELAY_MS)
        self._plan_timer.timeout.connect(self._update_plan)
        for signal in (self.bits.textChanged, self.seeds.textChanged, self.quantizers.itemChanged,
                       self.backend_choice.currentIndexChanged):
            signal.connect(lambda *_a: self._edited())
        self._update_plan()
        self.resize(560, 520)

    def _add_backend_rows(self, form: QFormLayout, last: dict) -> None:
        """Where the runs execute; the Ray rows are editable only with Ray chosen."""
        self.backend_choice = QComboBox(objectName="sweepBackend")
        self.backend_choice.addItem("This process: one run after another", "local")
        self.backend_choice.addItem("Ray cluster: several runs at once", "ray")
        self.backend_choice.setToolTip("Ray runs each run as a task on a Ray cluster (pip install -e '.[ray]'); "
                                       "this process writes every run file, so workers need no shared folder.")
        form.addRow("Run on", self.backend_choice)
        self.address = QLineEdit(str(last.get("address", "")), objectName="sweepAddress")
        self.address.setPlaceholderText("empty: a new local cluster (or the one RAY_ADDRESS names)")
        self.address.setToolTip("The cluster to join: auto = the one `ray start --head` started on this machine; "
                                "ray://host:10001 = a remote head node; empty = start one here for the sweep.")
        form.addRow("Ray address", self.address)
        self.cpus = _resource_spin("sweepCpus", 0.1, float(last.get("cpus", 1.0)),
                                   "CPU cores each run asks for (the search uses as many threads).")
        form.addRow("CPUs per run", self.cpus)
        self.gpus = _resource_spin("sweepGpus", 0.0, float(last.get("gpus", 0.0)),
                                   "GPUs each run asks for: 1 = a GPU of its own; 0.5 = two runs share one.")
        form.addRow("GPUs per run", self.gpus)
        self.backend_choice.currentIndexChanged.connect(lambda _i: self._backend_changed())
        self.backend_choice.setCurrentIndex(max(0, self.backend_choice.findData(last.get("backend", "local"))))
        self._backend_changed()

    def _backend_changed(self) -> None:
        on_ray = self.backend_choice.currentData() == "ray"
        for widget in (self.address, self.cpus, self.gpus):
            widget.setEnabled(on_ray)

    def backend(self) -> SweepBackend:
        """Where the runs execute, as chosen."""
        if self.backend_choice.currentData() != "ray":
            return SweepBackend()
        return SweepBackend("ray", self.address.text().strip() or None,
                            CellResources(cpus=self.cpus.value(), gpus=self.gpus.value()))

    def set_backend(self, name: str, address: str = "", cpus: float = 1.0, gpus: float = 0.0) -> None:
        """Fill the backend rows (tests)."""
        self.backend_choice.setCurrentIndex(self.backend_choice.findData(name))
        self.address.setText(address)
        self.cpus.setValue(cpus)
        self.gpus.setValue(gpus)

    def _shared_text(self) -> str:
        spec, config = self.spec, self.config
        data = spec.data or "built-in digits"
        budget = (f"{config.passes} passes × {config.cycles} cycles × {config.children} children per block step"
                  if config.budget is None else
                  f"{config.budget:,} evaluations over {config.passes} passes, {config.children} children per cycle")
        return (f"<b>Shared by every run</b> (from the run panel): model {spec.model}, data {data}, "
                f"{spec.calib_size:,} calibration images, {preset_label(config.preset)} ({config.strategy}): "
                f"{budget}, device "
                f"{spec.device or 'auto'}.<br><b>Workspace</b>: {self.workspace}")

    def checked_quantizers(self) -> list[str]:
        return [self.quantizers.item(i).text() for i in range(self.quantizers.count())
                if self.quantizers.item(i).checkState() == Qt.CheckState.Checked]

    def set_grid(self, quantizers: list[str], bits: str, seeds: str) -> None:
        """Fill the form (tests, and re-running a sweep)."""
        for i in range(self.quantizers.count()):
            item = self.quantizers.item(i)
            item.setCheckState(Qt.CheckState.Checked if item.text() in quantizers else Qt.CheckState.Unchecked)
        self.bits.setText(bits)
        self.seeds.setText(seeds)

    def grid(self) -> SweepGrid:
        """The grid typed in; ValueError names what is wrong."""
        return SweepGrid.parse(",".join(self.checked_quantizers()), self.bits.text(), self.seeds.text(),
                               self.spec.quant.attn_bits)

    def remember(self) -> None:
        """Keep the grid for the next time the form opens (to resume or extend the sweep)."""
        QSettings().setValue(SETTINGS_KEY, {"quantizers": ",".join(self.checked_quantizers()),
                                            "bits": self.bits.text(), "seeds": self.seeds.text(),
                                            "backend": self.backend_choice.currentData(),
                                            "address": self.address.text(), "cpus": self.cpus.value(),
                                            "gpus": self.gpus.value()})

    @property
    def planning(self) -> bool:
        """The plan shown is not yet the one of the form as typed (typing has not paused, or it is being read)."""
        return self._plan_timer.isActive() or self._planner.pending

    def _edited(self) -> None:
        self.start.setEnabled(False)          # until the plan of what is typed now is known
        self._plan_timer.start()

    def _update_plan(self) -> None:
        """Plan the grid as typed in the background: planning opens every run file of the workspace."""
        try:
            grid = self.grid()
        except ValueError as exc:
            self._planner.cancel()
            self._show_problem(exc)
            return
        spec, config, workspace, backend = self.spec, self.config, self.workspace, self.backend()
        self.plan.setText("Looking for runs of this grid already in the workspace…")
        self.start.setEnabled(False)
        self._planner.request(lambda: _plan(grid, spec, config, workspace, backend),
                              lambda runs: self._show_plan(grid, runs), self._show_problem)

    def _show_problem(self, exc: BaseException) -> None:
        self.plan.setText(f'<span style="color:#c0392b">{exc}</span>')
        self.start.setEnabled(False)

    def _show_plan(self, grid: SweepGrid, runs: list[Any] | None) -> None:
        total = len(grid.cells())
        done = sum(run.done for run in runs) if runs else 0
        left = total - done
        self.plan.setText(f"{total} run{'s' if total != 1 else ''}: {len(grid.quantizers)} quantizer(s) × "
                          f"{len(grid.bits)} bit-width(s) × {len(grid.seeds)} seed(s)"
                          + (f"; {done} already in the workspace (skipped), {left} to search." if done else "."))
        self.start.setEnabled(left > 0)


def _plan(grid: SweepGrid, spec: RunSpec, config: Any, workspace: Path, backend: SweepBackend) -> list[Any] | None:
    """The grid's runs, each marked done or not (pool thread); None when the workspace does not exist yet.
    With Ray chosen, a missing ``ray`` is the engine's ValueError naming the extra, shown before Start."""
    if backend.name == "ray":
        load_ray()
    return plan_sweep(grid, spec, config, workspace) if workspace.is_dir() else None


def _resource_spin(name: str, minimum: float, value: float, tip: str) -> QDoubleSpinBox:
    spin = QDoubleSpinBox(objectName=name, decimals=2, singleStep=0.5)
    spin.setRange(minimum, 1024.0)
    spin.setValue(value)
    spin.setToolTip(tip)
    return spin
