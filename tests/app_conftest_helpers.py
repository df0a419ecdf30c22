"""Helpers for the app tests (tests/test_app_*.py): offscreen Qt, isolated settings, a dialog recorder.

Import this module before anything imports Qt (it sets QT_QPA_PLATFORM=offscreen).
"""
from __future__ import annotations

import os
import tempfile

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
# Settings (recent files) and checkpoints go to a throw-away folder, never the user's own.
_HOME = tempfile.mkdtemp(prefix="cptv-app-tests-")
os.environ["XDG_DATA_HOME"] = os.path.join(_HOME, "data")
os.environ["XDG_CONFIG_HOME"] = os.path.join(_HOME, "config")

import numpy as np  # noqa: E402
import pytest  # noqa: E402


# ---------------------------------------------------------------------- window helpers

FAST = dict(passes=1, cycles=2, children=2, joint_steps=0)   # a short search (25 evaluations) on the demo
CALIB_SIZE = 100                              # one calibration batch
QUANTIZER = "minmax"                          # the cheapest calibration (the default omse searches clip ranges)


def search_fn():
    """The engine's own search: the tests drive the real thing."""
    from engine.search.run import run_search
    return run_search


def configure(win, calib_size: int = CALIB_SIZE, **fields) -> None:
    """Set the run panel for a short demo search (form values, as a user would)."""
    panel = win.run_panel
    for name, value in {**FAST, **fields}.items():
        panel.fields[name].set(value)
    panel.calib_size.setValue(calib_size)
    panel.quantizer.setCurrentText(QUANTIZER)


def new_window(**fields):
    """A shown main window set up for a short demo search (no qtbot: module-scoped fixtures use it)."""
    from PySide6.QtCore import QCoreApplication

    from app.window.main_window import MainWindow

    QCoreApplication.setOrganizationName("CPT-V-tests")
    QCoreApplication.setApplicationName("CPT-V Studio tests")
    win = MainWindow(search_fn=search_fn())
    configure(win, **fields)
    win.show()
    return win


def make_window(qtbot, **fields):
    win = new_window(**fields)
    qtbot.addWidget(win)
    qtbot.waitExposed(win)
    return win


def run_to_end(win, button, timeout_ms: int = 300_000) -> str:
    """Click ``button`` and spin the event loop until the run ends (no qtbot needed); returns how it ended."""
    from PySide6.QtCore import QEventLoop, QTimer

    loop = QEventLoop()
    ended: list[str] = []
    win.run_ended.connect(lambda kind: (ended.append(kind), loop.quit()))
    QTimer.singleShot(timeout_ms, loop.quit)
    button.click()
    if not ended:
        loop.exec()
    assert ended, f"the run did not end within {timeout_ms / 1000:.0f} s"
    return ended[0]


def shut(qtbot, win) -> None:
    """Stop any run still going and wait for its thread (no terminate()). Never interactive from here:
    if the run outlives the wait, closing must not block the suite on "Stop the search?"."""
    win.interactive = False
    if win.jobs.busy:
        win.stop()
        qtbot.waitUntil(lambda: not win.jobs.busy, timeout=60_000)
    win.close()


def record_dialogs(monkeypatch) -> list:
    """Error dialogs shown (title, text, kind) instead of blocking on them. The question closing asks about
    an unsaved result is answered Discard (``answer_unsaved`` to choose), so closing a window never blocks."""
    from app import errors

    shown: list = []
    monkeypatch.setattr(errors, "_exec", lambda box: shown.append(
        (box.windowTitle(), box.informativeText(), box.objectName().removeprefix("errorDialog_"))))
    answer_unsaved(monkeypatch, "discard")
    return shown


def answer_unsaved(monkeypatch, answer: str) -> list:
    """Answer "Save the result?" (closing with an unsaved run) with "save" | "discard" | "cancel";
    returns the questions asked (their text)."""
    from PySide6.QtWidgets import QMessageBox

    from app.window import closing

    button = {"save": QMessageBox.StandardButton.Save, "discard": QMessageBox.StandardButton.Discard,
              "cancel": QMessageBox.StandardButton.Cancel}[answer]
    asked: list = []
    monkeypatch.setattr(closing, "_exec", lambda box: (asked.append(box.informativeText()), button)[1])
    return asked


def measure_stall(start, done, timeout_s: float = 300.0) -> tuple[float, float]:
    """The GUI thread's longest event-loop stall (ms, by StallProbe) from calling ``start()`` until ``done()``
    holds, and how long that took (ms): the work a view would have frozen the window for, done on the GUI thread."""
    import time

    from app.jobs.background import wait_for
    from app.responsiveness import StallProbe

    probe = StallProbe(interval_ms=10)
    probe.start()
    began = time.perf_counter()
    start()
    finished = wait_for(done, timeout_s)
    took = (time.perf_counter() - began) * 1000.0
    probe.stop()
    assert finished, f"not done within {timeout_s:.0f} s"
    return probe.max_stall_ms, took


def assert_same_scales(a, b) -> None:
    assert list(a) == list(b)
    for name in a:
        assert list(a[name]) == list(b[name])
        for role in a[name]:
            np.testing.assert_array_equal(a[name][role].scale, b[name][role].scale, err_msg=f"{name}/{role}")


def simulate_out_of_memory(monkeypatch, after_evaluations: int = 3) -> dict:
    """Make the engine's evaluator raise CUDA's out-of-memory error after a few candidate batches
    (until the returned switch is turned off: ``switch["on"] = False``)."""
    import torch

    from engine.search import evaluator

    original = evaluator.CachedEvaluator.batch_losses   # what every evaluation of candidates runs
    calls = {"n": 0, "on": True}

    def batch_losses(self, *args, **kwargs):
        calls["n"] += 1
        if calls["on"] and calls["n"] > after_evaluations:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(evaluator.CachedEvaluator, "batch_losses", batch_losses)
    return calls


def click_until_finished(qtbot, win, button, timeout_ms: int = 300_000):
    """Click ``button`` and wait for the run to end; fails at once (with the dialog's text) if it fails."""
    from PySide6.QtCore import Qt

    with qtbot.waitSignal(win.run_ended, timeout=timeout_ms) as blocker:
        qtbot.mouseClick(button, Qt.MouseButton.LeftButton)
    assert blocker.args[0] == "finished", f"run ended {blocker.args[0]}: {win.state.error}"
    return win.state.run


@pytest.fixture
def dialogs(monkeypatch):
    """Every error dialog the app would show, recorded instead of shown."""
    return record_dialogs(monkeypatch)


@pytest.fixture
def window(qtbot, dialogs):
    win = make_window(qtbot)
    yield win
    shut(qtbot, win)
