"""Attention forwards with both matmuls' operands fake-quantized (q, k for q·kᵀ; probs, v for attn·v).

timm's fused scaled_dot_product_attention hides those operands, so each supported attention class
gets a subclass whose forward is written out (one module per family, like timm's model files);
``quantize_attention`` re-classes a module in place, which keeps its parameters and qualified names
(and so timm state dicts) unchanged. The registry maps the *exact* timm class to its adapter: any other
attention (a subclass, another library's) is left as it is, and the coverage probe (``coverage.py``)
finds its float matmuls: ``quantize`` refuses the model rather than leave them float without a word.
"""
from __future__ import annotations

from torch import nn

from .beit import QuantBeitAttention
from .cait import PackedClassAttnBlock, QuantClassAttn, QuantTalkingHeadAttn
from .core import ATTENTION_ROLES, QuantAttention, attach_quantizers, quantized_attention
from .eva import QuantAttentionRope, QuantEvaAttention
from .pool import QuantAttentionPoolLatent
from .relpos import QuantRelPosAttention
from .swin import QuantWindowAttention, QuantWindowAttentionV2
from .twins import QuantGlobalSubSampleAttn, QuantLocallyGroupedAttn
from .vit import QuantViTAttention
from .xcit import QuantXCA


def _adapted(*adapters: type[QuantAttention]) -> dict[type, type[QuantAttention]]:
    """timm class -> adapter; each adapter subclasses the class it adapts (its last base)."""
    return {adapter.__bases__[-1]: adapter for adapter in adapters}


ATTENTION_ADAPTERS = _adapted(
    QuantViTAttention,            # timm.layers.Attention: ViT, DeiT, DINOv2, SigLIP, CLIP, PiT...
    QuantWindowAttention, QuantWindowAttentionV2,   # Swin, Swin-V2
    QuantBeitAttention,           # BEiT, BEiT-v2
    QuantEvaAttention, QuantAttentionRope,          # EVA-02, vit_*_rope_*
    QuantRelPosAttention,         # vit_relpos_*
    QuantTalkingHeadAttn, QuantClassAttn,           # CaiT (ClassAttn: XCiT too)
    QuantLocallyGroupedAttn, QuantGlobalSubSampleAttn,   # Twins
    QuantXCA,                     # XCiT
    QuantAttentionPoolLatent,     # SigLIP's attention-pool head
)
# Not attentions: blocks re-classed so the search can cut the model between them (no quantizers).
BLOCK_ADAPTERS = _adapted(PackedClassAttnBlock)

__all__ = ["ATTENTION_ADAPTERS", "ATTENTION_ROLES", "BLOCK_ADAPTERS", "PackedClassAttnBlock", "QuantAttention",
           "QuantViTAttention", "QuantWindowAttention", "attach_quantizers", "quantize_attention", "quantized_attention"]


def quantize_attention(module: nn.Module, attn_bits: int) -> bool:
    """Re-class ``module`` to its adapter if its exact type has one, with the adapter's quantizers (before
    ``_replace_layers`` reaches its children)."""
    adapter = ATTENTION_ADAPTERS.get(type(module)) or BLOCK_ADAPTERS.get(type(module))
    if adapter is None:
        return False
    module.__class__ = adapter
    attach_quantizers(module, adapter, attn_bits)
    return True
