"""The rotary-embedding attentions of timm's ``Eva`` model: EVA-02's ``EvaAttention`` (SwiGLU blocks) and
``AttentionRope`` (the ``vit_*_rope_*`` ViTs), written out with their quantizers. The operands of q·kᵀ are
q and k after the q/k norm and after the rotation, so that is where they are quantized."""
from __future__ import annotations

import torch
from timm.layers import AttentionRope, apply_rot_embed_cat
from timm.models import eva

from .core import QuantAttention, qkv_with_bias, quantized_attention, unmasked


def _projections(module, x: torch.Tensor, kv_heads: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q, k, v as (batch, heads, tokens, head_dim), from one fused qkv Linear or three."""
    B, N, _ = x.shape
    if module.qkv is not None:
        qkv = qkv_with_bias(module, x).reshape(B, N, 3, module.num_heads, -1).permute(2, 0, 3, 1, 4)
        return qkv.unbind(0)
    q = module.q_proj(x).reshape(B, N, module.num_heads, -1).transpose(1, 2)
    k = module.k_proj(x).reshape(B, N, kv_heads, -1).transpose(1, 2)
    v = module.v_proj(x).reshape(B, N, kv_heads, -1).transpose(1, 2)
    return q, k, v


def _rotated(module, t: torch.Tensor, rope: torch.Tensor | None) -> torch.Tensor:
    """The patch tokens of ``t`` rotated (the prefix tokens are not), as timm does it."""
    if rope is None:
        return t
    npt, half = module.num_prefix_tokens, getattr(module, "rotate_half", False)
    return torch.cat([t[:, :, :npt, :], apply_rot_embed_cat(t[:, :, npt:, :], rope, half=half)], dim=2)


def _rope_attention(module, x: torch.Tensor, rope: torch.Tensor | None, kv_heads: int, groups: int) -> torch.Tensor:
    B, N, _ = x.shape
    gate = module.gate(x).sigmoid() if module.gate is not None else None
    q, k, v = _projections(module, x, kv_heads)
    q, k = module.q_norm(q), module.k_norm(k)
    q, k = _rotated(module, q, rope).type_as(v), _rotated(module, k, rope).type_as(v)
    if groups > 1:   # grouped-query attention: each k/v head serves ``groups`` query heads
        k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
    x = module.norm(quantized_attention(module, q, k, v).transpose(1, 2).reshape(B, N, -1))
    if gate is not None:
        x = x * gate
    return module.proj(x)


class QuantEvaAttention(QuantAttention, eva.EvaAttention):
    def forward(self, x: torch.Tensor, rope: torch.Tensor | None = None, attn_mask: torch.Tensor | None = None,
                is_causal: bool = False) -> torch.Tensor:
        unmasked(attn_mask, is_causal)
        return _rope_attention(self, x, rope, self.num_heads, 1)


class QuantAttentionRope(QuantAttention, AttentionRope):
    def forward(self, x: torch.Tensor, rope: torch.Tensor | None = None, attn_mask: torch.Tensor | None = None,
                is_causal: bool = False) -> torch.Tensor:
        unmasked(attn_mask, is_causal)
        return _rope_attention(self, x, rope, self.num_kv_heads, self.num_kv_groups)
