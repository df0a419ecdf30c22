"""Attention forwards with both matmuls' operands fake-quantized (q, k for q·kᵀ; probs, v for attn·v).

timm's fused scaled_dot_product_attention hides those operands, so each supported attention class
gets a subclass whose forward is written out; ``quantize_attention`` re-classes a module in place,
which keeps its parameters and qualified names (and so timm state dicts) unchanged. Any other
attention (a subclass, another library's) is left as it is, and the coverage probe (``coverage.py``)
finds its float matmuls: ``quantize`` refuses the model rather than leave them float without a word.
"""
from __future__ import annotations

import torch
from timm.layers import Attention
from timm.models.swin_transformer import WindowAttention
from torch import nn

from .fixed_order import softmax
from .quantizer import FakeQuantizer

ATTENTION_ROLES = ("q", "k", "v", "probs")


def _attach_quantizers(module: nn.Module, attn_bits: int) -> None:
    device = module.qkv.weight.device  # both supported attentions compute q, k, v with one qkv Linear
    for role in ATTENTION_ROLES:
        module.add_module(f"{role}_quant", FakeQuantizer(attn_bits, device))


def quantized_attention(module: nn.Module, q, k, v, bias: torch.Tensor | None = None) -> torch.Tensor:
    """softmax(Q(q·scale)·Q(k)ᵀ + bias)·Q(v) with the softmax output quantized too."""
    q, k, v = module.q_quant(q), module.k_quant(k), module.v_quant(v)
    attn = (q * module.scale) @ k.transpose(-2, -1)
    if bias is not None:
        attn = attn + bias
    probs = module.probs_quant(softmax(attn))   # fixed_order: a thread-invariant gradient
    return probs @ v


class QuantViTAttention(Attention):
    """timm ViT/DeiT ``Attention`` (inference only: no masks, no dropout)."""

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False) -> torch.Tensor:
        if attn_mask is not None or is_causal:
            raise NotImplementedError("quantized attention supports unmasked self-attention only")
        B, N, _ = x.shape
        gate = self.gate(x).sigmoid() if self.gate is not None else None
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        x = quantized_attention(self, q, k, v)
        x = self.norm(x.transpose(1, 2).reshape(B, N, self.attn_dim))
        if gate is not None:
            x = x * gate
        return self.proj(x)


class QuantWindowAttention(WindowAttention):
    """timm Swin ``WindowAttention`` with relative position bias and the shifted-window mask."""

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        B_, N, _ = x.shape
        q, k, v = self.qkv(x).reshape(B_, N, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        bias = self._get_rel_pos_bias()
        if mask is not None:
            num_win = mask.shape[0]
            bias = (bias.unsqueeze(0) + mask.view(1, num_win, 1, N, N)).expand(B_ // num_win, -1, -1, -1, -1)
            bias = bias.reshape(-1, self.num_heads, N, N)
        x = quantized_attention(self, q, k, v, bias)
        return self.proj(x.transpose(1, 2).reshape(B_, N, -1))


ATTENTION_ADAPTERS: dict[type, type] = {
    Attention: QuantViTAttention,
    WindowAttention: QuantWindowAttention,
}


def quantize_attention(module: nn.Module, attn_bits: int) -> bool:
    """Re-class ``module`` to its quantized forward if its exact type is supported."""
    adapter = ATTENTION_ADAPTERS.get(type(module))
    if adapter is None:
        return False
    module.__class__ = adapter
    _attach_quantizers(module, attn_bits)
    return True
