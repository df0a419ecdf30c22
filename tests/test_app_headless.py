"""The app shows a model without a classifier by its features' cosine similarity to the FP model (the run
file's ``metrics["quality"]``), and an older top-1 file as before."""
from __future__ import annotations

import app_conftest_helpers  # noqa: F401  (offscreen Qt, isolated settings; before Qt)

from dataclasses import replace

import pytest

from app.run.plots import PlotsPanel
from app.run.results_card import ResultsCard
from app.run.state import RunState
from engine.scalefile import load_run, save_run
from engine.search.events import Finished
from engine.search.run import search_prepared
from helpers import headless_prepared as tiny_prepared, one_pass


@pytest.fixture(scope="module")
def headless_run(tmp_path_factory):
    run = next(e for e in search_prepared(tiny_prepared(), one_pass()) if isinstance(e, Finished)).run
    path = save_run(tmp_path_factory.mktemp("headless") / "dinov2.h5", run)
    return load_run(path), path


def test_results_card_shows_feature_cosine_for_a_headless_run(qtbot, headless_run):
    run, path = headless_run
    card = ResultsCard()
    qtbot.addWidget(card)
    card.show_run(run, str(path))
    m = run.metrics
    assert card.headers[0].text() == "Feature cosine %"
    assert card.value("test", "Full precision") == "100.00"
    assert card.value("test", "Quantized") == f"{m['base_feature_cosine']:.2f}"
    assert card.value("test", "After search") == f"{m['refined_feature_cosine']:.2f}"
    assert card.value("heldout", "Quantized") == f"{m['heldout_base_feature_cosine']:.2f}"
    assert card.value("test", "Won back") != "–"
    assert "No classifier" in card.details.text() and "cosine similarity" in card.details.text()


def test_an_older_top1_file_shows_top1(qtbot, headless_run):
    run, _ = headless_run
    older = replace(run, metrics={"fp_top1": 81.0, "base_top1": 70.0, "refined_top1": 75.5, "n_test": 100})
    card = ResultsCard()
    qtbot.addWidget(card)
    card.show_run(run)
    card.show_run(older)   # the corner header follows the run shown
    assert card.headers[0].text() == "" and card.quality == "top1"
    assert card.value("test", "After search") == "75.50" and card.value("test", "Won back") == "+5.50"
    assert card.value("heldout", "Quantized") == "–"


def test_held_out_plot_names_feature_cosine(qtbot, headless_run):
    run, _ = headless_run
    state = RunState.from_record(run)
    assert state.quality == "feature_cosine" and state.heldout_fp_top1 == 100.0
    panel = PlotsPanel()
    qtbot.addWidget(panel)
    panel.update_from(state, force=True)
    assert "feature cosine" in panel.acc_plot.titleLabel.text
    assert "feature cosine" in panel.acc_plot.getAxis("left").labelText
