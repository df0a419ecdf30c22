"""BEiT / BEiT-v2 ``Attention`` (a relative position bias table per block, or one shared by the model),
written out with its quantizers."""
from __future__ import annotations

import torch
from timm.models import beit

from .core import QuantAttention, qkv_with_bias, quantized_attention


class QuantBeitAttention(QuantAttention, beit.Attention):
    def forward(self, x: torch.Tensor, shared_rel_pos_bias: torch.Tensor | None = None) -> torch.Tensor:
        B, N, C = x.shape
        q, k, v = qkv_with_bias(self, x).reshape(B, N, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        bias = self._get_rel_pos_bias() if self.relative_position_bias_table is not None else None
        if shared_rel_pos_bias is not None:
            bias = shared_rel_pos_bias if bias is None else bias + shared_rel_pos_bias
        x = quantized_attention(self, q, k, v, bias)
        return self.proj(x.transpose(1, 2).reshape(B, N, C))
