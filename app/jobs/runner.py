"""JobRunner: the one job a window runs at a time, each started with its event and end callbacks.

Every piece of long work the main window offers (a search, a sweep, Evaluate scales…, Export…, Diagnose)
starts here, so two jobs never share the worker and every panel asks the same object whether it is
busy. The window's redraw timer calls ``poll()``: the job's new events go to its event callback and,
once the job has ended, the job goes to its end callback (its outcome, result and error then final).
"""
from __future__ import annotations

from typing import Callable

from PySide6.QtCore import QObject, Signal

from app.jobs.job import Job, JobKind

EventsCallback = Callable[[list], None]
EndCallback = Callable[[Job], None]


class JobRunner(QObject):
    """Starts, pauses and stops one ``Job`` at a time and hands its events to whoever started it."""

    started = Signal(object)    # the Job, just started
    freed = Signal(object)      # the Job that ended: the runner is idle again (emitted before its end callback)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.job: Job | None = None          # the job running now (None: idle)
        self._callbacks: tuple[EventsCallback, EndCallback] | None = None

    @property
    def busy(self) -> bool:
        return self.job is not None

    @property
    def paused(self) -> bool:
        return self.job is not None and self.job.paused

    @property
    def stop_requested(self) -> bool:
        return self.job is not None and self.job.stop_requested

    def shows_run(self) -> bool:
        """The running job's events are search events the run view draws (a search or a sweep)."""
        return self.job is not None and self.job.kind.shows_run

    def start(self, kind: JobKind, on_events: EventsCallback, on_end: EndCallback) -> Job | None:
        """Run ``kind`` in a worker thread: ``on_events(events)`` on each ``poll()`` while it runs, ``on_end(job)``
        once it has ended. None (nothing started) while another job runs."""
        if self.job is not None:
            return None
        self.job = Job(kind, parent=self)
        self._callbacks = (on_events, on_end)
        self.job.start()
        self.started.emit(self.job)
        return self.job

    def pause(self) -> bool:
        """Pause after the job's current event; False when there is nothing to pause."""
        if self.job is None or self.job.paused or self.job.stop_requested:
            return False
        self.job.pause()
        return True

    def resume(self) -> bool:
        if self.job is None or not self.job.paused:
            return False
        self.job.resume()
        return True

    def stop(self) -> bool:
        """Ask the job to stop after its current event (it ends at a later ``poll()``); False if already asked."""
        if self.job is None or self.job.stop_requested:
            return False
        self.job.stop()
        return True

    def poll(self) -> Job | None:
        """Hand the running job's new events to its event callback; once it has ended, free the runner, call its
        end callback and return the job (None while it runs or when idle)."""
        job = self.job
        if job is None:
            return None
        on_events, on_end = self._callbacks
        on_events(job.events())
        if not job.done:
            return None
        self.job, self._callbacks = None, None
        job.wait(5000)             # the worker has already left the generator; this is the thread's exit
        job.deleteLater()
        self.freed.emit(job)
        on_end(job)
        return job
