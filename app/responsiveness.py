"""StallProbe: measures how long the GUI thread's event loop goes without running a timer.

A QTimer fires every ``interval_ms`` on the GUI thread; the longest gap between two ticks minus the
interval is the longest stall the user could have felt (a frozen window, an unanswered click).
"""
from __future__ import annotations

import gc
import time

from PySide6.QtCore import QObject, Qt, QTimer


class StallProbe(QObject):
    def __init__(self, interval_ms: int = 10, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.interval_ms = interval_ms
        self._timer = QTimer(self)
        self._timer.setTimerType(Qt.TimerType.PreciseTimer)
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(self._tick)
        self._last: float | None = None
        self.max_stall_ms = 0.0
        self.ticks = 0
        self.gaps_ms: list[float] = []

    def start(self) -> None:
        self._last = time.perf_counter()
        self.max_stall_ms = 0.0
        self.ticks = 0
        self.gaps_ms = []
        self._timer.start()

    def stop(self) -> float:
        self._timer.stop()
        self._last = None
        return self.max_stall_ms

    def _tick(self) -> None:
        now = time.perf_counter()
        if self._last is not None:
            gap = (now - self._last) * 1000.0
            self.gaps_ms.append(gap)
            self.max_stall_ms = max(self.max_stall_ms, gap - self.interval_ms)
        self._last = now
        self.ticks += 1

    def percentile_ms(self, q: float) -> float:
        if not self.gaps_ms:
            return 0.0
        ordered = sorted(self.gaps_ms)
        return max(0.0, ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))] - self.interval_ms)


def freeze_startup_objects() -> None:
    """Keep the garbage collector's full passes off the objects that live as long as the app (modules,
    classes, the window): a full pass walks them all while holding the GIL, long enough to freeze the
    window whenever one falls during a search (docs/performance.md, "Responsiveness of the app")."""
    gc.freeze()
