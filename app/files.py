"""Files the app reads and writes: run files (Save scales…, Open run…), checkpoints (Resume run…),
and the recent-files list (QSettings).

Checkpoints live in the user's data folder (QStandardPaths.AppDataLocation/checkpoints). The engine
keeps a run's whole RunSpec and search config in its checkpoint (engine/search/resume.py), so
"Resume run…" restores the form from it and continues with the exact same model, weights, data and
search options; a weights file that moved is asked for by name and hash.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from PySide6.QtCore import QSettings, QStandardPaths
from PySide6.QtWidgets import QFileDialog, QWidget

from engine.pipeline import RunSpec
from engine.search.checkpoint import load_checkpoint
from engine.search.config import SearchConfig
from engine.search.resume import WeightsMissing, recorded_config, recorded_spec, with_weights

RUN_FILTER = "CPT-V run files (*.h5 *.hdf5);;All files (*)"
CHECKPOINT_FILTER = "CPT-V search checkpoints (*.ckpt *.npz);;All files (*)"
WEIGHTS_FILTER = "Model weights (*.safetensors *.pth *.pt *.bin);;All files (*)"
MAX_RECENT = 8


def data_dir() -> Path:
    path = Path(QStandardPaths.writableLocation(QStandardPaths.StandardLocation.AppDataLocation) or Path.home() / ".cptv-studio")
    path.mkdir(parents=True, exist_ok=True)
    return path


def checkpoint_dir() -> Path:
    path = data_dir() / "checkpoints"
    path.mkdir(parents=True, exist_ok=True)
    return path


def new_checkpoint_path(spec: RunSpec) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    name = f"{stamp}-{spec.model}-{spec.quant.quantizer}-{spec.quant.bits_label.replace('/', '_')}-seed{spec.seed}"
    path = checkpoint_dir() / f"{name}.ckpt"
    n = 1
    while path.exists():
        n += 1
        path = checkpoint_dir() / f"{name}-{n}.ckpt"
    return path


def read_checkpoint(path: Path, parent: QWidget | None = None) -> tuple[RunSpec, SearchConfig, Any] | None:
    """The run a checkpoint holds (its RunSpec and search config) and its history so far; None when
    its weights file moved and the user cancelled the dialog that asks for it."""
    checkpoint = load_checkpoint(path)
    spec, config = recorded_spec(checkpoint), recorded_config(checkpoint)
    try:
        spec = with_weights(spec, checkpoint, None)
    except WeightsMissing as missing:
        weights = ask_weights(parent, missing)
        if weights is None:
            return None
        spec = with_weights(spec, checkpoint, weights)
    return spec, config, checkpoint.state.history()


def ask_weights(parent: QWidget | None, missing: WeightsMissing) -> Path | None:
    """A file dialog for a run's weights file that is no longer where the run recorded it."""
    sha = f", sha256 {missing.sha256[:12]}…" if missing.sha256 else ""
    path, _ = QFileDialog.getOpenFileName(parent, f"Where is the run's weights file? (was {Path(missing.path).name}{sha})",
                                          str(Path(missing.path).parent), WEIGHTS_FILTER)
    return Path(path) if path else None


class RecentFiles:
    """Recently opened or saved run files and checkpoints, remembered across sessions (QSettings)."""

    def __init__(self, key: str = "recentFiles") -> None:
        self._settings = QSettings()
        self._key = key

    def list(self) -> list[str]:
        value = self._settings.value(self._key, [])
        if isinstance(value, str):
            value = [value]
        return [str(v) for v in (value or [])]

    def add(self, path: str | Path) -> None:
        path = str(Path(path).resolve())
        items = [p for p in self.list() if p != path]
        self._settings.setValue(self._key, [path, *items][:MAX_RECENT])
        self._settings.sync()

    def remove(self, path: str) -> None:
        self._settings.setValue(self._key, [p for p in self.list() if p != path])

    def clear(self) -> None:
        self._settings.setValue(self._key, [])


def last_dir() -> str:
    value = QSettings().value("lastDirectory", "")
    return str(value) if value else str(Path.home())


def remember_dir(path: str | Path) -> None:
    QSettings().setValue("lastDirectory", str(Path(path).parent))


def ask_save_run(parent: QWidget, suggested_name: str) -> Path | None:
    path, _ = QFileDialog.getSaveFileName(parent, "Save scales (run file)", str(Path(last_dir()) / suggested_name),
                                          RUN_FILTER)
    if not path:
        return None
    path = Path(path)
    if path.suffix.lower() not in (".h5", ".hdf5"):
        path = path.with_name(path.name + ".h5")
    remember_dir(path)
    return path


def ask_open_run(parent: QWidget) -> Path | None:
    path, _ = QFileDialog.getOpenFileName(parent, "Open run file", last_dir(), RUN_FILTER)
    if not path:
        return None
    remember_dir(path)
    return Path(path)


def ask_resume(parent: QWidget) -> Path | None:
    path, _ = QFileDialog.getOpenFileName(parent, "Resume a stopped run (checkpoint)", str(checkpoint_dir()),
                                          CHECKPOINT_FILTER)
    return Path(path) if path else None


def suggested_run_name(run: Any) -> str:
    quant = run.quant
    preset = (run.search or {}).get("preset", "run")
    return f"{run.model_name}-{quant.quantizer}-{quant.bits_label.replace('/', '_')}-{preset}-seed{run.seed}.h5"
