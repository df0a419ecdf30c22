"""Run library and comparison numbers, against run files built from a real quantized tiny ViT."""
import csv
import json
import math

import numpy as np
import pytest
import torch

from engine.cli import main
from engine.library import (COLUMNS, accuracy_vs_bits, bits_matrix, layer_view, quant_grid, read_row, scan_workspace,
                            side_by_side, to_jsonable, write_csv)
from engine.quant import QuantConfig, quantize
from engine.runrecord import History, RunRecord
from engine.scalefile import load_run, save_run
from helpers import tiny_quant_vit

MOVED, FACTOR = ("blocks.1.attn.qkv", "weight"), 1.1   # the one point the fake "search" moved
# (quantizer, w_bits, seed) -> (base_top1, refined_top1)
RUNS = {("minmax", 4, 0): (61.25, 70.5), ("minmax", 4, 1): (63.0, 69.0), ("minmax", 8, 0): (97.0, 97.25),
        ("percentile", 4, 0): (72.0, 74.75)}


def history(seed):
    """2 passes over 2 blocks, last to first, 3 evaluations per block step."""
    passes, blocks = np.array([0, 0, 1, 1], np.int32), np.array([1, 0, 1, 0], np.int32)
    return History(loss=np.linspace(3.0, 2.0, 12) + seed, eval_pass=np.repeat(passes, 3), eval_block=np.repeat(blocks, 3),
                   heldout_top1=np.array([60.0, 61.0, 62.0, 63.5]) + seed, step_loss=np.array([2.9, 2.6, 2.3, 2.0]),
                   block_index=blocks, pass_index=passes)


def record(qmodel, seed, base_top1, refined_top1=None):
    base = qmodel.scale_set()
    searched = refined_top1 is not None
    params = base.get_point(*MOVED)
    scales = base.with_point(*MOVED, params.with_scale(params.scale * FACTOR)) if searched else base
    metrics = {"fp_top1": 98.0, "base_top1": base_top1, "n_test": 400, "device": "cpu"}
    if searched:
        metrics.update(refined_top1=refined_top1, evaluations=12, search_seconds=1.5 + seed)
    return RunRecord(model_name="tiny-vit", model_source="random-init", weights_sha256="ab" * 32, quant=qmodel.config,
                     calibration={"dataset": "random", "n_samples": 8, "seed": seed}, scales=scales, seed=seed,
                     base=base if searched else None, search={"preset": "default", "passes": 2} if searched else None,
                     history=history(seed) if searched else None, metrics=metrics)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    folder = tmp_path_factory.mktemp("workspace")
    images = torch.randn(8, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    models = {}
    for (quantizer, w_bits, seed), (base, refined) in RUNS.items():
        key = (quantizer, w_bits)
        models.setdefault(key, quantize(tiny_quant_vit(), QuantConfig(quantizer, w_bits, 8), [images]))
        save_run(folder / f"tiny-vit_{quantizer}_W{w_bits}A8_s{seed}.h5", record(models[key], seed, base, refined))
    save_run(folder / "plain_quantize.h5", record(models[("minmax", 4)], 0, 55.0))
    (folder / "broken.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    (folder / "notes.txt").write_text("not a run file")
    return folder


def test_library_lists_every_run_file_and_the_corrupt_one_as_unreadable(workspace):
    rows = {row.file: row for row in scan_workspace(workspace)}
    expected = [f"tiny-vit_{q}_W{w}A8_s{s}.h5" for q, w, s in RUNS] + ["plain_quantize.h5", "broken.h5"]
    assert sorted(rows) == sorted(expected)
    broken = rows.pop("broken.h5")
    assert not broken.ok and "not a readable HDF5 file" in broken.error and broken.model is None
    row = rows["tiny-vit_minmax_W4A8_s1.h5"]
    assert (row.quantizer, row.bits, row.w_bits, row.seed, row.preset) == ("minmax", "W4A8", 4, 1, "default")
    assert (row.base_top1, row.refined_top1, row.delta, row.evaluations, row.seconds) == (63.0, 69.0, 6.0, 12, 2.5)
    assert row.date and row.date[:2] == "20"
    plain = rows["plain_quantize.h5"]
    assert plain.ok and plain.preset is None and plain.refined_top1 is None and plain.delta is None


def test_csv_export_matches_the_run_files(workspace, tmp_path):
    path = write_csv(scan_workspace(workspace), tmp_path / "library.csv")
    with path.open(newline="") as f:
        table = list(csv.DictReader(f))
    assert list(table[0]) == list(COLUMNS) and len(table) == len(RUNS) + 2
    for line in table:
        if line["error"]:
            assert line["file"] == "broken.h5" and line["base_top1"] == ""
            continue
        run = load_run(workspace / line["file"])
        assert (line["model"], line["quantizer"], line["bits"], int(line["seed"])) == \
               (run.model_name, run.quant.quantizer, run.quant.bits_label, run.seed)
        for key in ("fp_top1", "base_top1", "refined_top1"):
            assert line[key] == ("" if key not in run.metrics else repr(float(run.metrics[key])))


def test_accuracy_vs_bits_aggregates_over_seeds(workspace):
    points = accuracy_vs_bits(scan_workspace(workspace))
    by_key = {(p.preset, p.quantizer, p.bits): p for p in points}
    assert [(p.quantizer, p.bits) for p in points if p.preset == "default"] == \
           [("minmax", "W4A8"), ("minmax", "W8A8"), ("percentile", "W4A8")]   # bit-widths in numeric order
    cell = by_key[("default", "minmax", "W4A8")]
    base, refined = np.array([61.25, 63.0]), np.array([70.5, 69.0])
    assert cell.n == 2 and cell.files == ("tiny-vit_minmax_W4A8_s0.h5", "tiny-vit_minmax_W4A8_s1.h5")
    assert cell.base_mean == pytest.approx(base.mean()) and cell.base_std == pytest.approx(base.std(ddof=1))
    assert (cell.refined_min, cell.refined_max) == (69.0, 70.5)
    assert cell.delta_mean == pytest.approx((refined - base).mean())
    assert by_key[("default", "percentile", "W4A8")].base_std == 0.0
    plain = by_key[(None, "minmax", "W4A8")]
    assert plain.base_mean == 55.0 and plain.refined_mean is None

    matrix = bits_matrix([p for p in points if p.preset == "default"], "delta_mean")
    assert matrix.quantizers == ("minmax", "percentile") and matrix.bits == ("W4A8", "W8A8")
    assert matrix.values[1, 0] == pytest.approx(2.75) and math.isnan(matrix.values[1, 1])
    assert matrix.files[0][1] == ("tiny-vit_minmax_W8A8_s0.h5",)
    assert matrix.rows()[1] == {"quantizer": "percentile", "W4A8": pytest.approx(2.75), "W8A8": None}
    with pytest.raises(ValueError, match="one matrix per model and preset"):
        bits_matrix(points)


def named(workspace, *files):
    return [(f, load_run(workspace / f)) for f in files]


def test_side_by_side_matches_the_records(workspace):
    runs = named(workspace, "tiny-vit_minmax_W4A8_s0.h5", "tiny-vit_percentile_W4A8_s0.h5", "plain_quantize.h5")
    sbs = side_by_side(runs)
    assert sbs.blocks == ("blocks.0", "blocks.1")
    assert "attn.qkv/weight" in sbs.layers and "attn/probs" in sbs.layers and "mlp.fc2/input" in sbs.layers
    first = sbs.runs[0]
    np.testing.assert_array_equal(first.loss, runs[0][1].history.loss)
    np.testing.assert_array_equal(first.block_heldout, [63.5, 62.0])     # each block's last step (pass 1)
    moved = sbs.layers.index("attn.qkv/weight")
    assert first.shift[1, moved] == pytest.approx(math.log(FACTOR), rel=1e-6)
    assert np.count_nonzero(first.shift) == 1
    assert first.row.refined_top1 == 70.5 and first.metrics["n_test"] == 400
    plain = sbs.runs[2]
    assert plain.loss.size == 0 and np.isnan(plain.shift).all() and np.isnan(plain.block_heldout).all()
    assert len(list(sbs.loss_rows())) == 24
    assert list(sbs.block_rows())[1] == {"block": "blocks.1", runs[0][0]: 62.0, runs[1][0]: 62.0, runs[2][0]: None}
    json.dumps(to_jsonable(sbs), allow_nan=False)


def test_layer_view_grids_ratios_and_histogram(workspace):
    runs = named(workspace, "tiny-vit_minmax_W4A8_s0.h5", "tiny-vit_percentile_W4A8_s0.h5")
    view = layer_view(runs, *MOVED, channel=5, load_model=lambda record: tiny_quant_vit())
    weights = tiny_quant_vit().get_submodule(MOVED[0]).weight.detach().numpy()
    minmax = view.runs[0]
    assert view.channel == 5 and minmax.counts.sum() == weights.shape[1]
    assert view.edges[0] == pytest.approx(weights[5].min()) and view.edges[-1] == pytest.approx(weights[5].max())
    np.testing.assert_allclose(minmax.ratios, FACTOR, rtol=1e-6)
    params = runs[0][1].scales.get_point(*MOVED)
    scale, zp = float(params.scale[5]), float(params.zero_point[5])
    grid = minmax.refined
    assert grid.levels.size == 16 and grid.scale == scale and minmax.base.scale == pytest.approx(scale / FACTOR)
    assert grid.lo == pytest.approx((params.qmin - zp) * scale) and grid.hi == pytest.approx((params.qmax - zp) * scale)
    assert np.all(np.diff(grid.levels) == pytest.approx(scale))
    probs = layer_view(runs, "blocks.0.attn", "probs")
    assert probs.channel is None and probs.edges is None and probs.runs[0].refined.levels.size == 256
    with pytest.raises(ValueError, match="choose a channel"):
        quant_grid(params)
    with pytest.raises(ValueError, match="has no quantization point blocks.0.nope/weight"):
        layer_view(runs, "blocks.0.nope")


def test_compare_cli_prints_the_same_numbers(workspace, capsys):
    files = [str(workspace / "tiny-vit_minmax_W4A8_s0.h5"), str(workspace / "tiny-vit_minmax_W4A8_s1.h5")]
    assert main(["compare", *files, "--layer", "blocks.1.attn.qkv", "--no-weights", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    runs = result["side_by_side"]["runs"]
    assert [r["row"]["refined_top1"] for r in runs] == [70.5, 69.0]
    assert runs[1]["loss"] == load_run(files[1]).history.loss.tolist()
    assert result["layer"]["runs"][0]["ratios"][0] == pytest.approx(FACTOR, rel=1e-6)

    assert main(["compare", "--dir", str(workspace), "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [r["error"] is not None for r in result["library"]].count(True) == 1
    cells = {(m["preset"], m["refined"]["values"][0][0]) for m in result["matrices"]}
    assert cells == {(None, None), ("default", 69.75)}

    assert main(["compare", "--dir", str(workspace)]) == 0
    assert "unreadable: broken.h5" in capsys.readouterr().out
    assert main(["compare", files[0], "--dir", str(workspace)]) == 2


def test_read_row_never_raises(tmp_path):
    (tmp_path / "empty.h5").write_bytes(b"")
    assert read_row(tmp_path / "empty.h5").error
    assert read_row(tmp_path / "missing.h5").error.startswith("scale file not found")
