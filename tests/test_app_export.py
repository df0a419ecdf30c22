"""File ▸ Export… and the library's Export run…: the engine's export in the worker, result or error shown."""
from __future__ import annotations

import app_conftest_helpers as helpers  # noqa: F401  (offscreen Qt, isolated settings; before Qt)
from app_conftest_helpers import dialogs, window  # noqa: F401  (shared fixtures)

import shutil
import sys
from pathlib import Path

import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from app.jobs.background import wait_for  # noqa: E402
from app.window.export_actions import suggested_output  # noqa: E402
from engine.cli import main as engine_main  # noqa: E402
from engine.scalefile import load_run  # noqa: E402

EXPORT_TIMEOUT_MS = 60_000


def _quantize(folder: Path, quantizer: str, bits: str) -> Path:
    out = folder / f"digits-vit-{quantizer}-{bits}.h5"
    assert engine_main(["quantize", "--quantizer", quantizer, "--bits", bits, "--calib-size", "50", "--quiet",
                        "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory) -> Path:
    """A demo run file (minmax W8A8, calibrated scales): what File ▸ Export… is given."""
    return _quantize(tmp_path_factory.mktemp("export-runs"), "minmax", "W8A8")


def _export(qtbot, win, dialog, out: Path | None = None, fmt: str = "onnx-qdq", check: bool = False) -> str:
    """Fill the export dialog as a user would, press Export and wait for the job; returns how it ended."""
    dialog.format.setCurrentIndex(dialog.format.findData(fmt))
    if out is not None:
        dialog.out.setText(str(out))
    dialog.check.setChecked(check)
    with qtbot.waitSignal(win.export_ended, timeout=EXPORT_TIMEOUT_MS) as blocker:
        dialog.accept()
    return blocker.args[0]


def _quantize_nodes(path: Path) -> int:
    return sum(node.op_type == "QuantizeLinear" for node in onnx.load(str(path)).graph.node)


def test_file_export_of_the_open_run_without_check(qtbot, window, dialogs, demo_run, tmp_path):
    assert window.files.open_run(demo_run)
    window.export_action.trigger()
    dialog = window.exports.dialog
    assert dialog.isVisible() and dialog.run_path.text() == str(demo_run)       # the shown run is offered
    assert dialog.out.text() == str(suggested_output(demo_run, "onnx-qdq", False))
    out = tmp_path / "model.onnx"
    assert _export(qtbot, window, dialog, out) == "finished"
    result, n_points = window.exports.result, load_run(demo_run).scales.n_points()
    assert result.parity is None and result.files == (str(out),) and result.format == "onnx-qdq"
    assert result.n_quantize_nodes == n_points == _quantize_nodes(out)
    status = window.controls.status.text()
    assert "model.onnx" in status and f"{n_points} quantization points" in status and "no parity check" in status
    assert not window.jobs.busy and window.export_action.isEnabled() and not dialogs


def test_file_export_shows_the_parity_check(qtbot, window, dialogs, demo_run, tmp_path):
    dialog = window.exports.export_run(demo_run)
    assert _export(qtbot, window, dialog, tmp_path / "checked.onnx", check=True) == "finished"
    parity = window.exports.result.parity
    assert parity is not None and parity.reference == "fake-quant" and parity.n == 4500
    assert parity.agreement >= 99.5 and abs(parity.onnx_top1 - parity.torch_top1) <= 0.1
    assert parity.summary() in window.controls.status.text() and not dialogs


@pytest.mark.parametrize("quantizer, bits, fmt, words", [
    ("fqvit", "W8A8", "onnx-qdq", ("log2", "fqvit-nolis")),        # Log-Int-Softmax: no single QuantizeLinear
    ("minmax", "W3A8", "aimet", ("3-bit", "AIMET validates bit-widths 4")),
])
def test_a_run_that_cannot_export_names_the_problem(qtbot, window, dialogs, tmp_path, quantizer, bits, fmt, words):
    run = _quantize(tmp_path, quantizer, bits)
    out = tmp_path / "refused.onnx"
    assert _export(qtbot, window, window.exports.export_run(run), out, fmt) == "failed"
    assert [d[0] for d in dialogs] == ["This run cannot be exported"] and [d[2] for d in dialogs] == ["export"]
    assert all(word in dialogs[0][1] for word in words), dialogs[0][1]
    assert not out.exists() and not window.jobs.busy and window.export_action.isEnabled()
    assert "The export failed" in window.controls.status.text()


def test_missing_export_extra_names_it(qtbot, window, dialogs, demo_run, tmp_path, monkeypatch):
    import engine.export
    monkeypatch.setitem(sys.modules, "onnx", None)                 # `import onnx` fails as if not installed
    for name in [m for m in sys.modules if m.startswith("engine.export.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.delattr(engine.export, "run")
    assert _export(qtbot, window, window.exports.export_run(demo_run), tmp_path / "m.onnx") == "failed"
    assert [d[2] for d in dialogs] == ["export"] and dialogs[0][0] == "The export extra is not installed"
    assert "export needs onnx" in dialogs[0][1] and "[export]" in dialogs[0][1]


def test_dialog_without_a_run_file_says_so(qtbot, window, dialogs):
    dialog = window.exports.export_run()
    assert dialog.run_path.text() == "" and dialog.out.text() == ""      # nothing shown, nothing saved: no run
    dialog.accept()
    assert not window.jobs.busy and [d[2] for d in dialogs] == ["other"]
    assert "choose the run file" in dialogs[0][1]


def test_library_exports_the_selected_run(qtbot, window, dialogs, demo_run, tmp_path):
    from app.library.window import LibraryWindow

    shutil.copy(demo_run, tmp_path / demo_run.name)
    library = LibraryWindow(main=window, workspace=tmp_path)
    qtbot.addWidget(library)
    button = library.panel.buttons["export_run"]
    assert wait_for(lambda: not library.panel.scanning) and not button.isEnabled()   # nothing selected
    assert library.panel.select_files([demo_run.name]) == 1 and button.isEnabled()
    button.click()
    dialog = window.exports.dialog
    assert dialog.run_path.text() == str(tmp_path / demo_run.name)
    assert _export(qtbot, window, dialog, fmt="aimet") == "finished"
    expected = suggested_output(tmp_path / demo_run.name, "aimet", False)
    assert window.exports.result.files == (str(expected), str(expected.with_suffix(".encodings")))
    assert all(Path(f).is_file() for f in window.exports.result.files) and not dialogs


def test_base_scales_are_exported_when_chosen(qtbot, window, dialogs, demo_run, tmp_path):
    """The Scales choice reaches the engine: Base writes the run's base set, and a run without one says so."""
    from dataclasses import replace

    from engine.scalefile import save_run

    record = load_run(demo_run)
    searched = tmp_path / "searched.h5"                  # a search run's two sets (here: equal, to stay fast)
    save_run(searched, replace(record, base=record.scales))
    dialog = window.exports.export_run(searched)
    dialog.scales.setCurrentIndex(dialog.scales.findData(True))
    assert dialog.out.text() == str(suggested_output(searched, "onnx-qdq", True))
    assert _export(qtbot, window, dialog) == "finished" and window.exports.result.scales == "base" and not dialogs
    dialog = window.exports.export_run(demo_run)                 # a quantize run holds no base scales
    dialog.scales.setCurrentIndex(dialog.scales.findData(True))
    assert _export(qtbot, window, dialog, tmp_path / "none.onnx") == "failed"
    assert [d[2] for d in dialogs] == ["export"] and "one set of scales" in dialogs[0][1]
