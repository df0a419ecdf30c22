"""Signal-to-quantization-noise ratio of every quantization point, in dB.

Measured in the fully quantized model, so each point sees the inputs it sees when deployed (an
activation downstream of other quantized points carries their noise in its signal). Sums run in
float64 over all calibration images; a weight is counted once per batch, which leaves its ratio as is.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

from ..quant import QuantizedModel
from ..quant.registry import run_batches
from .points import Point


def sqnr_db(signal_power: float, noise_power: float) -> float:
    """10·log10(Σx² / Σ(x − Q(x))²); +inf when quantizing changes nothing (an identity quantizer)."""
    if noise_power == 0.0:
        return math.inf
    if signal_power == 0.0:
        return -math.inf
    return 10.0 * math.log10(signal_power / noise_power)


@torch.no_grad()
def point_sqnr(qmodel: QuantizedModel, points: Sequence[Point], batches: Sequence[torch.Tensor]) -> np.ndarray:
    """SQNR (dB) of each point's fake-quant output against its input over ``batches``."""
    quantizers = qmodel.quantizers()
    sums = np.zeros((len(points), 2), dtype=np.float64)   # per point: signal, noise

    def hook_for(index: int):
        def hook(module, inputs, output) -> None:
            x = inputs[0]
            sums[index, 0] += float(x.float().pow(2).sum(dtype=torch.float64))
            sums[index, 1] += float((x - output).float().pow_(2).sum(dtype=torch.float64))
        return hook

    handles = [quantizers[point.key].register_forward_hook(hook_for(i)) for i, point in enumerate(points)]
    try:
        run_batches(qmodel, batches)
    finally:
        for handle in handles:
            handle.remove()
    return np.array([sqnr_db(signal, noise) for signal, noise in sums])
