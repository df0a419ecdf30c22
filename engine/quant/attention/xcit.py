"""XCiT's cross-covariance attention (``XCA``): attention between channels, q and k L2-normalised along
the tokens, a learnt per-head temperature; written out with its quantizers. (Its class-attention blocks
use CaiT's ``ClassAttn``: ``cait.py``.)"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.models import xcit

from .core import QuantAttention, quantized_attention


class QuantXCA(QuantAttention, xcit.XCA):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 4, 1).unbind(0)
        x = quantized_attention(self, F.normalize(q, dim=-1), F.normalize(k, dim=-1), v, scale=1.0,
                                gain=self.temperature)
        return self.proj(x.permute(0, 3, 1, 2).reshape(B, N, C))
