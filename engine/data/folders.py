"""ImageNet-style folders (``train/<class>/*``, ``val/<class>/*``) as fixed splits (DESIGN §6).

Class folders map to model outputs in sorted order, except ImageNet synset folders (``n01440764``,
...) with a 1,000-output model: those map through timm's ImageNet metadata, so a folder holding a
subset of ImageNet's classes still labels each image with the right output.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
from PIL import Image
from torch import Tensor

from .batches import ImageFiles
from .splits import (CLASS_MAP_SORTED, CLASS_MAP_SYNSETS, HELDOUT_SOURCES, IMAGE_EXTENSIONS, IMAGENET_CLASSES,
                     DataError, Splits, imagenet_synset_index)

if TYPE_CHECKING:
    from ..models import ModelInfo

log = logging.getLogger(__name__)

DEFAULT_HELDOUT = 1000
VAL_HELDOUT_STREAM = 0x7A1   # the val/ draw's RNG stream: independent of the train/ draw of the same seed


def class_labels(classes: Sequence[str], num_outputs: int) -> tuple[dict[str, int], str]:
    """Folder name -> label, and how they were mapped (``CLASS_MAP_SYNSETS`` or ``CLASS_MAP_SORTED``)."""
    synsets = imagenet_synset_index()
    if num_outputs == IMAGENET_CLASSES and all(name in synsets for name in classes):
        return {name: synsets[name] for name in classes}, CLASS_MAP_SYNSETS
    return {name: i for i, name in enumerate(sorted(classes))}, CLASS_MAP_SORTED


def eval_transform(info: ModelInfo) -> Callable[[Image.Image], Tensor]:
    """timm's evaluation transform (resize, center crop, normalize) for the model's data config."""
    from timm.data import create_transform

    return create_transform(input_size=tuple(info.input_size), interpolation=info.interpolation, mean=info.mean,
                            std=info.std, crop_pct=info.crop_pct, crop_mode="center", is_training=False)


def folder_splits(root: Path, info: ModelInfo, calib_size: int, seed: int, heldout_size: int | None = None,
                  heldout_from: str = "train") -> Splits:
    """Calibration: a seeded draw from train/. Held-out, by ``heldout_from``:

    - ``train`` (default): a second seeded draw from train/, disjoint from calibration; test: all of val/.
      Calibration is cut (with a warning) so that at least one training image is left for held-out.
    - ``val``: a seeded draw from val/; test: the rest of val/, in order. For users whose train/ is the
      FP model's own training data, on which its accuracy says little.

    Held-out defaults to min(1000, what is left) for train/ and min(1000, half) for val/.
    """
    if heldout_from not in HELDOUT_SOURCES:
        raise DataError(f"heldout_from must be one of {', '.join(HELDOUT_SOURCES)}, got {heldout_from!r}")
    layout = f"expected {root}/train/<class>/*.JPEG and {root}/val/<class>/*.JPEG"
    if not root.is_dir():
        raise DataError(f"data folder not found: {root} ({layout})")
    for part in ("train", "val"):
        if not (root / part).is_dir():
            raise DataError(f"{root} has no {part}/ folder ({layout})")
    classes = sorted(d.name for d in os.scandir(root / "train") if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise DataError(f"no class folders in {root / 'train'} ({layout})")
    labels, class_map = class_labels(classes, info.num_classes)
    train, val = _list_images(root / "train", labels), _list_images(root / "val", labels)
    for part, samples in (("train", train), ("val", val)):
        if not samples:
            raise DataError(f"no images found in {root / part} (extensions: {', '.join(sorted(IMAGE_EXTENSIONS))})")
    transform, mode = eval_transform(info), "L" if info.input_size[0] == 1 else "RGB"

    def files(samples: list[tuple[Path, int]], indices: Sequence[int]) -> ImageFiles:
        return ImageFiles([samples[i] for i in indices], transform, mode)

    if heldout_from == "train":
        calibration, heldout = _two_draws(train, calib_size, heldout_size, seed, root / "train")
        test = list(range(len(val)))
        heldout_files, test_files = files(train, heldout), files(val, test)
    else:
        n_calib = _calibration_count(calib_size, len(train), len(train), root / "train")
        calibration = np.random.default_rng(seed).permutation(len(train))[:n_calib]
        heldout, test = _val_draw(len(val), heldout_size, seed, root / "val")
        heldout_files, test_files = files(val, heldout), files(val, test)
    return Splits(str(root), files(train, calibration), heldout_files, test_files, tuple(info.input_size),
                  tuple(info.mean), tuple(info.std), len(heldout), len(test), tuple(classes),
                  heldout_source=heldout_from, class_map=class_map)


def _calibration_count(calib_size: int, available: int, n_train: int, train_dir: Path) -> int:
    n_calib = min(calib_size, available)
    if n_calib < calib_size:
        log.warning("%s has %d training images: calibration uses %d instead of %d", train_dir, n_train, n_calib,
                    calib_size)
    return n_calib


def _two_draws(train: list, calib_size: int, heldout_size: int | None, seed: int,
               train_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """Calibration and held-out indices into ``train``: one seeded permutation, cut in two."""
    if len(train) < 2:
        raise DataError(f"{train_dir} has 1 image; calibration and held-out need at least 2")
    n_calib = _calibration_count(calib_size, len(train) - 1, len(train), train_dir)
    left = len(train) - n_calib
    n_heldout = min(DEFAULT_HELDOUT, left) if heldout_size is None else heldout_size
    if not 1 <= n_heldout <= left:
        raise DataError(f"heldout_size must be 1..{left} ({len(train)} training images, {n_calib} for "
                        f"calibration), got {heldout_size}")
    order = np.random.default_rng(seed).permutation(len(train))
    return order[:n_calib], order[n_calib:n_calib + n_heldout]


def _val_draw(n_val: int, heldout_size: int | None, seed: int, val_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """Held-out indices (a seeded draw) and test indices (the rest, in order) into val/."""
    if n_val < 2:
        raise DataError(f"{val_dir} has {n_val} image; a held-out split from val/ and a test split need at least 2")
    n_heldout = min(DEFAULT_HELDOUT, n_val // 2) if heldout_size is None else heldout_size
    if not 1 <= n_heldout <= n_val - 1:
        raise DataError(f"heldout_size must be 1..{n_val - 1} ({n_val} images in {val_dir}, at least one left for "
                        f"test), got {heldout_size}")
    heldout = np.random.default_rng([seed, VAL_HELDOUT_STREAM]).permutation(n_val)[:n_heldout]
    return heldout, np.setdiff1d(np.arange(n_val), heldout)


def _list_images(folder: Path, labels: dict[str, int]) -> list[tuple[Path, int]]:
    samples = []
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if not entry.is_dir() or entry.name.startswith("."):
            continue
        if entry.name not in labels:
            raise DataError(f"{folder / entry.name} is a class that {folder.parent / 'train'} does not have")
        files = sorted(f.name for f in os.scandir(entry.path) if f.is_file() and not f.name.startswith(".")
                       and os.path.splitext(f.name)[1].lower() in IMAGE_EXTENSIONS)
        samples += [(Path(entry.path) / name, labels[entry.name]) for name in files]
    return samples
