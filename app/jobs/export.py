"""ExportJob: a run file's model written as ONNX QDQ or AIMET encodings, like ``python -m engine export``.

The engine's ``Exported`` event (files written, and the parity in onnxruntime when checked) is the result.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Iterator

from engine.export import load_export
from engine.scalefile import load_run
from engine.events import Stage


@dataclass(frozen=True)
class ExportJob:
    run: Path
    out: Path
    fmt: str                 # one of engine.export.FORMATS
    use_base: bool
    check: bool | None       # None: check parity when the run's data loads (the CLI's default); False: skip
    name: ClassVar[str] = "export"
    shows_run: ClassVar[bool] = False

    def events(self) -> Iterator[Any]:
        """The engine's export; without the export extra, ``load_export``'s ValueError naming it (raised
        here, in the worker, so it reaches the error dialog like any failure)."""
        yield Stage(f"reading {self.run.name}")
        export = load_export()
        record = load_run(self.run)
        yield from export.export_run(record, self.out, self.fmt, use_base=self.use_base, check=self.check)

    def result_of(self, event: Any) -> Any:
        """``Exported`` (not imported here: its module needs the export extra); the rest are Stage events."""
        return None if isinstance(event, Stage) else event
