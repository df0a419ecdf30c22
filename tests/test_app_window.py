"""The desktop app driven like a user would (pytest-qt, offscreen, the real engine on the built-in demo):
Start → results card, plots, Save scales… / Open run…, responsiveness, Pause/Resume, Stop/Resume,
closing mid-search.

One short search (1 pass, 25 evaluations) started with the Start button is shared by the tests that
only look at its outcome; Pause/Resume and Stop/Resume run their own and must end on its scales.
"""
from __future__ import annotations

import app_conftest_helpers as helpers  # offscreen Qt, isolated settings; before Qt
from app_conftest_helpers import dialogs, window  # noqa: F401  (shared fixtures)

import numpy as np
import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFileDialog, QMessageBox

from app.responsiveness import StallProbe
from app.run.state import FINISHED, PAUSED, STOPPED
from engine.scalefile import load_run

STALL_LIMIT_MS = 250.0


@pytest.fixture(scope="module")
def finished(qapp):
    """One demo search from the Start button to the end, with a stall probe on the GUI thread."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        dialogs = helpers.record_dialogs(monkeypatch)
        win = helpers.new_window()
        probe = StallProbe(interval_ms=10)
        probe.start()
        kind = helpers.run_to_end(win, win.controls.start)
        probe.stop()
        yield {"window": win, "kind": kind, "run": win.state.run, "probe": probe, "dialogs": dialogs}
        win.close()


def test_start_button_to_results_card(qtbot, finished):
    win, run = finished["window"], finished["run"]
    assert finished["kind"] == "finished" and not finished["dialogs"], win.state.error
    qtbot.waitUntil(lambda: win.state.status == FINISHED)
    for row in ("test", "heldout"):
        for column in ("Full precision", "Quantized", "After search", "Won back"):
            assert win.results.value(row, column) != "–"
    assert win.results.value("test", "After search") == f"{run.metrics['refined_top1']:.2f}"
    assert win.controls.start.isEnabled() and not win.controls.pause.isEnabled()
    assert not win.controls.stop.isEnabled() and win.save_action.isEnabled()
    assert "engine.search.run" in win.log_panel.toPlainText() or "engine" in win.log_panel.toPlainText()


def test_plots_hold_data_after_the_run(finished):
    win, run = finished["window"], finished["run"]
    data = win.plots.data()
    n_evals = len(run.history.loss)
    assert n_evals == run.metrics["evaluations"] and len(data["loss"]) == n_evals
    assert np.all(np.isfinite(data["loss"]))
    assert data["best"][-1] == pytest.approx(np.min(run.history.loss))
    n_blocks = win.state.n_blocks
    assert n_blocks == 6 and len(data["bar_x"]) == n_blocks                   # one bar per block
    np.testing.assert_allclose(np.sort(data["bar_top1"]), np.sort(run.history.heldout_top1[-n_blocks:]))
    assert len(data["population_median"]) > 0
    assert win.plots.fp_line.isVisible() and win.plots.base_line.isVisible()
    assert win.plots.fp_line.value() == pytest.approx(run.metrics["heldout_fp_top1"])
    assert len(win.state.block_boundaries()) >= n_blocks - 1


def test_gui_thread_never_stalls_during_a_search(finished):
    probe = finished["probe"]
    print(f"\nlongest GUI event-loop stall during a demo search: {probe.max_stall_ms:.1f} ms "
          f"(p99 {probe.percentile_ms(99):.1f} ms, {probe.ticks} ticks of 10 ms)")
    assert probe.ticks > 100
    assert probe.max_stall_ms < STALL_LIMIT_MS


def test_save_scales_writes_a_file_the_engine_loads(qtbot, finished, tmp_path, monkeypatch):
    win, run = finished["window"], finished["run"]
    target = tmp_path / "refined"
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(target), ""))
    win.save_action.trigger()
    saved = tmp_path / "refined.h5"
    loaded = load_run(saved)
    helpers.assert_same_scales(loaded.scales, run.scales)
    helpers.assert_same_scales(loaded.base, run.base)
    assert loaded.metrics["refined_top1"] == pytest.approx(run.metrics["refined_top1"])
    assert str(saved.resolve()) in win.recent.list()

    # Open run… shows it again, plots and card, without running anything, and fills the run panel with the
    # run's own settings (so Start reruns it) after the form had been changed; the status bar says so.
    spec, config = win.run_panel.spec(), win.run_panel.search_config()
    win.run_panel.quantizer.setCurrentText("percentile")
    win.run_panel.select_preset("cptv-paper")
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *a, **k: (str(saved), ""))
    shown = win.state
    win.open_action.trigger()
    qtbot.waitUntil(lambda: win.state is not shown)
    assert not win.jobs.busy and win.state is not shown and win.state.source_path == str(saved)
    assert win.results.value("test", "After search") == f"{run.metrics['refined_top1']:.2f}"
    data = win.plots.data()
    assert len(data["loss"]) == len(run.history.loss) and len(data["bar_x"]) == win.state.n_blocks
    assert win.run_panel.spec() == spec and win.run_panel.search_config() == config
    assert win.run_panel.preset.currentText() == "Guided (recommended)"
    assert win.on_screen.text().startswith("Showing refined.h5: digits-vit, minmax W4A3, Guided (recommended)")
    assert "Start reruns it" in win.on_screen.text()
    assert "Computed: cptv-studio" in win.results.details.text()     # how the run was computed (provenance)


def test_pause_then_resume_ends_on_the_same_scales(qtbot, window, finished):
    qtbot.mouseClick(window.controls.start, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: window.state.evaluations >= 4, timeout=300_000)
    qtbot.mouseClick(window.controls.pause, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: window.state.status == PAUSED, timeout=60_000)
    assert window.controls.resume.isEnabled() and not window.controls.pause.isEnabled()
    assert window.controls.stop.isEnabled()
    held, ticks = window.state.evaluations, []
    window.redraw_timer.timeout.connect(lambda: ticks.append(window.state.evaluations))
    qtbot.waitUntil(lambda: len(ticks) >= 5)          # five redraw ticks, each draining the worker's queue
    assert window.state.evaluations == held and set(ticks) == {held}         # nothing moves while paused
    run = helpers.click_until_finished(qtbot, window, window.controls.resume)
    assert window.state.evaluations > held
    helpers.assert_same_scales(run.scales, finished["run"].scales)


def test_stop_then_resume_gives_the_uninterrupted_scales(qtbot, window, finished):
    reference = finished["run"]
    qtbot.mouseClick(window.controls.start, Qt.MouseButton.LeftButton)
    # Stop inside the second block step: one step checkpointed, one interrupted.
    qtbot.waitUntil(lambda: len(window.state.steps) >= 1
                    and window.state.evaluations > window.state.steps[0].evaluations, timeout=300_000)
    with qtbot.waitSignal(window.run_stopped, timeout=60_000):
        qtbot.mouseClick(window.controls.stop, Qt.MouseButton.LeftButton)
    assert window.state.status == STOPPED
    checkpoint = window.last_run[2]
    assert checkpoint.exists()                                               # the checkpoint is kept
    assert window.controls.resume.isEnabled() and window.controls.start.isEnabled()
    resumed = helpers.click_until_finished(qtbot, window, window.controls.resume)
    helpers.assert_same_scales(resumed.scales, reference.scales)
    assert resumed.metrics["refined_top1"] == reference.metrics["refined_top1"]
    assert len(window.plots.data()["loss"]) == len(reference.history.loss)


def test_resume_run_from_a_checkpoint_file(qtbot, window, finished, monkeypatch):
    """File ▸ Resume run… restores the run's settings from the checkpoint and continues it."""
    qtbot.mouseClick(window.controls.start, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: len(window.state.steps) >= 2, timeout=300_000)
    with qtbot.waitSignal(window.run_stopped, timeout=60_000):
        qtbot.mouseClick(window.controls.stop, Qt.MouseButton.LeftButton)
    checkpoint = window.last_run[2]
    window.run_panel.fields["cycles"].set(7)                                 # the form is restored
    window.run_panel.model.setCurrentText("deit_tiny_patch16_224")
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *a, **k: (str(checkpoint), ""))
    with qtbot.waitSignal(window.run_finished, timeout=300_000) as blocker:
        window.resume_action.trigger()
        assert window.state.steps and len(window.state.loss) > 0             # the history so far, at once
    assert window.run_panel.fields["cycles"].get() == helpers.FAST["cycles"]
    assert window.run_panel.model_name() == "digits-vit"
    helpers.assert_same_scales(blocker.args[0].scales, finished["run"].scales)


def test_closing_mid_search_asks_stops_cleanly_and_keeps_the_checkpoint(qtbot, dialogs, monkeypatch):
    win = helpers.make_window(qtbot)
    asked = []
    monkeypatch.setattr(QMessageBox, "question",
                        lambda *a, **k: asked.append(a[1]) or QMessageBox.StandardButton.Yes)
    qtbot.mouseClick(win.controls.start, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: len(win.state.steps) >= 1, timeout=300_000)
    runner = win.jobs.job
    win.close()
    assert asked and win.isVisible()                   # asked; closes once the worker has left the engine
    qtbot.waitUntil(lambda: not win.isVisible(), timeout=60_000)
    assert not runner.is_running()
    assert win.last_run[2].exists()
    assert not dialogs


# ---------------------------------------------------------------------- closing with an unsaved result

def _finished_unsaved(qtbot, run, interactive: bool = True):
    """A main window that has just finished a run, not saved: its search replays the shared run's last event."""
    from app.window.main_window import MainWindow
    from engine.search.events import Finished

    win = MainWindow(search_fn=lambda *_a, **_k: iter([Finished(run)]), interactive=interactive)
    qtbot.addWidget(win)
    win.show()
    _finish_again(qtbot, win)
    return win


def _finish_again(qtbot, win) -> None:
    with qtbot.waitSignal(win.run_finished, timeout=30_000):
        assert win.start()
    assert win.state.status == FINISHED and win.state.unsaved


def test_closing_with_an_unsaved_run_asks_cancel_keeps_it_discard_closes(qtbot, dialogs, monkeypatch, finished):
    win = _finished_unsaved(qtbot, finished["run"])
    asked = helpers.answer_unsaved(monkeypatch, "cancel")
    win.close()
    assert len(asked) == 1 and "minmax" in asked[0] and win.isVisible() and win.state.run is finished["run"]
    asked = helpers.answer_unsaved(monkeypatch, "discard")
    win.close()
    assert len(asked) == 1 and not win.isVisible()
    win.close()                                            # asked once per run
    assert len(asked) == 1 and not dialogs


def test_save_when_closing_writes_the_run_and_closes_only_once_written(qtbot, dialogs, monkeypatch, finished,
                                                                       tmp_path):
    win = _finished_unsaved(qtbot, finished["run"])
    asked = helpers.answer_unsaved(monkeypatch, "save")
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: ("", ""))    # the file dialog cancelled
    win.close()
    assert len(asked) == 1 and win.isVisible()
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(tmp_path / "kept"), ""))
    win.close()
    assert len(asked) == 2 and not win.isVisible()
    helpers.assert_same_scales(load_run(tmp_path / "kept.h5").scales, finished["run"].scales)
    assert not dialogs


def test_a_saved_run_closes_without_asking_until_a_new_run_finishes(qtbot, dialogs, monkeypatch, finished, tmp_path):
    win = _finished_unsaved(qtbot, finished["run"])
    asked = helpers.answer_unsaved(monkeypatch, "cancel")
    assert win.files.save_scales(tmp_path / "first.h5") is not None and not win.state.unsaved
    _finish_again(qtbot, win)                              # a new result: not saved yet
    win.close()
    assert len(asked) == 1 and win.isVisible()
    assert win.files.save_scales(tmp_path / "second.h5") is not None
    win.close()
    assert len(asked) == 1 and not win.isVisible()


def test_a_non_interactive_window_closes_without_asking(qtbot, dialogs, monkeypatch, finished):
    win = _finished_unsaved(qtbot, finished["run"], interactive=False)
    asked = helpers.answer_unsaved(monkeypatch, "cancel")
    win.close()
    assert not asked and not win.isVisible()


def test_run_panel_shows_only_the_options_the_strategy_uses(window):
    panel = window.run_panel
    guided = panel.shown_options()
    assert {"direction", "children"} <= guided and not {"population", "tournament", "mutation", "temperature"} & guided
    panel.select_preset("release")                         # an old name: the CPT-V paper's evolution
    assert panel.preset.currentText() == "CPT-V paper" and panel.search_config().strategy == "evolution"
    paper = panel.shown_options()
    assert {"population", "tournament", "mutation", "temperature"} <= paper and "direction" not in paper
    panel.fields["loss"].set("mse")                       # temperature only scales contrastive and kl
    assert "temperature" not in panel.shown_options()
    panel.fields["budget"].widget.setText("500")          # a budget sets the cycles
    assert "cycles" not in panel.shown_options()


def test_about_names_the_versions(window):
    import torch

    from app.window.about import show_about
    from engine.provenance import package_version

    box = show_about(window)
    assert package_version() in box.text() and f"torch {torch.__version__}" in box.text()
    box.close()


def test_run_panel_offers_every_search_option_with_a_label(window):
    from dataclasses import fields

    from app.run.search_options import HIDDEN_FIELDS, OPTIONS
    from engine.search.config import SearchConfig
    shown = {f.name for f in fields(SearchConfig)} - HIDDEN_FIELDS
    assert shown == set(window.run_panel.fields) and shown <= set(OPTIONS)
    images = window.run_panel.fields["search_images"]
    assert images.widget.placeholderText() == "all" and images.get() is None   # empty = every calibration image
    images.widget.setText("300")
    assert window.run_panel.search_config().search_images == 300
    images.widget.setText("many")
    with pytest.raises(ValueError, match="Search images"):
        window.run_panel.search_config()
