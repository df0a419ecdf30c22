"""engine.data.synthetic: the generated image folder (and its CLI command) and the in-memory synthetic splits."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

from engine.cli import main
from engine.data import DataError, check_compatible, load_splits
from engine.models import ModelInfo
from engine.data.synthetic import imagenet_synsets, write_image_folder

RGB24 = ModelInfo(name="tiny", source="random-init", weights_sha256="", input_size=(3, 24, 24),
                  mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), num_classes=7)


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_folder_layout_formats_and_determinism(tmp_path: Path) -> None:
    root = write_image_folder(tmp_path / "a", n_classes=2, per_class=3, size=20)
    files = _digest(root)
    assert sorted(files) == sorted(f"{part}/class_{c}/img_{i:03d}.{'png' if i % 2 == 0 else 'JPEG'}"
                                   for part in ("train", "val") for c in range(2) for i in range(3))
    assert _digest(write_image_folder(tmp_path / "b", 2, 3, 20)) == files
    assert _digest(write_image_folder(tmp_path / "c", 2, 3, 20, seed=1)) != files
    splits = load_splits(root, RGB24, calib_size=2, seed=0)
    assert splits.classes == ("class_0", "class_1") and len(splits.test) == 6


def test_folder_rejects_mismatched_class_names(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="need 3 distinct class names, got 2"):
        write_image_folder(tmp_path, 3, 1, 8, class_names=["a", "b"])


def test_imagenet_synsets_first_and_spread() -> None:
    assert imagenet_synsets(2) == ["n01440764", "n01443537"]
    assert imagenet_synsets(3, spread=True) == ["n01440764", "n03042490", "n15075141"]
    with pytest.raises(DataError, match="1000 synsets"):
        imagenet_synsets(1001)


def test_make_folder_command_names_classes_by_synset(tmp_path: Path, capsys) -> None:
    out = tmp_path / "folder"
    assert main(["make-folder", str(out), "--classes", "2", "--per-class", "1", "--size", "16", "--synsets",
                 "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["images"] == 4 and result["synsets"] == ["n01440764", "n01443537"]
    assert sorted(p.name for p in (out / "val").iterdir()) == ["n01440764", "n01443537"]


def test_synthetic_splits_are_seeded_disjoint_and_fit_the_model() -> None:
    splits = load_splits("synthetic", RGB24, calib_size=12, seed=3)
    check_compatible(splits, RGB24)
    assert (len(splits.calibration), splits.calibration.images.shape[1:]) == (12, (3, 24, 24))
    parts = (splits.calibration, splits.heldout, splits.test)
    originals = [set(p.originals.tolist()) for p in parts]
    assert sum(len(o) for o in originals) == len(set().union(*originals))        # no image in two splits
    assert all(int(p.labels.max()) < RGB24.num_classes for p in parts)
    again = load_splits("synthetic", RGB24, calib_size=12, seed=3)
    assert torch.equal(again.calibration.images, splits.calibration.images)
    other = load_splits("synthetic", RGB24, calib_size=12, seed=4)
    assert not torch.equal(other.calibration.images, splits.calibration.images)
    assert splits.describe()["dataset"] == "synthetic"
