"""Each quantization point's element count, and a mixed plan's element-weighted mean bits.

A weight point counts its parameters (the model's size), an activation point the elements of its tensor per
image (the activations' traffic), both read from one forward of two images with every quantizer only watching
(``FakeQuantizer.observer``): the tensor each one would quantize, whatever module owns it. Below the search
and the diagnosis, so their run files can record the mean bits of the plan they ran.
"""
from __future__ import annotations

import torch

from ..quant import QuantizedModel
from .summary import mean_bits


class _Counter:
    """An observer that counts what its quantizer sees (the forward passes the tensor through unquantized)."""

    def __init__(self) -> None:
        self.elements, self.calls = 0, 0

    def observe(self, x: torch.Tensor) -> None:
        self.elements += x.numel()
        self.calls += 1


@torch.no_grad()
def point_elements(qmodel: QuantizedModel, images: torch.Tensor) -> dict[str, int]:
    """``owner/role`` -> parameters (a weight) or elements per image (an activation; a point met twice in a
    forward counts both), from one forward of ``images``."""
    quantizers = qmodel.quantizers()
    counters = {key: _Counter() for key in quantizers}
    previous = {key: q.observer for key, q in quantizers.items()}
    for key, quantizer in quantizers.items():
        quantizer.observer = counters[key]
    try:
        qmodel(images)
    finally:
        for key, quantizer in quantizers.items():
            quantizer.observer = previous[key]
    out = {}
    for (owner, role), counter in counters.items():
        if counter.calls == 0:
            raise ValueError(f"{owner}/{role} saw no tensor in a forward: its element count is unknown")
        if role == "weight":
            out[f"{owner}/{role}"] = counter.elements // counter.calls
        else:
            out[f"{owner}/{role}"] = max(1, counter.elements // len(images))
    return out


def mean_bits_metrics(qmodel: QuantizedModel, images: torch.Tensor) -> dict[str, float]:
    """A mixed plan's element-weighted ``mean_w_bits`` and ``mean_a_bits``, for a run file's metrics (the
    library's bits column reads them without the model); nothing for a uniform config, whose label says it."""
    if not qmodel.config.mixed:
        return {}
    widths = {f"{owner}/{role}": quantizer.bits for (owner, role), quantizer in qmodel.quantizers().items()}
    mean_w, mean_a = mean_bits(widths, point_elements(qmodel, images[:2]))
    return {"mean_w_bits": mean_w, "mean_a_bits": mean_a}
