"""Builders for test inputs that would otherwise need downloads: image folders and timm weight files."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import timm
import torch
from safetensors.torch import save_file

from engine.synthetic import write_image_folder


def make_image_folder(root: str | Path, n_classes: int = 3, per_class: int = 4, size: int = 32,
                      corrupt: int = 0) -> Path:
    """``engine.synthetic.write_image_folder`` (class_<i> folders, PNG and JPEG, seed 0), plus ``corrupt``
    extra unreadable ``.JPEG`` files (random bytes) in class_0 of train and of val. Returns ``root``.
    """
    root = write_image_folder(root, n_classes, per_class, size)
    rng = np.random.default_rng(0)
    for part in ("train", "val"):
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


# Run files as earlier builds wrote them: what each layout lacked (search fields, the RunSpec, provenance).
OLDER_LAYOUTS = {
    "no spec": dict(search_fields=("vector", "budget", "direction"), spec=False),
    "no vector/budget": dict(search_fields=("vector", "budget", "direction"), spec=True),
    "no direction": dict(search_fields=("direction",), spec=True),
}


def as_older_layout(path: str | Path, layout: str) -> Path:
    """Rewrite a run file in place as an earlier build wrote it (``OLDER_LAYOUTS``)."""
    import json

    import h5py

    drop = OLDER_LAYOUTS[layout]
    with h5py.File(path, "r+") as f:
        search = json.loads(f["config"].attrs["search"])
        f["config"].attrs["search"] = json.dumps({k: v for k, v in search.items() if k not in drop["search_fields"]})
        if not drop["spec"]:
            del f["config"].attrs["run_spec"]
        if "provenance" in f:
            del f["provenance"]
    return Path(path)


def with_schema_version(path: str | Path, version: int) -> Path:
    import h5py

    with h5py.File(path, "r+") as f:
        f.attrs["schema_version"] = version
    return Path(path)
