"""What-if bit-widths: held-out top-1 with the K most sensitive points raised to more bits, against K
points drawn at random, so the ranking is checked against reality rather than claimed.

A raised point takes the parameters the same quantizer calibrates at the higher bit-width on the
same calibration images (``raised``: a ScaleSet of the whole model at those bits); every other point
keeps the diagnosed scales. A hint for mixed precision, measured on held-out.
"""
from __future__ import annotations

from typing import Callable, Generator, Sequence

import numpy as np

from ..quant import QuantizedModel, ScaleSet
from .points import Point
from .result import WhatIf

DEFAULT_K = (1, 2, 4, 8, 16)
DEFAULT_DRAWS = 5


def raisable(scales: ScaleSet, points: Sequence[Point], to_bits: int) -> list[int]:
    """Indices of the points below ``to_bits`` (raising the others changes nothing)."""
    return [i for i, p in enumerate(points) if scales.get_point(p.owner, p.role).bits < to_bits]


def with_raised(scales: ScaleSet, raised: ScaleSet, points: Sequence[Point], chosen: Sequence[int]) -> ScaleSet:
    out = scales
    for i in chosen:
        out = out.with_point(points[i].owner, points[i].role, raised.get_point(points[i].owner, points[i].role))
    return out


def mean_activation_bits(scales: ScaleSet, points: Sequence[Point]) -> float:
    """Mean bit-width over the activation points (weights excluded): the x-axis of a what-if curve."""
    bits = [scales.get_point(p.owner, p.role).bits for p in points if not p.is_weight]
    return float(np.mean(bits)) if bits else float("nan")


def check_k(ks: Sequence[int], n_raisable: int, to_bits: int) -> None:
    if ks and max(ks) > n_raisable:
        raise ValueError(f"cannot raise {max(ks)} points to {to_bits} bits: only {n_raisable} are below {to_bits} bits")


def what_if(qmodel: QuantizedModel, scales: ScaleSet, raised: ScaleSet, points: Sequence[Point],
            ranking: Sequence[int], ks: Sequence[int], draws: int, rng: np.random.Generator,
            heldout_top1: Callable[[], float], to_bits: int, ranked_by: str, top1_none: float
            ) -> Generator[str, None, WhatIf]:
    """Yields a label after each measurement; returns the WhatIf. ``ks``: distinct point counts,
    ascending; ``ranking``: point indices, most sensitive first (the ``ranked_by`` table's), those
    already at ``to_bits`` or more skipped; ``top1_none``: that table's held-out top-1 with nothing
    raised. ``scales`` is loaded again at the end."""
    candidates = raisable(scales, points, to_bits)
    check_k(ks, len(candidates), to_bits)
    allowed = set(candidates)
    ranked = np.array([i for i in ranking if i in allowed], dtype=np.int64)
    top1_top, top1_random = np.zeros(len(ks)), np.zeros((len(ks), draws))
    bits_top, bits_random = np.zeros(len(ks)), np.zeros((len(ks), draws))

    def measure(chosen: Sequence[int]) -> tuple[float, float]:
        trial = with_raised(scales, raised, points, chosen)
        qmodel.load_scale_set(trial)
        return heldout_top1(), mean_activation_bits(trial, points)

    try:
        for row, k in enumerate(ks):
            top1_top[row], bits_top[row] = measure(ranked[:k])
            yield f"the {k} most sensitive points at {to_bits} bits: {top1_top[row]:.2f}%"
            for draw in range(draws):
                chosen = rng.choice(np.asarray(candidates), size=k, replace=False)
                top1_random[row, draw], bits_random[row, draw] = measure(chosen)
                yield f"{k} random points at {to_bits} bits (draw {draw + 1}/{draws}): {top1_random[row, draw]:.2f}%"
    finally:
        qmodel.load_scale_set(scales)
    return WhatIf(to_bits, ranked_by, np.array(ks), top1_top, top1_random, bits_top, bits_random.mean(axis=1),
                  ranked, top1_none)
