"""Gradients with the same bits on any number of CPU threads.

torch's CPU kernels split a whole-tensor sum, and the softmax backward, between threads, so their
last bits depend on the thread count. The ``guided`` search takes such a gradient as its direction:
a run on two threads ended on other scales than the same run on one. The forward kernels the search
uses are thread-invariant already; these two replacements make the gradient so too:

* ``broadcast_scale``: a scale broadcast against its tensor; its gradient is summed per kept
  channel along the last axis, or in fixed blocks for a per-tensor scale (each partial sum runs
  whole on one thread, in float64), never by torch's thread-split reduction;
* ``softmax``: torch's softmax forward; backward ``y ⊙ (g − Σ g ⊙ y)`` from elementwise ops and a
  last-axis sum.

Both are used only when a gradient is being recorded; forwards without one are untouched.
"""
from __future__ import annotations

import torch

BLOCK = 4096   # elements per partial sum of a per-tensor scale's gradient


def _sum_to(grad: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """``grad`` summed down to ``shape`` (which broadcasts to it) in an order fixed by the shapes."""
    kept = [axis for axis, size in enumerate(shape) if size != 1] if len(shape) == grad.ndim else []
    if len(kept) > 1:
        raise ValueError(f"a scale of shape {tuple(shape)} has more than one channel axis")
    if kept:
        rows = grad.movedim(kept[0], 0).reshape(grad.shape[kept[0]], -1)
        return rows.sum(dim=1, dtype=torch.float64).to(grad.dtype).reshape(shape)
    flat = grad.reshape(-1)
    flat = torch.cat([flat, flat.new_zeros(-flat.numel() % BLOCK)])
    return flat.view(-1, BLOCK).sum(dim=1, dtype=torch.float64).sum().to(grad.dtype).reshape(shape)


class _BroadcastScale(torch.autograd.Function):
    @staticmethod
    def forward(ctx, scale: torch.Tensor, shape: torch.Size) -> torch.Tensor:
        ctx.scale_shape = scale.shape
        return scale.expand(shape)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return _sum_to(grad, ctx.scale_shape), None


def broadcast_scale(scale: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``scale`` (already shaped to broadcast against ``x``), expanded to ``x``'s shape when it takes
    part in a gradient, so that the gradient's reduction is ``_sum_to``'s."""
    if not (torch.is_grad_enabled() and scale.requires_grad):
        return scale
    return _BroadcastScale.apply(scale, x.shape)


class _Softmax(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        y = torch.softmax(x, dim=-1)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (y,) = ctx.saved_tensors
        return y * (grad - (grad * y).sum(dim=-1, keepdim=True))


def softmax(x: torch.Tensor) -> torch.Tensor:
    """Softmax over the last axis: torch's values, and under autograd the fixed-order backward."""
    if torch.is_grad_enabled() and x.requires_grad:
        return _Softmax.apply(x)
    return x.softmax(dim=-1)
