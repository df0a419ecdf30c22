"""The app survives long sessions whatever the bindings do with ``None``'s and ``True``'s reference counts."""
from __future__ import annotations

import app_conftest_helpers  # noqa: F401  (offscreen Qt; before Qt)

import sys

from PySide6.QtCore import QObject, Signal

import app  # noqa: F401  (applies the guard)
from app import compat


def test_many_void_qt_calls_do_not_exhaust_none():
    obj = QObject()
    for _ in range(300_000):        # more than None's own references at start-up; aborted before the guard
        obj.setObjectName("x")
    assert sys.getrefcount(None) > 1_000_000 or compat.none_refcount_leak() == 0


def test_many_signal_emits_do_not_exhaust_true():
    class Emitter(QObject):
        fired = Signal(object)

    emitter = Emitter()
    emitter.fired.connect(lambda _value: None)
    for i in range(20_000):         # far more than True's own references at start-up; aborted before the guard
        emitter.fired.emit(i)
    assert sys.getrefcount(True) > 1_000_000 or compat.true_refcount_leak() == 0


def test_guard_only_where_the_bindings_leak():
    old = sys.version_info < (3, 12)
    assert ("None" in compat._guarded) == (old and compat.none_refcount_leak() > 0)
    assert ("True" in compat._guarded) == (old and compat.true_refcount_leak() > 0)
