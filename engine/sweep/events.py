"""The events a sweep yields, on both backends: each run's search events wrapped in ``RunProgress``,
and the sweep's own around them. ``describe`` is the one progress line of each worth a line.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..library import LibraryRow
from ..search.events import Event
from .plan import PlannedRun


@dataclass(frozen=True)
class SweepStarted:
    runs: tuple[PlannedRun, ...]


@dataclass(frozen=True)
class RunSkipped:
    """The run's file already exists and loads."""
    run: PlannedRun


@dataclass(frozen=True)
class Worker:
    """Where a Ray backend runs a cell: its worker's host and process."""
    host: str
    pid: int


@dataclass(frozen=True)
class RunStarted:
    run: PlannedRun
    resumed: bool                          # continues from the checkpoint of an interrupted sweep
    worker: Worker | None = None           # None: this process (the local backend)


@dataclass(frozen=True)
class RunProgress:
    """One search event of the run. When ``event`` is ``Finished``, the run file is already written."""
    run: PlannedRun
    event: Event


@dataclass(frozen=True)
class RunDone:
    run: PlannedRun
    row: LibraryRow                        # read back from the written run file
    seconds: float                         # wall time of this run in this sweep (without time before a resume)


@dataclass(frozen=True)
class RunMovedAside:
    """The file at the run's name was damaged (``reason``): it now lies at ``moved_to`` and the run
    is searched again."""
    run: PlannedRun
    moved_to: Path
    reason: str


@dataclass(frozen=True)
class RunFailed:
    """The run raised (bad data, out of memory, its worker died more often than retried), or the file
    at its name cannot be read now and is left as it is; both backends report it and go on with the
    rest of the grid."""
    run: PlannedRun
    error: str


@dataclass(frozen=True)
class SweepFinished:
    rows: tuple[LibraryRow, ...]           # every run of the sweep, in sweep order, skipped ones included
    seconds: float


SweepEvent = SweepStarted | RunSkipped | RunMovedAside | RunStarted | RunProgress | RunDone | RunFailed | SweepFinished


def describe(event: Any) -> str | None:
    """The one progress line of a sweep event worth a line (None for the search's own events)."""
    if isinstance(event, RunSkipped):
        return f"[{event.run.index}/{event.run.total}] {event.run.label}: done already -> {event.run.path.name}"
    if isinstance(event, RunStarted):
        how = "resuming from its checkpoint" if event.resumed else "searching"
        where = f" on {event.worker.host} (pid {event.worker.pid})" if event.worker else ""
        return f"[{event.run.index}/{event.run.total}] {event.run.label}: {how}{where}"
    if isinstance(event, RunMovedAside):
        return (f"[{event.run.index}/{event.run.total}] {event.run.label}: {event.run.path.name} was unreadable "
                f"({event.reason}); moved aside to {event.moved_to.name}, searching again")
    if isinstance(event, RunFailed):
        return f"[{event.run.index}/{event.run.total}] {event.run.label}: failed: {event.error}"
    if isinstance(event, RunDone):
        row = event.row
        if not row.ok:
            return f"[{event.run.index}/{event.run.total}] {event.run.label}: written but unreadable: {row.error}"
        return (f"[{event.run.index}/{event.run.total}] {event.run.label}: base {row.base_top1:.2f}%  "
                f"refined {row.refined_top1:.2f}% ({row.delta:+.2f})  {row.evaluations} evaluations  "
                f"{event.seconds:.1f} s -> {row.file}")
    if isinstance(event, SweepFinished):
        failed = [row.file for row in event.rows if not row.ok]
        summary = f"; {len(failed)} failed: {', '.join(failed)}" if failed else ""
        return f"sweep finished: {len(event.rows)} runs in {event.seconds:.1f} s{summary}"
    return None

