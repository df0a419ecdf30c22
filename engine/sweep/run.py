"""Running a sweep: plan, then search every unfinished cell on the chosen backend, one stream of events.

The runner is a generator of sweep-level events that wrap each run's search events, so the app's
worker consumes a sweep exactly like a single search (pause and stop act between two events) and
the CLI prints its progress from the same stream. This process writes every run file, on both
backends.
"""
from __future__ import annotations

import time
from contextlib import closing
from pathlib import Path
from typing import Iterator

from ..library import LibraryRow, read_row
from ..pipeline import RunSpec
from ..search import run as search_run
from ..search.config import SearchConfig
from .cell import SearchFn
from .events import RunFailed, SweepEvent, SweepFinished, SweepStarted
from .local import run_local
from .plan import SweepGrid, plan_sweep
from .ray_backend import CellResources, load_ray, run_cells

BACKENDS = ("local", "ray")


def run_sweep(grid: SweepGrid, base: RunSpec, config: SearchConfig, workspace: str | Path,
              search_fn: SearchFn | None = None, backend: str = "local", address: str | None = None,
              resources: CellResources | None = None) -> Iterator[SweepEvent]:
    """Plan, then search every unfinished run. Stop by closing the generator; calling again with the
    same arguments resumes. ``search_fn`` replaces ``run_search`` (the app and tests wrap it).

    ``backend="ray"`` runs the cells as Ray tasks (``ray_backend.py``) on the cluster at ``address``
    (None: the one ``RAY_ADDRESS`` names, else a new local one; "auto": the one started on this
    machine; "ray://host:port") with ``resources`` per cell; the events of cells that run at the same
    time interleave, each tagged with its run."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown sweep backend {backend!r}; known: {', '.join(BACKENDS)}")
    if backend == "local" and (address is not None or resources is not None):
        raise ValueError("an address and per-run resources are for the ray backend (--backend ray)")
    threads = None
    if backend == "ray":
        load_ray()   # a missing extra fails before the weights are hashed
        threads = (resources or CellResources()).threads
    search_fn = search_fn or search_run.run_search
    start = time.perf_counter()
    runs = plan_sweep(grid, base, config, workspace, threads)   # refuses a bad grid before the folder is made
    Path(workspace).mkdir(parents=True, exist_ok=True)
    yield SweepStarted(tuple(runs))
    if backend == "ray":
        events = run_cells(runs, config, search_fn, address, resources)
    else:
        events = run_local(runs, config, search_fn)
    failed: dict[int, LibraryRow] = {}
    with closing(events):
        for event in events:
            if isinstance(event, RunFailed):
                failed[event.run.index] = LibraryRow(file=event.run.path.name, error=event.error)
            yield event
    rows = tuple(failed.get(run.index) or read_row(run.path) for run in runs)
    yield SweepFinished(rows, time.perf_counter() - start)

