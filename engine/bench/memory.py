"""Memory benchmark for the real workload (DESIGN §8): peak memory of calibration and of one search
pass at two calibration sizes, the growth per calibration image, and its extrapolation to 1,000
images, beside the targets.

Each size runs in a fresh process, so one size's high-water mark and allocator caches do not
leak into the other; ``repeats`` measures every size that many times, each in its own process,
because a peak that depends on the allocator's luck shows only from run to run. On CUDA the
figures are ``torch.cuda.max_memory_allocated``; on the CPU the process's peak resident set
(Linux VmHWM, reset between phases through /proc/self/clear_refs).
"""
from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..allocator import keep_freed_memory, return_freed_memory
from ..data import first_images
from ..device import resolve_device
from ..pipeline import RunSpec
from ..quant import QuantizedModel
from ..search.config import SearchConfig
from ..search.evaluator import CachedEvaluator, search_fitness
from ..search.segments import model_segments
from ..search.joint import joint_phase
from ..search.space import block_space, planned_ranges
from .inputs import bench_inputs

EXTRAPOLATE_TO = 1000                 # the default calibration size (DESIGN §4)
GROWTH_TARGET_BLOCK_INPUTS = 3        # growth per image at most the image itself + 3 block inputs of one image
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
    search_pass: int | None           # the fitness reference, then every block's input cache and candidates
    block_input_bytes: int            # the largest block input of one image (tokens x width x 4 B for ViT)
    image_bytes: int                  # one calibration image, held for the whole run


@torch.no_grad()
def search_pass(qmodel: QuantizedModel, calib: Sequence[torch.Tensor], config: SearchConfig,
                block_steps: int | None = None) -> None:
    """The memory of one search pass: the FP reference, the joint phase's first step (when the search
    has one: a forward and backward of one step's images, a part of a batch, through the whole
    model), then per block (last to first; the first ``block_steps`` only, when given) its input
    cache, the guided search's gradient and one batched call of ``config.children`` candidates.
    More cycles and steps repeat the same calls, so the peak does not depend on them; the held-out checks between block steps do not grow
    with the calibration size."""
    images = first_images(calib, config.search_images)
    segments = model_segments(qmodel.model)
    fitness = search_fitness(qmodel, segments, images, config)
    evaluator = CachedEvaluator(qmodel, segments, images, fitness)
    spaces = [block_space(qmodel, name, config.scope) for name, _ in qmodel.blocks()]
    if config.joint:
        ranges = [planned_ranges(space, qmodel.config, config.resolved_ranges) for space in spaces]
        for _ in joint_phase(segments, spaces, [space.read(qmodel) for space in spaces], ranges, images, fitness, 1,
                             config.joint_images):
            pass
    for index, space in list(enumerate(spaces))[::-1][:block_steps]:
        if config.strategy == "guided":
            evaluator.log_gradient(index, space, space.read(qmodel), config.gradient_images)
        evaluator.evaluate(index, space, np.repeat(space.read(qmodel)[None], config.children, axis=0))


@torch.no_grad()
def block_input_bytes(qmodel: QuantizedModel, images: torch.Tensor) -> int:
    """Bytes of the largest block input of one image: the unit of the growth target."""
    inputs = model_segments(qmodel.model).block_inputs(images[:1])
    return max(x[0].numel() * x.element_size() for x in inputs)


def measure_size(spec: RunSpec, config: SearchConfig, block_steps: int | None = None) -> SizePeaks:
    """Both phases' peaks at ``spec.calib_size`` in this process (run it in a fresh one); with
    ``block_steps`` 0, calibration's only."""
    meter = PeakMeter(resolve_device(spec.device))
    meter.reset()
    prepared = bench_inputs(spec)
    calibration = meter.peak()
    search = None
    if block_steps != 0:
        meter.reset()
        search_pass(prepared.qmodel, prepared.calib, config, block_steps)
        search = meter.peak()
    first = prepared.calib[0]
    return SizePeaks(spec.calib_size, calibration, search, block_input_bytes(prepared.qmodel, first),
                     first[0].numel() * first.element_size())


def _fresh_process_entry(spec: RunSpec, config: SearchConfig, block_steps: int | None) -> SizePeaks:
    """The measuring process's entry point: its process-wide settings as the CLI's, then the measure."""
    keep_freed_memory()
    return measure_size(spec, config, block_steps)


def _in_fresh_process(spec: RunSpec, config: SearchConfig, block_steps: int | None) -> SizePeaks:
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_fresh_process_entry, spec, config, block_steps).result()


@dataclass(frozen=True)
class MemoryResult:
    model: str
    device: str
    measure: str
    quantizer: str
    bits: str
    batch_size: int
    sizes: tuple[SizePeaks, ...]              # every run: small, large, small, large, ...
    growth_per_run: tuple[dict[str, float], ...]   # bytes per calibration image, per phase, of each repeat
    growth_per_image: dict[str, float]        # the largest over the repeats, per phase
    extrapolated: dict[str, float]            # bytes at EXTRAPOLATE_TO images, per phase, from the worst run
    growth_target: float
    peak_target: float
    meets_growth_target: bool
    meets_peak_target: bool

    def to_dict(self) -> dict:
        return {**asdict(self), "extrapolated_to": EXTRAPOLATE_TO}


def summarize(spec: RunSpec, device: str, measure: str, runs: Sequence[tuple[SizePeaks, SizePeaks]]) -> MemoryResult:
    """Per repeat, linear growth between its two sizes; the worst repeat's, extrapolated from its
    larger size, against the targets (every repeat must meet them)."""
    phases = [phase for phase in PHASES if getattr(runs[0][0], phase) is not None]
    per_run = tuple({phase: (getattr(large, phase) - getattr(small, phase)) / (large.calib_size - small.calib_size)
                     for phase in phases} for small, large in runs)
    extrapolated = {phase: max(getattr(large, phase) + growth[phase] * (EXTRAPOLATE_TO - large.calib_size)
                               for (_, large), growth in zip(runs, per_run)) for phase in phases}
    growth = {phase: max(run[phase] for run in per_run) for phase in phases}
    large = runs[0][1]
    growth_target = float(large.image_bytes + GROWTH_TARGET_BLOCK_INPUTS * large.block_input_bytes)
    return MemoryResult(spec.model, device, measure, spec.quant.quantizer, spec.quant.bits_label, spec.batch_size,
                        tuple(peaks for run in runs for peaks in run), per_run, growth, extrapolated, growth_target,
                        float(PEAK_TARGET_BYTES), max(growth.values()) <= growth_target,
                        max(extrapolated.values()) <= PEAK_TARGET_BYTES)


def check_sizes(sizes: Sequence[int]) -> tuple[int, int]:
    if len(sizes) != 2 or not 0 < sizes[0] < sizes[1]:
        raise ValueError(f"the memory benchmark needs two increasing calibration sizes, e.g. 64,256; got {list(sizes)}")
    return sizes[0], sizes[1]


def run_memory_bench(spec: RunSpec, config: SearchConfig, sizes: Sequence[int],
                     block_steps: int | None = None, repeats: int = 1) -> MemoryResult:
    """Measure both sizes ``repeats`` times, each run in a fresh process, and summarise them."""
    if block_steps is not None and block_steps < 0:
        raise ValueError(f"--block-steps must be at least 0 (0: calibration only), got {block_steps}")
    if repeats < 1:
        raise ValueError(f"--repeats must be at least 1, got {repeats}")
    small, large = check_sizes(sizes)
    runs = [tuple(_in_fresh_process(replace(spec, calib_size=n), config, block_steps) for n in (small, large))
            for _ in range(repeats)]
    device = resolve_device(spec.device)
    return summarize(spec, str(device), PeakMeter(device).measure, runs)


def _verdict(met: bool) -> str:
    return "met" if met else "MISSED"


def _cells(values: dict[str, float | int | None], unit: int, decimals: int) -> str:
    """One column per phase, in MB (unit 2^20) or GB (2^30); "-" for a phase not measured."""
    name = "GB" if unit == 1 << 30 else "MB"
    return "  ".join(f"{'-':>12}" if values.get(phase) is None else f"{values[phase] / unit:>9,.{decimals}f} {name}"
                     for phase in PHASES)


def format_table(result: MemoryResult) -> str:
    """The human report: per repeat its two sizes' peaks and growth per image (MB, so that run-to-run
    differences show), then the worst growth and its extrapolation beside their targets."""
    mb, gb = 1 << 20, 1 << 30
    large = result.sizes[1]
    lines = [f"{result.model} on {result.device} ({result.measure}), {result.quantizer} {result.bits}, "
             f"batch {result.batch_size}, {len(result.growth_per_run)} run(s), each size in a fresh process",
             f"{'run':>3}  {'images':>16}  {'calibration':>12}  {'search pass':>12}"]
    for run, per_image in enumerate(result.growth_per_run):
        for peaks in result.sizes[2 * run:2 * run + 2]:
            lines.append(f"{run + 1:>3}  {peaks.calib_size:>16}  {_cells(asdict(peaks), mb, 0)}")
        lines.append(f"{run + 1:>3}  {'growth / image':>16}  {_cells(per_image, mb, 2)}")
    lines.append(f"{'worst growth / image':>21}  {_cells(result.growth_per_image, mb, 2)}   target <= "
                 f"{result.growth_target / mb:.2f} MB (image {large.image_bytes:,} B + 3 x {large.block_input_bytes:,} B "
                 f"block input), every run: {_verdict(result.meets_growth_target)}")
    lines.append(f"{f'at {EXTRAPOLATE_TO:,} images':>21}  {_cells(result.extrapolated, gb, 2)}   target <= "
                 f"{result.peak_target / gb:.0f} GB on the accelerator: {_verdict(result.meets_peak_target)}")
    return "\n".join(lines)
