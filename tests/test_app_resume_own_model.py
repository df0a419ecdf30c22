"""Resume run… of the user's own model: a deit_tiny run with a weights file, stopped after its first
block step, is resumed from its checkpoint in a new window (its weights file moved meanwhile, so the
app asks for it by name and hash) and ends on the scales of the same run uninterrupted."""
from __future__ import annotations

import app_conftest_helpers as helpers  # offscreen Qt, isolated settings; before Qt
from app_conftest_helpers import dialogs  # noqa: F401  (shared fixture)

from dataclasses import replace

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFileDialog

from engine.search.events import Finished
from engine.search.run import run_search
from helpers import make_image_folder, save_random_timm_model

MODEL = "deit_tiny_patch16_224"
FIELDS = dict(passes=1, cycles=1, children=2, joint_steps=0)   # 12 block steps of 2 evaluations


def _form(win, weights, folder) -> None:
    panel = win.run_panel
    panel.model.setCurrentText(MODEL)
    panel.weights.setText(str(weights))
    panel.data.setText(str(folder))
    panel.calib_size.setValue(4)
    panel.batch_size.setValue(4)
    panel.quantizer.setCurrentText("minmax")
    for name, value in FIELDS.items():
        panel.fields[name].set(value)


def test_a_deit_run_with_a_weights_file_resumes_in_a_new_window(qtbot, dialogs, tmp_path, monkeypatch):  # noqa: F811
    folder = make_image_folder(tmp_path / "images", n_classes=3, per_class=4)
    weights = save_random_timm_model(MODEL, tmp_path / "weights" / "deit.safetensors", num_classes=3)

    first = helpers.make_window(qtbot)
    _form(first, weights, folder)
    spec, config = first.run_panel.spec(), first.run_panel.search_config()
    qtbot.mouseClick(first.controls.start, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: len(first.state.steps) >= 1, timeout=300_000)
    with qtbot.waitSignal(first.run_stopped, timeout=120_000):
        qtbot.mouseClick(first.controls.stop, Qt.MouseButton.LeftButton)
    checkpoint = first.last_run[2]
    assert checkpoint.exists() and len(first.state.steps) < 12
    helpers.shut(qtbot, first)

    moved = weights.rename(tmp_path / "elsewhere.safetensors")   # the file the run recorded is gone
    asked = []

    def open_file(parent, caption, *args, **kwargs):
        asked.append(caption)
        return (str(checkpoint) if caption.startswith("Resume") else str(moved)), ""

    monkeypatch.setattr(QFileDialog, "getOpenFileName", open_file)
    second = helpers.make_window(qtbot)
    with qtbot.waitSignal(second.run_finished, timeout=300_000) as blocker:
        second.resume_action.trigger()
    resumed = blocker.args[0]
    assert len(asked) == 2 and "deit.safetensors" in asked[1] and "sha256" in asked[1]
    assert second.run_panel.model_name() == MODEL and second.run_panel.weights.text() == str(moved)
    assert resumed.spec["weights"] == str(moved)
    helpers.shut(qtbot, second)

    reference = next(e.run for e in run_search(replace(spec, weights=str(moved)), config) if isinstance(e, Finished))
    helpers.assert_same_scales(resumed.scales, reference.scales)
    assert resumed.weights_sha256 == reference.weights_sha256 and not dialogs
