"""Benchmark: the same candidate evaluations run the release's way and ours, in one process.

Naive = write the candidate into the model and run the whole network on every calibration batch
(the release). Optimised = the search's CachedEvaluator (the searched block's input cached once
per block step, only that block and the later ones rerun, ``children`` candidates per batched call).
Both see identical candidates (every block, last to first, ``candidates`` each, drawn with the
config's mutation) and their losses are compared. Ratios from one run, not absolute times alone.
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Sequence

import numpy as np
import torch

from ..data import first_images
from ..quant import QuantizedModel
from ..quant.fused import fused_uniform
from ..search.compiled import compiled_forwards, evaluation_forwards
from ..search.config import SearchConfig
from ..search.evaluator import CachedEvaluator, Forwards, NaiveEvaluator, search_fitness
from ..search.segments import model_segments
from ..search.space import block_space, mutate
from .forward import segment_flops

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BenchResult:
    """Eager cached (``opt_*``), compiled cached (``compiled_*``: compiled blocks)
    and fused cached (``fused_*``: eager blocks, fused fake quantization) paths, each over the naive
    path; a path not measured leaves its fields None. ``gflops`` per path counts the matmul work each
    really did (the cached paths skip the blocks before the searched one)."""
    naive_evals_per_s: float
    opt_evals_per_s: float
    speedup: float
    cpu_speedup: float          # the same ratio in process CPU time
    max_rel_loss_diff: float
    gflops: dict[str, float]
    model: str
    device: str
    evaluations: int
    n_calib: int
    blocks: int
    work_ratio: float           # naive over cached matmul FLOPs: the cached paths' speedup if every FLOP cost the same
    compiled: bool | None = None                # False: compilation failed and that path ran eager
    compile_s: float | None = None              # its first (compiling) pass minus its timed pass
    compiled_evals_per_s: float | None = None
    compiled_speedup: float | None = None
    compiled_cpu_speedup: float | None = None
    compiled_max_rel_loss_diff: float | None = None
    compiled_equals_eager: bool | None = None   # every compiled loss bit-identical to the eager cached one
    fused: bool | None = None                   # False: the fused kernel failed to build and ran eager
    fused_compile_s: float | None = None
    fused_evals_per_s: float | None = None
    fused_speedup: float | None = None
    fused_cpu_speedup: float | None = None
    fused_max_rel_loss_diff: float | None = None
    fused_equals_eager: bool | None = None
    forward: dict | None = None                 # ForwardBench.to_dict(), when measured

    def to_dict(self) -> dict:
        return asdict(self)


def _candidates(qmodel: QuantizedModel, config: SearchConfig, n: int, seed: int):
    """Per block (last to first): its space and ``n`` mutated copies of its current vector."""
    rng = np.random.default_rng(seed)
    w_range, a_range = config.resolved_ranges(qmodel.config.w_bits, qmodel.config.a_bits)
    out = []
    for index, (name, _) in reversed(list(enumerate(qmodel.blocks()))):
        space = block_space(qmodel, name, config.scope)
        start, ranges = space.read(qmodel), space.ranges(w_range, a_range)
        out.append((index, space, np.stack([mutate(start, ranges, config.mutation, rng) for _ in range(n)])))
    return out


def _timed(device: torch.device, fn, *args) -> tuple[object, float, float]:
    """(result, wall seconds, process CPU seconds), waiting for queued GPU work on both ends.
    CPU time is the robust figure on a shared machine: other processes' load does not count."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn(*args)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return result, time.perf_counter() - wall, time.process_time() - cpu


@dataclass
class _PathClock:
    """One evaluation path's losses and accumulated wall and CPU seconds."""
    losses: list = field(default_factory=list)
    wall: float = 0.0
    cpu: float = 0.0

    def run(self, device: torch.device, fn, *args) -> None:
        losses, wall, cpu = _timed(device, fn, *args)
        self.losses.append(losses)
        self.wall, self.cpu = self.wall + wall, self.cpu + cpu

    def rel_diff(self, reference: np.ndarray) -> float:
        losses = np.concatenate(self.losses)
        return float((np.abs(losses - reference) / np.maximum(np.abs(reference), np.finfo(np.float64).tiny)).max())


def _cached_pass(evaluator: CachedEvaluator, work, children: int, clock: _PathClock, device: torch.device) -> None:
    for index, space, vectors in work:
        for i in range(0, len(vectors), children):
            clock.run(device, evaluator.evaluate, index, space, vectors[i:i + children])


@dataclass(frozen=True)
class _Path:
    """A cached evaluation path and the fake quantization it runs (fused kernels or eager)."""
    evaluator: CachedEvaluator
    fused: bool


def _path_figures(prefix: str, clock: _PathClock, warmup: _PathClock, base: _PathClock, eager: _PathClock,
                  n_evals: int) -> dict:
    """A compiling path's figures over the naive one, and whether its losses equal eager's bit for bit."""
    reference = np.concatenate(base.losses)
    return {f"{prefix}_evals_per_s": n_evals / clock.wall, f"{prefix}_speedup": base.wall / clock.wall,
            f"{prefix}_cpu_speedup": base.cpu / clock.cpu, f"{prefix}_max_rel_loss_diff": clock.rel_diff(reference),
            f"{prefix}_equals_eager": bool(np.array_equal(np.concatenate(clock.losses), np.concatenate(eager.losses))),
            "compile_s" if prefix == "compiled" else f"{prefix}_compile_s": max(0.0, warmup.wall - clock.wall)}


def run_bench(qmodel: QuantizedModel, calib: Sequence[torch.Tensor], config: SearchConfig, model_name: str,
              device: torch.device, candidates: int = 8, seed: int = 0, compile_mode: str = "off") -> BenchResult:
    """Time the paths over the same candidates; a cached path's time includes building its block-input
    cache at every block. The naive and eager cached paths run eager; with ``compile_mode`` ``on``,
    compiled blocks and fused fake quantization each get a path (on any device), with ``auto``
    whichever the search would use (``compiled.py``). A compiling path runs once untimed first: its
    compilation, reported as ``compile_s`` / ``fused_compile_s``. All use the fitness's images
    (``config.search_images``)."""
    calib = first_images(calib, config.search_images)
    segments = model_segments(qmodel.model)
    fitness = search_fitness(qmodel, segments, calib, config)
    work = _candidates(qmodel, config, candidates, seed)
    n_evals = sum(len(vectors) for _, _, vectors in work)

    naive = NaiveEvaluator(qmodel, segments, calib, fitness)
    forwards = evaluation_forwards(qmodel, segments, compile_mode, calib[0])   # what the search would run
    both = compile_mode == "on"
    fuses = both or any(q.fused for q in qmodel.quantizers().values())
    if both and forwards == Forwards(segments):
        forwards = compiled_forwards(segments)
    paths = {"cached_eager": _Path(CachedEvaluator(qmodel, segments, calib, fitness), fused=False)}
    if forwards != Forwards(segments):
        paths["cached_compiled"] = _Path(CachedEvaluator(qmodel, segments, calib, fitness, forwards=forwards),
                                         fused=False)
    if fuses:
        paths["cached_fused"] = _Path(CachedEvaluator(qmodel, segments, calib, fitness), fused=True)
    warmups = {name: _PathClock() for name in paths if name != "cached_eager"}
    for name, clock in warmups.items():
        qmodel.fuse_fake_quant(paths[name].fused)
        _cached_pass(paths[name].evaluator, work, config.children, clock, device)
        paths[name].evaluator.begin_pass()
    clocks = {name: _PathClock() for name in ("naive", *paths)}
    for index, space, vectors in work:   # interleaved per block, so load changes hit every path alike
        qmodel.fuse_fake_quant(False)
        clocks["naive"].run(device, naive.evaluate, space, vectors)
        for name, path in paths.items():
            qmodel.fuse_fake_quant(path.fused)
            _cached_pass(path.evaluator, [(index, space, vectors)], config.children, clocks[name], device)
    qmodel.fuse_fake_quant(False)
    log.info("%d evaluations: %s", n_evals, ", ".join(f"{name} {c.wall:.1f} s (CPU {c.cpu:.1f} s)"
                                                      for name, c in clocks.items()))

    images = sum(len(b) for b in calib)
    flops = segment_flops(segments, calib[0], fitness.pre_logits)
    cached_flops = images * sum(flops.before(index) + len(vectors) * flops.from_block(index)
                                for index, _, vectors in work)
    reference = np.concatenate(clocks["naive"].losses)
    base, eager = clocks["naive"], clocks["cached_eager"]
    result = BenchResult(
        naive_evals_per_s=n_evals / base.wall, opt_evals_per_s=n_evals / eager.wall, speedup=base.wall / eager.wall,
        cpu_speedup=base.cpu / eager.cpu, max_rel_loss_diff=eager.rel_diff(reference),
        gflops={name: (images * n_evals * flops.total if name == "naive" else cached_flops) / clock.wall / 1e9
                for name, clock in clocks.items()},
        model=model_name, device=str(device), evaluations=n_evals, n_calib=images, blocks=len(work),
        work_ratio=images * n_evals * flops.total / cached_flops)
    if "cached_compiled" in paths:
        result = replace(result, compiled=not forwards.candidates.fallback.active,
                         **_path_figures("compiled", clocks["cached_compiled"], warmups["cached_compiled"],
                                         base, eager, n_evals))
    if fuses:
        result = replace(result, fused=fused_uniform.failure is None,
                         **_path_figures("fused", clocks["cached_fused"], warmups["cached_fused"], base, eager,
                                         n_evals))
    return result
