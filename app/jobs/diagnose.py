"""DiagnoseJob: where a run's quantized model loses accuracy, like ``python -m engine diagnose RUN.h5``.

The engine's ``diagnose_run`` events (``Stage``, ``Measured``, then ``Diagnosed``); its ``Diagnosis`` is
the result. A run that is in a file can keep the result there (``--into-run``): the next time the run
is shown, its Diagnose tab reads it back instead of measuring again.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Iterator

from engine.diagnose import DiagnoseConfig, Diagnosed, diagnose_run, save_into_run
from engine.runrecord import RunRecord
from engine.scalefile import load_run
from engine.events import Stage


@dataclass(frozen=True)
class DiagnoseJob:
    """``run``: a run file, or a run on screen that is in no file yet (then nothing is kept)."""
    run: Path | RunRecord
    config: DiagnoseConfig = DiagnoseConfig()
    keep_in_run: bool = True            # write the result into the run file's /diagnosis group
    name: ClassVar[str] = "diagnose"
    shows_run: ClassVar[bool] = False

    @property
    def path(self) -> Path | None:
        return self.run if isinstance(self.run, Path) else None

    def events(self) -> Iterator[Any]:
        path = self.path
        if path is None:
            record, source = self.run, "the unsaved run on screen"
        else:
            yield Stage(f"reading {path.name}")
            record, source = load_run(path), str(path)
        for event in diagnose_run(record, self.config, source):
            if isinstance(event, Diagnosed) and path is not None and self.keep_in_run:
                save_into_run(path, event.diagnosis)      # before the result: a kept result is a saved one
            yield event

    def result_of(self, event: Any) -> Any:
        return event.diagnosis if isinstance(event, Diagnosed) else None
