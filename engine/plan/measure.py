"""What the planner measures: each point's cost at every allowed width (its element count: ``elements.py``).

Costs: the diagnosis's one-at-a-time sweep (``diagnose/sensitivity.py``, "only this point quantized") at every
width: one point at a time quantized with the parameters its quantizer calibrates at that width (a uniform
calibration at that width, like the what-if's ``raised`` scales), everything else in FP, scored by the fitness
loss on the calibration images and the held-out top-1. Points are visited in forward order, so the FP input of
block ``i`` is computed once and each measurement reruns only blocks ``i..``. The planner adds these losses up
(each point's error taken as independent noise, the assumption of HAWQ's and AIMET's per-layer sensitivities):
measured around a base of every point at a low width instead, the first attempt, every point's delta saw the
whole model's collapse and their sum predicted nonsense (a held-out top-1 above 200 %).
"""
from __future__ import annotations

from collections import defaultdict
from typing import Generator, Iterator, Mapping, Sequence

import torch

from ..diagnose.points import Point
from ..diagnose.probe import Probe, Score
from ..quant import QuantizedModel, ScaleSet
from ..search.evaluator import mean_over_batches


class LossProbe(Probe):
    """A Probe of the calibration images alone: the fitness loss, no held-out top-1 (NaN). The costs need
    only the loss, so the per-point sweep skips the held-out images."""

    def __init__(self, probe: Probe) -> None:
        self.segments, self.fitness = probe.segments, probe.fitness
        self.n_calib = probe.n_calib
        self.images = probe.images[:probe.n_calib]
        self.labels, self.n_heldout = [], 0

    def score(self, outputs: Sequence[torch.Tensor]) -> Score:
        losses = torch.stack([self.fitness.batch_loss(out, j) for j, out in enumerate(outputs)])
        return Score(float(mean_over_batches(losses[None])[0]), float("nan"))


def compose(base: ScaleSet, by_width: Mapping[int, ScaleSet], bits: Mapping[str, int]) -> ScaleSet:
    """``base`` with each point of ``bits`` given the parameters calibrated at its width."""
    out = ScaleSet((name, dict(roles)) for name, roles in base.items())
    for name, width in bits.items():
        owner, _, role = name.rpartition("/")
        out[owner][role] = by_width[width].get_point(owner, role)
    return out


def width_sweep(qmodel: QuantizedModel, probe: Probe, points: Sequence[Point], by_width: Mapping[int, ScaleSet],
                widths: Mapping[int, Sequence[int]]) -> Generator[tuple[int, int, Score], None, None]:
    """``(point index, width, score)`` for every point and every width of ``widths[index]``, with only that
    point quantized, at the parameters its quantizer calibrates at that width (``by_width``), every other
    point in FP; in forward order. The input of each block is the FP model's, computed once; each width's
    scales are loaded once per block. The model is restored to all-quantized ``by_width`` scales of its
    first width when it finishes (callers load what they measure next)."""
    n_blocks = len(probe.segments.blocks)
    quantizers = qmodel.quantizers()
    by_block: dict[int, list[int]] = defaultdict(list)
    for index in widths:
        by_block[points[index].block].append(index)

    def measured(indices: list[int], block: int, entering) -> Iterator[tuple[int, int, Score]]:
        for width in sorted({w for i in indices for w in widths[i]}):
            qmodel.load_scale_set(by_width[width])   # only the point under test is enabled: the rest stay FP
            for index in indices:
                if width not in widths[index]:
                    continue
                quantizer = quantizers[points[index].key]
                quantizer.enabled = True
                try:
                    score = probe.score_from_images() if entering is None else probe.score_from(entering, block)
                finally:
                    quantizer.enabled = False
                yield index, width, score

    with qmodel.full_precision():
        yield from measured(by_block[-1], -1, None)
        entering = probe.entering_first_block()
        for block in range(n_blocks + 1):
            yield from measured(by_block[block], block, entering)
            if block < n_blocks and any(by_block[later] for later in range(block + 1, n_blocks + 1)):
                entering = probe.advance(entering, block)
