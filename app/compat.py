"""Work-arounds for bugs of the installed bindings, applied once when ``app`` is imported.

PySide6 6.12.0 on CPython < 3.12: a method returning ``void`` hands Python ``None`` without a new
reference (it counts on ``None`` being immortal, which it is only from 3.12 on, PEP 683). Every such
call (``setEnabled``, ``setText``, ``update`` … and pyqtgraph makes thousands per redraw) takes one
reference away from ``None``; after some minutes of a live search CPython aborts with
"Fatal Python error: none_dealloc: deallocating None". Measured here: −1 reference per call.

``guard_none_refcount`` detects the leak with a few harmless calls and, only if present, gives
``None`` a reference count so large that it cannot reach zero (in effect what 3.12 does).
"""
from __future__ import annotations

import ctypes
import logging
import sys

log = logging.getLogger(__name__)

_RESERVE = 1 << 40     # about 10^12 references: centuries of void calls
_applied = False


def none_refcount_leak(calls: int = 64) -> int:
    """References ``None`` loses over ``calls`` calls of a void Qt method (0 when the bindings are sound)."""
    from PySide6.QtCore import QObject

    probe = QObject()
    before = sys.getrefcount(None)
    for _ in range(calls):
        probe.setObjectName("probe")      # void in C++
    return before - sys.getrefcount(None)


def guard_none_refcount() -> bool:
    """Apply the guard if this interpreter + PySide6 leak ``None`` references; True when applied."""
    global _applied
    if _applied or sys.version_info >= (3, 12) or sys.implementation.name != "cpython":
        return _applied
    leaked = none_refcount_leak()
    if leaked < 32:
        return False
    ctypes.c_ssize_t.from_address(id(None)).value += _RESERVE + leaked
    _applied = True
    log.debug("PySide6 drops a reference to None per void call (%d in 64 calls): guard applied", leaked)
    return True
