"""Datasets and fixed splits: the built-in digits and ImageNet-style folders (DESIGN §6).

Three splits per dataset: calibration (seeded draw from train; what the search sees), held-out
(disjoint from calibration and test; watched during the search) and test (read only for the
final report). Items are ``(image_tensor, label)``.
"""
from __future__ import annotations

import functools
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, NamedTuple, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

if TYPE_CHECKING:
    from .models import ModelInfo

log = logging.getLogger(__name__)

DIGITS = "digits"
SYNTHETIC = "synthetic"      # seeded random images in memory (engine/synthetic.py): no files
DIGITS_SIZE = 16
DIGITS_SPLIT_SEED = 1797      # constant: the digits splits never depend on the user's seed
DIGITS_N_TEST, DIGITS_N_HELDOUT = 450, 250     # originals; train gets the other 1,097
DIGITS_TEST_COPIES, DIGITS_HELDOUT_COPIES = 10, 4
DIGITS_NOISE = 0.03           # std of the additive noise of enlarged copies, images in [0, 1]
MAX_DECODE_WORKERS = 8       # JPEG decoding processes per folder read; more rarely pays at batch 100
MIN_IMAGES_FOR_WORKERS = 200 # below, starting the processes (~0.2 s each) costs more than decoding
IMAGENET_CLASSES = 1000
HELDOUT_SOURCES = ("train", "val")   # where a folder's held-out split is drawn from
CLASS_MAP_SORTED, CLASS_MAP_SYNSETS = "sorted", "imagenet-synsets"   # how class folders map to model outputs
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp"}


class DataError(Exception):
    """The data cannot be used as asked; the message names the path or the numbers involved."""


class TensorImages(Dataset):
    """Precomputed, normalized images; ``originals[i]`` names the source of item i (the load_digits index
    for the digits, the position among the readable images for a decoded folder)."""

    def __init__(self, images: Tensor, labels: Tensor, originals: Tensor) -> None:
        self.images, self.labels, self.originals = images, labels, originals

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        return self.images[index], int(self.labels[index])


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


@dataclass
class Splits:
    name: str                    # "digits" or the folder path
    calibration: Dataset
    heldout: Dataset
    test: Dataset
    input_size: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    n_heldout_originals: int
    n_test_originals: int
    classes: tuple[str, ...] = ()
    heldout_source: str = "train"         # train/ or val/ of a folder; "builtin": digits, synthetic
    class_map: str = CLASS_MAP_SORTED     # sorted: labels are class positions; imagenet-synsets: ImageNet indices

    @property
    def num_classes(self) -> int:
        """The outputs the labels address: ImageNet's 1,000 for synset folders (a subset may be present)."""
        return IMAGENET_CLASSES if self.class_map == CLASS_MAP_SYNSETS else len(self.classes)

    def describe(self) -> dict[str, Any]:
        return {"dataset": self.name, "n_calibration": len(self.calibration), "n_heldout": len(self.heldout),
                "n_test": len(self.test), "input_size": list(self.input_size), "mean": list(self.mean),
                "std": list(self.std), "heldout_source": self.heldout_source, "class_map": self.class_map}


def load_splits(data: str | Path | None, info: ModelInfo, calib_size: int = 1000, seed: int = 0,
                heldout_size: int | None = None, heldout_from: str = "train") -> Splits:
    """``data`` None -> the built-in digits; ``"synthetic"`` -> random images in memory; else a folder
    with ``train/<class>/*`` and ``val/<class>/*`` (engine/folders.py).

    ``seed`` only drives which images are drawn for calibration (and, for folders, held-out);
    ``heldout_from`` ("train" or "val") is where a folder's held-out split comes from.
    """
    if calib_size < 1:
        raise DataError(f"calibration needs at least 1 image, got calib_size={calib_size}")
    builtin = data is None or str(data) in (DIGITS, SYNTHETIC)
    if builtin and heldout_from != "train":
        raise DataError(f"heldout_from={heldout_from!r} applies to image folders; {data or DIGITS} has fixed splits")
    if data is None or str(data) == DIGITS:
        return _digits_splits(info, calib_size, seed, heldout_size)
    if str(data) == SYNTHETIC:
        from .synthetic import synthetic_splits   # both build on this module

        return synthetic_splits(info, calib_size, seed, heldout_size)
    from .folders import folder_splits

    return folder_splits(Path(data).expanduser(), info, calib_size, seed, heldout_size, heldout_from)


def check_compatible(splits: Splits, info: ModelInfo) -> None:
    """The data's classes and image size must be the model's, else labels would be meaningless. A model
    without a classifier (num_classes=0) reads no labels, so any classes (or none) will do."""
    if info.num_classes > 0 and splits.num_classes != info.num_classes:
        synsets = imagenet_synset_index()
        others = [name for name in splits.classes if name not in synsets]
        mixed = f" ({len(others)} of {len(splits.classes)} are not, e.g. {others[0]})" if 0 < len(others) < len(
            splits.classes) else ""
        raise DataError(f"the data {splits.name} has {splits.num_classes} classes but the model {info.name} has "
                        f"{info.num_classes} outputs; class folders map to outputs in sorted order, or through "
                        f"timm's ImageNet index when every folder is an ImageNet synset id such as n01440764{mixed} "
                        f"and the model has {IMAGENET_CLASSES} outputs")
    if tuple(splits.input_size) != tuple(info.input_size):
        raise DataError(f"the data {splits.name} gives {_size(splits.input_size)} images but the model {info.name} "
                        f"expects {_size(info.input_size)}")


@functools.lru_cache(maxsize=1)
def imagenet_synset_index() -> dict[str, int]:
    """ImageNet-1k synset id -> model output index, from timm's metadata (``label_names()`` order)."""
    from timm.data import ImageNetInfo

    return {name: index for index, name in enumerate(ImageNetInfo().label_names())}


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


def _size(input_size: Sequence[int]) -> str:
    return "x".join(str(int(v)) for v in input_size)


# --- built-in digits -------------------------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def digits_images() -> tuple[Tensor, Tensor]:
    """All 1,797 sklearn digits upsampled to 16x16 (bilinear), values in [0, 1], and labels (cached: read only)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    images = F.interpolate(images, size=DIGITS_SIZE, mode="bilinear", align_corners=False).clamp(0, 1)
    return images, torch.tensor(digits.target, dtype=torch.long)


@functools.lru_cache(maxsize=1)
def digits_split_indices() -> dict[str, np.ndarray]:
    """Fixed, class-stratified split of the originals: {"train", "heldout", "test"} -> sorted indices."""
    labels = digits_images()[1].numpy()
    order = np.random.default_rng(DIGITS_SPLIT_SEED).permutation(len(labels))
    rank = np.empty(len(order))
    for c in np.unique(labels):  # position within its class, so every prefix of ``order`` is stratified
        members = np.flatnonzero(labels[order] == c)
        rank[members] = (np.arange(len(members)) + 0.5) / len(members)
    order = order[np.argsort(rank, kind="stable")]
    n_test_heldout = DIGITS_N_TEST + DIGITS_N_HELDOUT
    return {"test": np.sort(order[:DIGITS_N_TEST]), "heldout": np.sort(order[DIGITS_N_TEST:n_test_heldout]),
            "train": np.sort(order[n_test_heldout:])}


def shift_images(images: Tensor, dx: Tensor, dy: Tensor) -> Tensor:
    """Shift each image by integer pixels (dx right, dy down), filling with 0 (the background)."""
    pad = int(max(dx.abs().max(), dy.abs().max(), 0))
    if pad == 0:
        return images.clone()
    padded = F.pad(images, (pad, pad, pad, pad))
    out = torch.empty_like(images)
    height, width = images.shape[-2:]
    for sx, sy in {(int(x), int(y)) for x, y in zip(dx, dy)}:
        chosen = (dx == sx) & (dy == sy)
        out[chosen] = padded[chosen, :, pad - sy:pad - sy + height, pad - sx:pad - sx + width]
    return out


def enlarge(images: Tensor, copies: int, generator: torch.Generator) -> Tensor:
    """``copies`` versions, copy-major: the originals, then copies shifted by ±1 px with light noise."""
    versions = [images]
    for _ in range(copies - 1):
        dx, dy = torch.randint(-1, 2, (2, len(images)), generator=generator)
        noise = DIGITS_NOISE * torch.randn(images.shape, generator=generator)
        versions.append((shift_images(images, dx, dy) + noise).clamp(0, 1))
    return torch.cat(versions)


def _digits_dataset(indices: np.ndarray, copies: int, generator: torch.Generator, info: ModelInfo) -> TensorImages:
    images, labels = digits_images()
    index = torch.as_tensor(indices, dtype=torch.long)
    enlarged = enlarge(images[index], copies, generator)
    return TensorImages(normalize(enlarged, info), labels[index].repeat(copies), index.repeat(copies))


def normalize(images: Tensor, info: ModelInfo) -> Tensor:
    """Images in [0, 1] -> the model's input statistics, per channel."""
    mean = torch.tensor(info.mean, dtype=torch.float32).view(-1, 1, 1)
    std = torch.tensor(info.std, dtype=torch.float32).view(-1, 1, 1)
    return ((images - mean) / std).contiguous()


def _digits_splits(info: ModelInfo, calib_size: int, seed: int, heldout_size: int | None) -> Splits:
    """Test: 450 originals x10 (4,500 images, one = 0.022 points); held-out: 250 originals x4 (1,000).

    ``heldout_size`` keeps the first items, which are distinct originals first (copy-major order).
    Calibration: ``calib_size`` train originals drawn without replacement by ``seed``; beyond the
    1,097 train originals, shifted/noisy copies of them fill up (never held-out or test images).
    """
    if tuple(info.input_size) != (1, DIGITS_SIZE, DIGITS_SIZE):
        raise DataError(f"the built-in digits are 1x16x16 images but the model {info.name} expects "
                        f"{_size(info.input_size)}: give an image folder as data")
    split = digits_split_indices()
    test = _digits_dataset(split["test"], DIGITS_TEST_COPIES, torch.Generator().manual_seed(DIGITS_SPLIT_SEED), info)
    heldout = _digits_dataset(split["heldout"], DIGITS_HELDOUT_COPIES,
                              torch.Generator().manual_seed(DIGITS_SPLIT_SEED + 1), info)
    n_heldout_originals = DIGITS_N_HELDOUT
    if heldout_size is not None:
        if not 1 <= heldout_size <= len(heldout):
            raise DataError(f"heldout_size must be 1..{len(heldout)} for the digits, got {heldout_size}")
        heldout = TensorImages(heldout.images[:heldout_size], heldout.labels[:heldout_size],
                               heldout.originals[:heldout_size])
        n_heldout_originals = min(heldout_size, DIGITS_N_HELDOUT)

    train = np.random.default_rng(seed).permutation(split["train"])
    rounds = math.ceil(calib_size / len(train))
    calibration = _digits_dataset(train, rounds, torch.Generator().manual_seed(seed), info)
    calibration = TensorImages(calibration.images[:calib_size], calibration.labels[:calib_size],
                               calibration.originals[:calib_size])
    return Splits(DIGITS, calibration, heldout, test, (1, DIGITS_SIZE, DIGITS_SIZE), tuple(info.mean),
                  tuple(info.std), n_heldout_originals, DIGITS_N_TEST, tuple(str(d) for d in range(10)),
                  heldout_source="builtin")
