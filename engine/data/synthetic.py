"""Generated data for smoke tests and benchmarks, so a real-size run needs no download.

Two forms: ``write_image_folder`` writes an ImageNet-style folder of PNG/JPEG files (the real
decode path: ``--data FOLDER``), and ``synthetic_splits`` builds seeded random images in memory
at the model's input size (``--data synthetic``: no files, nothing to decode).
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch
from PIL import Image

from .splits import SYNTHETIC, DataError, Splits, TensorImages, imagenet_synset_index, normalize

if TYPE_CHECKING:
    from ..models import ModelInfo

SYNTHETIC_HELDOUT, SYNTHETIC_TEST = 100, 100   # in-memory split sizes: enough to exercise the report


def imagenet_synsets(n_classes: int, spread: bool = False) -> list[str]:
    """``n_classes`` real ImageNet synset ids in timm's output order: the first ones, or spread over all 1,000."""
    names = list(imagenet_synset_index())
    if not 1 <= n_classes <= len(names):
        raise DataError(f"ImageNet has {len(names)} synsets; cannot name {n_classes} classes with them")
    if not spread:
        return list(names[:n_classes])
    return [names[i] for i in np.linspace(0, len(names) - 1, n_classes).round().astype(int)]


def write_image_folder(root: str | Path, n_classes: int, per_class: int, size: int,
                       class_names: Sequence[str] | None = None, seed: int = 0) -> Path:
    """Write ``root/{train,val}/<class>/*`` with ``per_class`` images per class in each part; returns ``root``.

    Images alternate PNG and JPEG (both decoders are exercised) and each class has its own colour
    plus noise (a model could tell them apart). Deterministic for a given ``seed``.
    """
    names = list(class_names) if class_names is not None else [f"class_{c}" for c in range(n_classes)]
    if len(names) != n_classes or len(set(names)) != n_classes:
        raise DataError(f"need {n_classes} distinct class names, got {len(names)} ({len(set(names))} distinct)")
    if per_class < 1 or size < 1:
        raise DataError(f"per_class and size must be at least 1, got per_class={per_class} size={size}")
    root = Path(root)
    rng = np.random.default_rng(seed)
    for part in ("train", "val"):
        for c, name in enumerate(names):
            folder = root / part / name
            folder.mkdir(parents=True, exist_ok=True)
            colour = np.array([(60 * c) % 256, (100 + 40 * c) % 256, (200 - 30 * c) % 256], dtype=np.float64)
            for i in range(per_class):
                pixels = np.clip(colour + rng.normal(0, 20, (size, size, 3)), 0, 255).astype(np.uint8)
                suffix = ".png" if i % 2 == 0 else ".JPEG"
                Image.fromarray(pixels).save(folder / f"img_{i:03d}{suffix}")
    return root


def synthetic_splits(info: ModelInfo, calib_size: int, seed: int, heldout_size: int | None = None) -> Splits:
    """Uniform random pixels at the model's input size, normalized with its mean/std, random labels.

    One seeded draw is cut into calibration, held-out and test, so the three never share an image.
    Labels carry no signal: top-1 here measures the pipeline, not the model. A model without a
    classifier gets all-zero labels and no classes (nothing reads them).
    """
    n_heldout = SYNTHETIC_HELDOUT if heldout_size is None else heldout_size
    if n_heldout < 1:
        raise DataError(f"heldout_size must be at least 1, got {heldout_size}")
    counts = (calib_size, n_heldout, SYNTHETIC_TEST)
    generator = torch.Generator().manual_seed(seed)
    images = normalize(torch.rand((sum(counts), *info.input_size), generator=generator), info)
    if info.num_classes > 0:
        labels = torch.randint(0, info.num_classes, (sum(counts),), generator=generator)
    else:   # no classifier (num_classes=0): no labels to draw; runs measure feature similarity instead
        labels = torch.zeros(sum(counts), dtype=torch.long)
    parts, start = [], 0
    for count in counts:
        index = torch.arange(start, start + count)
        parts.append(TensorImages(images[start:start + count], labels[start:start + count], index))
        start += count
    return Splits(SYNTHETIC, *parts, tuple(info.input_size), tuple(info.mean), tuple(info.std), n_heldout,
                  SYNTHETIC_TEST, tuple(str(c) for c in range(info.num_classes)), heldout_source="builtin")
