"""The Ray backend of a sweep: each cell of the grid is one Ray task; this process writes the run files.

A cell is a *streaming generator* task: it yields where it runs (``Worker``), then its search's
events one by one, so the driver passes on the same sweep events as the local backend while the
cell runs. Its last event, ``Finished``, carries the run record, which the driver saves atomically
under the run's usual name; a worker needs no shared filesystem, and the driver holds a cell's run
record only between receiving and saving it.

Plain tasks rather than Ray Tune: a cell is a function call with resources, and the sweep's own
files, identity rule and events already do what Tune's trial directories, ``result.json`` and
``Tuner.restore`` would duplicate.

Faults: a task whose worker or node dies is re-run up to ``max_retries`` times from the start of
its cell (no checkpoint: a retried generator's first events are dropped by Ray as already seen,
so the re-run must yield the same stream, which a seeded search from the start does). An exception
in a cell (bad data, out of memory) is not retried; it becomes ``RunFailed`` and the grid goes on.
"""
from __future__ import annotations

import logging
import os
import platform
import time
from dataclasses import dataclass, field, replace
from types import ModuleType
from typing import Any, Iterator

import torch

from ..allocator import keep_freed_memory
from ..errors import MissingExtra
from ..pipeline import RunSpec
from ..search.config import SearchConfig
from ..search.events import Event, Finished
from ..threads import environment
from .cell import SearchFn, needs_search, run_done, run_progress, settle
from .events import RunDone, RunFailed, RunStarted, SweepEvent, Worker
from .plan import PlannedRun

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CellResources:
    """What one cell asks of the cluster (Ray's ``num_cpus``/``num_gpus``) and how often it is re-run
    after its worker dies. The search uses as many torch threads as CPUs asked for."""
    cpus: float = 1.0
    gpus: float = 0.0
    max_retries: int = 3

    def __post_init__(self) -> None:
        if not self.cpus > 0:
            raise ValueError(f"cpus per run must be positive, got {self.cpus}")
        if self.gpus < 0:
            raise ValueError(f"gpus per run must be 0 or more, got {self.gpus}")
        if self.max_retries < 0:
            raise ValueError(f"max retries must be 0 or more, got {self.max_retries}")

    @property
    def threads(self) -> int:
        return max(1, int(self.cpus))


def load_ray() -> ModuleType:
    """The ``ray`` module; MissingExtra naming the extra when it is not installed."""
    try:
        import ray
    except ImportError:
        raise MissingExtra("ray", "the ray backend needs ray") from None
    return ray


def cell_device(device: str | None, gpu_ids: list) -> str | None:
    """The device a cell computes on. Ray makes a cell's assigned GPUs its only visible ones
    (CUDA_VISIBLE_DEVICES), so the driver's ``cuda:1`` is ``cuda:0`` there; a CUDA device asked for
    without a GPU assigned stays as asked, and fails with the device rule's own message."""
    if gpu_ids and (device is None or device.startswith("cuda")):
        return "cuda:0"
    return device


def search_cell(search_fn: SearchFn, spec: RunSpec, config: SearchConfig, threads: int) -> Iterator[Worker | Event]:
    """One cell, on a Ray worker: where it runs, then its search events (no checkpoint, see above)."""
    import ray

    spec = replace(spec, device=cell_device(spec.device, ray.get_gpu_ids()))
    torch.set_num_threads(threads)
    keep_freed_memory()   # the cell is this process's entry point for the search (engine/allocator.py)
    yield Worker(platform.node(), os.getpid())
    yield from search_fn(spec, config, checkpoint=None, resume=None)


@dataclass
class _Cell:
    """The driver's view of one running cell: its run, and when and whether its search ended."""
    run: PlannedRun
    start: float = field(default_factory=time.perf_counter)
    finished: bool = False


def _failure(exc: BaseException) -> str:
    """The user's error inside a task error (Ray wraps it with the remote traceback), else Ray's own."""
    cause = getattr(exc, "cause", None)
    error = cause if isinstance(cause, BaseException) else exc
    return f"{type(error).__name__}: {error}"


def _connect(ray: ModuleType, address: str | None) -> bool:
    """Join the cluster at ``address`` unless this process already has; True when this call joined."""
    if ray.is_initialized():
        if address is not None:
            log.info("ray is already initialised in this process; its cluster is used, not %s", address)
        return False
    if address is None:
        ray.init(include_dashboard=False)   # RAY_ADDRESS's cluster, else a new local one
    else:
        ray.init(address=address)
    return True


def _next_event(ray: ModuleType, stream: Any, cell: _Cell) -> SweepEvent:
    """The sweep event of the next item of a ready stream: RunStarted when the worker reports in,
    RunProgress per search event, RunDone at its end. Raises the task's error as a RayError."""
    try:
        ref = next(stream)
    except StopIteration:
        return run_done(cell.run, cell.finished, cell.start)
    item = ray.get(ref)
    if isinstance(item, Worker):
        cell.start = time.perf_counter()
        return RunStarted(cell.run, resumed=False, worker=item)
    cell.finished = cell.finished or isinstance(item, Finished)
    return run_progress(cell.run, item)


def run_cells(runs: list[PlannedRun], config: SearchConfig, search_fn: SearchFn, address: str | None,
              resources: CellResources | None) -> Iterator[SweepEvent]:
    """Skip the finished runs, submit the others as tasks, and pass on their events as they arrive."""
    ray = load_ray()
    resources = resources or CellResources()
    for run in runs:
        yield from settle(run)
    todo = [run for run in runs if needs_search(run)]
    if not todo:
        return
    joined = _connect(ray, address)
    task = ray.remote(search_cell).options(num_returns="streaming", num_cpus=resources.cpus,
                                           num_gpus=resources.gpus, max_retries=resources.max_retries,
                                           runtime_env={"env_vars": environment()})
    cells = {task.remote(search_fn, run.spec, config, resources.threads): _Cell(run) for run in todo}
    cluster = ray.cluster_resources()
    log.info("ray: %d runs submitted, %g CPU and %g GPU each, to a cluster of %g CPUs and %g GPUs", len(todo),
             resources.cpus, resources.gpus, cluster.get("CPU", 0), cluster.get("GPU", 0))
    try:
        while cells:
            ready, _ = ray.wait(list(cells), num_returns=1)
            for stream in ready:
                try:
                    event = _next_event(ray, stream, cells[stream])
                except ray.exceptions.RayError as exc:
                    event = RunFailed(cells[stream].run, _failure(exc))
                if isinstance(event, (RunDone, RunFailed)):
                    del cells[stream]
                yield event
    finally:
        for stream in cells:        # the driver stopped: nothing of this sweep keeps running
            ray.cancel(stream, force=True)
        if joined:
            ray.shutdown()
