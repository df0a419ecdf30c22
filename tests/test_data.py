"""engine.data: fixed digits splits, ImageNet-style folders, unreadable images, compatibility checks."""
from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import pytest
import torch

from engine.data import (MIN_IMAGES_FOR_WORKERS, DataError, ImageFiles, Splits, TensorImages,
                         calibration_batches, check_compatible, decode_workers, digits_images, digits_split_indices,
                         iterate, load_splits, materialize)
from engine.models import ModelInfo
from helpers import make_image_folder

RGB24 = ModelInfo(name="tiny", source="random-init", weights_sha256="", input_size=(3, 24, 24),
                  mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), num_classes=3)


def _originals(dataset) -> set[int]:
    return set(dataset.originals.tolist())


def test_digits_counts(digits_splits: Splits) -> None:
    s = digits_splits
    assert (len(s.calibration), len(s.heldout), len(s.test)) == (1000, 1000, 4500)
    assert (s.n_heldout_originals, s.n_test_originals) == (250, 450)
    assert 100 / len(s.test) <= 0.025  # one test image moves top-1 by at most 0.025 points
    assert s.input_size == (1, 16, 16) and s.num_classes == 10
    assert s.calibration.images.shape == (1000, 1, 16, 16)
    assert json.loads(json.dumps(s.describe()))["n_test"] == 4500


def test_digits_splits_disjoint_by_original(digits_splits: Splits) -> None:
    split = {k: set(v.tolist()) for k, v in digits_split_indices().items()}
    assert (len(split["test"]), len(split["heldout"])) == (450, 250)
    assert not (split["test"] & split["heldout"]) and not (split["test"] & split["train"])
    assert not (split["heldout"] & split["train"])
    assert split["test"] | split["heldout"] | split["train"] == set(range(1797))
    assert _originals(digits_splits.test) == split["test"]
    assert _originals(digits_splits.heldout) == split["heldout"]
    assert _originals(digits_splits.calibration) <= split["train"]
    # every class is in the test split in proportion (stratified)
    labels = digits_images()[1]
    counts = torch.bincount(labels[torch.as_tensor(sorted(split["test"]))], minlength=10)
    assert counts.min() >= 40


def test_digits_test_copies_are_shifted_noisy_versions(digits_splits: Splits) -> None:
    test = digits_splits.test
    images, labels = digits_images()
    index = torch.as_tensor(digits_split_indices()["test"])
    clean = (images[index] - 0.305) / 0.319
    assert torch.allclose(test.images[:450], clean, atol=1e-6)  # copy 0 is the original
    assert torch.equal(test.labels, labels[index].repeat(10))
    assert not torch.allclose(test.images[450:900], clean, atol=0.1)


def test_digits_fixed_splits_do_not_depend_on_seed(demo_model) -> None:
    _, info = demo_model
    a, b = load_splits(None, info, seed=0), load_splits(None, info, seed=7)
    assert torch.equal(a.test.images, b.test.images) and torch.equal(a.heldout.images, b.heldout.images)


def test_digits_calibration_is_seeded(demo_model, digits_splits: Splits) -> None:
    _, info = demo_model
    same = load_splits(None, info, seed=0)
    other = load_splits(None, info, seed=1)
    assert torch.equal(same.calibration.images, digits_splits.calibration.images)
    assert not torch.equal(other.calibration.originals, digits_splits.calibration.originals)
    assert len(set(digits_splits.calibration.originals.tolist())) == 1000  # without replacement


def test_digits_calibration_larger_than_train_uses_copies_of_train(demo_model) -> None:
    _, info = demo_model
    splits = load_splits(None, info, calib_size=2500, seed=3)
    train = set(digits_split_indices()["train"].tolist())
    assert len(splits.calibration) == 2500
    assert _originals(splits.calibration) == train
    assert len(set(splits.calibration.originals[:len(train)].tolist())) == len(train)


def test_digits_heldout_size_keeps_distinct_originals_first(demo_model) -> None:
    _, info = demo_model
    splits = load_splits(None, info, heldout_size=200)
    assert len(splits.heldout) == 200 and len(_originals(splits.heldout)) == 200
    with pytest.raises(DataError, match="heldout_size"):
        load_splits(None, info, heldout_size=5000)


def test_digits_reject_a_model_of_another_input_size() -> None:
    with pytest.raises(DataError, match="1x16x16.*3x24x24"):
        load_splits(None, RGB24)


def test_iterate_and_calibration_batches(digits_splits: Splits) -> None:
    batches = list(iterate(digits_splits.test, batch_size=1000))
    assert [len(labels) for _, labels in batches] == [1000] * 4 + [500]
    assert torch.equal(torch.cat([images for images, _ in batches]), digits_splits.test.images)
    calib = calibration_batches(digits_splits, batch_size=100)
    assert len(calib) == 10 and all(b.shape == (100, 1, 16, 16) for b in calib)


def test_image_folder_splits_skip_unreadable_images(image_folder: Path, caplog) -> None:
    splits = load_splits(image_folder, RGB24, calib_size=6, seed=0)
    assert splits.classes == ("class_0", "class_1", "class_2") and splits.name == str(image_folder)
    assert (len(splits.calibration), len(splits.heldout), len(splits.test)) == (6, 7, 13)
    calib = {p for p, _ in splits.calibration.samples}
    assert not calib & {p for p, _ in splits.heldout.samples}

    with caplog.at_level(logging.WARNING, logger="engine.data.batches"):
        batches = list(iterate(splits.test, batch_size=5))
    labels = torch.cat([lab for _, lab in batches])
    assert len(labels) == 12 and sorted(labels.tolist()) == [0] * 4 + [1] * 4 + [2] * 4
    assert all(images.shape[1:] == (3, 24, 24) for images, _ in batches)
    assert splits.test.skipped == 1
    assert sum("skipped 1 unreadable" in r.getMessage() and "broken_0" in r.getMessage() for r in caplog.records) == 1

    seen = sum(len(lab) for ds in (splits.calibration, splits.heldout) for _, lab in iterate(ds, batch_size=4))
    assert seen == 12 and splits.calibration.skipped + splits.heldout.skipped == 1


def test_image_folder_batch_of_only_unreadable_images_is_dropped(image_folder: Path) -> None:
    splits = load_splits(image_folder, RGB24, calib_size=6)
    batches = list(iterate(splits.test, batch_size=1))
    assert len(batches) == 12 and splits.test.skipped == 1


def test_decode_workers_keep_order_and_report_unreadable_images(image_folder: Path, caplog) -> None:
    test = load_splits(image_folder, RGB24, calib_size=6).test
    in_process = list(iterate(test, batch_size=3, num_workers=0))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="engine.data.batches"):
        in_workers = list(iterate(test, batch_size=3, num_workers=2))
    assert len(in_workers) == len(in_process) == 5
    for (images, labels), (expected_images, expected_labels) in zip(in_workers, in_process):
        assert torch.equal(images, expected_images) and torch.equal(labels, expected_labels)
    broken = str(image_folder / "val" / "class_0" / "broken_0.JPEG")
    assert test.skipped == 1 and list(test.unreadable) == [broken]
    assert sum("skipped 1 unreadable" in r.getMessage() and broken in r.getMessage() for r in caplog.records) == 1


def test_decode_workers_only_for_enough_image_files(image_folder: Path, digits_splits: Splits) -> None:
    files = load_splits(image_folder, RGB24, calib_size=6).test
    assert decode_workers(files, batch_size=4) == 0                 # 13 files: processes would cost more
    many = ImageFiles(files.samples * MIN_IMAGES_FOR_WORKERS, files.transform, files.mode)
    cpus = len(os.sched_getaffinity(0))
    assert decode_workers(many, batch_size=100) == min(8, cpus - 1)   # one core left for the model
    assert decode_workers(many, batch_size=len(many)) == min(1, cpus - 1)   # one batch: one worker is enough
    assert decode_workers(digits_splits.test, batch_size=100) == 0  # already in memory


def test_materialize_decodes_once_into_the_same_batches(image_folder: Path, digits_splits: Splits) -> None:
    test = load_splits(image_folder, RGB24, calib_size=6).test
    decoded = materialize(test, batch_size=4)
    assert isinstance(decoded, TensorImages) and len(decoded) == 12 and test.skipped == 1
    images, labels = (torch.cat(parts) for parts in zip(*iterate(test, batch_size=4)))
    assert torch.equal(decoded.images, images) and torch.equal(decoded.labels, labels)
    assert materialize(digits_splits.test) is digits_splits.test   # in memory already: no copy


def test_image_folder_draws_are_seeded(image_folder: Path) -> None:
    def calib(seed: int) -> list:
        return [p for p, _ in load_splits(image_folder, RGB24, calib_size=6, seed=seed).calibration.samples]

    assert calib(0) == calib(0)
    assert calib(0) != calib(1)


def test_image_folder_small_train_clamps_calibration(image_folder: Path, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="engine.data.folders"):
        splits = load_splits(image_folder, RGB24)  # calib_size=1000 > 13 training files
    assert (len(splits.calibration), len(splits.heldout)) == (12, 1)
    assert "calibration uses 12 instead of 1000" in caplog.text
    with pytest.raises(DataError, match="heldout_size must be 1..7"):
        load_splits(image_folder, RGB24, calib_size=6, heldout_size=8)


def test_image_folder_for_a_grayscale_model(tmp_path: Path) -> None:
    folder = make_image_folder(tmp_path / "gray", n_classes=10, per_class=1)
    gray = ModelInfo("gray", "random-init", "", (1, 16, 16), (0.3,), (0.3,), 10)
    splits = load_splits(folder, gray, calib_size=4)
    images, labels = next(iterate(splits.test, batch_size=10))
    assert images.shape == (10, 1, 16, 16) and labels.tolist() == list(range(10))


@pytest.mark.parametrize("layout, message", [
    ("missing", "data folder not found"),
    ("no_val", "has no val/ folder"),
    ("no_classes", "no class folders"),
    ("no_images", "no images found"),
    ("unknown_val_class", "class that"),
])
def test_image_folder_errors_name_the_path(tmp_path: Path, layout: str, message: str) -> None:
    root = tmp_path / "data"
    if layout != "missing":
        make_image_folder(root, n_classes=2, per_class=2)
    if layout == "no_val":
        shutil.rmtree(root / "val")
    elif layout == "no_classes":
        shutil.rmtree(root / "train")
        (root / "train").mkdir()
    elif layout == "no_images":
        for f in (root / "val").rglob("*.*"):
            f.unlink()
    elif layout == "unknown_val_class":
        (root / "val" / "class_9").mkdir()
    with pytest.raises(DataError, match=message) as error:
        load_splits(root, RGB24, calib_size=2)
    assert str(root) in str(error.value)


def test_check_compatible_names_both_class_counts(image_folder: Path, digits_splits: Splits, demo_model) -> None:
    splits = load_splits(image_folder, RGB24, calib_size=6)
    check_compatible(splits, RGB24)
    imagenet_model = ModelInfo("deit", "random-init", "", (3, 24, 24), RGB24.mean, RGB24.std, 1000)
    with pytest.raises(DataError, match=r"3 classes.*1000 outputs"):
        check_compatible(splits, imagenet_model)
    check_compatible(digits_splits, demo_model[1])
