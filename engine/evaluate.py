"""Top-1 accuracy of a model over a dataset split, or (a model without a classifier) the cosine
similarity of its features to the FP model's."""
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


# What a run measures on its held-out and test images ("quality"): top-1 against the labels when the
# model has a classifier, else the cosine similarity of its output features to the FP model's
# (mean over images, in percent: 100 = every image's features point exactly where the FP ones do).
# Run files name it in ``metrics["quality"]``; files without that key measured top-1.
TOP1, FEATURE_COSINE = "top1", "feature_cosine"
QUALITY_LABELS = {TOP1: "top-1", FEATURE_COSINE: "feature cosine"}


def quality_for(num_classes: int) -> str:
    """``top1`` for a model with a classifier head, ``feature_cosine`` for one without (num_classes=0)."""
    return TOP1 if num_classes > 0 else FEATURE_COSINE


def quality_of(metrics: Mapping) -> str:
    """What a run file's metrics measured: its ``quality`` key, top-1 when absent (older files)."""
    quality = metrics.get("quality", TOP1)
    return quality if quality in QUALITY_LABELS else TOP1


def quality_key(quality: str, which: str) -> str:
    """The metrics key of ``which`` (``fp``, ``base``, ``heldout_refined`` ...) for ``quality``."""
    return f"{which}_{quality}"


@torch.no_grad()
def feature_cosine_variants(model: nn.Module, dataset, reference: Callable[[], ContextManager],
                            variants: Mapping[str, Callable[[], ContextManager]], batch_size: int = 100,
                            device: torch.device | str = "cpu") -> dict[str, Accuracy]:
    """Mean cosine similarity (percent) of each variant's output features to ``reference``'s (the FP
    model), per image, from one read of ``dataset``; ``Accuracy.top1`` holds it."""
    sums: dict[str, torch.Tensor | float] = dict.fromkeys(variants, 0.0)
    total, size = 0, len(dataset)
    for images, _ in iterate(dataset, batch_size, device):
        with reference():
            fp = model(images).flatten(1).double()
        for name, variant in variants.items():
            with variant():
                out = model(images).flatten(1).double()
            sums[name] = sums[name] + torch.nn.functional.cosine_similarity(out, fp, dim=1, eps=1e-12).sum()
        total += int(images.shape[0])
        report("images", total, size)
    if total == 0:
        raise ValueError("no readable images to evaluate")
    return {name: Accuracy(100.0 * float(value) / total, total) for name, value in sums.items()}


def quality_variants(model: nn.Module, dataset, quality: str, full_precision: Callable[[], ContextManager],
                     variants: Mapping[str, Callable[[], ContextManager]], batch_size: int = 100,
                     device: torch.device | str = "cpu") -> dict[str, Accuracy]:
    """``quality`` of every variant plus ``"fp"`` (the model under ``full_precision``): top-1 from
    ``top1_variants``, or feature cosine to the FP features (FP itself is 100 by definition)."""
    if quality == TOP1:
        return top1_variants(model, dataset, {"fp": full_precision, **variants}, batch_size, device)
    out = feature_cosine_variants(model, dataset, full_precision, variants, batch_size, device)
    n = next(iter(out.values())).n if out else len(dataset)
    return {"fp": Accuracy(100.0, n), **out}
