"""``AttentionPoolLatent``: the attention-pool head of SigLIP (and of timm's ``map`` pooling), a learnt
latent query attending to every token, written out with its quantizers."""
from __future__ import annotations

import torch
from timm.layers import AttentionPoolLatent

from .core import QuantAttention, quantized_attention, unmasked


class QuantAttentionPoolLatent(QuantAttention, AttentionPoolLatent):
    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        unmasked(attn_mask)
        B, N, C = x.shape
        if self.pos_embed is not None:
            x = x + self.pos_embed.unsqueeze(0).to(x.dtype)
        q = self.q(self.latent.expand(B, -1, -1))
        q = q.reshape(B, self.latent_len, self.num_heads, self.head_dim).transpose(1, 2)
        k, v = self.kv(x).reshape(B, N, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        x = quantized_attention(self, q, k, v).transpose(1, 2).reshape(B, self.latent_len, C)
        x = self.proj(x)
        if self.mlp is not None:
            x = x + self.mlp(self.norm(x))
        if self.pool == "token":
            return x[:, 0]
        return x.mean(1) if self.pool == "avg" else x
