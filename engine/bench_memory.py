"""Memory benchmark for the real workload (DESIGN §8): peak memory of calibration and of one search
pass at two calibration sizes, the growth per calibration image, and its extrapolation to 1,000
images, beside the targets (issue 12).

Each size runs in a fresh process, so one size's high-water mark and allocator caches do not
leak into the other. On CUDA the figures are ``torch.cuda.max_memory_allocated``; on the CPU the
process's peak resident set (Linux VmHWM, reset between phases through /proc/self/clear_refs).
"""
from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .allocator import keep_freed_memory, return_freed_memory
from .bench import bench_inputs
from .data import first_images
from .device import resolve_device
from .pipeline import RunSpec
from .quant import QuantizedModel
from .search.config import SearchConfig
from .search.evaluator import CachedEvaluator, search_fitness
from .search.segments import model_segments
from .search.space import block_space

EXTRAPOLATE_TO = 1000                 # the default calibration size (DESIGN §4)
GROWTH_TARGET_BLOCK_INPUTS = 3        # growth per image at most 3 block inputs of one image
PEAK_TARGET_BYTES = 8 << 30           # extrapolated peak at 1,000 images, on the accelerator
PHASES = ("calibration", "search_pass")
CLEAR_REFS, STATUS = Path("/proc/self/clear_refs"), Path("/proc/self/status")


class PeakMeter:
    """Peak memory since the last ``reset``: CUDA's allocator statistics, else the process's VmHWM."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        if device.type != "cuda" and not (CLEAR_REFS.exists() and STATUS.exists()):
            raise RuntimeError("the CPU memory benchmark reads the peak resident set from Linux's /proc/self; "
                               "run it on Linux or on a CUDA device")

    @property
    def measure(self) -> str:
        return "max_memory_allocated" if self.device.type == "cuda" else "peak RSS"

    def reset(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            return
        return_freed_memory()             # the phase starts from live memory, not from kept free heap
        CLEAR_REFS.write_text("5")        # 5: reset the high-water mark to the current RSS

    def peak(self) -> int:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return torch.cuda.max_memory_allocated(self.device)
        for line in STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError(f"no VmHWM line in {STATUS}")


@dataclass(frozen=True)
class SizePeaks:
    """Peaks at one calibration size, in bytes."""
    calib_size: int
    calibration: int                  # prepare: load the model and data, calibrate the quantizer
    search_pass: int                  # the fitness reference, then every block's input cache and candidates
    block_input_bytes: int            # the largest block input of one image (tokens x width x 4 B for ViT)


@torch.no_grad()
def search_pass(qmodel: QuantizedModel, calib: Sequence[torch.Tensor], config: SearchConfig,
                block_steps: int | None = None) -> None:
    """The memory of one search pass: the FP reference, then per block (last to first; the first
    ``block_steps`` only, when given) its input cache and one batched call of ``config.children``
    candidates. More cycles repeat the same calls, so the peak does not depend on them; the held-out
    checks between block steps do not grow with the calibration size."""
    images = first_images(calib, config.search_images)
    keep_freed_memory()   # as the search does before its evaluations (engine/allocator.py)
    segments = model_segments(qmodel.model)
    evaluator = CachedEvaluator(qmodel, segments, images, search_fitness(qmodel, segments, images, config))
    for index, (name, _) in list(enumerate(qmodel.blocks()))[::-1][:block_steps]:
        space = block_space(qmodel, name, config.scope)
        evaluator.evaluate(index, space, np.repeat(space.read(qmodel)[None], config.children, axis=0))


@torch.no_grad()
def block_input_bytes(qmodel: QuantizedModel, images: torch.Tensor) -> int:
    """Bytes of the largest block input of one image: the unit of the growth target."""
    inputs = model_segments(qmodel.model).block_inputs(images[:1])
    return max(x[0].numel() * x.element_size() for x in inputs)


def measure_size(spec: RunSpec, config: SearchConfig, block_steps: int | None = None) -> SizePeaks:
    """Both phases' peaks at ``spec.calib_size`` in this process (run it in a fresh one)."""
    meter = PeakMeter(resolve_device(spec.device))
    meter.reset()
    prepared = bench_inputs(spec)
    calibration = meter.peak()
    meter.reset()
    search_pass(prepared.qmodel, prepared.calib, config, block_steps)
    return SizePeaks(spec.calib_size, calibration, meter.peak(),
                     block_input_bytes(prepared.qmodel, prepared.calib[0]))


def _in_fresh_process(spec: RunSpec, config: SearchConfig, block_steps: int | None) -> SizePeaks:
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(measure_size, spec, config, block_steps).result()


@dataclass(frozen=True)
class MemoryResult:
    model: str
    device: str
    measure: str
    quantizer: str
    bits: str
    batch_size: int
    sizes: tuple[SizePeaks, ...]
    growth_per_image: dict[str, float]        # bytes per calibration image, per phase
    extrapolated: dict[str, float]            # bytes at EXTRAPOLATE_TO images, per phase
    growth_target: float
    peak_target: float
    meets_growth_target: bool
    meets_peak_target: bool

    def to_dict(self) -> dict:
        return {**asdict(self), "extrapolated_to": EXTRAPOLATE_TO}


def summarize(spec: RunSpec, device: str, measure: str, small: SizePeaks, large: SizePeaks) -> MemoryResult:
    """Linear growth between the two sizes, extrapolated from the larger one, against the targets."""
    images = large.calib_size - small.calib_size
    growth = {phase: (getattr(large, phase) - getattr(small, phase)) / images for phase in PHASES}
    extrapolated = {phase: getattr(large, phase) + growth[phase] * (EXTRAPOLATE_TO - large.calib_size)
                    for phase in PHASES}
    growth_target = float(GROWTH_TARGET_BLOCK_INPUTS * large.block_input_bytes)
    return MemoryResult(spec.model, device, measure, spec.quant.quantizer, spec.quant.bits_label, spec.batch_size,
                        (small, large), growth, extrapolated, growth_target, float(PEAK_TARGET_BYTES),
                        max(growth.values()) <= growth_target, max(extrapolated.values()) <= PEAK_TARGET_BYTES)


def check_sizes(sizes: Sequence[int]) -> tuple[int, int]:
    if len(sizes) != 2 or not 0 < sizes[0] < sizes[1]:
        raise ValueError(f"the memory benchmark needs two increasing calibration sizes, e.g. 64,256; got {list(sizes)}")
    return sizes[0], sizes[1]


def run_memory_bench(spec: RunSpec, config: SearchConfig, sizes: Sequence[int],
                     block_steps: int | None = None) -> MemoryResult:
    """Measure both sizes, each in a fresh process, and summarise them."""
    if block_steps is not None and block_steps < 1:
        raise ValueError(f"--block-steps must be at least 1, got {block_steps}")
    small, large = (_in_fresh_process(replace(spec, calib_size=n), config, block_steps) for n in check_sizes(sizes))
    device = resolve_device(spec.device)
    return summarize(spec, str(device), PeakMeter(device).measure, small, large)


def _verdict(met: bool) -> str:
    return "met" if met else "MISSED"


def format_table(result: MemoryResult) -> str:
    """The human report: one row per size, then growth and extrapolation beside their targets."""
    mb, gb = 1 << 20, 1 << 30
    small, large = result.sizes
    growth, extrapolated = result.growth_per_image, result.extrapolated
    lines = [f"{result.model} on {result.device} ({result.measure}), {result.quantizer} {result.bits}, "
             f"batch {result.batch_size}",
             f"{'images':>16}  {'calibration':>12}  {'search pass':>12}"]
    lines += [f"{s.calib_size:>16}  {s.calibration / gb:>9.2f} GB  {s.search_pass / gb:>9.2f} GB"
              for s in (small, large)]
    lines.append(f"{'growth / image':>16}  {growth['calibration'] / mb:>9.2f} MB  {growth['search_pass'] / mb:>9.2f} MB"
                 f"   target <= {result.growth_target / mb:.2f} MB (3 x {large.block_input_bytes:,} B block input): "
                 f"{_verdict(result.meets_growth_target)}")
    lines.append(f"{f'at {EXTRAPOLATE_TO:,} images':>16}  {extrapolated['calibration'] / gb:>9.2f} GB  "
                 f"{extrapolated['search_pass'] / gb:>9.2f} GB   target <= {result.peak_target / gb:.0f} GB on the "
                 f"accelerator: {_verdict(result.meets_peak_target)}")
    return "\n".join(lines)
