"""SweepJob: quantizers × bit-widths × seeds searched into a workspace (the engine's ``run_sweep`` events).

``run_sweep`` wraps each run's search events in ``RunProgress``, so the run view draws the runs of
the sweep live, exactly as a single search; its result is the ``SweepFinished`` summary. Where the
runs execute is a ``SweepBackend``: one after another in this process, or as tasks on a Ray cluster
(whose events interleave when runs overlap, each tagged with its run).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Iterator

from engine.pipeline import RunSpec
from engine.search.config import SearchConfig
from engine.sweep import CellResources, SearchFn, SweepFinished, SweepGrid, run_sweep


@dataclass(frozen=True)
class SweepBackend:
    """``run_sweep``'s backend arguments, as the sweep form collects them: ``address`` None is a new local
    Ray cluster (or the one RAY_ADDRESS names); ``resources`` is what each run asks of the cluster."""
    name: str = "local"
    address: str | None = None
    resources: CellResources | None = None

    @property
    def label(self) -> str:
        if self.name != "ray":
            return self.name
        where = self.address or "a new local cluster"
        cells = self.resources or CellResources()
        return f"ray ({where}; {cells.cpus:g} CPU, {cells.gpus:g} GPU per run)"


@dataclass(frozen=True)
class SweepJob:
    grid: SweepGrid
    spec: RunSpec                   # the run panel's settings, shared by every run of the sweep
    config: SearchConfig
    workspace: Path
    search_fn: SearchFn | None = None   # with Ray, pickled to the workers: a module-level function
    backend: SweepBackend = field(default_factory=SweepBackend)
    name: ClassVar[str] = "sweep"
    shows_run: ClassVar[bool] = True

    def events(self) -> Iterator[Any]:
        return run_sweep(self.grid, self.spec, self.config, self.workspace, search_fn=self.search_fn,
                         backend=self.backend.name, address=self.backend.address,
                         resources=self.backend.resources)

    def result_of(self, event: Any) -> Any:
        return event if isinstance(event, SweepFinished) else None
