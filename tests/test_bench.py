"""bench: both evaluation paths see the same candidates and agree on every loss; --memory measures
peak memory per phase and extrapolates it."""
from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from timm.models.vision_transformer import VisionTransformer

from engine.bench import bench_inputs, run_bench
from engine.bench.memory import (PeakMeter, SizePeaks, check_sizes, format_table, measure_size, run_memory_bench,
                                 summarize)
from engine.cli import main
from engine.pipeline import RunSpec
from engine.quant import QuantConfig, quantize
from engine.search.config import PRESETS


def test_naive_and_optimised_paths_agree():
    torch.manual_seed(0)
    model = VisionTransformer(img_size=16, patch_size=4, in_chans=1, num_classes=10, embed_dim=32, depth=3,
                              num_heads=2, mlp_ratio=2.0).eval()
    g = torch.Generator().manual_seed(0)
    calib = [torch.randn((20, 1, 16, 16), generator=g) for _ in range(2)]
    qmodel = quantize(model, QuantConfig("percentile", 2, 3), calib)
    for config in (PRESETS["default"], PRESETS["release"], replace(PRESETS["default"], loss="contrastive", children=3)):
        result = run_bench(qmodel, calib, config, "tiny-vit", torch.device("cpu"), candidates=4)
        assert result.evaluations == 3 * 4 and result.blocks == 3 and result.n_calib == 40
        assert result.max_rel_loss_diff <= 1e-5
        assert result.naive_evals_per_s > 0 and result.opt_evals_per_s > 0
        assert abs(result.speedup - result.opt_evals_per_s / result.naive_evals_per_s) < 1e-9
        # 3 equal blocks, 4 candidates each: 36 block runs naive, 12 + 8 + 4 cached + 0 + 1 + 2 rebuilding
        # their inputs: 36 / 27; the stem (run 12 times naive, 3 cached) adds a little
        assert 36 / 27 < result.work_ratio < 1.5
    limited = run_bench(qmodel, calib, replace(PRESETS["default"], search_images=25), "tiny-vit", torch.device("cpu"),
                        candidates=2)
    assert limited.n_calib == 25 and limited.max_rel_loss_diff <= 1e-5


def test_bench_command_on_the_demo(capsys):
    code = main(["bench", "--calib-size", "40", "--batch-size", "20", "--candidates", "2", "--children", "2",
                 "--device", "cpu", "--json", "--quiet"])
    assert code == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"naive_evals_per_s", "opt_evals_per_s", "speedup", "max_rel_loss_diff", "model", "device"} <= set(result)
    assert result["model"] == "digits-vit" and result["device"] == "cpu" and result["evaluations"] == 6 * 2
    assert result["max_rel_loss_diff"] <= 1e-5


# ---------------------------------------------------------------- --memory

def test_summary_extrapolates_linear_growth_against_the_targets():
    mb = 1 << 20
    block, image = 197 * 768 * 4, 3 * 224 * 224 * 4
    small = SizePeaks(64, calibration=1000 * mb, search_pass=1100 * mb, block_input_bytes=block, image_bytes=image)
    large = SizePeaks(256, calibration=1192 * mb, search_pass=1100 * mb + 192 * 3 * mb, block_input_bytes=block,
                      image_bytes=image)
    result = summarize(RunSpec(model="vit_base_patch16_224", batch_size=32), "cpu", "peak RSS", [(small, large)])
    assert result.growth_per_image == {"calibration": 1.0 * mb, "search_pass": 3.0 * mb}
    assert result.extrapolated["search_pass"] == large.search_pass + 3.0 * mb * (1000 - 256)
    assert result.growth_target == image + 3 * block and not result.meets_growth_target   # 3 MB > 2.3 MB
    assert result.meets_peak_target and result.to_dict()["extrapolated_to"] == 1000
    assert "MISSED" in format_table(result) and "met" in format_table(result)


def test_summary_judges_the_worst_of_repeated_runs_and_skips_an_unmeasured_phase():
    """One lucky run must not hide an unlucky one: the growth is the largest over the repeats."""
    mb = 1 << 20
    peaks = [SizePeaks(n, calibration=int(c * mb), search_pass=None, block_input_bytes=197 * 192 * 4,
                       image_bytes=3 * 224 * 224 * 4) for n, c in [(32, 1300), (128, 1357.6), (32, 1200), (128, 1392)]]
    result = summarize(RunSpec(model="deit_tiny_patch16_224", batch_size=32), "cpu", "peak RSS",
                       [(peaks[0], peaks[1]), (peaks[2], peaks[3])])
    assert [run["calibration"] / mb for run in result.growth_per_run] == pytest.approx([0.6, 2.0])
    assert result.growth_per_image == {"calibration": pytest.approx(2.0 * mb)} and not result.meets_growth_target
    assert set(result.extrapolated) == {"calibration"} and len(result.sizes) == 4
    table = format_table(result)
    assert "2 run(s)" in table and "MISSED" in table and table.count("growth / image") == 3


@pytest.mark.parametrize("options", [{"block_steps": -1}, {"repeats": 0}])
def test_memory_bench_refuses_negative_steps_and_no_repeats(options):
    with pytest.raises(ValueError, match="block-steps|repeats"):
        run_memory_bench(RunSpec(), PRESETS["default"], (16, 32), **options)


@pytest.mark.parametrize("sizes", [(64,), (256, 64), (0, 64), (64, 128, 256)])
def test_memory_bench_needs_two_increasing_sizes(sizes):
    with pytest.raises(ValueError, match="two increasing calibration sizes"):
        check_sizes(sizes)


def test_peak_meter_sees_an_allocation_after_a_reset():
    meter = PeakMeter(torch.device("cpu"))
    meter.reset()
    before = meter.peak()
    block = torch.ones(64 << 20, dtype=torch.uint8)     # 64 MB, touched
    assert meter.peak() - before >= 60 << 20
    del block
    meter.reset()
    assert meter.peak() < before + (60 << 20)            # the reset forgot the freed block


def test_measure_size_on_a_timm_model_uses_prepare_on_synthetic_images():
    spec = RunSpec(model="test_vit", quant=QuantConfig.from_bits("minmax", "W4A8"), calib_size=4, batch_size=2,
                   device="cpu")   # timm's 160 px test ViT: 101 tokens x 64
    assert bench_inputs(spec).splits.name == "synthetic"
    peaks = measure_size(spec, replace(PRESETS["default"], children=1), block_steps=1)
    assert peaks.calib_size == 4 and peaks.block_input_bytes == 101 * 64 * 4 and peaks.image_bytes == 3 * 160 * 160 * 4
    assert peaks.calibration > 0 and peaks.search_pass > 0
    assert measure_size(spec, PRESETS["default"], block_steps=0).search_pass is None   # calibration only


@pytest.mark.slow   # two fresh interpreters (one per calibration size)
def test_bench_memory_command(capsys):
    code = main(["bench", "--model", "test_vit", "--memory", "--calib-sizes", "16,32", "--batch-size", "16",
                 "--block-steps", "2", "--device", "cpu", "--json", "--quiet"])
    assert code == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [s["calib_size"] for s in result["sizes"]] == [16, 32] and result["measure"] == "peak RSS"
    assert set(result["growth_per_image"]) == {"calibration", "search_pass"}
    assert all(s["search_pass"] > 0 and s["calibration"] > 0 for s in result["sizes"])
