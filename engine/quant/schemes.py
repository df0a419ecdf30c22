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


class _UniformStraightThrough(torch.autograd.Function):
    """The uniform scheme under autograd, with its straight-through gradients written out: what
    autograd would derive from the textbook formula with ``rounded``, in a few elementwise passes
    instead of the dozen its chain of div, round, add, clamp, sub and mul takes (the search's
    gradients spend most of their time here). With q = x / s and c = clamp(round(q) + z):
    d/dx = 1 strictly inside the range, 0 outside; d/ds = round(q) − q inside, c − z outside (LSQ)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, qmin: int,
                qmax: int) -> torch.Tensor:
        ctx.save_for_backward(x, scale, zero_point)
        ctx.qmin, ctx.qmax = qmin, qmax
        q = torch.div(x, scale).round_().add_(zero_point)
        return q.clamp_min_(qmin).clamp_max_(qmax).sub_(zero_point).mul_(scale)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, scale, zero_point = ctx.saved_tensors
        q = torch.div(x, scale)
        code = torch.round(q).add_(zero_point)
        inside = (code > ctx.qmin) & (code < ctx.qmax)   # as torch's clamp: a code on the bound is clamped
        grad_x = grad * inside if ctx.needs_input_grad[0] else None
        grad_scale = None
        if ctx.needs_input_grad[1]:
            clamped = code.clamp(ctx.qmin, ctx.qmax).sub_(zero_point)
            grad_scale = grad * torch.where(inside, code.sub_(zero_point).sub_(q), clamped)
        return grad_x, grad_scale, None, None, None


@register_scheme("uniform")
def uniform_affine(x, scale, zero_point, qmin, qmax, extra):
    """ONNX QuantizeLinear followed by DequantizeLinear (round half to even, like torch.round).

    In place on one fresh buffer: the search spends a large share of its time here, and every
    temporary of this size costs an allocation and page faults. Only the fresh tensor is modified,
    so vmap (batched scales) sees the textbook ``(clamp(round(x / s) + z, qmin, qmax) - z) * s``.
    The clamp is ``clamp_min_``/``clamp_max_`` because vmap has batching rules for those but not for
    ``clamp_`` (same values: both keep NaN). Under autograd (outside vmap) the same values come with
    their straight-through gradients written out (``_UniformStraightThrough``).
    """
    if (torch.is_grad_enabled() and (x.requires_grad or scale.requires_grad)
            and not torch._C._are_functorch_transforms_active()):
        return _UniformStraightThrough.apply(x, scale, zero_point, qmin, qmax)
    q = torch.div(x, scale)
    q = (rounded(q) if q.requires_grad else q.round_()).add_(zero_point)
    return q.clamp_min_(qmin).clamp_max_(qmax).sub_(zero_point).mul_(scale)
