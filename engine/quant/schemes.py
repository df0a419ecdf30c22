"""Fake-quant functions by scheme name: quantize then dequantize, in float.

Every scheme has the signature ``fn(x, scale, zero_point, qmin, qmax, extra) -> x_hat`` with
``scale``/``zero_point`` already shaped to broadcast against ``x``. Peer quantizers register their
own schemes (twin uniform, log2, ...) here so a FakeQuantizer stays scheme-agnostic.
"""
from __future__ import annotations

from typing import Callable, Mapping

import torch

SchemeFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, int, int, Mapping[str, torch.Tensor]], torch.Tensor]

SCHEMES: dict[str, SchemeFn] = {}


def register_scheme(name: str) -> Callable[[SchemeFn], SchemeFn]:
    def decorate(fn: SchemeFn) -> SchemeFn:
        if name in SCHEMES:
            raise ValueError(f"scheme {name!r} registered twice")
        SCHEMES[name] = fn
        return fn

    return decorate


def get_scheme(name: str) -> SchemeFn:
    try:
        return SCHEMES[name]
    except KeyError:
        raise KeyError(f"unknown quantization scheme {name!r}; known: {', '.join(sorted(SCHEMES))}") from None


@register_scheme("uniform")
def uniform_affine(x, scale, zero_point, qmin, qmax, extra):
    """ONNX QuantizeLinear followed by DequantizeLinear (round half to even, like torch.round).

    Mostly in place: the search spends a large share of its time here, and two buffers instead of
    six save about a third of it. Only fresh tensors are modified, so autograd and vmap (batched
    scales) see the textbook ``(clamp(round(x / s) + z, qmin, qmax) - z) * s``. ``clamp`` stays out
    of place because vmap has no batching rule for ``clamp_``.
    """
    q = torch.div(x, scale).round_().add_(zero_point)
    return torch.clamp(q, qmin, qmax).sub_(zero_point).mul_(scale)
