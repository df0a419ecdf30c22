"""``RelPosAttention`` of timm's ``vision_transformer_relpos`` (a bias from a table or a small MLP over
log-spaced coordinates, per block or shared), written out with its quantizers."""
from __future__ import annotations

import torch
from timm.models import vision_transformer_relpos

from .core import QuantAttention, quantized_attention


class QuantRelPosAttention(QuantAttention, vision_transformer_relpos.RelPosAttention):
    """The bias (a table, or RelPosMlp's MLP over constant coordinates: kept float) is a constant."""
    CONSTANT = ("rel_pos",)

    def forward(self, x: torch.Tensor, shared_rel_pos: torch.Tensor | None = None) -> torch.Tensor:
        B, N, C = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        # timm's unfused path: the block's own bias replaces a shared one (RelPosMlp/RelPosBias ignore it)
        bias = self.rel_pos.get_bias() if self.rel_pos is not None else shared_rel_pos
        x = quantized_attention(self, q, k, v, bias)
        return self.proj(x.transpose(1, 2).reshape(B, N, C))
