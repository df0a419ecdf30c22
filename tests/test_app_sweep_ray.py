"""The GUI's sweep dialog on the Ray backend, on the worker's one local 2-CPU cluster (``ray_cluster``).

Three runs of the demo's cut-down search: W2A3 on a missing data folder fails at once
(``helpers.faulty_cells``, its stall disarmed), which frees its CPU for W4A8 while W8A8 runs; the two
wait for each other to start, so their events reach the window interleaved. The window must draw one run's progress live (not a mix of both),
count every run, and show the failure as a library row and a log line while the grid goes on.
"""
from __future__ import annotations

import app_conftest_helpers as helpers  # offscreen Qt, isolated settings; before Qt

import platform
import re
from functools import partial

import numpy as np
from PySide6.QtCore import QSettings

from app.jobs.background import wait_for
from app.library.sweep_dialog import SETTINGS_KEY
from app.run.state import FINISHED
from app.window.main_window import MainWindow
from helpers import faulty_cells

FILES = ("digits-vit_minmax_W2A3_s0.h5", "digits-vit_minmax_W4A8_s0.h5", "digits-vit_minmax_W8A8_s0.h5")
STARTED = re.compile(r"run (\d) of 3 \(minmax (W\dA\d) s0\) on (.+)…$")


def test_sweep_dialog_runs_on_ray_with_live_progress_in_the_window(idle_ray_cluster, qtbot, tmp_path, monkeypatch):
    dialogs = helpers.record_dialogs(monkeypatch)
    (tmp_path / "stalled").write_text("disarmed")   # faulty_cells stalls W8A8 only while this file is missing
    search_fn = partial(faulty_cells, tmp_path / "stalled", tmp_path / "missing", meet=tmp_path)  # W8A8, W4A8 meet
    win = MainWindow(search_fn=search_fn)
    qtbot.addWidget(win)
    win.show()
    helpers.configure(win, calib_size=50, passes=1, cycles=1, children=2, population=4, tournament=2,
                      joint_steps=0)   # TINY
    win.run_panel.batch_size.setValue(50)
    library = win.sweeps.show_library()
    library.panel.set_workspace(tmp_path / "workspace", remember=False)
    dialog = win.sweeps.new_sweep()
    dialog.set_grid(["minmax"], "W2A3, W8A8, W4A8", "0")
    dialog.set_backend("ray")                        # no address: the cluster this process already joined
    assert wait_for(lambda: not dialog.planning, 60) and dialog.start.isEnabled(), dialog.plan.text()
    progress, ended = [], []
    win.sweep_progress.connect(lambda text, done, total: progress.append(text))
    win.sweep_ended.connect(ended.append)
    try:
        dialog.start.click()
        qtbot.waitUntil(lambda: bool(win.state.steps) and win.jobs.busy, timeout=120_000)   # drawn live
        qtbot.waitUntil(lambda: bool(ended), timeout=120_000)
    finally:
        QSettings().remove(SETTINGS_KEY)             # the next test's form starts from the defaults
        helpers.shut(qtbot, win)
    assert ended == ["finished"] and not dialogs, dialogs

    started = [STARTED.search(text) for text in progress]
    started = [(int(m[1]), m[2], m[3]) for m in started if m]
    assert sorted(bits for _, bits, _ in started) == ["W2A3", "W4A8", "W8A8"]
    assert {host for _, _, host in started} == {platform.node()}      # RunStarted.worker, shown
    first_done = next(i for i, text in enumerate(progress) if " done → " in text)
    assert sum(STARTED.search(text) is not None for text in progress[:first_done]) == 3   # the runs overlapped

    followed = started[-1][1]                         # the run view follows the run that started last
    run = win.state.run
    assert win.state.status == FINISHED and run.quant.bits_label == followed
    assert [step.step for step in win.state.steps] == [1, 2, 3, 4, 5, 6]    # one run's steps, not two mixed
    assert np.all(np.diff(win.state.eval_number.view()) == 1)
    np.testing.assert_array_equal(win.state.loss.view(), run.history.loss)

    assert wait_for(lambda: not library.panel.scanning)
    rows = {row.file: row for row in library.panel.model.rows()}
    assert sorted(rows) == sorted(FILES)
    assert [rows[name].ok for name in FILES] == [False, True, True]
    failed = library.panel.model.index(library.panel.model.rows().index(rows[FILES[0]]), 1)
    assert failed.data().startswith("failed: DataError: data folder not found: ")
    assert "1 failed in the sweep" in library.panel.count.text()
    assert library.panel.sweep_progress.value() == 3 and "3 of 3" in library.panel.sweep_progress.text()
    assert "finished: 3 runs (1 failed, see the log)" in win.statusBar().currentMessage()
    win.log_panel.drain()
    log = win.log_panel.toPlainText()
    assert "minmax W2A3 s0: failed: DataError: data folder not found" in log
    assert f"searching on {platform.node()} (pid " in log
    library.close()
