"""Files the app reads and writes: run files (Save scales…, Open run…), checkpoints (Resume run…),
and the recent-files list (QSettings).

Checkpoints live in the user's data folder (QStandardPaths.AppDataLocation/checkpoints). The engine
keeps a run's settings in its checkpoint, so "Resume run…" restores the form from it and continues
with the exact same model, data and search options.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from PySide6.QtCore import QSettings, QStandardPaths
from PySide6.QtWidgets import QFileDialog, QWidget

from engine.pipeline import RunSpec
from engine.quant import QuantConfig
from engine.search.checkpoint import load_checkpoint
from engine.search.config import SearchConfig

RUN_FILTER = "CPT-V run files (*.h5 *.hdf5);;All files (*)"
CHECKPOINT_FILTER = "CPT-V search checkpoints (*.ckpt *.npz);;All files (*)"
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


def read_checkpoint(path: Path) -> tuple[RunSpec, SearchConfig, Any]:
    """The settings a checkpoint was made with (the engine keeps them in it) and its history so far.

    The device is not part of a checkpoint's identity (a run may continue elsewhere): it comes back as None.
    """
    state, identity = load_checkpoint(path)
    try:
        spec_values = dict(identity["spec"])
        spec_values["quant"] = QuantConfig(**spec_values["quant"])
        spec_values.setdefault("device", None)
        return RunSpec(**spec_values), SearchConfig.from_dict(identity["config"]), state.history()
    except (KeyError, TypeError) as exc:
        raise ValueError(f"checkpoint {path} does not say which run it belongs to ({exc})") from None


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
