"""PTQ4ViT's per-layer scale search: candidate grids, the Hessian-guided (or cosine) loss, and the
alternating search of a layer's two operands. Model plumbing (which layers, their inputs and
gradients) lives in ``ptq4vit``; this module only sees tensors.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import numpy as np
import torch

from .params import PER_CHANNEL
from .quantizer import FakeQuantizer
from .schemes import get_scheme

CHUNK_ELEMENTS = 1 << 23          # layer outputs evaluated at once: candidates x output size


@dataclass(frozen=True)
class PTQ4ViTOptions:
    metric: str = "hessian"          # or "cosine"
    rounds: int = 3
    alpha: float = 0.01
    beta: float = 1.2
    steps: int = 100                 # candidates alpha + i (beta - alpha) / steps, i = 0..steps
    twin: bool = True
    conv_per_channel: bool = True
    n_images: int = 32
    max_rows: int = 256


BASE_PTQ = PTQ4ViTOptions(metric="cosine", rounds=1, alpha=0.5, twin=False, conv_per_channel=False)


def symmetric_step(amax: torch.Tensor, bits: int) -> torch.Tensor:
    """Δ0 = max|x| / (2^(b-1) - 0.5), the release's min/max step for signed codes."""
    return (amax / (2 ** (bits - 1) - 0.5)).clamp_min(1e-8)


@dataclass
class Operand:
    """One searched operand of a layer: its quantizer, raw values, candidate and current scales."""
    quantizer: FakeQuantizer
    raw: torch.Tensor
    candidates: torch.Tensor                 # (P, G)
    current: torch.Tensor                    # (1, G)
    groups: torch.Tensor | None = None       # weights: the scale group of each output channel (row)

    def quantized(self, scales: torch.Tensor) -> torch.Tensor:
        """``raw`` fake-quantized at each of ``scales`` (k, G): shape (k, *raw.shape)."""
        q = self.quantizer
        if self.groups is None:
            s = scales[:, 0].reshape((-1,) + (1,) * self.raw.ndim)
        else:
            s = scales[:, self.groups].reshape(scales.shape[:1] + (-1,) + (1,) * (self.raw.ndim - 1))
        extra = {name: getattr(q, "extra_" + name) for name in q.extra_names}
        return get_scheme(q.scheme)(self.raw.unsqueeze(0), s, torch.zeros_like(s), q.qmin, q.qmax, extra)

    def commit(self) -> None:
        q = self.quantizer
        scale = self.current[0, self.groups] if q.granularity == PER_CHANNEL else self.current[0, 0]
        q.set_params(replace(q.params(), scale=scale.cpu().numpy(), zero_point=np.zeros(scale.shape, np.float32)))


@dataclass
class Layer:
    """A layer's search problem: out = combine(Q(first), Q(second)) against the FP output."""
    first: Operand
    second: Operand | None
    combine: Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]
    raw_out: torch.Tensor
    grad: torch.Tensor | None


def _group_sum(t: torch.Tensor, groups: torch.Tensor | None, n_groups: int) -> torch.Tensor:
    if groups is None:
        return t.sum(dim=-1, keepdim=True)
    return torch.zeros(t.shape[:-1] + (n_groups,), dtype=t.dtype, device=t.device).index_add_(-1, groups, t)


def layer_loss(out: torch.Tensor, raw: torch.Tensor, grad: torch.Tensor | None, groups: torch.Tensor | None,
               n_groups: int, metric: str) -> torch.Tensor:
    """(k, ..., F) candidate outputs -> (k, G) loss per scale group (lower is better)."""
    if metric == "hessian":  # in place: ``out`` is a fresh candidate batch, and the largest tensor here
        per_feature = out.sub_(raw).mul_(grad).square_().flatten(1, -2).sum(dim=1)
        return _group_sum(per_feature, groups, n_groups)
    if metric == "cosine":
        dot = _group_sum(out * raw, groups, n_groups)
        norms = _group_sum(out * out, groups, n_groups) * _group_sum(raw * raw, groups, n_groups)
        return -(dot / norms.sqrt().clamp_min(1e-8)).flatten(1, -2).mean(dim=1)
    raise ValueError(f"unknown PTQ4ViT metric {metric!r}")


def search_operand(layer: Layer, searched: Operand, metric: str) -> None:
    """Set ``searched.current`` to the best candidate per group, the other operand held fixed."""
    other = layer.second if searched is layer.first else layer.first
    fixed = other.quantized(other.current) if other is not None else None
    n_groups = searched.candidates.shape[1]
    chunk = max(1, CHUNK_ELEMENTS // layer.raw_out.numel())
    losses = []
    for scales in searched.candidates.split(chunk):
        q = searched.quantized(scales)
        out = layer.combine(q, fixed) if searched is layer.first else layer.combine(fixed, q)
        losses.append(layer_loss(out, layer.raw_out, layer.grad, searched.groups, n_groups, metric))
    best = torch.cat(losses).argmin(dim=0, keepdim=True)
    searched.current = searched.candidates.gather(0, best)


def search_layer(layer: Layer, options: PTQ4ViTOptions) -> None:
    """Alternate the operands' searches for ``options.rounds`` rounds, skipping a search whose
    partner has not moved since it last ran (it would return the same scale)."""
    operands = [op for op in (layer.first, layer.second) if op is not None]
    partner_seen: dict[int, torch.Tensor | None] = {}
    for _ in range(options.rounds):
        searched = False
        for i, op in enumerate(operands):
            partner = operands[1 - i].current if len(operands) == 2 else None
            if i in partner_seen and (partner is None or torch.equal(partner_seen[i], partner)):
                continue
            partner_seen[i] = None if partner is None else partner.clone()
            search_operand(layer, op, options.metric)
            searched = True
        if not searched:
            break
    for op in operands:
        op.commit()


def candidate_grid(delta0: torch.Tensor, options: PTQ4ViTOptions) -> torch.Tensor:
    """(steps + 1, G) candidates (α + i(β-α)/n)·Δ0 for each group's Δ0 (G,)."""
    factors = torch.tensor([options.alpha + i * (options.beta - options.alpha) / options.steps
                            for i in range(options.steps + 1)], device=delta0.device)
    return factors[:, None] * delta0[None, :]
