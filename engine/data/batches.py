"""Reading a split: batches on a device in dataset order, image files decoded in worker processes,
unreadable images dropped and counted.
"""
from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Callable, Iterator, NamedTuple, Sequence

import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from .splits import Splits, TensorImages

log = logging.getLogger(__name__)

MAX_DECODE_WORKERS = 8        # JPEG decoding processes per folder read; more rarely pays at batch 100
MIN_IMAGES_FOR_WORKERS = 200  # below, starting the processes costs more than decoding


class Unreadable(NamedTuple):
    """An image file that could not be decoded. Returned, not recorded: decoding may run in a
    DataLoader worker process, so the reason travels back to ``iterate`` inside the batch."""
    path: str
    reason: str


class ImageFiles(Dataset):
    """Lazily read image files; an unreadable file yields ``Unreadable`` (``iterate`` drops it and counts it)."""

    def __init__(self, samples: Sequence[tuple[Path, int]], transform: Callable[[Image.Image], Tensor],
                 mode: str) -> None:
        self.samples, self.transform, self.mode = list(samples), transform, mode
        self.skipped = 0                        # unreadable images in the last full pass
        self.unreadable: dict[str, str] = {}    # path -> reason, over every full pass so far

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Tensor, int] | Unreadable:
        path, label = self.samples[index]
        try:
            with Image.open(path) as image:
                return self.transform(image.convert(self.mode)), label
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            return Unreadable(str(path), str(exc) or type(exc).__name__)


def decode_workers(dataset: Dataset, batch_size: int) -> int:
    """Worker processes for ``iterate``: several for image files (decoding, not the model, is the
    bottleneck on a GPU), none for a few files or anything else (in-memory data, or state that must
    stay in this process)."""
    if not isinstance(dataset, ImageFiles) or len(dataset) < MIN_IMAGES_FOR_WORKERS:
        return 0
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return min(MAX_DECODE_WORKERS, cpus - 1, math.ceil(len(dataset) / batch_size))   # one core left for the model


def iterate(dataset: Dataset, batch_size: int = 100, device: torch.device | str = "cpu",
            num_workers: int | None = None) -> Iterator[tuple[Tensor, Tensor]]:
    """Batches ``(images, labels)`` on ``device`` in dataset order, unreadable images dropped.

    Image files decode in ``num_workers`` processes (default ``decode_workers``) into pinned memory
    when ``device`` is CUDA, so the copies to the device do not block.
    """
    device = torch.device(device)
    if isinstance(dataset, TensorImages):
        for start in range(0, len(dataset), batch_size):
            images, labels = dataset.images[start:start + batch_size], dataset.labels[start:start + batch_size]
            yield (images.to(device, non_blocking=images.is_pinned()),
                   labels.to(device, non_blocking=labels.is_pinned()))
        return
    workers = decode_workers(dataset, batch_size) if num_workers is None else num_workers
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers, collate_fn=_collate,
                        pin_memory=device.type == "cuda")
    unreadable: dict[str, str] = {}
    for images, labels, failed in loader:
        unreadable.update(failed)
        if len(labels):
            yield images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
    if isinstance(dataset, ImageFiles):
        _report_unreadable(dataset, unreadable)


def materialize(dataset: Dataset, batch_size: int = 100, device: torch.device | str = "cpu",
                num_workers: int | None = None) -> TensorImages:
    """``dataset`` decoded once into host memory (pinned when ``device`` is CUDA), in order, unreadable
    images dropped: for a split that is read many times, like the held-out after every block step."""
    if isinstance(dataset, TensorImages):
        return dataset
    pin = torch.device(device).type == "cuda"
    images = labels = None
    n = 0
    for batch, batch_labels in iterate(dataset, batch_size, "cpu", num_workers):
        if images is None:   # filled in place: no second copy of the whole split while concatenating
            images = torch.empty((len(dataset), *batch.shape[1:]), dtype=batch.dtype, pin_memory=pin)
            labels = torch.empty(len(dataset), dtype=batch_labels.dtype, pin_memory=pin)
        images[n:n + len(batch)], labels[n:n + len(batch)] = batch, batch_labels
        n += len(batch)
    if images is None:
        return TensorImages(torch.zeros(0), torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long))
    return TensorImages(images[:n], labels[:n], torch.arange(n))


def _report_unreadable(dataset: ImageFiles, unreadable: dict[str, str]) -> None:
    dataset.skipped = len(unreadable)
    dataset.unreadable.update(unreadable)
    if unreadable:
        examples = "; ".join(f"{p}: {r}" for p, r in list(unreadable.items())[:3])
        log.warning("skipped %d unreadable image(s) of %d (%s)", len(unreadable), len(dataset), examples)


def calibration_batches(splits: Splits, batch_size: int = 100, device: torch.device | str = "cpu",
                        num_workers: int | None = None) -> list[Tensor]:
    """The calibration images (labels dropped: the search is label-free), batched, on ``device``."""
    return [images for images, _ in iterate(splits.calibration, batch_size, device, num_workers)]


def first_images(batches: Sequence[Tensor], limit: int | None) -> list[Tensor]:
    """The first ``limit`` images of ``batches``, batches kept whole where they fit (None = all)."""
    kept, left = [], math.inf if limit is None else limit
    for images in batches:
        if left <= 0:
            break
        kept.append(images[:left] if left < len(images) else images)
        left -= len(kept[-1])
    return kept


def _collate(items: list[tuple[Tensor, int] | Unreadable]) -> tuple[Tensor, Tensor, dict[str, str]]:
    """One batch of the readable items, and ``path -> reason`` of the unreadable ones."""
    good = [item for item in items if not isinstance(item, Unreadable)]
    failed = {item.path: item.reason for item in items if isinstance(item, Unreadable)}
    if not good:
        return torch.zeros(0), torch.zeros(0, dtype=torch.long), failed
    return torch.stack([image for image, _ in good]), torch.tensor([label for _, label in good]), failed

