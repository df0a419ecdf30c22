"""Twins (SVT): locally-grouped attention in windows and global attention to a sub-sampled sequence (its
strided ``sr`` conv is a QuantConv2d), written out with their quantizers."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.models import twins

from .core import QuantAttention, quantized_attention


class QuantLocallyGroupedAttn(QuantAttention, twins.LocallyGroupedAttn):
    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        B, N, C = x.shape
        H, W, ws = size[0], size[1], self.ws
        pad_r, pad_b = (ws - W % ws) % ws, (ws - H % ws) % ws
        x = F.pad(x.view(B, H, W, C), (0, 0, 0, pad_r, 0, pad_b))
        _, Hp, Wp, _ = x.shape
        _h, _w = Hp // ws, Wp // ws
        x = x.reshape(B, _h, ws, _w, ws, C).transpose(2, 3)
        qkv = self.qkv(x).reshape(B, _h * _w, ws * ws, 3, self.num_heads, C // self.num_heads).permute(3, 0, 1, 4, 2, 5)
        q, k, v = qkv.unbind(0)
        x = quantized_attention(self, q, k, v)
        x = x.transpose(2, 3).reshape(B, _h, _w, ws, ws, C)
        x = x.transpose(2, 3).reshape(B, _h * ws, _w * ws, C)
        if pad_r > 0 or pad_b > 0:
            x = x[:, :H, :W, :].contiguous()
        return self.proj(x.reshape(B, N, C))


class QuantGlobalSubSampleAttn(QuantAttention, twins.GlobalSubSampleAttn):
    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        B, N, C = x.shape
        q = self.q(x).reshape(B, N, self.num_heads, C // self.num_heads).permute(0, 2, 1, 3)
        if self.sr is not None:
            x = self.sr(x.permute(0, 2, 1).reshape(B, C, *size)).reshape(B, C, -1).permute(0, 2, 1)
            x = self.norm(x)
        k, v = self.kv(x).reshape(B, -1, 2, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4).unbind(0)
        x = quantized_attention(self, q, k, v)
        return self.proj(x.transpose(1, 2).reshape(B, N, C))
