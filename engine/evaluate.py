"""Top-1 accuracy of a model over a dataset split."""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable, ContextManager, Mapping

import torch
from torch import nn

from .data import iterate
from .progress import report


@dataclass(frozen=True)
class Accuracy:
    top1: float   # percent
    n: int


@torch.no_grad()
def top1(model: nn.Module, dataset, batch_size: int = 100, device: torch.device | str = "cpu") -> Accuracy:
    return top1_variants(model, dataset, {"model": nullcontext}, batch_size, device)["model"]


@torch.no_grad()
def top1_variants(model: nn.Module, dataset, variants: Mapping[str, Callable[[], ContextManager]],
                  batch_size: int = 100, device: torch.device | str = "cpu") -> dict[str, Accuracy]:
    """Top-1 of several variants of ``model`` (each active inside its context) from ONE read of ``dataset``.

    Every batch is run under each variant in turn, so a large split (ImageNet val: 50k images) is
    decoded once for all of them and never held in memory. Counts stay on the device until the end.
    """
    correct: dict[str, torch.Tensor | int] = dict.fromkeys(variants, 0)
    total, size = 0, len(dataset)
    for images, labels in iterate(dataset, batch_size, device):
        for name, variant in variants.items():
            with variant():
                correct[name] = correct[name] + (model(images).argmax(dim=-1) == labels).sum()
        total += int(labels.numel())
        report("images", total, size)
    if total == 0:
        raise ValueError("no readable images to evaluate")
    return {name: Accuracy(100.0 * int(count) / total, total) for name, count in correct.items()}
