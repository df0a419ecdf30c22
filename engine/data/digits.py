"""The built-in digits: sklearn's 1,797 8x8 digits at 16x16, cut into fixed, class-stratified splits.

Test and held-out are fixed originals enlarged by shifted, noisy copies; calibration is a seeded
draw of the train originals (copies fill up beyond them). The demo model ``digits-vit`` reads them.
"""
from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .splits import DIGITS, DataError, Splits, TensorImages, normalize, size_text

if TYPE_CHECKING:
    from ..models import ModelInfo

DIGITS_SIZE = 16
DIGITS_SPLIT_SEED = 1797      # constant: the digits splits never depend on the user's seed
DIGITS_N_TEST, DIGITS_N_HELDOUT = 450, 250     # originals; train gets the other 1,097
DIGITS_TEST_COPIES, DIGITS_HELDOUT_COPIES = 10, 4
DIGITS_NOISE = 0.03           # std of the additive noise of enlarged copies, images in [0, 1]


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


def digits_splits(info: ModelInfo, calib_size: int, seed: int, heldout_size: int | None) -> Splits:
    """Test: 450 originals x10 (4,500 images, one = 0.022 points); held-out: 250 originals x4 (1,000).

    ``heldout_size`` keeps the first items, which are distinct originals first (copy-major order).
    Calibration: ``calib_size`` train originals drawn without replacement by ``seed``; beyond the
    1,097 train originals, shifted/noisy copies of them fill up (never held-out or test images).
    """
    if tuple(info.input_size) != (1, DIGITS_SIZE, DIGITS_SIZE):
        raise DataError(f"the built-in digits are 1x16x16 images but the model {info.name} expects "
                        f"{size_text(info.input_size)}: give an image folder as data")
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
