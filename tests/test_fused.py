"""Fused fake quantization (engine/quant/fused.py): eager's values bit for bit, on values next to
rounding boundaries and on whole models (a ViT and a shifted-window Swin); eager where a gradient,
vmap or a traced graph needs it; eager with one log line when the kernel cannot be built."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from timm.models.swin_transformer import SwinTransformer

from engine.quant import QuantConfig, quantize
from engine.quant.fused import FusedUniform
from engine.quant.schemes import uniform_affine
from engine.search.evaluator import CachedEvaluator, Fitness, reference_outputs
from engine.search.losses import get_loss
from engine.search.segments import model_segments
from engine.search.space import block_space, mutate
from helpers import calib_batches, tiny_vit


def _near_rounding_boundaries(scale: torch.Tensor, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """Values (k + 1/2) * scale nudged by one ulp either way: where a reordered division would round
    the other way."""
    x = (torch.randint(-20, 20, shape, generator=generator).float() + 0.5) * scale
    return torch.nextafter(x, x + torch.randn(shape, generator=generator).sign())


def test_the_fused_kernel_gives_eagers_values_next_to_rounding_boundaries():
    kernel, generator = FusedUniform(), torch.Generator().manual_seed(0)
    per_tensor = torch.tensor(0.0371)
    x = _near_rounding_boundaries(per_tensor, (64, 300), generator)
    torch.testing.assert_close(kernel(x, per_tensor, torch.tensor(3.0), 0, 15),
                               uniform_affine(x, per_tensor, torch.tensor(3.0), 0, 15, {}), rtol=0, atol=0)
    per_channel = torch.rand(64, 1, generator=generator) * 0.2 + 1e-3
    x = _near_rounding_boundaries(per_channel, (64, 300), generator)
    torch.testing.assert_close(kernel(x, per_channel, torch.zeros(64, 1), -8, 7),
                               uniform_affine(x, per_channel, torch.zeros(64, 1), -8, 7, {}), rtol=0, atol=0)
    special = torch.tensor([float("nan"), float("inf"), -float("inf"), 0.0, -0.0, 1e30])
    torch.testing.assert_close(kernel(special, per_tensor, torch.tensor(0.0), -128, 127),
                               uniform_affine(special, per_tensor, torch.tensor(0.0), -128, 127, {}),
                               rtol=0, atol=0, equal_nan=True)
    assert kernel.failure is None


def test_a_gradient_or_vmap_runs_eager():
    """The straight-through rounding is eager's, and vmap's batched scales have no fused kernel."""
    kernel, x, scale = FusedUniform(), torch.randn(4, 8), torch.tensor(0.1)
    assert kernel(x.clone().requires_grad_(), scale, torch.tensor(0.0), 0, 15) is None
    with torch.no_grad():
        assert kernel(x.clone().requires_grad_(), scale, torch.tensor(0.0), 0, 15) is not None
    results = []

    def candidate(scale_of_one: torch.Tensor) -> torch.Tensor:
        results.append(kernel(x, scale_of_one, torch.tensor(0.0), 0, 15))
        return scale_of_one * 2

    torch.vmap(candidate)(torch.tensor([0.1, 0.2]))
    assert results == [None]


@pytest.fixture(scope="module")
def vit():
    calib = calib_batches(2, 8)
    return quantize(tiny_vit(depth=2), QuantConfig("minmax", 4, 3), calib), calib


def _losses_and_outputs(qmodel, calib) -> tuple[np.ndarray, torch.Tensor]:
    """Seeded candidates of the last block (the one a pass searches first), and the model's output."""
    segments = model_segments(qmodel.model)
    fitness = Fitness(get_loss("contrastive"), 3.0, False, reference_outputs(qmodel, segments, calib, False))
    index = len(qmodel.blocks()) - 1
    space = block_space(qmodel, qmodel.blocks()[index][0], "all")
    start, rng = space.read(qmodel), np.random.default_rng(0)
    vectors = np.stack([mutate(start, space.ranges(0.05, 0.1), "relative", rng) for _ in range(3)])
    losses = CachedEvaluator(qmodel, segments, calib, fitness).evaluate(index, space, vectors)
    with torch.no_grad():
        return losses, qmodel(calib[0])


def _fused_and_eager(qmodel, calib):
    qmodel.fuse_fake_quant(True)
    try:
        fused = _losses_and_outputs(qmodel, calib)
    finally:
        qmodel.fuse_fake_quant(False)
    return fused, _losses_and_outputs(qmodel, calib)


def test_fused_models_compute_eagers_losses_and_outputs_on_a_vit_and_a_swin(vit):
    """The Swin's second block is the shifted-window one (attention mask and relative position bias)."""
    torch.manual_seed(0)
    swin = SwinTransformer(img_size=32, patch_size=4, in_chans=3, num_classes=5, embed_dim=16, depths=(2,),
                           num_heads=(2,), window_size=4).eval()
    swin_calib = calib_batches(1, 8, (3, 32, 32))
    for qmodel, calib in (vit, (quantize(swin, QuantConfig("minmax", 4, 3), swin_calib), swin_calib)):
        (fused_losses, fused_out), (eager_losses, eager_out) = _fused_and_eager(qmodel, calib)
        np.testing.assert_array_equal(fused_losses, eager_losses)
        torch.testing.assert_close(fused_out, eager_out, rtol=0, atol=0)


def test_a_kernel_that_fails_to_build_runs_eager_with_one_log_line(vit, monkeypatch, caplog):
    qmodel, calib = vit

    def broken_backend(graph, example_inputs):
        raise RuntimeError("no C++ compiler in this test")

    broken = FusedUniform(backend=broken_backend)
    monkeypatch.setattr("engine.quant.quantizer.fused_uniform", broken)
    with caplog.at_level(logging.WARNING, logger="engine.quant.fused"):
        (fused_losses, fused_out), (eager_losses, eager_out) = _fused_and_eager(qmodel, calib)
    np.testing.assert_array_equal(fused_losses, eager_losses)
    torch.testing.assert_close(fused_out, eager_out, rtol=0, atol=0)
    assert "no C++ compiler in this test" in broken.failure
    warnings = [r for r in caplog.records if r.name == "engine.quant.fused"]
    assert len(warnings) == 1 and "running eager" in warnings[0].getMessage()


def test_a_missing_cxx_toolchain_runs_eager(vit, monkeypatch):
    """The real failure on a machine without gcc: inductor cannot build the kernel."""
    import torch._inductor.config as inductor_config

    qmodel, calib = vit
    kernel = FusedUniform()
    monkeypatch.setattr("engine.quant.quantizer.fused_uniform", kernel)
    # torch's own patch (see test_compiled): a cached build would not need the compiler
    torch._dynamo.reset()
    try:
        with inductor_config.patch({"cpp.cxx": ("/nonexistent/g++",), "fx_graph_cache": False}):
            (fused_losses, _), (eager_losses, _) = _fused_and_eager(qmodel, calib)
    finally:
        torch._dynamo.reset()
    assert kernel.failure is not None
    np.testing.assert_array_equal(fused_losses, eager_losses)
