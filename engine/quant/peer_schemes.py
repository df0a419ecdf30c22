"""Fake-quant schemes of the peer quantizers (PTQ4ViT, FQ-ViT, RepQ-ViT), and what they share.

Each scheme is a pure function of ``x``, the point's scale/zero-point and its ``extra`` buffers, so
a ScaleSet (or a scale file) alone reproduces a calibrated model bit for bit. ``scale`` is always
the step the CPT-V search may perturb: the fine step of a twin-uniform range, the layer-wide step
of a PTF point, the Δ of a log quantizer.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from ..data import first_images
from .schemes import register_scheme, rounded

SQRT2_MINUS_1 = math.sqrt(2.0) - 1.0
GELU_MIN = 0.16997124254703522  # |min GELU(x)|: PTQ4ViT's fixed range for post-GELU negatives
PTF_FACTORS = (1, 2, 4, 8)


def twin_levels(qmin: int, qmax: int) -> int:
    """Largest code of each half of a twin-uniform quantizer: one bit of b selects the range."""
    return (qmax - qmin + 1) // 2 - 1


@register_scheme("twin_softmax")
def twin_softmax(x, scale, zero_point, qmin, qmax, extra):
    """PTQ4ViT twin uniform for softmax outputs (unsigned, b bits, L = 2^(b-1) - 1 codes per range).

    [0, split) has the fine step ``scale`` (split = scale·L); [split, 1] the fixed step 1/L, which
    keeps the few large probabilities that matter exact enough while the many small ones get a
    fine grid.
    """
    levels = twin_levels(qmin, qmax)
    fine = torch.clamp(rounded(x / scale), 0, levels) * scale
    coarse = torch.clamp(rounded(x * levels), 0, levels) / levels
    return torch.where(x < scale * levels, fine, coarse)


@register_scheme("twin_gelu")
def twin_gelu(x, scale, zero_point, qmin, qmax, extra):
    """PTQ4ViT twin uniform for post-GELU activations (signed, b bits).

    Positives take the searched step ``scale`` and codes [0, qmax]; negatives, which GELU bounds
    by -0.17, take the fixed small step ``extra["neg_step"]`` and codes [qmin, 0].
    """
    neg_step = extra["neg_step"]
    positive = torch.clamp(rounded(x / scale), 0, qmax) * scale
    negative = torch.clamp(rounded(x / neg_step), qmin, 0) * neg_step
    return positive + negative


@register_scheme("log2")
def log2_quant(x, scale, zero_point, qmin, qmax, extra):
    """FQ-ViT Log-Int-Softmax: q = round(-log2(x/scale)) in [0, qmax], x̂ = scale·2^-q.

    As in the release, values whose code would pass qmax (x < scale·2^-(qmax+0.5)) become 0 (its
    softmax mask); ``scale`` is 1 after calibration and stays a searchable Δ.
    """
    q = rounded(-torch.log2(x / scale))
    dequant = torch.exp2(-torch.clamp(q, qmin, qmax)) * scale
    return torch.where(q > qmax, torch.zeros_like(dequant), dequant)


@register_scheme("log_sqrt2")
def log_sqrt2_quant(x, scale, zero_point, qmin, qmax, extra):
    """RepQ-ViT log√2 quantizer: q = round(-2·log2(x/Δ)), x̂ = 2^-⌈q/2⌉·(1 + (√2-1)·(q mod 2))·Δ.

    Half-octave levels resolve the many small attention probabilities twice as finely as log2;
    codes past qmax dequantize to 0, like the release's mask.

    The level is Δ·2^(-code/2) for every integer code; the release's form above computes it with
    integer shifts. Under autograd the values stay the release's, and the gradients are those of
    Δ·2^(-code/2) with the straight-through round: inside the range x̂ tracks x (d/dx = x̂/x) and
    does not depend on Δ (a log grid slides along with it), and clipped at the top it is Δ·2^(-qmin/2).
    The release's form would give Δ a gradient from the code's parity alone (``ceil`` has none), a
    sawtooth that steered the search's straight-through steps the wrong way.
    """
    q = rounded(-2.0 * torch.log2(x / scale))
    code = torch.clamp(q, qmin, qmax)
    dequant = torch.exp2(-torch.ceil(code / 2)) * (1.0 + SQRT2_MINUS_1 * torch.remainder(code, 2)) * scale
    if dequant.requires_grad:
        smooth = torch.exp2(-code / 2) * scale
        dequant = dequant.detach() + (smooth - smooth.detach())   # the same values, smooth's gradient
    return torch.where(q > qmax, torch.zeros_like(dequant), dequant)


@register_scheme("ptf")
def power_of_two_factor(x, scale, zero_point, qmin, qmax, extra):
    """FQ-ViT Power-of-Two Factor: channel c (last dim) uses step scale·factor[c], factor ∈ {1,2,4,8}.

    One layer-wide scale and zero-point serve every channel; the per-channel factor is a bit
    shift in the integer kernel, which is how FQ-ViT copes with the inter-channel variation of
    LayerNorm-adjacent activations.
    """
    step = scale * extra["factor"]
    q = torch.clamp(rounded(x / step) + zero_point, qmin, qmax)
    return (q - zero_point) * step


def first_batch(batches: Sequence[torch.Tensor], n: int) -> torch.Tensor:
    """The first ``n`` calibration images as one batch (PTQ4ViT and RepQ-ViT calibrate on 32)."""
    taken = first_images(batches, n)
    if not taken:
        raise ValueError("calibration needs at least one image")
    return torch.cat(taken)


def post_layernorm_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """``(layernorm, linear)`` names where the Linear's input is exactly that LayerNorm's output.

    timm's ViT/DeiT/Swin blocks (norm1 → attn.qkv, norm2 → mlp.fc1) and Swin's patch merging
    (norm → reduction): the points where FQ-ViT puts PTF and RepQ-ViT re-parameterises.
    """
    modules = dict(model.named_modules())
    pairs = []
    for name in modules:
        parent, _, leaf = name.rpartition(".")
        if leaf == "qkv" and parent.endswith("attn"):
            norm = parent[: -len("attn")] + "norm1"
        elif leaf == "fc1" and parent.endswith("mlp"):
            norm = parent[: -len("mlp")] + "norm2"
        elif leaf == "reduction":
            norm = f"{parent}.norm" if parent else "norm"
        else:
            continue
        if isinstance(modules.get(norm), nn.LayerNorm):
            pairs.append((norm, name))
    return pairs
