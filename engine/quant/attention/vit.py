"""timm's ViT/DeiT ``Attention`` (also DINOv2's and SigLIP's blocks), written out with its quantizers."""
from __future__ import annotations

import torch
from timm.layers import Attention

from .core import QuantAttention, quantized_attention, unmasked


class QuantViTAttention(QuantAttention, Attention):
    """timm ViT/DeiT ``Attention`` (inference only: no masks, no dropout)."""

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False) -> torch.Tensor:
        unmasked(attn_mask, is_causal)
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
