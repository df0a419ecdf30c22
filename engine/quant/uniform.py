"""The uniform affine baselines: minmax, percentile, omse (per-channel weights, per-tensor activations)."""
from __future__ import annotations

from typing import Sequence

import torch

from .model import QuantizedModel
from .observers import RangeObserver, affine_from_range, weight_range
from .registry import register_quantizer, run_batches


class UniformAffine:
    """Weights from their own values; activations from statistics over the calibration batches."""

    def __init__(self, method: str) -> None:
        self.method = method

    def calibrate(self, qmodel: QuantizedModel, batches: Sequence[torch.Tensor]) -> None:
        quantizers = qmodel.quantizers()
        modules = dict(qmodel.model.named_modules())
        activations = {key: q for key, q in quantizers.items() if key[1] != "weight"}
        for quantizer in activations.values():   # their buffers reserved before the forwards (observers.py)
            quantizer.observer = RangeObserver(self.method, batches[0].device)
        try:
            run_batches(qmodel, batches)
        finally:
            observers = {key: q.observer for key, q in activations.items()}
            for quantizer in activations.values():
                quantizer.observer = None
        for key, quantizer in activations.items():
            lo, hi = observers[key].clip_range(quantizer.qmin, quantizer.qmax)
            _set_affine(quantizer, lo, hi)
        for (owner, role), quantizer in quantizers.items():
            if role == "weight":
                lo, hi = weight_range(self.method, modules[owner].weight, quantizer.qmin, quantizer.qmax)
                _set_affine(quantizer, lo, hi)


def _set_affine(quantizer, lo: torch.Tensor, hi: torch.Tensor) -> None:
    scale, zero_point = affine_from_range(lo, hi, quantizer.qmin, quantizer.qmax)
    quantizer.scale, quantizer.zero_point = scale.detach().clone(), zero_point.detach().clone()


for _method in ("minmax", "percentile", "omse"):
    register_quantizer(_method)(lambda m=_method: UniformAffine(m))
