"""Work-arounds for bugs of the installed bindings, applied once when ``app`` is imported.

PySide6 6.12.0 on CPython < 3.12 hands Python two singletons without a new reference (it counts on
them being immortal, which they are only from 3.12 on, PEP 683):

- ``None`` from every method returning ``void`` (``setEnabled``, ``setText``, ``update`` …, and
  pyqtgraph makes thousands per redraw);
- ``True`` from every ``Signal.emit`` (the app's own signals, its background calls' answers, and
  pyqtgraph's range and hover signals).

Each such call takes one reference away; after minutes of a live session CPython aborts with "Fatal
Python error: none_dealloc: deallocating None" (or ``bool_dealloc`` for ``True``). Measured here:
−1 reference per call, for both.

``guard_refcounts`` detects each leak with a few harmless calls and, only where present, gives the
singleton a reference count so large that it cannot reach zero (in effect what 3.12 does).
"""
from __future__ import annotations

import ctypes
import logging
import sys

log = logging.getLogger(__name__)

_RESERVE = 1 << 40     # about 10^12 references: centuries of calls
_guarded: set[str] = set()


def none_refcount_leak(calls: int = 64) -> int:
    """References ``None`` loses over ``calls`` calls of a void Qt method (0 when the bindings are sound)."""
    from PySide6.QtCore import QObject

    probe = QObject()
    before = sys.getrefcount(None)
    for _ in range(calls):
        probe.setObjectName("probe")      # void in C++
    return before - sys.getrefcount(None)


def true_refcount_leak(calls: int = 64) -> int:
    """References ``True`` loses over ``calls`` emits of a Qt signal (0 when the bindings are sound)."""
    from PySide6.QtCore import QObject, Signal

    class Probe(QObject):
        fired = Signal()

    probe = Probe()
    before = sys.getrefcount(True)
    for _ in range(calls):
        probe.fired.emit()
    return before - sys.getrefcount(True)


def guard_refcounts() -> set[str]:
    """Guard each singleton this interpreter + PySide6 leak references of; returns the names guarded."""
    if sys.version_info >= (3, 12) or sys.implementation.name != "cpython":
        return _guarded
    for name, singleton, leak in (("None", None, none_refcount_leak), ("True", True, true_refcount_leak)):
        if name in _guarded:
            continue
        leaked = leak()
        if leaked < 32:
            continue
        ctypes.c_ssize_t.from_address(id(singleton)).value += _RESERVE + leaked
        _guarded.add(name)
        log.debug("PySide6 drops a reference to %s per call (%d in 64 calls): guard applied", name, leaked)
    return _guarded
