"""The real workload's device path on CUDA: every quantizer, quantize -> one-pass search -> save -> load -> eval.

Skipped without CUDA (CI has none); run with ``python -m pytest -m gpu`` on a GPU machine. On deit_tiny the
same workflow runs on the CPU too, and the CUDA run must agree with it: base scales within ``SCALE_RTOL``
(calibration reduces in another order on the GPU), the base loss within ``LOSS_RTOL``. The CPU-only
test that catches the device class of bug without a GPU is ``tests/test_device_rule.py``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from engine.evaluate import top1
from engine.pipeline import RunSpec, prepare
from engine.quant import QuantConfig, available_quantizers
from engine.rebuild import rebuild
from engine.scalefile import load_run, save_run
from engine.search.config import SearchConfig
from engine.search.events import Finished
from engine.search.run import search_prepared
from helpers import make_image_folder, save_random_timm_model

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

SCALE_RTOL = 1e-3     # relative, per scale element; OMSE/PTQ4ViT argmins may flip on near-ties (see below)
MAX_FLIPPED = 0.01    # share of scale elements allowed outside SCALE_RTOL (a near-tie chose another candidate)
LOSS_RTOL = 1e-3
TINY_SEARCH = SearchConfig(passes=1, cycles=1, children=2, population=4, tournament=2, joint_steps=20)
MODELS = ("deit_tiny_patch16_224", "swin_tiny_patch4_window7_224")


@pytest.fixture(scope="module")
def workload(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("gpu")
    data = make_image_folder(root / "data", n_classes=4, per_class=6, size=224)
    weights = {name: save_random_timm_model(name, root / f"{name}.safetensors", num_classes=4) for name in MODELS}
    return {"data": data, **weights}


def _workflow(workload: dict[str, Path], model: str, quantizer: str, device: str, out: Path) -> dict:
    """Quantize, search one tiny pass, save, load the file back and evaluate it: the user's whole path."""
    spec = RunSpec(model=model, weights=str(workload[model]), data=str(workload["data"]),
                   quant=QuantConfig(quantizer, 4, 8), calib_size=8, batch_size=4, seed=0, device=device)
    prepared = prepare(spec)
    record = next(e.run for e in search_prepared(prepared, TINY_SEARCH) if isinstance(e, Finished))
    save_run(out, record)
    rebuilt = rebuild(load_run(out), spec)            # what eval --scales and the app do with the file
    for quantizer_module in rebuilt.qmodel.quantizers().values():
        for buffer in quantizer_module.buffers():
            assert buffer.device.type == torch.device(device).type
    evaluated = top1(rebuilt.qmodel, rebuilt.splits.test, spec.batch_size, rebuilt.device).top1
    assert evaluated == record.metrics["refined_top1"]
    return {"base": record.base, "base_loss": float(record.history.loss[0]), "refined_top1": evaluated}


def _outside_tolerance(a: np.ndarray, b: np.ndarray) -> float:
    """Share of elements outside the relative tolerance."""
    return float(np.mean(~np.isclose(a, b, rtol=SCALE_RTOL, atol=0.0))) if a.size else 0.0


@pytest.mark.parametrize("quantizer", available_quantizers())
def test_cuda_matches_cpu(workload, tmp_path, quantizer):
    cpu = _workflow(workload, "deit_tiny_patch16_224", quantizer, "cpu", tmp_path / "cpu.h5")
    cuda = _workflow(workload, "deit_tiny_patch16_224", quantizer, "cuda", tmp_path / "cuda.h5")
    for name, role, params in cpu["base"].points():
        other = cuda["base"].get_point(name, role)
        assert _outside_tolerance(params.scale, other.scale) <= MAX_FLIPPED, f"{name}/{role} scales differ on CUDA"
        assert params.zero_point.shape == other.zero_point.shape
    assert cuda["base_loss"] == pytest.approx(cpu["base_loss"], rel=LOSS_RTOL)


@pytest.mark.parametrize("quantizer", available_quantizers())
def test_swin_runs_on_cuda(workload, tmp_path, quantizer):
    """Swin's shifted-window mask and relative position bias meet the quantizers' buffers on CUDA."""
    result = _workflow(workload, "swin_tiny_patch4_window7_224", quantizer, "cuda", tmp_path / "swin.h5")
    assert 0.0 <= result["refined_top1"] <= 100.0


def test_compiled_evaluation_is_eager_bit_for_bit_on_cuda(workload):
    """The CPU test's promise on CUDA (Triton kernels around cuBLAS and the eager LayerNorm / GELU /
    softmax): the compiled evaluator's losses equal the eager ones."""
    from engine.bench import run_bench
    from engine.search.config import PRESETS

    spec = RunSpec(model=MODELS[0], weights=str(workload[MODELS[0]]), data=str(workload["data"]),
                   quant=QuantConfig.from_bits("minmax", "W4A8"), calib_size=8, batch_size=8, device="cuda")
    prepared = prepare(spec)
    result = run_bench(prepared.qmodel, prepared.calib, PRESETS["default"], spec.model, prepared.device,
                       candidates=2, compile_mode="on")
    assert result.compiled and result.compiled_equals_eager
