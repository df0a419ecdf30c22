"""Models without a classifier (``num_classes=0``: DINOv2, SigLIP, EVA-02 backbones) are a first-class case:
the fitness compares their features, and every report measures the features' cosine similarity to the FP
model (``feature_cosine``, percent) where a model with a head reports top-1."""
from __future__ import annotations

import pytest
import torch

from engine import pipeline
from engine.cli import main
from engine.evaluate import FEATURE_COSINE, TOP1, quality_of
from engine.scalefile import load_run, save_run
from engine.search.events import BlockDone, Finished, Started
from engine.search.run import search_prepared
from engine.search.segments import model_segments
from helpers import HEADLESS_MODEL as NAME, headless_prepared as tiny_prepared, one_pass, tiny_headless

def test_headless_fitness_compares_the_features_prelogits_would():
    prepared = tiny_prepared()
    segments = model_segments(prepared.qmodel.model)
    images = prepared.calib[0]
    with torch.no_grad():
        logits, features = segments.forward(images, False), segments.forward(images, True)
    assert logits.shape == (4, 32)   # the model's output is its features: no classifier
    torch.testing.assert_close(logits, features)


def test_headless_search_reports_feature_cosine_in_events_and_run_file(tmp_path):
    events = list(search_prepared(tiny_prepared(), one_pass()))
    started = next(e for e in events if isinstance(e, Started))
    assert started.quality == FEATURE_COSINE and started.heldout_fp_top1 == 100.0
    assert 0.0 < started.heldout_base_top1 <= 100.0 + 1e-9
    steps = [e for e in events if isinstance(e, BlockDone)]
    assert len(steps) == 2 and all(0.0 < s.heldout_top1 <= 100.0 + 1e-9 for s in steps)
    run = next(e for e in events if isinstance(e, Finished)).run
    m = run.metrics
    assert m["quality"] == FEATURE_COSINE and not any(k.endswith("top1") for k in m)
    assert m["fp_feature_cosine"] == 100.0 and m["heldout_fp_feature_cosine"] == 100.0
    for key in ("base_feature_cosine", "refined_feature_cosine", "heldout_base_feature_cosine",
                "heldout_refined_feature_cosine"):
        assert 50.0 < m[key] <= 100.0 + 1e-9, (key, m[key])   # W8A8: features stay close to the FP ones
    assert m["n_test"] == 100
    loaded = load_run(save_run(tmp_path / "headless.h5", run))
    assert quality_of(loaded.metrics) == FEATURE_COSINE
    assert loaded.metrics["refined_feature_cosine"] == m["refined_feature_cosine"]


def test_older_metrics_without_quality_are_top1():
    assert quality_of({}) == TOP1 and quality_of({"fp_top1": 80.0}) == TOP1
    assert quality_of({"quality": FEATURE_COSINE}) == FEATURE_COSINE


@pytest.fixture
def tiny_cli_model(monkeypatch):
    """The CLI's model loader gives the tiny headless DINOv2 (the real name's full size is minutes on a CPU)."""
    def create(name, weights=None, pretrained=False):
        assert name == NAME and weights is None and not pretrained
        return tiny_headless()
    monkeypatch.setattr(pipeline, "create_model", create)


def run_cli(capsys, *argv):
    code = main([*argv])
    out, err = capsys.readouterr()
    return code, out.strip().splitlines(), err


def test_headless_quantize_and_search_cli_report_feature_cosine(tiny_cli_model, tmp_path, capsys):
    import json

    common = ("--model", NAME, "--data", "synthetic", "--quantizer", "minmax", "--bits", "W8A8", "--device", "cpu")
    code, lines, err = run_cli(capsys, "quantize", *common, "--calib-size", "2", "--batch-size", "2",
                               "--out", str(tmp_path / "q.h5"), "--json", "--quiet")
    assert code == 0, err
    result = json.loads(lines[-1])
    assert result["quality"] == FEATURE_COSINE and "fp_top1" not in result and "quant_top1" not in result
    assert 50.0 < result["quant_feature_cosine"] <= 100.0 + 1e-9 and result["fp_feature_cosine"] == 100.0
    assert load_run(tmp_path / "q.h5").metrics["base_feature_cosine"] == result["quant_feature_cosine"]

    out = tmp_path / "s.h5"
    code, lines, err = run_cli(capsys, "search", *common, "--calib-size", "4", "--batch-size", "4", "--passes", "1",
                               "--cycles", "1", "--joint-steps", "0", "--children", "2", "--compile", "off", "--out", str(out), "--quiet")
    assert code == 0, err
    assert "no classifier: feature cosine to FP base" in lines[-1] and "refined" in lines[-1], lines[-1]
    m = load_run(out).metrics
    assert f"refined {m['refined_feature_cosine']:.2f}%" in lines[-1]
