"""Every tab at the screens people have (1366×768, 1600×1000): the window never grows past the screen,
no widget reaches past it, no title, legend, axis label or help text is cut, tick labels do not overlap
(``app.screens.misfits``: what ``python -m app.screens`` prints beside the docs' screenshots).

One small search run on synthetic images, diagnosed, is opened in the main window; two copies of it fill
the library.
"""
from __future__ import annotations

import app_conftest_helpers as helpers  # offscreen Qt, isolated settings; before Qt

import shutil
from pathlib import Path

import pytest

from app.jobs.background import wait_for
from app.library.window import DEFAULT_SIZE as LIBRARY_SIZE, LibraryWindow
from app.screens import SIZES, library_tabs, main_tabs, misfits, settle
from app.widgets.screen import window_size
from app.window.main_window import DEFAULT_SIZE as MAIN_SIZE, MainWindow
from engine.cli import main as engine_main
from engine.diagnose import DiagnoseConfig, Diagnosed, diagnose_run, save_into_run
from engine.scalefile import load_run

SMALL = DiagnoseConfig(raise_k=(1, 2, 4), draws=2, images=16, heldout_images=16)
FILES = ("digits-vit_minmax_W4A3_s0.h5", "digits-vit_minmax_W4A3_s1.h5")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """A search run without a diagnosis, the same run diagnosed, and a workspace of two copies of it."""
    folder = tmp_path_factory.mktemp("layout")
    plain = folder / "plain.h5"
    assert engine_main(["search", "--quantizer", "minmax", "--bits", "W4A3", "--data", "synthetic", "--calib-size",
                        "16", "--batch-size", "16", "--device", "cpu", "--passes", "1", "--cycles", "1", "--joint-steps", "0",
                        "--children", "1", "--out", str(plain), "--quiet"]) == 0
    diagnosed = Path(shutil.copy2(plain, folder / "diagnosed.h5"))
    events = list(diagnose_run(load_run(diagnosed), SMALL, str(diagnosed)))
    assert isinstance(events[-1], Diagnosed)
    save_into_run(diagnosed, events[-1].diagnosis)
    workspace = folder / "workspace"
    workspace.mkdir()
    for name in FILES:
        shutil.copy2(diagnosed, workspace / name)
    return {"plain": plain, "diagnosed": diagnosed, "workspace": workspace}


@pytest.fixture(scope="module")
def windows(qapp, runs):
    with pytest.MonkeyPatch.context() as monkeypatch:
        helpers.record_dialogs(monkeypatch)
        window = MainWindow(interactive=False)
        window.show()
        library = LibraryWindow(window, workspace=runs["workspace"])
        library.show()
        assert wait_for(lambda: not library.panel.scanning)
        yield window, library
        library.close()
        window.close()


def _check(shown, tabs, wanted: tuple[int, int], screen: tuple[int, int]) -> list[str]:
    size = window_size(screen, wanted)
    found = []
    for name in tabs:
        settle(shown, size)
        found += [f"{name} at {screen[0]}×{screen[1]}: {problem}" for problem in misfits(shown, size)]
    return found


@pytest.mark.parametrize("screen", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_every_tab_fits_the_screen(windows, runs, screen):
    window, library = windows
    assert window.files.open_run(runs["diagnosed"])
    problems = _check(window, main_tabs(window), MAIN_SIZE, screen)
    problems += _check(library, library_tabs(library, list(FILES)), LIBRARY_SIZE, screen)
    assert not problems, "\n".join(problems)
    for panel in (window.diagnose, library.diagnose):     # the last tab shown in each window
        assert panel.diagnosis is not None and panel.heatmap.isVisible() and panel.bars.isVisible()
        assert panel.whatif.isVisible() == (panel.side.currentWidget() is panel.side_split)


def test_a_run_without_a_diagnosis_fits_the_small_screen(windows, runs):
    """Before a diagnosis: the empty plots' notes, in short lines, fit their narrow plots."""
    window, _library = windows
    assert window.files.open_run(runs["plain"])
    problems = _check(window, main_tabs(window), MAIN_SIZE, SIZES[0])
    assert window.diagnose.diagnosis is None
    assert not problems, "\n".join(problems)

