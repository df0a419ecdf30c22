"""Candidate evaluation: the fitness of block-scale vectors over the calibration batches.

``NaiveEvaluator`` is the release's way: write the candidate into the model and run the whole
network on every calibration batch. ``CachedEvaluator`` is ours and gives the same losses:

* the input of the block under search is cached (blocks are visited last to first, so the blocks
  before it do not change during a pass). Only that one block's input is held: a block step
  recomputes it from the stem (at most one forward, small next to the step's candidate
  evaluations), because all of them at once would take gigabytes for ViT-B at 1,000 images
  (docs/performance.md, "The real workload");
* a candidate reruns only its block and the ones after it, plus the head;
* several candidates run in one batched call: ``torch.vmap`` over the block's scale buffers
  (``torch.func.functional_call``), then the later blocks see candidates stacked along the batch;
* per-batch losses stay on the device, with one host copy per call (no sync per candidate);
* its forwards may be compiled (``compiled.py``), with losses bit-identical to eager.

It also gives the ``guided`` search the gradient of the fitness with respect to a block's scales
(``log_gradient``), from the same cache.

The model's own buffers are never touched during evaluation, so a consumer may stop the search
between any two evaluations and the model still holds the last written-back scales.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from ..quant import QuantizedModel
from .config import SearchConfig
from .losses import LossFn, get_loss
from .segments import Segments
from .space import BlockSpace

# Upper bound on (stacked images) x (tokens x width) per batched call. On a GPU large calls
# amortise launches; on a CPU, calls whose activations stay in cache are faster than whole-batch
# calls (docs/performance.md, "Evaluation speed"), so the budget is much smaller there.
STACK_ELEMENTS = {"cuda": 1 << 26, "cpu": 1 << 20}


@dataclass(frozen=True)
class Fitness:
    """What a candidate is compared against: one FP output per calibration batch."""
    loss_fn: LossFn
    temperature: float
    pre_logits: bool
    targets: tuple[torch.Tensor, ...]

    def batch_loss(self, outputs: torch.Tensor, batch: int) -> torch.Tensor:
        """The loss of one calibration batch, a 0-d tensor left on the device (no sync)."""
        return self.loss_fn(outputs, self.targets[batch], self.temperature)


def mean_over_batches(batch_losses: torch.Tensor) -> np.ndarray:
    """One host copy of the ``(candidates, batches)`` losses, then per candidate the float64 mean
    over its batches: the same arithmetic as ``np.mean`` over the per-batch Python floats."""
    host = batch_losses.cpu().numpy().astype(np.float64)
    return np.array([np.mean(row) for row in host])


@torch.no_grad()
def reference_outputs(qmodel: QuantizedModel, segments: Segments, calib: Sequence[torch.Tensor],
                      pre_logits: bool) -> tuple[torch.Tensor, ...]:
    """FP outputs of every calibration batch, computed once per run (same forward, quantizers off)."""
    with qmodel.full_precision():
        return tuple(segments.forward(images, pre_logits) for images in calib)


def search_fitness(qmodel: QuantizedModel, segments: Segments, calib: Sequence[torch.Tensor],
                   config: SearchConfig) -> Fitness:
    """The fitness of a search with ``config``: its loss and temperature, on the features it compares."""
    pre_logits = config.features == "prelogits"
    return Fitness(get_loss(config.loss), config.temperature, pre_logits,
                   reference_outputs(qmodel, segments, calib, pre_logits))


class NaiveEvaluator:
    """Full forward per candidate, like the release (the bench's baseline and the tests' oracle)."""

    def __init__(self, qmodel: QuantizedModel, segments: Segments, calib: Sequence[torch.Tensor],
                 fitness: Fitness) -> None:
        self.qmodel, self.segments, self.calib, self.fitness = qmodel, segments, list(calib), fitness

    @torch.no_grad()
    def evaluate(self, space: BlockSpace, vectors: np.ndarray) -> np.ndarray:
        original = space.read(self.qmodel)
        rows = []
        try:
            for vector in vectors:
                space.write(self.qmodel, vector)
                outputs = (self.segments.forward(images, self.fitness.pre_logits) for images in self.calib)
                rows.append(torch.stack([self.fitness.batch_loss(out, j) for j, out in enumerate(outputs)]))
        finally:
            space.write(self.qmodel, original)
        return mean_over_batches(torch.stack(rows))


def candidate_outputs(block: nn.Module, buffers: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """``block``'s output for every candidate on the same input: vmap over the candidates' stacked
    buffers (``(K, *shape)`` each), giving ``(K, *x.shape)``."""
    return torch.vmap(lambda own, rows: functional_call(block, own, (rows,)), in_dims=(0, None))(buffers, x)


@dataclass(frozen=True)
class Forwards:
    """What candidate evaluation runs: ``segments`` for the blocks before and after the searched one,
    ``candidates`` (``candidate_outputs`` or its compiled twin) for the searched block."""
    segments: Segments
    candidates: Callable[[nn.Module, dict[str, torch.Tensor], torch.Tensor], torch.Tensor] = candidate_outputs


class CachedEvaluator:
    """Block-input cache + batched candidates. The cache holds the input of one block, the last one
    evaluated; call ``begin_pass`` whenever blocks before the one under search may have changed
    (at the start of each pass, after a resume) so that it is rebuilt from the model.

    ``forwards`` runs the blocks (eager by default; ``compiled.py`` builds the compiled ones)."""

    def __init__(self, qmodel: QuantizedModel, segments: Segments, calib: Sequence[torch.Tensor],
                 fitness: Fitness, stack_elements: int | None = None, forwards: Forwards | None = None) -> None:
        self.qmodel, self.segments, self.fitness = qmodel, segments, fitness
        self.forwards = forwards or Forwards(segments)
        self.calib = list(calib)
        self.batch_sizes = [len(images) for images in self.calib]
        device = self.calib[0].device.type
        self.stack_elements = stack_elements or STACK_ELEMENTS.get(device, STACK_ELEMENTS["cuda"])
        self._cached_block: int | None = None
        self._cache: torch.Tensor | None = None

    def begin_pass(self) -> None:
        """Forget the cached block input: the next evaluation recomputes it from the model."""
        self._cached_block = self._cache = None

    def block_input(self, block_index: int) -> torch.Tensor:
        """The input of ``blocks[block_index]`` for every calibration image, built on first use.
        The previous block's cache is released before the new one is built (never two at once)."""
        if self._cached_block != block_index:
            self.begin_pass()
            self._cache = self._collect_block_input(block_index)
            self._cached_block = block_index
        return self._cache

    @torch.no_grad()
    def _collect_block_input(self, block_index: int) -> torch.Tensor:
        """Batch by batch (the same per-batch computation as a full forward) into one tensor
        allocated once: no per-batch list concatenated into a second copy."""
        cache, offset = None, 0
        for images in self.calib:
            x = self.forwards.segments.block_input(images, block_index)
            if cache is None:
                cache = x.new_empty((sum(self.batch_sizes), *x.shape[1:]))
            cache[offset:offset + len(x)] = x
            offset += len(x)
        return cache

    def log_gradient(self, block_index: int, space: BlockSpace, vector: np.ndarray,
                     images: int | None = None) -> np.ndarray:
        """d fitness / d log(scale) for every element of the block's ``vector``: the straight-through
        gradient of the schemes' rounding (LSQ's gradient of a scale), for the ``guided`` search;
        ``images``: on the first N calibration images only (None: all).

        One calibration batch at a time from the cached block input, so memory holds one batch's
        activations through the blocks after the searched one; only the scales' gradient is
        computed, not the weights'. Eager, whatever ``forwards`` compiles."""
        cache = self.block_input(block_index)
        block = self.segments.blocks[block_index]
        scales = torch.from_numpy(np.ascontiguousarray(vector, np.float32)).to(cache.device)
        log_factor = torch.zeros_like(scales, requires_grad=True)
        total = torch.zeros_like(scales)
        offsets = np.concatenate([[0], np.cumsum(self.batch_sizes)]).tolist()
        limit = offsets[-1] if images is None else min(images, offsets[-1])
        with torch.enable_grad():
            for j in range(len(self.batch_sizes)):
                rows = min(offsets[j + 1], limit) - offsets[j]
                if rows <= 0:
                    break
                buffers = {name: value[0] for name, value in
                           space.stacked_buffers((scales * log_factor.exp())[None]).items()}
                out = functional_call(block, buffers, (cache[offsets[j]:offsets[j] + rows],))
                out = self.segments.run_after(out, block_index, self.fitness.pre_logits)
                loss = self.fitness.loss_fn(out, self.fitness.targets[j][:rows], self.fitness.temperature)
                total += torch.autograd.grad(loss / len(self.batch_sizes), log_factor)[0]
        return total.cpu().numpy().astype(np.float64)

    def evaluate(self, block_index: int, space: BlockSpace, vectors: np.ndarray) -> np.ndarray:
        """Each candidate's loss: the mean over the calibration batches."""
        return mean_over_batches(self.batch_losses(block_index, space, vectors))

    @torch.no_grad()
    def batch_losses(self, block_index: int, space: BlockSpace, vectors: np.ndarray) -> torch.Tensor:
        """``(candidates, batches)``: every candidate's loss on every calibration batch."""
        cache = self.block_input(block_index)
        block = self.segments.blocks[block_index]
        stacked = space.stacked_buffers(torch.from_numpy(np.ascontiguousarray(vectors, np.float32)).to(cache.device))

        def outputs(buffers: dict[str, torch.Tensor], rows: torch.Tensor) -> torch.Tensor:
            n = next(iter(buffers.values())).shape[0]
            out = self.forwards.candidates(block, buffers, rows).flatten(0, 1)   # candidates stacked on the batch
            return self.forwards.segments.run_after(out, block_index, self.fitness.pre_logits).unflatten(0, (n, -1))

        max_rows = max(1, self.stack_elements // cache[0].numel())
        per_call = min(len(vectors), max(1, max_rows // max(self.batch_sizes)))
        rows_per_call = max(1, max_rows // per_call)
        offsets = np.concatenate([[0], np.cumsum(self.batch_sizes)]).tolist()
        rows = []
        for c0 in range(0, len(vectors), per_call):
            buffers = {name: value[c0:c0 + per_call] for name, value in stacked.items()}
            out = torch.cat([outputs(buffers, cache[r:r + rows_per_call])
                             for r in range(0, len(cache), rows_per_call)], dim=1)   # (candidates, images, ...)
            rows.extend(torch.stack([self.fitness.batch_loss(out[c, offsets[j]:offsets[j + 1]], j)
                                     for j in range(len(self.batch_sizes))]) for c in range(out.shape[0]))
        return torch.stack(rows)
