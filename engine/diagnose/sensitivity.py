"""One-at-a-time sensitivity: every point alone quantized (the rest in FP), and every point alone in
FP (the rest quantized).

The first says how much damage a point does by itself (it ranks the points); the second how much
of the quantized model's loss goes away if that one point is spared, with every interaction in place
(after a search the other scales compensate for a point's error, so sparing it can even hurt). Points are visited in forward order, so the input of block ``i`` is computed once
(in the sweep's base state) and each point of block ``i`` reruns only blocks ``i..`` and the head.
"""
from __future__ import annotations

from collections import defaultdict
from contextlib import contextmanager, nullcontext
from typing import Iterator, Sequence

from ..quant import QuantizedModel
from ..quant.quantizer import FakeQuantizer
from .points import Point
from .probe import Probe, Score

ISOLATED = "only"        # only the point quantized
LEFT_OUT = "without"     # every point but this one quantized
MODES = (ISOLATED, LEFT_OUT)


@contextmanager
def _switched(quantizer: FakeQuantizer, enabled: bool) -> Iterator[None]:
    previous = quantizer.enabled
    quantizer.enabled = enabled
    try:
        yield
    finally:
        quantizer.enabled = previous


def sweep(qmodel: QuantizedModel, probe: Probe, points: Sequence[Point], mode: str) -> Iterator[tuple[int, Score]]:
    """``(point index, score)`` for every point, in forward order, with only that point quantized
    (``mode="only"``) or only it left in FP (``mode="without"``). The model is in the sweep's state
    while the generator is suspended, and restored when it finishes or is closed."""
    if mode not in MODES:
        raise ValueError(f"sensitivity mode {mode!r}: choose one of {', '.join(MODES)}")
    isolated = mode == ISOLATED
    quantizers = qmodel.quantizers()
    n_blocks = len(probe.segments.blocks)
    by_block: dict[int, list[int]] = defaultdict(list)
    for index, point in enumerate(points):
        by_block[point.block].append(index)
    with qmodel.full_precision() if isolated else nullcontext():
        for index in by_block[-1]:
            with _switched(quantizers[points[index].key], isolated):
                score = probe.score_from_images()
            yield index, score
        entering = probe.entering_first_block()
        for block in range(n_blocks + 1):
            for index in by_block[block]:
                with _switched(quantizers[points[index].key], isolated):
                    score = probe.score_from(entering, block)
                yield index, score
            if block < n_blocks and any(by_block[later] for later in range(block + 1, n_blocks + 1)):
                entering = probe.advance(entering, block)
