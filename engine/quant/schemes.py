"""Fake-quant functions by scheme name: quantize then dequantize, in float.

Every scheme has the signature ``fn(x, scale, zero_point, qmin, qmax, extra) -> x_hat`` with
``scale``/``zero_point`` already shaped to broadcast against ``x``. Peer quantizers register their
own schemes (twin uniform, log2, ...) here so a FakeQuantizer stays scheme-agnostic.

Schemes round with ``rounded``: the same values as ``torch.round``, and under autograd a
straight-through gradient, so the ``guided`` search can differentiate the fitness with respect
to the scales (LSQ's gradient: round(x/s) − x/s inside the range, the clamped code outside).
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


class _StraightThroughRound(torch.autograd.Function):
    """Round half to even forward; the incoming gradient passed through unchanged."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return torch.round(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad


def rounded(x: torch.Tensor) -> torch.Tensor:
    """``torch.round(x)``; straight-through when ``x`` takes part in a gradient."""
    return _StraightThroughRound.apply(x) if x.requires_grad else torch.round(x)


def get_scheme(name: str) -> SchemeFn:
    try:
        return SCHEMES[name]
    except KeyError:
        raise KeyError(f"unknown quantization scheme {name!r}; known: {', '.join(sorted(SCHEMES))}") from None


@register_scheme("uniform")
def uniform_affine(x, scale, zero_point, qmin, qmax, extra):
    """ONNX QuantizeLinear followed by DequantizeLinear (round half to even, like torch.round).

    In place on one fresh buffer: the search spends a large share of its time here, and every
    temporary of this size costs an allocation and page faults. Only the fresh tensor is modified,
    so autograd and vmap (batched scales) see the textbook ``(clamp(round(x / s) + z, qmin, qmax)
    - z) * s``. The clamp is ``clamp_min_``/``clamp_max_`` because vmap has batching rules for those
    but not for ``clamp_`` (same values: both keep NaN). Under autograd the rounding is
    straight-through (``rounded``) and the in-place steps act on its fresh output.
    """
    q = torch.div(x, scale)
    q = (rounded(q) if q.requires_grad else q.round_()).add_(zero_point)
    return q.clamp_min_(qmin).clamp_max_(qmax).sub_(zero_point).mul_(scale)
