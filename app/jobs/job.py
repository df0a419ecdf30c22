"""Job: one piece of long engine work (a search, a sweep, an evaluation, an export) in a QThread.

What the work is lives in a small *kind* object (``JobKind``: ``SearchJob``, ``SweepJob``, …): a name,
the engine generator of events it consumes, and which event carries its result. ``Job`` is the one
way such work runs, whatever its kind:

- The worker never touches a widget. It puts each (immutable) engine event, and at the end one
  ``Outcome``, on a thread-safe queue; the GUI thread drains it (``events()``) on its redraw timer.
- Pause and Stop act between two events: pause waits on a ``threading.Event``; stop sets a flag and
  closes the generator, which lets the engine clean up (a search's checkpoint of the last finished
  block step stays on disk). Nothing here calls ``QThread.terminate()``.
"""
from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass
from typing import Any, Iterator, Literal, Protocol

from PySide6.QtCore import QObject, Qt, QThread, Signal, Slot

log = logging.getLogger(__name__)

class JobKind(Protocol):
    """What a job does. ``shows_run``: its events are search events the run view draws, so Stop shows
    "stopping" there and the run controls follow it; other kinds report in the status line only."""

    name: str
    shows_run: bool

    def events(self) -> Iterator[Any]:
        """The engine's generator of events, called once, in the worker thread."""

    def result_of(self, event: Any) -> Any:
        """The job's result if ``event`` carries it, else None."""


OutcomeKind = Literal["finished", "stopped", "failed"]


@dataclass(frozen=True)
class Outcome:
    """The worker's last message: how the work ended."""
    kind: OutcomeKind
    error: BaseException | None = None


@dataclass(frozen=True)
class PauseChanged:
    """The worker reached its pause point (paused=True) or left it."""
    paused: bool


class _Worker(QObject):
    """Consumes the kind's event generator in the thread it lives in."""

    done = Signal()   # emitted last, from the worker thread

    def __init__(self, kind: JobKind, out: "queue.SimpleQueue[Any]") -> None:
        super().__init__()
        self._kind = kind
        self._out = out
        self._running = threading.Event()
        self._running.set()
        self._stop = threading.Event()

    # Called from the GUI thread: plain thread-safe flags, no Qt.
    def pause(self) -> None:
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    def stop(self) -> None:
        self._stop.set()
        self._running.set()

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    @Slot()
    def run(self) -> None:
        _lower_priority()
        outcome = Outcome("finished")
        events = None
        try:
            events = self._kind.events()
            for event in events:
                self._out.put(event)
                if not self._running.is_set() and not self._stop.is_set():
                    self._out.put(PauseChanged(True))
                    while not self._running.wait(0.05):
                        pass
                    self._out.put(PauseChanged(False))
                if self._stop.is_set():
                    outcome = Outcome("stopped")
                    break
        except Exception as exc:       # shown to the user as a dialog; the app keeps running
            log.debug("%s failed", self._kind.name, exc_info=True)
            outcome = Outcome("failed", exc)
        finally:
            if events is not None and hasattr(events, "close"):
                try:
                    events.close()     # GeneratorExit inside the engine: its finally blocks run here
                except Exception as exc:  # pragma: no cover - an engine that fails while closing
                    if outcome.kind != "failed":
                        outcome = Outcome("failed", exc)
            self._out.put(outcome)
            self.done.emit()


def _lower_priority() -> None:
    """A hint to the OS that the job is background work (the GUI thread comes first where supported).

    Not a lower Linux nice value: on a shared machine that starves the search behind every other
    process, while the scheduler already favours the mostly idle GUI thread when it wakes up.
    """
    QThread.currentThread().setPriority(QThread.Priority.LowPriority)


class Job(QObject):
    """One run of a ``JobKind`` in its own QThread; the GUI thread starts it, polls ``events()``, and
    reads ``outcome`` / ``result`` / ``error`` once ``done``."""

    ended = Signal()   # the thread has finished; the next events() call sets the outcome

    def __init__(self, kind: JobKind, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.kind = kind
        self.outcome: OutcomeKind | None = None   # set once done
        self.error: BaseException | None = None
        self.result: Any = None
        self._queue: "queue.SimpleQueue[Any]" = queue.SimpleQueue()
        self._thread = QThread()
        self._thread.setObjectName(f"cptv-{kind.name}")
        self._worker = _Worker(kind, self._queue)
        self._worker.moveToThread(self._thread)
        self._thread.started.connect(self._worker.run)
        # quit() is thread-safe; a direct call lets the thread end even while the GUI thread waits on it.
        self._worker.done.connect(self._thread.quit, Qt.ConnectionType.DirectConnection)
        self._thread.finished.connect(self.ended)
        self._paused = False

    def start(self) -> None:
        self._thread.start()

    def is_running(self) -> bool:
        return self._thread.isRunning()

    @property
    def done(self) -> bool:
        return self.outcome is not None

    @property
    def paused(self) -> bool:
        return self._paused

    def pause(self) -> None:
        self._paused = True
        self._worker.pause()

    def resume(self) -> None:
        self._paused = False
        self._worker.resume()

    def stop(self) -> None:
        self._paused = False
        self._worker.stop()

    @property
    def stop_requested(self) -> bool:
        return self._worker.stop_requested

    def events(self, limit: int = 100_000) -> list[Any]:
        """The engine events and ``PauseChanged`` marks queued since the last call (GUI thread). The
        worker's last message is not returned: it sets ``outcome`` and ``error``."""
        items: list[Any] = []
        try:
            while len(items) < limit:
                item = self._queue.get_nowait()
                if isinstance(item, Outcome):
                    self.outcome, self.error = item.kind, item.error
                    continue
                result = None if isinstance(item, PauseChanged) else self.kind.result_of(item)
                if result is not None:
                    self.result = result
                items.append(item)
        except queue.Empty:
            pass
        return items

    def wait(self, msecs: int) -> bool:
        """Block until the thread ends (only for shutdown paths that have already asked it to stop)."""
        return self._thread.wait(msecs)
