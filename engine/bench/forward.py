"""Forward benchmark: what fake quantization costs over the float model, eager, compiled (whole
blocks) and fused (eager blocks, one kernel per fake-quant point), and how far each forward is from
the device's matmul throughput.

All forwards run on the same batch in one process, interleaved (best of ``reps``), so their ratios
hold on a loaded machine. GFLOP/s count the matmuls and convolutions (torch's FlopCounterMode), the
work the hardware limit applies to; elementwise fake quantization adds none, only time.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Callable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ..models import create_model
from ..pipeline import Prepared
from ..quant import QuantizedModel
from ..quant.fused import fused_uniform
from ..search.compiled import compiled_forwards
from ..search.segments import Segments, model_segments

MATMUL_SIZE = {"cuda": 8192, "cpu": 2048}


@dataclass(frozen=True)
class SegmentFlops:
    """Matmul FLOPs per image of each part of a segmented forward."""
    stem: int
    blocks: tuple[int, ...]
    head: int

    @property
    def total(self) -> int:
        return self.stem + sum(self.blocks) + self.head

    def before(self, index: int) -> int:
        """The forward up to ``blocks[index]``'s input (the block-input cache's rebuild)."""
        return self.stem + sum(self.blocks[:index])

    def from_block(self, index: int) -> int:
        """``blocks[index]`` and everything after it (one cached candidate evaluation)."""
        return sum(self.blocks[index:]) + self.head


def _counted(fn: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, int]:
    with FlopCounterMode(display=False) as counter:
        out = fn()
    return out, counter.get_total_flops()


@torch.no_grad()
def segment_flops(segments: Segments, image: torch.Tensor, pre_logits: bool = False) -> SegmentFlops:
    """Counted on one image, eager (the counts do not depend on the scales or on compilation)."""
    x, stem = _counted(lambda: segments.stem(image[:1]))
    blocks = []
    for join, block in zip(segments.joins, segments.blocks):
        x, flops = _counted(lambda: block(join(x)))
        blocks.append(flops)
    _, head = _counted(lambda: segments.head(x, pre_logits))
    return SegmentFlops(stem, tuple(blocks), head)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _seconds(device: torch.device, fn: Callable[[], object]) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


@torch.no_grad()
def matmul_gflops(device: torch.device, reps: int = 3) -> float:
    """A plain square fp32 matmul's throughput: the reference for 'how close to the hardware'."""
    n = MATMUL_SIZE.get(device.type, MATMUL_SIZE["cuda"])
    a, b = (torch.randn(n, n, device=device, generator=torch.Generator(device=device).manual_seed(i)) for i in (0, 1))
    a @ b                                           # warm-up (library load, CUDA context)
    best = min(_seconds(device, lambda: a @ b) for _ in range(reps))
    return 2 * n ** 3 / best / 1e9


@dataclass(frozen=True)
class ForwardBench:
    """Seconds per image of each forward of the same batch, and their matmul GFLOP/s."""
    images: int
    fp_s: float                  # the float timm model
    fp_wrapper_s: float          # the quantized model with its quantizers off (explicit attention)
    fq_eager_s: float
    fq_compiled_s: float
    fq_fused_s: float
    compiled: bool               # False when compilation failed and the "compiled" forward ran eager
    compile_s: float             # the first compiled call minus a warm one
    fused: bool                  # False when the fused kernel failed to build and that forward ran eager
    fused_compile_s: float
    gflop_per_image: float
    gflops: dict[str, float]
    matmul_gflops: float
    fq_eager_over_fp: float
    fq_compiled_over_fp: float
    fq_fused_over_fp: float

    def to_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def bench_forwards(fp_model: nn.Module, qmodel: QuantizedModel, segments: Segments, images: torch.Tensor,
                   device: torch.device, reps: int = 3) -> ForwardBench:
    """FP, wrapper-FP, eager, compiled and fused fake-quant forwards of ``images``, interleaved."""
    compiled = compiled_forwards(segments).segments

    def quantizers_off() -> torch.Tensor:
        with qmodel.full_precision():
            return segments.forward(images)

    def fused() -> torch.Tensor:
        qmodel.fuse_fake_quant(True)
        try:
            return segments.forward(images)
        finally:
            qmodel.fuse_fake_quant(False)

    compile_s = {name: _seconds(device, fn) - _seconds(device, fn)     # the first call compiles
                 for name, fn in (("compiled", lambda: compiled.forward(images)), ("fused", fused))}
    forwards = {"fp": lambda: fp_model(images), "fp_wrapper": quantizers_off,
                "fq_eager": lambda: segments.forward(images),
                "fq_compiled": lambda: compiled.forward(images), "fq_fused": fused}
    best = {name: float("inf") for name in forwards}
    for _ in range(reps):
        for name, fn in forwards.items():
            best[name] = min(best[name], _seconds(device, fn))
    n = len(images)
    flops = segment_flops(segments, images).total
    fallback = compiled.blocks[0].fallback
    return ForwardBench(
        images=n, fp_s=best["fp"] / n, fp_wrapper_s=best["fp_wrapper"] / n, fq_eager_s=best["fq_eager"] / n,
        fq_compiled_s=best["fq_compiled"] / n, fq_fused_s=best["fq_fused"] / n, compiled=not fallback.active,
        compile_s=max(0.0, compile_s["compiled"]), fused=fused_uniform.failure is None,
        fused_compile_s=max(0.0, compile_s["fused"]),
        gflop_per_image=flops / 1e9, gflops={name: flops * n / seconds / 1e9 for name, seconds in best.items()},
        matmul_gflops=matmul_gflops(device), fq_eager_over_fp=best["fq_eager"] / best["fp"],
        fq_compiled_over_fp=best["fq_compiled"] / best["fp"], fq_fused_over_fp=best["fq_fused"] / best["fp"])


def measure_forwards(prepared: Prepared) -> ForwardBench:
    """``bench_forwards`` on the first calibration batch, against a fresh copy of the float model."""
    spec = prepared.spec
    fp_model, _ = create_model(spec.model, weights=spec.weights, pretrained=spec.pretrained)
    fp_model = fp_model.to(prepared.device).eval()
    qmodel = prepared.qmodel
    return bench_forwards(fp_model, qmodel, model_segments(qmodel.model), prepared.calib[0], prepared.device)
