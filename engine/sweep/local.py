"""The local backend of a sweep: every cell searched in turn in this process. An interrupted run
continues from the search's own checkpoint (kept in ``<workspace>/.checkpoints`` until its run file
is written); a cell that raises is a failed row and the grid goes on.
"""
from __future__ import annotations

import logging
import time
from contextlib import closing
from pathlib import Path
from typing import Any, Iterator

from ..runrecord import identity_mismatch
from ..search.checkpoint import load_checkpoint
from ..search.config import SearchConfig
from ..search.events import Finished
from ..search.identity import saved_identity
from .cell import SearchFn, needs_search, run_done, run_progress, settle
from .events import RunFailed, RunStarted, SweepEvent
from .plan import PlannedRun

log = logging.getLogger(__name__)


def _resumable(checkpoint: Path, identity: dict[str, Any]) -> bool:
    """True when an interrupted run's checkpoint loads and holds this run's identity. A stale one
    (another sweep into the same folder) or a damaged one is only partial work: start afresh."""
    if not checkpoint.exists():
        return False
    try:
        saved = load_checkpoint(checkpoint)
    except ValueError as exc:
        log.warning("%s; the run starts afresh", exc)
        return False
    problem = identity_mismatch(saved_identity(saved.identity), identity, str(checkpoint))
    if problem:
        log.warning("%s was made with other settings (%s); the run starts afresh", checkpoint, problem)
        return False
    return True



def _run_one(run: PlannedRun, config: SearchConfig, search_fn: SearchFn) -> Iterator[SweepEvent]:
    resume = run.checkpoint if _resumable(run.checkpoint, run.identity) else None
    yield RunStarted(run, resumed=resume is not None)
    start = time.perf_counter()
    finished = False
    with closing(search_fn(run.spec, config, checkpoint=run.checkpoint, resume=resume)) as events:
        for event in events:
            finished = finished or isinstance(event, Finished)
            yield run_progress(run, event)
    yield run_done(run, finished, start)


def _failure(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def run_local(runs: list[PlannedRun], config: SearchConfig, search_fn: SearchFn) -> Iterator[SweepEvent]:
    """Every run in turn, in this process; a run that raises is a failed row and the grid goes on."""
    for run in runs:
        try:
            yield from settle(run)
            if needs_search(run):
                yield from _run_one(run, config, search_fn)
        except Exception as exc:  # noqa: BLE001 - any cell's failure is reported, as on Ray
            log.warning("%s failed: %s", run.label, _failure(exc))
            yield RunFailed(run, _failure(exc))

