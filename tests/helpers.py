"""Builders for test inputs that would otherwise need downloads: image folders and timm weight files."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import timm
import torch
from PIL import Image
from safetensors.torch import save_file


def make_image_folder(root: str | Path, n_classes: int = 3, per_class: int = 4, size: int = 32,
                      corrupt: int = 0) -> Path:
    """Write ``root/{train,val}/class_<i>/*`` with ``per_class`` images per class in each part.

    Images alternate PNG and JPEG, each class has its own colour (so a model could tell them apart),
    and ``corrupt`` extra unreadable ``.JPEG`` files (random bytes) go into class_0 of train and of val.
    Deterministic. Returns ``root``.
    """
    root = Path(root)
    rng = np.random.default_rng(0)
    for part in ("train", "val"):
        for c in range(n_classes):
            folder = root / part / f"class_{c}"
            folder.mkdir(parents=True, exist_ok=True)
            colour = np.array([(60 * c) % 256, (100 + 40 * c) % 256, (200 - 30 * c) % 256], dtype=np.float64)
            for i in range(per_class):
                pixels = np.clip(colour + rng.normal(0, 20, (size, size, 3)), 0, 255).astype(np.uint8)
                suffix = ".png" if i % 2 == 0 else ".JPEG"
                Image.fromarray(pixels).save(folder / f"img_{i:03d}{suffix}")
        for k in range(corrupt):
            (root / part / "class_0" / f"broken_{k}.JPEG").write_bytes(rng.bytes(256))
    return root


def save_random_timm_model(name: str, path: str | Path, num_classes: int) -> Path:
    """A seeded random-init timm model's state dict, as .safetensors (or a torch file for .pth/.pt)."""
    path = Path(path)
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, num_classes=num_classes)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save(state, path)
    return path
