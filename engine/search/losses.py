"""Fitness functions comparing the quantized model's outputs with the FP reference of the same batch.

Every loss has the signature ``loss(quant, fp, temperature) -> scalar tensor`` over one calibration
batch (``quant`` and ``fp`` are ``(N, C)`` logits or pre-logit features; lower is better), so the
search can swap them by name. ``temperature`` is the softmax temperature of ``contrastive`` and
``kl``; ``mse`` and ``cosine`` have none and ignore it.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

LossFn = Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]


def contrastive_loss(quant: torch.Tensor, fp: torch.Tensor, temperature: float) -> torch.Tensor:
    """InfoNCE exactly as the CPT-V release: each quantized output must pick its own FP output
    out of the batch. ``CE(normalize(quant)·normalize(fp)ᵀ / T, arange(N)) · 2T``.

    The ``2T`` factor is the release's (it rescales the loss, not the ranking of candidates).
    """
    q = F.normalize(quant, dim=-1)
    k = F.normalize(fp, dim=-1)
    logits = q @ k.T / temperature
    targets = torch.arange(logits.shape[0], device=logits.device)
    return F.cross_entropy(logits, targets) * (2.0 * temperature)


def kl_loss(quant: torch.Tensor, fp: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """KL(softmax(fp/T) ‖ softmax(quant/T)) · T², averaged over the batch: the FP softmax is the
    target distribution (distillation form; T² keeps magnitudes comparable across T)."""
    log_q = F.log_softmax(quant / temperature, dim=-1)
    log_p = F.log_softmax(fp / temperature, dim=-1)
    return F.kl_div(log_q, log_p, reduction="batchmean", log_target=True) * temperature**2


def mse_loss(quant: torch.Tensor, fp: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Mean squared difference of the outputs (``temperature`` unused)."""
    return F.mse_loss(quant, fp)


def cosine_loss(quant: torch.Tensor, fp: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Mean of 1 − cos(quant_i, fp_i): direction only, like InfoNCE without the negatives."""
    return (1.0 - F.cosine_similarity(quant, fp, dim=-1)).mean()


LOSSES: dict[str, LossFn] = {
    "contrastive": contrastive_loss,
    "kl": kl_loss,
    "mse": mse_loss,
    "cosine": cosine_loss,
}


def get_loss(name: str) -> LossFn:
    try:
        return LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown loss {name!r}; choose one of {', '.join(LOSSES)}") from None
