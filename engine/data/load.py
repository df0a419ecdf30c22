"""Which dataset ``--data`` names, and whether it fits the model (DESIGN §6).

``None`` or ``"digits"``: the built-in digits; ``"synthetic"``: seeded random images in memory;
anything else: an ImageNet-style folder with ``train/<class>/*`` and ``val/<class>/*``.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .digits import digits_splits
from .folders import folder_splits
from .splits import DIGITS, IMAGENET_CLASSES, SYNTHETIC, DataError, Splits, imagenet_synset_index, size_text
from .synthetic import synthetic_splits

if TYPE_CHECKING:
    from ..models import ModelInfo


def load_splits(data: str | Path | None, info: ModelInfo, calib_size: int = 1000, seed: int = 0,
                heldout_size: int | None = None, heldout_from: str = "train") -> Splits:
    """``data`` None -> the built-in digits; ``"synthetic"`` -> random images in memory; else a folder
    with ``train/<class>/*`` and ``val/<class>/*`` (folders.py).

    ``seed`` only drives which images are drawn for calibration (and, for folders, held-out);
    ``heldout_from`` ("train" or "val") is where a folder's held-out split comes from.
    """
    if calib_size < 1:
        raise DataError(f"calibration needs at least 1 image, got calib_size={calib_size}")
    builtin = data is None or str(data) in (DIGITS, SYNTHETIC)
    if builtin and heldout_from != "train":
        raise DataError(f"heldout_from={heldout_from!r} applies to image folders; {data or DIGITS} has fixed splits")
    if data is None or str(data) == DIGITS:
        return digits_splits(info, calib_size, seed, heldout_size)
    if str(data) == SYNTHETIC:
        return synthetic_splits(info, calib_size, seed, heldout_size)
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
        raise DataError(f"the data {splits.name} gives {size_text(splits.input_size)} images but the model {info.name} "
                        f"expects {size_text(info.input_size)}")

