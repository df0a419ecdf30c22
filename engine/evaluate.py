"""Top-1 accuracy of a model over a dataset split."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .data import iterate


@dataclass(frozen=True)
class Accuracy:
    top1: float   # percent
    n: int


@torch.no_grad()
def top1(model: nn.Module, dataset, batch_size: int = 100, device: torch.device | str = "cpu") -> Accuracy:
    correct = total = 0
    for images, labels in iterate(dataset, batch_size, device):
        correct += int((model(images).argmax(dim=-1) == labels).sum())
        total += int(labels.numel())
    if total == 0:
        raise ValueError("no readable images to evaluate")
    return Accuracy(100.0 * correct / total, total)
