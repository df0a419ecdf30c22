"""BackgroundCall: one short engine call (a folder scan, a model rebuild, a sweep plan) off the GUI thread.

Long work runs as a ``Job`` (``job.py``), which may be busy for minutes; this is for calls of
a fraction of a second to a few seconds whose answer a view shows. The function runs in a thread of
the call's own pool (one at a time, in order); its result or exception comes back to the GUI thread
through a queued signal, so the callbacks, and only they, touch widgets. Each request supersedes the
ones before it: a superseded request is skipped if it has not started, and its answer is dropped if
it has, so a view never shows a stale answer.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Callable, TypeVar

from PySide6.QtCore import QCoreApplication, QEventLoop, QObject, QRunnable, QThreadPool, Signal

log = logging.getLogger(__name__)
T = TypeVar("T")


class _Relay(QObject):
    """Carries an answer from the pool thread to the GUI thread (queued: the receiver lives there)."""
    answered = Signal(int, object, object)    # ticket, result, exception (None when it returned)


class BackgroundCall(QObject):
    """Runs plain functions off the GUI thread; only the newest request's answer is delivered."""

    def __init__(self, name: str, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.setObjectName(f"background-{name}")
        self._pool = QThreadPool(self)        # destroyed with its owner, after waiting for a call in progress
        self._pool.setMaxThreadCount(1)
        self._relay = _Relay()
        self._relay.answered.connect(self._answered)
        self._latest = 0
        self._callbacks: tuple[Callable[[Any], None], Callable[[BaseException], None]] | None = None

    def request(self, fn: Callable[[], T], on_result: Callable[[T], None],
                on_error: Callable[[BaseException], None]) -> int:
        """Run ``fn()`` in the pool; ``on_result(value)`` or ``on_error(exc)`` runs later on the GUI thread."""
        self._latest += 1
        ticket = self._latest
        self._callbacks = (on_result, on_error)
        self._pool.start(_Call(fn, ticket, self._relay, lambda: ticket == self._latest))
        return ticket

    def cancel(self) -> None:
        """Supersede every request made so far: none of their answers will be delivered."""
        self._latest += 1
        self._callbacks = None

    @property
    def pending(self) -> bool:
        """A request's answer is still to come."""
        return self._callbacks is not None

    def wait(self, msecs: int = -1) -> bool:
        """Block until the pool is idle (shutdown and tests; the GUI never waits on it)."""
        return self._pool.waitForDone(msecs)

    def _answered(self, ticket: int, result: Any, error: BaseException | None) -> None:
        if ticket != self._latest or self._callbacks is None:
            log.debug("%s: dropped the answer of superseded request %d", self.objectName(), ticket)
            return
        on_result, on_error = self._callbacks
        self._callbacks = None
        if error is None:
            on_result(result)
        else:
            on_error(error)


class _Call(QRunnable):
    """The pool thread's side: skip a request superseded while it queued, else run it and send the answer."""

    def __init__(self, fn: Callable[[], Any], ticket: int, relay: _Relay, is_current: Callable[[], bool]) -> None:
        super().__init__()
        self._fn, self._ticket, self._relay, self._is_current = fn, ticket, relay, is_current

    def run(self) -> None:
        if not self._is_current():
            return
        try:
            result, error = self._fn(), None
        except Exception as exc:       # delivered to the view, which names the problem
            log.debug("background call %d failed", self._ticket, exc_info=True)
            result, error = None, exc
        self._relay.answered.emit(self._ticket, result, error)


def wait_for(condition: Callable[[], bool], timeout_s: float = 30.0) -> bool:
    """Run the event loop until ``condition()`` holds (scripts and tests; a view never waits)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        QCoreApplication.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, 20)
        time.sleep(0.005)
    return True
