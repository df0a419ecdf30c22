"""CaiT: talking-heads self-attention, class attention, and its class-attention block made callable on one
tensor so the search can cut the model between any two blocks (engine/search/segments.py)."""
from __future__ import annotations

import torch
from timm.models import cait

from ..fixed_order import softmax
from .core import QuantAttention, quantized_attention


class QuantTalkingHeadAttn(QuantAttention, cait.TalkingHeadAttn):
    """q·kᵀ, then two head-mixing Linears around the softmax (``proj_l``, ``proj_w``: QuantLinears, so the
    scores and the probabilities are quantized as their inputs); what multiplies v is ``proj_w``'s output, a
    mix of probabilities that may be negative: its quantizer is ``mixed``, not ``probs``, so no scheme gives
    it a quantizer made for values in [0, 1] (FQ-ViT's log2, PTQ4ViT's twin ranges)."""
    ROLES = ("q", "k", "v", "mixed")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = self.q_quant(qkv[0]), self.k_quant(qkv[1]), self.v_quant(qkv[2])
        attn = (q * self.scale) @ k.transpose(-2, -1)
        attn = self.proj_l(attn.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        attn = self.proj_w(softmax(attn).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        x = (self.mixed_quant(attn) @ v).transpose(1, 2).reshape(B, N, C)
        return self.proj(x)


class QuantClassAttn(QuantAttention, cait.ClassAttn):
    """The class token's query against every token (CaiT's and XCiT's class-attention blocks)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        heads = self.num_heads
        q = self.q(x[:, 0]).unsqueeze(1).reshape(B, 1, heads, C // heads).permute(0, 2, 1, 3)
        k = self.k(x).reshape(B, N, heads, C // heads).permute(0, 2, 1, 3)
        v = self.v(x).reshape(B, N, heads, C // heads).permute(0, 2, 1, 3)
        x_cls = quantized_attention(self, q, k, v).transpose(1, 2).reshape(B, 1, C)
        return self.proj(x_cls)


class PackedClassAttnBlock(QuantAttention, cait.LayerScaleBlockClassAttn):
    """CaiT's class-attention block, also callable on ``[class token; patch tokens]`` alone, returning that
    tensor with the class token updated: the tokens between two blocks are then one tensor, as the search's
    segments need. Called as CaiT calls it (patch tokens, class token) it is timm's block."""
    ROLES = ()

    def forward(self, x: torch.Tensor, x_cls: torch.Tensor | None = None) -> torch.Tensor:
        if x_cls is not None:
            return super().forward(x, x_cls)
        patches = x[:, 1:]
        return torch.cat((super().forward(patches, x[:, :1]), patches), dim=1)
