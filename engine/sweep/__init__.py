"""Sweeps: a grid of quantizers × bit-widths × bit plans × seeds, one search and one run file per cell.

Nothing a sweep cannot read is overwritten: a damaged file (truncated, not a run file) is moved
aside as ``NAME.unreadable-N.h5`` before its cell runs again; a file of a newer schema, a locked
file or one this user may not read is left untouched and its cell fails. A cell that fails, for
that or any other reason, is a failed row and the grid goes on, on both backends.

Rooms, each below the ones that use it: ``plan`` (the grid, each cell's run file, which are done),
``events`` (what a sweep yields), ``cell`` (what both backends do with one cell), ``local`` and
``ray_backend`` (the two backends: one cell after another in this process, or each as a Ray task
that streams its events back), and ``run`` (``run_sweep``: plan, then the chosen backend).
"""
from .cell import SearchFn
from .events import (RunDone, RunFailed, RunMovedAside, RunProgress, RunSkipped, RunStarted, SweepEvent, SweepFinished,
                     SweepStarted, Worker, describe)
from .plan import CHECKPOINT_DIR, PlannedRun, SweepGrid, plan_sweep, run_file_name
from .ray_backend import CellResources, load_ray
from .run import BACKENDS, run_sweep

__all__ = [
    "BACKENDS", "CHECKPOINT_DIR", "CellResources", "PlannedRun", "RunDone", "RunFailed", "RunMovedAside",
    "RunProgress", "RunSkipped", "RunStarted", "SearchFn", "SweepEvent", "SweepFinished", "SweepGrid",
    "SweepStarted", "Worker", "describe", "load_ray", "plan_sweep", "run_file_name", "run_sweep",
]
