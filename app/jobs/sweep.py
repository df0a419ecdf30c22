"""SweepJob: quantizers × bit-widths × seeds searched into a workspace (the engine's ``run_sweep`` events).

``run_sweep`` wraps each run's search events in ``RunProgress``, so the run view draws every run of
the sweep live, exactly as a single search; its result is the ``SweepFinished`` summary.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Iterator

from engine.pipeline import RunSpec
from engine.search.config import SearchConfig
from engine.sweep import SearchFn, SweepFinished, SweepGrid, run_sweep


@dataclass(frozen=True)
class SweepJob:
    grid: SweepGrid
    spec: RunSpec                   # the run panel's settings, shared by every run of the sweep
    config: SearchConfig
    workspace: Path
    search_fn: SearchFn | None = None
    name: ClassVar[str] = "sweep"
    shows_run: ClassVar[bool] = True

    def events(self) -> Iterator[Any]:
        return run_sweep(self.grid, self.spec, self.config, self.workspace, search_fn=self.search_fn)

    def result_of(self, event: Any) -> Any:
        return event if isinstance(event, SweepFinished) else None
