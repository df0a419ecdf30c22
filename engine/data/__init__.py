"""Datasets and fixed splits (DESIGN §6): the built-in digits, ImageNet-style folders, generated images.

Rooms, each below the ones that use it: ``splits`` (the shared types: ``Splits``, ``TensorImages``,
``DataError``, the datasets' names and ImageNet's class map), ``batches`` (reading a split: batches,
decode workers, unreadable images), ``digits``, ``folders`` and ``synthetic`` (one reader each), and
``load`` (which reader ``--data`` names, and whether the data fits the model).
"""
from .batches import (MAX_DECODE_WORKERS, MIN_IMAGES_FOR_WORKERS, ImageFiles, Unreadable, calibration_batches,
                      decode_workers, first_images, iterate, materialize)
from .digits import digits_images, digits_split_indices, digits_splits
from .load import check_compatible, load_splits
from .splits import (CLASS_MAP_SORTED, CLASS_MAP_SYNSETS, DIGITS, HELDOUT_SOURCES, IMAGE_EXTENSIONS, IMAGENET_CLASSES,
                     SYNTHETIC, DataError, Splits, TensorImages, imagenet_synset_index, normalize)

__all__ = [
    "CLASS_MAP_SORTED", "CLASS_MAP_SYNSETS", "DIGITS", "HELDOUT_SOURCES", "IMAGE_EXTENSIONS", "IMAGENET_CLASSES",
    "MAX_DECODE_WORKERS", "MIN_IMAGES_FOR_WORKERS", "SYNTHETIC", "DataError", "ImageFiles", "Splits",
    "TensorImages", "Unreadable", "calibration_batches", "check_compatible", "decode_workers", "digits_images",
    "digits_split_indices", "digits_splits", "first_images", "imagenet_synset_index", "iterate", "load_splits",
    "materialize", "normalize",
]
