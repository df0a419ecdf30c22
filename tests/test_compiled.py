"""Compiled candidate evaluation: the same losses as eager, bit for bit, on a ViT and a Swin; eager
with one log line when compilation fails (a failing backend, a missing C++ compiler); ``auto``'s rule."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from timm.models.swin_transformer import SwinTransformer

from engine.bench import run_bench
from engine.bench.forward import bench_forwards
from engine.pipeline import RunSpec
from engine.quant import QuantConfig, quantize
from engine.runrecord import run_identity, spec_values
from engine.search.config import PRESETS
from engine.search.compiled import (AUTO_MIN_BLOCK_ELEMENTS, block_elements, compiled_forwards,
                                    evaluation_forwards, should_compile, should_fuse_fake_quant)
from engine.quant.fused import compile_settings
from engine.search.evaluator import CachedEvaluator, Fitness, Forwards, candidate_outputs, reference_outputs
from engine.search.losses import get_loss
from engine.search.segments import model_segments
from engine.search.space import block_space, mutate
from helpers import calib_batches, tiny_vit


def _first_block_losses(qmodel, calib, forwards=None) -> np.ndarray:
    """Seeded candidates of block 0 through a CachedEvaluator: the later blocks run ``forward``'s
    (eager, or compiled: one graph and one shape, so one compilation per model)."""
    segments = model_segments(qmodel.model)
    fitness = Fitness(get_loss("contrastive"), 3.0, False, reference_outputs(qmodel, segments, calib, False))
    evaluator = CachedEvaluator(qmodel, segments, calib, fitness, forwards=forwards)
    space = block_space(qmodel, qmodel.blocks()[0][0], "all")
    start = space.read(qmodel)
    rng = np.random.default_rng(0)
    return evaluator.evaluate(0, space, np.stack([mutate(start, space.ranges(0.05, 0.1), "relative", rng)
                                                  for _ in range(3)]))


@pytest.fixture(scope="module")
def vit():
    calib = calib_batches(2, 8)
    return quantize(tiny_vit(depth=2), QuantConfig("minmax", 4, 3), calib), calib


@pytest.mark.slow
def test_compiled_evaluation_is_eager_bit_for_bit_on_a_vit_and_a_swin_block(monkeypatch):
    """LayerNorm, GELU and softmax keep their eager kernels, so no value crosses a rounding boundary
    differently (plain inductor moves ~1e-4 of the outputs of a W4A3 block by a whole step). The ViT
    goes through the bench (every block searched, candidates batched, then its forwards timed); the
    Swin's second block is the shifted-window one (attention mask and relative position bias).
    ``CI`` is set as CI services set it: inductor's implicit fallback refuses to run under it."""
    monkeypatch.setenv("CI", "true")
    calib = calib_batches(2, 8)
    qmodel = quantize(tiny_vit(depth=1), QuantConfig("minmax", 4, 3), calib)   # one block: half the compilations
    result = run_bench(qmodel, calib, PRESETS["default"], "tiny-vit", torch.device("cpu"), candidates=2,
                       compile_mode="on")
    assert result.compiled and result.compiled_equals_eager and result.compiled_max_rel_loss_diff <= 1e-5
    assert result.fused and result.fused_equals_eager and result.fused_max_rel_loss_diff <= 1e-5
    assert result.compiled_speedup > 0 and result.fused_speedup > 0
    assert set(result.gflops) == {"naive", "cached_eager", "cached_compiled", "cached_fused"}
    assert not any(q.fused for q in qmodel.quantizers().values())     # the bench leaves the model eager
    forward = bench_forwards(tiny_vit(depth=1), qmodel, model_segments(qmodel.model), calib[0], torch.device("cpu"),
                             reps=1)
    assert forward.compiled and forward.images == 8 and forward.matmul_gflops > 0
    assert forward.fq_compiled_over_fp == pytest.approx(forward.fq_compiled_s / forward.fp_s)
    assert forward.fused and forward.fq_fused_over_fp == pytest.approx(forward.fq_fused_s / forward.fp_s)

    torch.manual_seed(0)
    swin = SwinTransformer(img_size=32, patch_size=4, in_chans=3, num_classes=5, embed_dim=16, depths=(2,),
                           num_heads=(2,), window_size=4).eval()
    swin_calib = calib_batches(1, 8, (3, 32, 32))
    swin_model = quantize(swin, QuantConfig("minmax", 4, 3), swin_calib)
    compiled = compiled_forwards(model_segments(swin_model.model))
    eager, fused = _first_block_losses(swin_model, swin_calib), _first_block_losses(swin_model, swin_calib, compiled)
    assert not compiled.candidates.fallback.active, compiled.candidates.fallback.reason
    np.testing.assert_array_equal(fused, eager)


def test_a_failing_compiler_falls_back_to_eager_with_one_log_line(vit, caplog):
    qmodel, calib = vit

    def broken_backend(graph, example_inputs):
        raise RuntimeError("no C++ compiler in this test")

    compiled = compiled_forwards(model_segments(qmodel.model), backend=broken_backend)
    with caplog.at_level(logging.WARNING, logger="engine.search.compiled"):
        losses = _first_block_losses(qmodel, calib, compiled)
    np.testing.assert_array_equal(losses, _first_block_losses(qmodel, calib))
    fallback = compiled.candidates.fallback
    assert fallback.active and "no C++ compiler in this test" in fallback.reason
    assert all(block.fallback is fallback for block in compiled.segments.blocks)
    warnings = [r for r in caplog.records if r.name == "engine.search.compiled"]
    assert len(warnings) == 1 and "running eager" in warnings[0].getMessage()


def test_a_failing_compile_set_up_runs_eager_and_leaves_dynamo_as_it_was(vit, monkeypatch, caplog):
    """torch.compile itself refusing (an old torch, a Python dynamo does not support) is a fallback too,
    and the recompile limit is raised only around compiled calls, never for the whole process."""
    qmodel, calib = vit
    config = torch._dynamo.config
    name = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"   # torch < 2.6
    limit = getattr(config, name)

    def refused(*args, **kwargs):
        raise RuntimeError("Dynamo is not supported on this Python")

    monkeypatch.setattr(torch, "compile", refused)
    with caplog.at_level(logging.WARNING, logger="engine.search.compiled"):
        forwards = compiled_forwards(model_segments(qmodel.model))
    assert forwards.candidates is candidate_outputs and "Dynamo is not supported" in caplog.text
    np.testing.assert_array_equal(_first_block_losses(qmodel, calib, forwards), _first_block_losses(qmodel, calib))
    assert getattr(config, name) == limit
    with compile_settings():
        assert getattr(config, name) >= 64
    assert getattr(config, name) == limit


def test_a_missing_cxx_toolchain_falls_back_to_eager(vit, caplog):
    """The real failure on a machine without gcc: inductor cannot build its kernels."""
    import torch._inductor.config as inductor_config

    qmodel, calib = vit
    # torch's own patch, not monkeypatch: pytest 9's undo deletes a config module's keys (no __dict__ entry)
    # (fx_graph_cache off: a cached build would not need the compiler)
    torch._dynamo.reset()
    with inductor_config.patch({"cpp.cxx": ("/nonexistent/g++",), "fx_graph_cache": False}):
        compiled = compiled_forwards(model_segments(qmodel.model))
        with caplog.at_level(logging.WARNING, logger="engine.search.compiled"):
            losses = _first_block_losses(qmodel, calib, compiled)
    torch._dynamo.reset()
    assert compiled.candidates.fallback.active
    np.testing.assert_array_equal(losses, _first_block_losses(qmodel, calib))


def test_compiling_means_compiled_blocks_on_cuda_and_fused_fake_quant_on_the_cpu(vit, monkeypatch):
    qmodel, calib = vit
    segments = model_segments(qmodel.model)

    def fused() -> set[bool]:
        return {q.fused for q in qmodel.quantizers().values()}

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert should_compile("auto", cuda, 197 * 192) and not should_compile("auto", cuda, AUTO_MIN_BLOCK_ELEMENTS - 1)
    assert should_compile("on", cuda, 1) and not should_compile("off", cuda, 10 ** 9)
    assert should_fuse_fake_quant("auto", cpu, 197 * 192) and not should_fuse_fake_quant("auto", cpu, AUTO_MIN_BLOCK_ELEMENTS - 1)
    assert should_fuse_fake_quant("on", cpu, 1) and not should_fuse_fake_quant("off", cpu, 10 ** 9)
    for mode in ("auto", "on"):     # compiled blocks measured no faster on the CPU; fusing alone did
        assert not should_compile(mode, cpu, 10 ** 9) and not should_fuse_fake_quant(mode, cuda, 10 ** 9)

    assert block_elements(segments, calib[0]) == 17 * 32             # 16 patches + class token, width 32
    assert evaluation_forwards(qmodel, segments, "auto", calib[0]) == Forwards(segments) and fused() == {False}
    assert evaluation_forwards(qmodel, segments, "on", calib[0]) == Forwards(segments) and fused() == {True}
    assert evaluation_forwards(qmodel, segments, "off", calib[0]) == Forwards(segments) and fused() == {False}
    monkeypatch.setattr("engine.search.compiled.AUTO_MIN_BLOCK_ELEMENTS", 17 * 32)
    assert evaluation_forwards(qmodel, segments, "auto", calib[0]) == Forwards(segments) and fused() == {True}
    qmodel.fuse_fake_quant(False)
    with pytest.raises(ValueError, match="compile mode"):
        should_compile("fast", cpu, 1)


def test_the_compile_mode_is_not_part_of_a_run():
    """Compiled and eager compute the same run: its file and identity do not record the mode."""
    on, off = RunSpec(compile="on"), RunSpec(compile="off")
    assert spec_values(on) == spec_values(off) and "compile" not in spec_values(on)
    assert run_identity(on.to_dict(), {}, None) == run_identity(off.to_dict(), {}, None)
