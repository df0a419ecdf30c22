"""Swin's ``WindowAttention`` (relative position bias) and Swin-V2's (cosine attention, a log-spaced
continuous position bias from a small MLP), written out with their quantizers."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from timm.models import swin_transformer, swin_transformer_v2

from .core import QuantAttention, qkv_with_bias, quantized_attention


def _with_mask(bias: torch.Tensor, mask: torch.Tensor | None, windows: int, heads: int, n: int) -> torch.Tensor:
    """The position bias plus the shifted windows' mask, one row per window of every image."""
    if mask is None:
        return bias
    num_win = mask.shape[0]
    bias = (bias.unsqueeze(0) + mask.view(1, num_win, 1, n, n)).expand(windows // num_win, -1, -1, -1, -1)
    return bias.reshape(-1, heads, n, n)


class QuantWindowAttention(QuantAttention, swin_transformer.WindowAttention):
    """timm Swin ``WindowAttention`` with relative position bias and the shifted-window mask."""

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        B_, N, _ = x.shape
        q, k, v = self.qkv(x).reshape(B_, N, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        bias = _with_mask(self._get_rel_pos_bias(), mask, B_, self.num_heads, N)
        x = quantized_attention(self, q, k, v, bias)
        return self.proj(x.transpose(1, 2).reshape(B_, N, -1))


class QuantWindowAttentionV2(QuantAttention, swin_transformer_v2.WindowAttention):
    """Swin-V2: the matmul's operands are the L2-normalised q and k, so those are what is quantized; the
    learnt per-head logit scale multiplies the scores after it. The bias MLP maps constants: it stays float."""
    CONSTANT = ("cpb_mlp",)

    def _position_bias(self) -> torch.Tensor:
        table = self.cpb_mlp(self.relative_coords_table).view(-1, self.num_heads)
        area = self.window_size[0] * self.window_size[1]
        bias = table[self.relative_position_index.view(-1)].view(area, area, -1).permute(2, 0, 1)
        return 16 * torch.sigmoid(bias)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        B_, N, C = x.shape
        q, k, v = qkv_with_bias(self, x).reshape(B_, N, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        gain = torch.clamp(self.logit_scale, max=math.log(1. / 0.01)).exp()
        bias = _with_mask(self._position_bias(), mask, B_, self.num_heads, N)
        x = quantized_attention(self, F.normalize(q, dim=-1), F.normalize(k, dim=-1), v, bias, scale=1.0, gain=gain)
        return self.proj(x.transpose(1, 2).reshape(B_, N, C))
