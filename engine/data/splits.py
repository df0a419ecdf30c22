"""The shared types of every dataset: the fixed splits, the in-memory images, the data's errors and names.

Three splits per dataset: calibration (seeded draw from train; what the search sees), held-out
(disjoint from calibration and test; watched during the search) and test (read only for the
final report). Items are ``(image_tensor, label)``. The readers (``digits``, ``folders``,
``synthetic``) build on this module; ``load`` picks one.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import torch
from torch import Tensor
from torch.utils.data import Dataset

if TYPE_CHECKING:
    from ..models import ModelInfo

DIGITS = "digits"
SYNTHETIC = "synthetic"      # seeded random images in memory (synthetic.py): no files
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


@functools.lru_cache(maxsize=1)
def imagenet_synset_index() -> dict[str, int]:
    """ImageNet-1k synset id -> model output index, from timm's metadata (``label_names()`` order)."""
    from timm.data import ImageNetInfo

    return {name: index for index, name in enumerate(ImageNetInfo().label_names())}


def normalize(images: Tensor, info: ModelInfo) -> Tensor:
    """Images in [0, 1] -> the model's input statistics, per channel."""
    mean = torch.tensor(info.mean, dtype=torch.float32).view(-1, 1, 1)
    std = torch.tensor(info.std, dtype=torch.float32).view(-1, 1, 1)
    return ((images - mean) / std).contiguous()


def size_text(input_size: Sequence[int]) -> str:
    """``(3, 224, 224)`` -> ``3x224x224``, for messages."""
    return "x".join(str(int(v)) for v in input_size)
