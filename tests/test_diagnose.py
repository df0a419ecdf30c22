"""The diagnosis: SQNR, one-at-a-time sensitivity (block restarts equal full forwards), the what-if,
test-split hygiene, the HDF5 round trip and the command on the demo."""
from __future__ import annotations

import json
import math
from dataclasses import replace

import h5py
import numpy as np
import pytest
import torch
from timm.models.vision_transformer import VisionTransformer

from engine.cli import main
from engine.diagnose import DiagnoseConfig, Diagnosed, Measured, load_diagnosis, quantization_points
from engine.diagnose.probe import Probe
from engine.diagnose.run import Subject, diagnose_subject, fitness_of
from engine.diagnose.sensitivity import sweep
from engine.diagnose.sqnr import point_sqnr, sqnr_db
from engine.diagnose.store import save_diagnosis, save_into_run
from engine.diagnose.whatif import what_if
from engine.data import TensorImages
from engine.evaluate import top1
from engine.pipeline import Prepared
from engine.quant import QuantConfig, quantize
from engine.scalefile import ScaleFileError, load_run, save_run
from engine.search.config import PRESETS
from engine.search.evaluator import search_fitness
from engine.search.segments import model_segments
from helpers import TINY_SEARCH as TINY, final, run_all, tiny_prepared


def subject_of(prepared: Prepared, scales: dict | None = None) -> Subject:
    qmodel = prepared.qmodel
    return Subject(qmodel, prepared.info, prepared.splits, prepared.device, prepared.spec, prepared.calib,
                   scales or {"calibrated": qmodel.scale_set()}, "calibrated", PRESETS["default"])


def diagnosis_of(prepared: Prepared, scales: dict | None = None, **config):
    events = list(diagnose_subject(subject_of(prepared, scales), DiagnoseConfig(raise_k=(), **config)))
    assert isinstance(events[-1], Diagnosed)
    measured = [e for e in events if isinstance(e, Measured)]
    assert [e.done for e in measured] == list(range(1, measured[0].total + 1))   # numbered, none missing
    return events[-1].diagnosis


def tiny_model_and_batches() -> tuple[VisionTransformer, list[torch.Tensor]]:
    torch.manual_seed(0)
    model = VisionTransformer(img_size=16, patch_size=4, in_chans=1, num_classes=10, embed_dim=32, depth=2,
                              num_heads=2, mlp_ratio=2.0).eval()
    return model, [torch.randn((32, 1, 16, 16), generator=torch.Generator().manual_seed(1))]


def test_sqnr_is_infinite_for_an_identity_point_and_low_at_one_bit():
    assert sqnr_db(1.0, 0.0) == math.inf and sqnr_db(100.0, 1.0) == pytest.approx(20.0)
    by_bits = {}
    for bits in (1, 8):
        model, batches = tiny_model_and_batches()
        qmodel = quantize(model, QuantConfig("minmax", bits, 8), batches)
        points = quantization_points(qmodel)
        identity = points[-1]
        qmodel.quantizers()[identity.key].enabled = False     # passes its input through unchanged
        sqnr = point_sqnr(qmodel, points, batches)
        assert sqnr[-1] == math.inf
        by_bits[bits] = np.array([s for s, p in zip(sqnr, points) if p.is_weight and p != identity])
    assert by_bits[8].min() > 30.0           # ~6 dB per bit
    assert by_bits[1].max() < 10.0           # two levels per channel


def test_points_are_placed_in_their_blocks_with_one_kind_per_position():
    prepared = tiny_prepared()
    points = quantization_points(prepared.qmodel)
    assert len(points) == len(prepared.qmodel.quantizers()) == 1 + 3 * 12 + 2
    assert (points[0].block, points[0].kind) == (-1, "patch_embed.proj.weight")
    assert [(p.block, p.kind) for p in points[-2:]] == [(3, "head.weight"), (3, "head.input")]
    assert {p.kind for p in points if p.block == 1} == {
        f"attn.{r}" for r in ("q", "k", "v", "probs")} | {
        f"{layer}.{role}" for layer in ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2") for role in ("weight", "input")}
    assert all(p.owner.startswith(f"blocks.{p.block}.") for p in points if 0 <= p.block < 3)


def test_sweeps_restarting_at_a_block_equal_full_forwards():
    """The cached block inputs give what toggling the point and running the whole model gives."""
    prepared = tiny_prepared()
    qmodel = prepared.qmodel
    segments = model_segments(qmodel.model)
    calib, heldout = prepared.calib[:1], prepared.splits.heldout
    heldout = TensorImages(heldout.images[:32], heldout.labels[:32], heldout.originals[:32])
    probe = Probe(segments, search_fitness(qmodel, segments, calib, PRESETS["default"]), calib, heldout, 32,
                  prepared.device)
    points = quantization_points(qmodel)
    quantizers = qmodel.quantizers()
    for mode, isolated in (("only", True), ("without", False)):
        scores = dict(sweep(qmodel, probe, points, mode))
        assert sorted(scores) == list(range(len(points)))
        for index in (0, 5, 20, len(points) - 1):      # stem, block 0, block 1, head
            enabled = {key: (key == points[index].key) == isolated for key in quantizers}
            for key, quantizer in quantizers.items():
                quantizer.enabled = enabled[key]
            full = probe.score_from_images()
            for quantizer in quantizers.values():
                quantizer.enabled = True
            assert scores[index].loss == pytest.approx(full.loss, rel=1e-6, abs=1e-9)
            assert scores[index].top1 == full.top1
    assert all(q.enabled for q in quantizers.values())   # the sweeps leave the model as they found it


def test_leaving_a_broken_point_in_fp_helps_and_an_identity_point_changes_nothing():
    """Constructed case: one weight point's grid made 40x coarser (its weights round to zero), another
    point disabled (an identity). Compared with the same model unbroken."""
    broken, identity = ("blocks.1.mlp.fc1", "weight"), ("blocks.2.attn.proj", "input")
    plain = diagnosis_of(tiny_prepared(), images=32, heldout_images=32).tables["calibrated"]
    prepared = tiny_prepared()
    quantizers = prepared.qmodel.quantizers()
    quantizers[broken].set_scale(quantizers[broken].scale * 40)
    quantizers[identity].enabled = False
    d = diagnosis_of(prepared, images=32, heldout_images=32)
    table = d.tables["calibrated"]
    names = [p.name for p in d.points]
    b, i = names.index("blocks.1.mlp.fc1/weight"), names.index("blocks.2.attn.proj/input")
    assert table.loss_all > plain.loss_all                                # the model got worse
    assert table.loss_without[b] < table.loss_all                         # sparing the broken point helps,
    assert table.recovery[b] > 5 * plain.recovery[b]                      # much more than before,
    assert table.sensitivity[b] > 5 * plain.sensitivity[b]                # and alone it does the most damage
    assert d.most_sensitive(1) == [b]
    assert table.sqnr_db[b] == 0.0                                        # nothing of its signal is left
    assert table.loss_without[i] == pytest.approx(table.loss_all, rel=1e-6)   # an identity: nothing to spare
    assert table.sqnr_db[i] == math.inf
    block_points = [j for j, p in enumerate(d.points) if 0 <= p.block < d.n_blocks]
    assert max(block_points, key=lambda j: table.sensitivity[j]) == b
    grid = d.grid(table.sensitivity)
    assert grid.shape == (3, 12) and grid[1, d.kinds.index("mlp.fc1.weight")] == table.sensitivity[b]


def test_what_if_ranks_by_sensitivity_and_random_equals_top_when_every_point_is_raised():
    prepared = tiny_prepared()
    qmodel = prepared.qmodel
    torch.manual_seed(0)   # the same weights as tiny_prepared's model
    raised_model = VisionTransformer(img_size=16, patch_size=4, in_chans=1, num_classes=10, embed_dim=32, depth=3,
                                     num_heads=2, mlp_ratio=2.0).eval()
    raised = quantize(raised_model, QuantConfig("percentile", 8, 8), prepared.calib).scale_set()
    scales = qmodel.scale_set()
    points = quantization_points(qmodel)
    heldout = prepared.splits.heldout
    measure = lambda: top1(qmodel, heldout, 32).top1   # noqa: E731
    ranking = list(reversed(range(len(points))))
    labels = []
    gen = what_if(qmodel, scales, raised, points, ranking, (1, len(points)), 2, np.random.default_rng(0), measure,
                  8, "calibrated", measure())
    while True:
        try:
            labels.append(next(gen))
        except StopIteration as done:
            result = done.value
            break
    assert len(labels) == 2 * (1 + 2) and list(result.ranking) == ranking
    assert result.top1_random.shape == (2, 2)
    assert np.all(result.top1_random[1] == result.top1_top[1])        # K = all: the same set every time
    assert result.mean_act_bits_top[1] == 8.0 and 4.0 < result.mean_act_bits_top[0] < 8.0
    assert qmodel.scale_set().equals(scales)                            # the diagnosed scales are back
    with pytest.raises(ValueError, match="only 39 are below 8 bits"):
        next(what_if(qmodel, scales, raised, points, ranking, (40,), 1, np.random.default_rng(0), measure, 8, "c", 0.0))


def test_base_and_refined_without_reading_the_test_split_and_the_file_round_trips(tmp_path):
    prepared = tiny_prepared()
    base = prepared.qmodel.scale_set()
    record = final(run_all(prepared, replace(TINY, cycles=1, children=1))).run
    spied = tiny_prepared(spy=True)
    d = diagnosis_of(spied, {"base": base, "refined": record.scales}, heldout_images=16)
    assert spied.splits.test.reads == 0                                             # never, not even its length
    assert spied.splits.heldout.items_read == len(spied.splits.heldout.inner)      # decoded once
    assert list(d.tables) == ["base", "refined"] and d.n_heldout == 16
    assert d.tables["base"].loss_all == pytest.approx(record.metrics["base_loss"], rel=1e-5)
    assert d.tables["refined"].loss_all == pytest.approx(record.metrics["refined_loss"], rel=1e-5)
    back = load_diagnosis(save_diagnosis(tmp_path / "diag.h5", d))
    assert back.to_dict() == d.to_dict() and back.points == d.points
    run_file = save_run(tmp_path / "run.h5", record)
    save_into_run(run_file, d)
    save_into_run(run_file, d)                                          # replaces, does not fail or duplicate
    assert load_diagnosis(run_file).to_dict() == d.to_dict()
    assert load_run(run_file).scales.equals(record.scales)              # the run file still loads
    assert not list(tmp_path.glob(".*tmp*"))
    with pytest.raises(ScaleFileError, match="holds no diagnosis"):
        load_diagnosis(save_run(tmp_path / "plain.h5", record))
    with h5py.File(tmp_path / "other.h5", "w"):
        pass
    with pytest.raises(ScaleFileError, match="not a CPT-V scale file"):
        save_into_run(tmp_path / "other.h5", d)


def test_fitness_of_a_run_ignores_its_recorded_extras():
    config = fitness_of({**PRESETS["release"].to_dict(), "resolved_mutation_range": 1e-3})
    assert (config.loss, config.temperature) == ("contrastive", 3.0)
    assert fitness_of(None) == PRESETS["default"]


def test_diagnose_command_on_the_demo_run_file(tmp_path, capsys):
    run_file, diag = tmp_path / "run.h5", tmp_path / "diag.h5"
    common = ["--data", "synthetic", "--calib-size", "16", "--batch-size", "16", "--device", "cpu"]
    assert main(["search", "--quantizer", "minmax", "--bits", "W4A3", *common, "--passes", "1", "--cycles", "1", "--joint-steps", "0",
                 "--children", "1", "--out", str(run_file), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["diagnose", str(run_file), "--data", "synthetic", "--device", "cpu", "--heldout-images", "8",
                 "--raise", "2", "--draws", "2", "--out", str(diag), "--into-run", "--json",
                 "--quiet"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["n_points"] == 75 and set(result["scales"]) == {"base", "refined"}
    assert result["n_calibration"] == 16 and result["n_heldout"] == 8
    assert result["whatif"]["k"] == [2] and len(result["whatif"]["heldout_top1_random"][0]) == 2
    assert result["out"] == str(diag) and result["into_run"] == str(run_file)
    assert load_diagnosis(diag).to_dict() == load_diagnosis(run_file).to_dict()
    assert load_diagnosis(diag).to_dict()["points"] == result["points"]
    assert main(["diagnose", str(run_file), "--bits", "W4A8"]) == 2
    assert main(["diagnose", "--quantizer", "minmax"]) == 2
    assert main(["diagnose", str(run_file), "--raise", "0"]) == 2
    assert "error: " in capsys.readouterr().err
