"""Running the engine's search generator in a background QThread.

The worker never touches a widget. It puts each (immutable) engine event, and at the end one
outcome message, on a thread-safe queue; the GUI thread drains the queue on its redraw timer.
Pause and Stop act between two events: pause waits on a ``threading.Event``; stop sets a flag and
closes the generator, which lets the engine clean up (its checkpoint of the last finished block
step stays on disk). Nothing here calls ``QThread.terminate()``.
"""
from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from PySide6.QtCore import QObject, Qt, QThread, Signal, Slot

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class Outcome:
    """The worker's last message: how the run ended."""
    kind: str                      # "finished" | "stopped" | "failed"
    error: BaseException | None = None


@dataclass(frozen=True)
class PauseChanged:
    """The worker reached its pause point (paused=True) or left it."""
    paused: bool


class SearchWorker(QObject):
    """Consumes the event generator ``job()`` returns, in the thread it lives in."""

    done = Signal()   # emitted last, from the worker thread

    def __init__(self, job: Callable[[], Iterator[Any]], out: "queue.SimpleQueue[Any]") -> None:
        super().__init__()
        self._job = job
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
            events = self._job()
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
            log.debug("search failed", exc_info=True)
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
    """A hint to the OS that the search is background work (the GUI thread comes first where supported).

    Not a lower Linux nice value: on a shared machine that starves the search behind every other
    process, while the scheduler already favours the mostly idle GUI thread when it wakes up.
    """
    QThread.currentThread().setPriority(QThread.Priority.LowPriority)


class SearchRunner(QObject):
    """Owns one QThread + SearchWorker pair for one job (a search, or another engine generator)."""

    ended = Signal()   # the thread has finished; the queue holds the Outcome

    def __init__(self, job: Callable[[], Iterator[Any]], kind: str = "search", parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.kind = kind
        self.queue: "queue.SimpleQueue[Any]" = queue.SimpleQueue()
        self._thread = QThread()
        self._thread.setObjectName(f"cptv-{kind}")
        self._worker = SearchWorker(job, self.queue)
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

    def drain(self, limit: int = 100_000) -> list[Any]:
        """Everything queued since the last call (GUI thread)."""
        items = []
        try:
            while len(items) < limit:
                items.append(self.queue.get_nowait())
        except queue.Empty:
            pass
        return items

    def wait(self, msecs: int) -> bool:
        """Block until the thread ends (only for shutdown paths that have already asked it to stop)."""
        return self._thread.wait(msecs)
