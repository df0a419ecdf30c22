"""engine.data.folders: ImageNet synset folders mapped through timm's index; the held-out split drawn from val/."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from engine.cli import main
from engine.data import DataError, check_compatible, iterate, load_splits
from engine.models import ModelInfo
from engine.data.synthetic import write_image_folder

SYNSETS = {"n01440764": 0, "n01443537": 1, "n15075141": 999}   # tench, goldfish, toilet tissue
RGB16_1K = ModelInfo(name="in1k", source="random-init", weights_sha256="", input_size=(3, 16, 16),
                     mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), num_classes=1000)
RGB16_3 = ModelInfo(name="three", source="random-init", weights_sha256="", input_size=(3, 16, 16),
                    mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), num_classes=3)


def _labels_by_class(dataset) -> dict[str, set[int]]:
    found: dict[str, set[int]] = {}
    for path, label in dataset.samples:
        found.setdefault(path.parent.name, set()).add(label)
    return found


def test_synset_folders_label_the_model_outputs_of_their_classes(tmp_path: Path) -> None:
    root = write_image_folder(tmp_path / "subset", 3, 2, 16, class_names=list(SYNSETS))
    splits = load_splits(root, RGB16_1K, calib_size=2)
    check_compatible(splits, RGB16_1K)               # 3 of ImageNet's classes fit a 1,000-output model
    assert splits.num_classes == 1000 and splits.describe()["class_map"] == "imagenet-synsets"
    assert _labels_by_class(splits.test) == {name: {index} for name, index in SYNSETS.items()}
    labels = torch.cat([lab for _, lab in iterate(splits.test, batch_size=4)])
    assert sorted(set(labels.tolist())) == [0, 1, 999]


def test_synset_folders_with_a_model_of_other_outputs_keep_sorted_order(tmp_path: Path) -> None:
    root = write_image_folder(tmp_path / "subset", 3, 1, 16, class_names=list(SYNSETS))
    splits = load_splits(root, RGB16_3, calib_size=1)
    check_compatible(splits, RGB16_3)
    assert _labels_by_class(splits.test) == {"n01440764": {0}, "n01443537": {1}, "n15075141": {2}}


def test_mixed_folder_falls_back_to_the_class_count_rule(tmp_path: Path) -> None:
    root = write_image_folder(tmp_path / "mixed", 3, 1, 16, class_names=["n01440764", "n01443537", "my_cats"])
    splits = load_splits(root, RGB16_1K, calib_size=1)
    assert splits.describe()["class_map"] == "sorted"
    with pytest.raises(DataError, match=r"has 3 classes but the model in1k has 1000 outputs.*"
                                        r"1 of 3 are not, e\.g\. my_cats"):
        check_compatible(splits, RGB16_1K)


def _val_splits(root: Path, seed: int, heldout_size: int | None = None):
    return load_splits(root, RGB16_3, calib_size=4, seed=seed, heldout_size=heldout_size, heldout_from="val")


def test_heldout_from_val_is_disjoint_from_test_and_seeded(tmp_path: Path) -> None:
    root = write_image_folder(tmp_path / "data", 3, 6, 16)
    splits = _val_splits(root, seed=0)
    heldout, test = [p for p, _ in splits.heldout.samples], [p for p, _ in splits.test.samples]
    val = sorted((root / "val").rglob("img_*"))
    assert len(heldout) == 9 and not set(heldout) & set(test) and sorted(heldout + test) == val   # half of val/
    assert test == sorted(test)                                                     # the rest of val/, in order
    assert all(p.parts[-3] == "train" for p, _ in splits.calibration.samples)
    assert splits.describe()["heldout_source"] == "val" and splits.n_test_originals == 9
    assert [p for p, _ in _val_splits(root, seed=0).heldout.samples] == heldout
    assert [p for p, _ in _val_splits(root, seed=1).heldout.samples] != heldout
    with pytest.raises(DataError, match=r"heldout_size must be 1\.\.17"):
        _val_splits(root, seed=0, heldout_size=18)


def test_heldout_from_train_keeps_todays_draws(tmp_path: Path) -> None:
    root = write_image_folder(tmp_path / "data", 3, 6, 16)
    splits = load_splits(root, RGB16_3, calib_size=4, seed=0)
    order = np.random.default_rng(0).permutation(18)
    by_index = sorted((root / "train").rglob("img_*"))       # the listing order: class, then file name
    assert [p for p, _ in splits.calibration.samples] == [by_index[i] for i in order[:4]]
    assert [p for p, _ in splits.heldout.samples] == [by_index[i] for i in order[4:18]]
    assert splits.describe()["heldout_source"] == "train" and len(splits.test) == 18


def test_heldout_from_val_refused_for_fixed_splits() -> None:
    with pytest.raises(DataError, match="applies to image folders"):
        load_splits("synthetic", RGB16_3, calib_size=2, heldout_from="val")


def test_quantize_run_file_states_the_heldout_source(tmp_path: Path) -> None:
    from engine.scalefile import load_run

    root = write_image_folder(tmp_path / "data", 10, 3, 16)
    out = tmp_path / "run.h5"
    assert main(["quantize", "--data", str(root), "--heldout-from", "val", "--calib-size", "8", "--batch-size",
                 "8", "--quantizer", "minmax", "--bits", "W8A8", "--device", "cpu", "--out", str(out),
                 "--quiet"]) == 0
    calibration = load_run(out).calibration
    assert calibration["heldout_source"] == "val" and calibration["class_map"] == "sorted"
