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
from dataclasses import asdict, dataclass, replace
from typing import Sequence

import numpy as np
import torch

from .allocator import keep_freed_memory
from .data import SYNTHETIC, first_images
from .models import DEMO_MODEL
from .pipeline import Prepared, RunSpec, prepare
from .quant import QuantizedModel
from .search.config import SearchConfig
from .search.evaluator import CachedEvaluator, NaiveEvaluator, search_fitness
from .search.segments import model_segments
from .search.space import block_space, mutate

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BenchResult:
    naive_evals_per_s: float
    opt_evals_per_s: float
    speedup: float
    cpu_speedup: float          # the same ratio in process CPU time
    max_rel_loss_diff: float
    model: str
    device: str
    evaluations: int
    n_calib: int
    blocks: int

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


def run_bench(qmodel: QuantizedModel, calib: Sequence[torch.Tensor], config: SearchConfig, model_name: str,
              device: torch.device, candidates: int = 8, seed: int = 0) -> BenchResult:
    """Time both paths over the same candidates; the optimised path's time includes building its
    block-input cache at every block. Both use the fitness's images (``config.search_images``)."""
    calib = first_images(calib, config.search_images)
    keep_freed_memory()   # as the search does before its evaluations (engine/allocator.py)
    segments = model_segments(qmodel.model)
    fitness = search_fitness(qmodel, segments, calib, config)
    work = _candidates(qmodel, config, candidates, seed)
    n_evals = sum(len(vectors) for _, _, vectors in work)

    naive = NaiveEvaluator(qmodel, segments, calib, fitness)
    cached = CachedEvaluator(qmodel, segments, calib, fitness)
    naive_s = naive_cpu = opt_s = opt_cpu = 0.0
    naive_losses, opt_losses = [], []
    for index, space, vectors in work:   # interleaved per block, so load changes hit both paths alike
        losses, wall, cpu = _timed(device, naive.evaluate, space, vectors)
        naive_losses.append(losses)
        naive_s, naive_cpu = naive_s + wall, naive_cpu + cpu
        for i in range(0, len(vectors), config.children):
            losses, wall, cpu = _timed(device, cached.evaluate, index, space, vectors[i:i + config.children])
            opt_losses.append(losses)
            opt_s, opt_cpu = opt_s + wall, opt_cpu + cpu
    naive_losses, opt_losses = np.concatenate(naive_losses), np.concatenate(opt_losses)
    log.info("%d evaluations: naive %.1f s (CPU %.1f s), optimised %.1f s (CPU %.1f s)", n_evals, naive_s,
             naive_cpu, opt_s, opt_cpu)

    rel = np.abs(opt_losses - naive_losses) / np.maximum(np.abs(naive_losses), np.finfo(np.float64).tiny)
    return BenchResult(naive_evals_per_s=n_evals / naive_s, opt_evals_per_s=n_evals / opt_s, speedup=naive_s / opt_s,
                       cpu_speedup=naive_cpu / opt_cpu, max_rel_loss_diff=float(rel.max()), model=model_name,
                       device=str(device), evaluations=n_evals, n_calib=sum(len(b) for b in calib), blocks=len(work))


def bench_inputs(spec: RunSpec) -> Prepared:
    """The calibrated model and calibration batches through ``prepare``: the demo's digits or
    ``--data`` when given, else seeded random images at the model's input size (speed and memory
    do not depend on the pixels)."""
    data = spec.data if spec.data is not None or spec.model == DEMO_MODEL else SYNTHETIC
    return prepare(replace(spec, data=data))
