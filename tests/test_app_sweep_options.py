"""The sweep form's backend choice, the run panel's compile mode and model picker (pytest-qt, offscreen; no
real search).

What the forms build and what reaches the engine: the ``SweepBackend`` the sweep form makes, a missing
``ray`` named by the form before Start and by the app's error dialog after it, and the compile mode
chosen in the advanced search options inside the RunSpec of a search, a resumed one and a sweep's runs. The Ray
backend against a real cluster is tests/test_app_sweep_ray.py.
"""
from __future__ import annotations

import app_conftest_helpers as helpers  # noqa: F401  (offscreen Qt, isolated settings; before Qt)
from app_conftest_helpers import dialogs  # noqa: F401  (shared fixture)

import dataclasses
import sys

import numpy as np
import pytest
from PySide6.QtCore import QSettings

from app.jobs.background import wait_for
from app.jobs.sweep import SweepBackend
from app.library.sweep_dialog import SETTINGS_KEY
from app.run.panel import RunPanel
from app.window.main_window import MainWindow
from engine.models import BUILTIN_MODELS, DEMO_MODEL, DIGITS_SWIN
from engine.runrecord import run_identity, spec_values
from engine.search.checkpoint import SearchState, save_checkpoint
from engine.sweep import CellResources, SweepGrid

INSTALL_HINT = "pip install 'cptv-studio[ray]'"
GRID = SweepGrid(("minmax",), ("W8A8",), (0,))


@pytest.fixture
def specs() -> list:
    """The RunSpec of every search the window starts (a search that yields nothing: no work is done)."""
    return []


@pytest.fixture
def win(qtbot, dialogs, specs, tmp_path):
    def record(spec, config, checkpoint=None, resume=None):
        specs.append(spec)
        yield from ()

    window = MainWindow(search_fn=record)
    qtbot.addWidget(window)
    window.sweeps.show_library().panel.set_workspace(tmp_path, remember=False)
    yield window
    QSettings().remove(SETTINGS_KEY)       # the next test's form starts from the defaults
    window.sweeps.library_window.close()


def new_sweep_form(win):
    dialog = win.sweeps.new_sweep()
    dialog.set_grid(["minmax"], "W8A8", "0")
    return dialog


def test_sweep_form_builds_the_chosen_backend_and_remembers_it(win):
    dialog = new_sweep_form(win)
    assert dialog.backend() == SweepBackend() and not dialog.address.isEnabled() and not dialog.gpus.isEnabled()
    dialog.set_backend("ray", "  ray://head:10001 ", cpus=2, gpus=0.5)
    assert dialog.address.isEnabled() and dialog.cpus.isEnabled() and dialog.gpus.isEnabled()
    chosen = SweepBackend("ray", "ray://head:10001", CellResources(cpus=2, gpus=0.5))
    assert dialog.backend() == chosen
    assert wait_for(lambda: not dialog.planning, 60) and dialog.start.isEnabled(), dialog.plan.text()   # ray loads
    dialog.remember()
    dialog.reject()
    again = new_sweep_form(win)                     # the form opens with the backend of the last sweep started
    assert again.backend() == chosen
    again.address.clear()
    assert again.backend().address is None          # empty: a new local cluster (or RAY_ADDRESS's)
    again.reject()


def test_missing_ray_is_named_by_the_form_and_by_the_error_dialog(win, dialogs, qtbot, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)   # what `import ray` does where it is not installed
    dialog = new_sweep_form(win)
    dialog.set_backend("ray")
    assert wait_for(lambda: not dialog.planning)
    assert INSTALL_HINT in dialog.plan.text() and not dialog.start.isEnabled()
    dialog.set_backend("local")
    assert wait_for(lambda: not dialog.planning) and dialog.start.isEnabled(), dialog.plan.text()
    dialog.reject()
    with qtbot.waitSignal(win.sweep_ended, timeout=30_000) as ended:   # started all the same: the worker's error
        assert win.sweeps.start_sweep(GRID, tmp_path, SweepBackend("ray"))
    assert ended.args == ["failed"]
    assert [(title, kind) for title, _, kind in dialogs] == [("The ray extra is not installed", "sweep")]
    assert INSTALL_HINT in dialogs[0][1]
    assert "failed: The ray extra is not installed" in win.statusBar().currentMessage()
    assert not list(tmp_path.iterdir())


def test_compile_mode_is_an_advanced_option_that_reaches_the_runspec(win, dialogs, specs, qtbot, tmp_path):
    panel = win.run_panel
    box = panel.compile.widget
    assert panel.spec().compile == "auto" and [box.itemText(i) for i in range(box.count())] == ["auto", "on", "off"]
    assert all(words in box.toolTip() for words in ("candidate evaluation", "identical", "falls back to eager"))
    panel.more.setChecked(False)
    assert not box.isVisibleTo(panel)               # among the advanced options
    panel.more.setChecked(True)
    assert box.isVisibleTo(panel)

    box.setCurrentText("off")
    with qtbot.waitSignal(win.run_ended, timeout=30_000):
        assert win.start()
    assert [spec.compile for spec in specs] == ["off"]

    box.setCurrentText("on")
    with qtbot.waitSignal(win.sweep_ended, timeout=30_000) as ended:
        assert win.sweeps.start_sweep(GRID, tmp_path)
    assert [spec.compile for spec in specs] == ["off", "on"]    # the sweep's run got the mode too
    assert specs[1].quant.bits_label == "W8A8"
    # the recording search yields no result: a failed row, and the sweep itself ends (as on Ray)
    assert ended.args == ["finished"] and not dialogs


def test_the_model_picker_offers_every_built_in_model(qtbot):
    """digits-swin is picked like the demo, reaches the panel's RunSpec, and a shown run names it again."""
    panel = RunPanel()
    qtbot.addWidget(panel)
    offered = [panel.model.itemText(i).split()[0] for i in range(panel.model.count())]
    assert offered[:len(BUILTIN_MODELS)] == list(BUILTIN_MODELS) and panel.spec().model == DEMO_MODEL
    panel.model.setCurrentIndex(offered.index(DIGITS_SWIN))
    spec = panel.spec()
    assert spec.model == DIGITS_SWIN
    panel.set_values(dataclasses.replace(spec, model=DEMO_MODEL))
    assert panel.model_name() == DEMO_MODEL
    panel.set_values(spec)
    assert panel.model.currentIndex() == offered.index(DIGITS_SWIN)


def test_a_resumed_run_computes_with_the_compile_mode_chosen_now(win, specs, qtbot, tmp_path):
    """A checkpoint does not record the compile mode (how a run computes, like the device), so File ▸
    Resume run… continues with the panel's."""
    spec, config = win.run_panel.spec(), win.run_panel.search_config()
    state = SearchState(vectors=[np.ones(3)], rng_state=np.random.default_rng(0).bit_generator.state,
                        base_loss=1.0, heldout_fp_top1=98.0, heldout_base_top1=90.0, current_loss=1.0)
    checkpoint = save_checkpoint(tmp_path / "run.ckpt", state, run_identity(spec_values(spec), config.to_dict(), None))
    win.run_panel.compile.widget.setCurrentText("off")
    with qtbot.waitSignal(win.run_ended, timeout=30_000):
        assert win.resume_run(checkpoint)
    assert [(s.compile, s.model, s.quant) for s in specs] == [("off", spec.model, spec.quant)]
    assert win.run_panel.spec().compile == "off"
