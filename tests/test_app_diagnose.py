"""The Diagnose tab: its views draw the engine's Diagnosis and save its numbers; the job measures a run in
the worker, keeps the result in the run file (the library's tab reads it back) and stops when asked."""
from __future__ import annotations

import app_conftest_helpers as helpers  # noqa: F401  (offscreen Qt, isolated settings; before Qt)
from app_conftest_helpers import dialogs, window  # noqa: F401  (shared fixtures)

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest

from app.jobs.diagnose import DiagnoseJob  # noqa: E402
from app.library.window import LibraryWindow  # noqa: E402
from app.run.diagnose_panel import UNSAVED, DiagnosePanel  # noqa: E402
from app.run.state import RunState  # noqa: E402
from app.widgets.diagnose_views import DIFFERENCE, format_value  # noqa: E402
from engine.cli import main as engine_main  # noqa: E402
from engine.diagnose import DiagnoseConfig, Diagnosed, diagnose_run, load_diagnosis, save_into_run  # noqa: E402
from engine.scalefile import ScaleFileError, load_run  # noqa: E402

# A few images and a two-point what-if: seconds, yet every measurement of the real diagnosis is made.
SMALL = DiagnoseConfig(raise_k=(1, 2), draws=2, images=16, heldout_images=16)
JOB_TIMEOUT_MS = 120_000


@pytest.fixture(scope="module")
def run_file(tmp_path_factory) -> Path:
    """A demo search run (base and refined scales) on the synthetic images, from the engine's command."""
    out = tmp_path_factory.mktemp("diagnose-runs") / "digits-vit_minmax_W4A3_s0.h5"
    assert engine_main(["search", "--quantizer", "minmax", "--bits", "W4A3", "--data", "synthetic", "--calib-size",
                        "16", "--batch-size", "16", "--device", "cpu", "--passes", "1", "--cycles", "1", "--joint-steps", "0",
                        "--children", "1", "--out", str(out), "--quiet"]) == 0
    return out


@pytest.fixture(scope="module")
def diagnosis(run_file):
    """The engine's own diagnosis of the run (what the views must draw)."""
    events = list(diagnose_run(load_run(run_file), SMALL, str(run_file)))
    assert isinstance(events[-1], Diagnosed)
    return events[-1].diagnosis


@pytest.fixture
def copy_of(run_file, tmp_path):
    def copy(name: str = "run.h5") -> Path:
        return Path(shutil.copy2(run_file, tmp_path / name))
    return copy


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _shown_panel(qtbot, path: Path) -> DiagnosePanel:
    panel = DiagnosePanel()
    qtbot.addWidget(panel)
    panel.resize(1400, 850)
    panel.set_run(None, path)
    panel.show()
    qtbot.waitExposed(panel)
    return panel


def test_views_draw_the_saved_diagnosis_and_save_exactly_its_numbers(qtbot, diagnosis, copy_of, tmp_path):
    path = copy_of()
    save_into_run(path, diagnosis)
    panel = _shown_panel(qtbot, path)
    d = panel.diagnosis
    assert d is not None and d.to_dict() == diagnosis.to_dict()         # read back, nothing computed
    assert "Saved in run.h5" in panel.status.text() and not panel.diagnose_button.isEnabled()  # no host: read-only
    base, refined = d.tables["base"], d.tables["refined"]
    in_blocks = [i for i, p in enumerate(d.points) if 0 <= p.block < d.n_blocks]

    heat = panel.heatmap
    assert [row["value"] for row in heat.rows] == [float(base.sensitivity[i]) for i in in_blocks]
    written = _read_csv(heat.save_csv(tmp_path / "heat.csv"))
    assert [float(r["value"]) for r in written] == [float(base.sensitivity[i]) for i in in_blocks]
    assert [r["point"] for r in written] == [d.points[i].name for i in in_blocks]
    heat.scales_choice.setCurrentIndex(heat.scales_choice.findData(DIFFERENCE))
    assert [row["value"] for row in heat.rows] == [float(refined.sensitivity[i] - base.sensitivity[i])
                                                    for i in in_blocks]
    heat.metric_choice.setCurrentIndex(heat.metric_choice.findData("sqnr_db"))
    heat.scales_choice.setCurrentIndex(heat.scales_choice.findData("refined"))
    assert [row["value"] for row in heat.rows] == [float(refined.sqnr_db[i]) for i in in_blocks]
    texts = {item.toPlainText() for item in heat.widget.ci.getItem(0, 0).items if hasattr(item, "toPlainText")}
    assert format_value(float(np.nanmin(refined.sqnr_db))) in texts     # every cell carries its number

    bars = panel.bars
    bars.count.setValue(5)
    order = d.most_sensitive(5, "refined")
    written = _read_csv(bars.save_csv(tmp_path / "bars.csv"))
    assert [r["point"] for r in written] == [d.points[i].name for i in order]
    assert [float(r["sensitivity_refined"]) for r in written] == [float(refined.sensitivity[i]) for i in order]
    assert [float(r["sensitivity_base"]) for r in written] == [float(base.sensitivity[i]) for i in order]
    assert list(np.diff([float(r["sensitivity_refined"]) for r in written]) <= 0) == [True] * 4   # most first
    bars.ranked_by.setCurrentIndex(bars.ranked_by.findData("base"))
    assert [row["point"] for row in bars.rows] == [d.points[i].name for i in d.most_sensitive(5, "base")]

    w = d.whatif
    written = _read_csv(panel.whatif.save_csv(tmp_path / "whatif.csv"))
    assert [int(r["k"]) for r in written] == [1, 2]
    assert [float(r["heldout_top1_top"]) for r in written] == list(w.top1_top)
    assert [float(r["heldout_top1_random_mean"]) for r in written] == list(w.top1_random_mean)
    assert [[float(r[f"heldout_top1_random_{j}"]) for j in (1, 2)] for r in written] == w.top1_random.tolist()
    for card in (heat, bars, panel.whatif):
        png = card.save_png(tmp_path / f"{card.name}.png")
        assert png.stat().st_size > 5_000


def test_a_run_file_without_a_diagnosis_says_how_to_make_one(qtbot, copy_of):
    panel = _shown_panel(qtbot, copy_of())
    assert panel.diagnosis is None and "holds no diagnosis" in panel.status.text()
    assert all(not view.rows for view in (panel.heatmap, panel.bars, panel.whatif))


def test_the_job_measures_the_run_keeps_it_in_the_file_and_the_library_reads_it(qtbot, window, dialogs,
                                                                               diagnosis, copy_of, run_file):
    path = copy_of()
    assert window.files.open_run(path)
    panel = window.diagnose
    window.view_tabs.setCurrentWidget(panel)
    assert "holds no diagnosis" in panel.status.text() and panel.diagnose_button.isEnabled()
    panel.config = SMALL
    with qtbot.waitSignal(panel.ended, timeout=JOB_TIMEOUT_MS) as ended:
        panel.diagnose_button.click()
        assert panel.stop_button.isEnabled() and not window.controls.start.isEnabled()
    assert ended.args == ["finished"] and not dialogs and not window.jobs.busy
    assert panel.progress.value() == panel.progress.maximum()
    shown = panel.diagnosis.to_dict()
    assert shown["source"] == str(path)
    same = {"seconds": 0, "source": ""}
    assert {**shown, **same} == {**diagnosis.to_dict(), **same}          # the engine's numbers, drawn
    assert panel.heatmap.rows and panel.bars.rows and panel.whatif.rows
    assert load_diagnosis(path).to_dict() == shown and "kept in run.h5" in panel.status.text()
    assert load_run(path).scales.equals(load_run(run_file).scales)      # the run file loads as before

    library = LibraryWindow(main=window, workspace=path.parent)
    qtbot.addWidget(library)
    library.show()
    qtbot.waitUntil(lambda: not library.panel.scanning)
    library.show_tab(library.diagnose)
    assert "Select one run" in library.diagnose.status.text()
    library.panel.select_files(["run.h5"])
    assert library.diagnose.diagnosis.to_dict() == shown and library.diagnose.diagnose_button.isEnabled()


def test_stop_ends_the_diagnosis_between_measurements_and_keeps_nothing(qtbot, window, dialogs, copy_of):
    path = copy_of()
    assert window.files.open_run(path)
    panel = window.diagnose
    window.view_tabs.setCurrentWidget(panel)
    panel.config = SMALL
    assert panel.start()
    qtbot.waitUntil(lambda: panel.progress.maximum() > 0 and panel.progress.value() >= 1, timeout=JOB_TIMEOUT_MS)
    with qtbot.waitSignal(panel.ended, timeout=JOB_TIMEOUT_MS) as ended:
        panel.stop_button.click()
    assert ended.args == ["stopped"] and not dialogs and not window.jobs.busy
    assert panel.diagnosis is None and panel.status.text().startswith("Stopped")
    assert panel.diagnose_button.isEnabled()
    with pytest.raises(ScaleFileError, match="holds no diagnosis"):
        load_diagnosis(path)


def test_a_finished_run_in_no_file_is_diagnosed_from_memory_and_nothing_is_kept(qtbot, window, run_file):
    record = load_run(run_file)
    window.state = RunState.from_record(record)            # as a search leaves it before Save scales…
    window.refresh()
    panel = window.diagnose
    window.view_tabs.setCurrentWidget(panel)
    assert panel.status.text() == UNSAVED and panel.diagnose_button.isEnabled() and not panel.keep.isEnabled()
    job = DiagnoseJob(record, SMALL)
    events = job.events()
    assert next(events).message.startswith("rebuilding digits-vit minmax W4A3 from the unsaved run")
    events.close()
