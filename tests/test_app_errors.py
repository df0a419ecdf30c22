"""Every user error of the app gives a dialog naming the problem, and the app keeps working."""
from __future__ import annotations

import app_conftest_helpers as helpers  # noqa: F401  (offscreen Qt, isolated settings; before Qt)
from app_conftest_helpers import dialogs, window  # noqa: F401  (shared fixtures)

import torch
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFileDialog

from app.run.state import FAILED

FAIL_TIMEOUT_MS = 60_000


def _start_expect_failure(qtbot, win):
    with qtbot.waitSignal(win.run_failed, timeout=FAIL_TIMEOUT_MS) as blocker:
        qtbot.mouseClick(win.controls.start, Qt.MouseButton.LeftButton)
    return blocker.args[0]


def _assert_usable(win):
    assert not win.jobs.busy and win.state.status == FAILED
    assert win.controls.start.isEnabled() and not win.controls.stop.isEnabled()
    assert win.run_panel.widget().isEnabled()
    assert win.open_action.isEnabled()


def test_bad_model_name(qtbot, window, dialogs):
    window.run_panel.model.setCurrentText("vit_no_such_model_224")
    _start_expect_failure(qtbot, window)
    assert [d[2] for d in dialogs] == ["model"]
    assert "vit_no_such_model_224" in dialogs[0][1]
    _assert_usable(window)


def test_bad_weights_file(qtbot, window, dialogs, tmp_path):
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"this is not a weights file")
    window.run_panel.weights.setText(str(bad))
    _start_expect_failure(qtbot, window)
    assert [d[2] for d in dialogs] == ["weights"]
    assert "broken.safetensors" in dialogs[0][1]
    _assert_usable(window)


def test_bad_data_folder(qtbot, window, dialogs, tmp_path):
    (tmp_path / "train").mkdir()
    window.run_panel.data.setText(str(tmp_path))
    _start_expect_failure(qtbot, window)
    assert [d[2] for d in dialogs] == ["data"]
    assert str(tmp_path) in dialogs[0][1]
    _assert_usable(window)


def test_unreadable_run_file(qtbot, window, dialogs, tmp_path, monkeypatch):
    bad = tmp_path / "not-a-run.h5"
    bad.write_bytes(b"\x00" * 64)
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *a, **k: (str(bad), ""))
    window.open_action.trigger()
    assert [d[2] for d in dialogs] == ["scales"] and "not-a-run.h5" in dialogs[0][1]
    assert window.controls.start.isEnabled() and window.state.run is None


def test_unreadable_checkpoint(qtbot, window, dialogs, tmp_path, monkeypatch):
    bad = tmp_path / "not-a-checkpoint.ckpt"
    bad.write_text("nothing to resume here")
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *a, **k: (str(bad), ""))
    window.resume_action.trigger()
    assert [d[2] for d in dialogs] == ["checkpoint"] and "not-a-checkpoint.ckpt" in dialogs[0][1]
    assert not window.jobs.busy and window.controls.start.isEnabled()


def _demo_scale_file(path, model_name: str):
    """A scale file of the demo's calibrated scales, labelled as made for ``model_name``."""
    from engine.pipeline import RunSpec, prepare
    from engine.quant import QuantConfig
    from engine.runrecord import RunRecord
    from engine.scalefile import save_run

    prepared = prepare(RunSpec(quant=QuantConfig("minmax", 8, 8), calib_size=helpers.CALIB_SIZE))
    info = prepared.info
    record = RunRecord(model_name=model_name, model_source=info.source, weights_sha256=info.weights_sha256,
                       quant=prepared.qmodel.config, calibration=prepared.calibration_meta(),
                       scales=prepared.qmodel.scale_set())
    save_run(path, record)
    return path


def test_scale_file_of_another_model(qtbot, window, dialogs, tmp_path, monkeypatch):
    other = _demo_scale_file(tmp_path / "deit-scales.h5", "deit_tiny_patch16_224")
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *a, **k: (str(other), ""))
    with qtbot.waitSignal(window.evaluation_ended, timeout=FAIL_TIMEOUT_MS) as blocker:
        window.evaluate_action.trigger()
    assert blocker.args[0] == "failed"
    assert [d[2] for d in dialogs] == ["scales"]
    assert "deit_tiny_patch16_224" in dialogs[0][1] and "digits-vit" in dialogs[0][1]
    assert not window.jobs.busy and window.controls.start.isEnabled() and window.evaluate_action.isEnabled()


def test_out_of_memory_during_the_search_then_resume(qtbot, window, dialogs, monkeypatch):
    """CUDA OOM mid-search: a dialog; the steps already done are kept and Resume finishes the run."""
    oom = helpers.simulate_out_of_memory(monkeypatch, after_evaluations=6)
    error = _start_expect_failure(qtbot, window)
    assert isinstance(error, torch.OutOfMemoryError)
    assert [d[0] for d in dialogs] == ["Out of memory during the search"]
    assert "out of memory" in dialogs[0][1].lower()
    _assert_usable(window)
    assert window.controls.resume.isEnabled() and len(window.state.steps) >= 1
    oom["on"] = False                                    # memory is back (a smaller batch, another device…)
    run = helpers.click_until_finished(qtbot, window, window.controls.resume)
    assert run.metrics["evaluations"] == run.search["passes"] * 6 * run.search["cycles"] * run.search["children"] + 1
    assert len(dialogs) == 1


def test_app_still_starts_a_run_after_an_error(qtbot, window, dialogs, tmp_path):
    window.run_panel.model.setCurrentText("vit_no_such_model_224")
    _start_expect_failure(qtbot, window)
    window.run_panel.model.setCurrentIndex(0)            # back to the demo, with a bad data folder this time
    window.run_panel.data.setText(str(tmp_path / "missing"))
    _start_expect_failure(qtbot, window)
    assert [d[2] for d in dialogs] == ["model", "data"]
    _assert_usable(window)


def test_evaluated_scales_stay_in_the_status_line_over_an_open_run(qtbot, window, dialogs, tmp_path):
    """The result is written after the window redraws the run on screen, which rewrites the status."""
    path = _demo_scale_file(tmp_path / "demo-scales.h5", "digits-vit")
    assert window.files.open_run(path)
    with qtbot.waitSignal(window.evaluation_ended, timeout=FAIL_TIMEOUT_MS) as blocker:
        window.files.evaluate_scales(path)
    assert blocker.args[0] == "finished" and not dialogs
    assert "test top-1" in window.controls.status.text()
