"""bench: both evaluation paths see the same candidates and agree on every loss."""
from __future__ import annotations

import json
from dataclasses import replace

import torch
from timm.models.vision_transformer import VisionTransformer

from engine.bench import run_bench
from engine.cli import main
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
