"""What both backends do with one cell of the grid: settle a run that needs no search, pass on its
search events (saving the run file at ``Finished``), and read its row back at the end.
"""
from __future__ import annotations

import logging
import time
from typing import Callable, Iterator

from ..library import moved_aside_name, read_row
from ..scalefile import save_run
from ..search.events import Event, Finished
from .events import RunDone, RunFailed, RunMovedAside, RunProgress, RunSkipped, SweepEvent
from .plan import PlannedRun

log = logging.getLogger(__name__)

SearchFn = Callable[..., Iterator[Event]]     # run_search's signature: (spec, config, checkpoint=, resume=)


def settle(run: PlannedRun) -> Iterator[SweepEvent]:
    """What both backends do with a run before searching it: skip it (done), fail it (its file cannot
    be read now, and stays untouched), or move its damaged file aside (and then search it)."""
    if run.done:
        yield RunSkipped(run)
    elif run.blocked:
        yield RunFailed(run, f"{run.blocked}; the file is left as it is")
    elif run.damaged:
        moved_to = moved_aside_name(run.path)
        run.path.rename(moved_to)
        log.warning("%s could not be read (%s); moved aside to %s, and its run is made again", run.path,
                    run.damaged, moved_to.name)
        yield RunMovedAside(run, moved_to, run.damaged)


def needs_search(run: PlannedRun) -> bool:
    return not (run.done or run.blocked)


def run_progress(run: PlannedRun, event: Event) -> RunProgress:
    """One search event of ``run``, as both backends pass it on. A Finished run is saved before the
    event goes out, so a consumer that stops at Finished keeps the run."""
    if isinstance(event, Finished):
        save_run(run.path, event.run)
        run.checkpoint.unlink(missing_ok=True)
    return RunProgress(run, event)


def run_done(run: PlannedRun, finished: bool, start: float) -> RunDone:
    """The end of ``run``'s search events: its row, read back from the file ``run_progress`` wrote."""
    if not finished:
        raise RuntimeError(f"the search of {run.label} ended without a result")
    return RunDone(run, read_row(run.path), time.perf_counter() - start)

