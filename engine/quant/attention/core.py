"""What every quantized attention shares: its quantizers, and the two matmuls written out with them."""
from __future__ import annotations

import torch
from torch import nn

from ..fixed_order import softmax
from ..quantizer import FakeQuantizer

ATTENTION_ROLES = ("q", "k", "v", "probs")


class QuantAttention:
    """Marks an adapter (a subclass of a timm module that ``quantize_attention`` re-classes a module to);
    ``ROLES`` are the ``<role>_quant`` FakeQuantizers it gets, each at the attention bit-width; ``CONSTANT``
    names its submodules that compute a position bias from constants alone (``ConstantLinear``)."""
    ROLES: tuple[str, ...] = ATTENTION_ROLES
    CONSTANT: tuple[str, ...] = ()


class ConstantLinear(nn.Linear):
    """A Linear of a small MLP that maps a fixed coordinate table to a position bias (Swin-V2's CPB, timm's
    RelPosMlp): the bias is the same for every image, a table an export precomputes, so the MLP stays in float
    (its own forward: ``_replace_layers`` leaves it alone) and the coverage probe counts it as constant. As a
    QuantLinear its coordinates would be rounded to the activation grid and its weights searched as the block's."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x)


def attach_quantizers(module: nn.Module, adapter: type[QuantAttention], attn_bits: int) -> None:
    """The adapter's quantizers, and its constant MLPs' Linears made ``ConstantLinear``."""
    device = next(module.parameters()).device
    for role in adapter.ROLES:
        module.add_module(f"{role}_quant", FakeQuantizer(attn_bits, device))
    for name in adapter.CONSTANT:
        mlp = getattr(module, name)
        for linear in mlp.modules() if mlp is not None else ():
            if type(linear) is nn.Linear:
                linear.__class__ = ConstantLinear


def quantized_attention(module: nn.Module, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                        bias: torch.Tensor | None = None, scale: float | None = None,
                        gain: torch.Tensor | None = None) -> torch.Tensor:
    """softmax(Q(q)·scale·Q(k)ᵀ·gain + bias)·Q(v), the softmax output quantized too.

    ``scale`` (a number) defaults to the module's; ``gain`` multiplies the scores after the matmul (Swin-V2's
    per-head logit scale: a tensor factor before it would make q a float again); ``bias`` is a position bias
    and/or mask added to the scores.
    """
    q, k, v = module.q_quant(q), module.k_quant(k), module.v_quant(v)
    attn = (q * (module.scale if scale is None else scale)) @ k.transpose(-2, -1)
    if gain is not None:
        attn = attn * gain
    if bias is not None:
        attn = attn + bias
    probs = module.probs_quant(softmax(attn))   # fixed_order: a thread-invariant gradient
    return probs @ v


def unmasked(attn_mask: torch.Tensor | None, is_causal: bool = False) -> None:
    """The adapters write out self-attention of an image's tokens: no masks, no causal attention."""
    if attn_mask is not None or is_causal:
        raise NotImplementedError("quantized attention supports unmasked self-attention only")


def qkv_with_bias(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``module.qkv(x)`` plus BEiT/EVA/Swin-V2's separate q and v biases (k's is zero), added after the
    quantized Linear: timm's ``F.linear(x, qkv.weight, bias)`` would bypass its quantizers."""
    qkv = module.qkv(x)
    if getattr(module, "q_bias", None) is not None:
        qkv = qkv + torch.cat((module.q_bias, module.k_bias, module.v_bias))
    return qkv
