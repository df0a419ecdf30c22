"""A diagnosis in HDF5: its own file, or a ``/diagnosis`` group added to the run file it diagnoses.

Same group either way, so one reader serves both; the app shows a saved diagnosis without computing
anything. Run-file readers ignore the group (``scalefile.load_run`` reads the groups it knows).
Both writes are atomic (a temporary file in the same folder, then ``os.replace``): adding the group
works on a copy of the run file, so a crash leaves the run file as it was.

```
/diagnosis attrs: schema="cptv-diagnosis", schema_version, model_name, quantizer, bits, source,
                  n_blocks, heldout_fp_top1, n_calibration, n_heldout, fitness (JSON), seconds
/diagnosis/points/   owner, role, kind (strings), block (int; -1 stem, n_blocks head)
/diagnosis/scales/<base|refined|calibrated>/  sqnr_db, loss_only, top1_only, loss_without, top1_without
                  attrs: loss_all, top1_all
/diagnosis/whatif/   k, top1_top, top1_random (k x draws), mean_act_bits_top, mean_act_bits_random,
                  ranking; attrs: to_bits, ranked_by, top1_none
```
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np

from ..atomic import atomic_path
from ..scalefile import ScaleFileError, load_run, open_for_reading
from .points import Point
from .result import Diagnosis, PointTable, WhatIf

SCHEMA = "cptv-diagnosis"
SCHEMA_VERSION = 1
GROUP = "diagnosis"
TABLE_ARRAYS = ("sqnr_db", "loss_only", "top1_only", "loss_without", "top1_without")
WHATIF_ARRAYS = ("k", "top1_top", "top1_random", "mean_act_bits_top", "mean_act_bits_random", "ranking")


def _write_group(group: h5py.Group, diagnosis: Diagnosis) -> None:
    group.attrs.update(schema=SCHEMA, schema_version=SCHEMA_VERSION, model_name=diagnosis.model_name,
                       quantizer=diagnosis.quantizer, bits=diagnosis.bits, source=diagnosis.source,
                       n_blocks=diagnosis.n_blocks, heldout_fp_top1=diagnosis.fp_top1,
                       n_calibration=diagnosis.n_calibration, n_heldout=diagnosis.n_heldout,
                       fitness=json.dumps(diagnosis.fitness), seconds=diagnosis.seconds)
    points = group.create_group("points")
    for field in ("owner", "role", "kind"):
        points.create_dataset(field, data=[getattr(p, field) for p in diagnosis.points], dtype=h5py.string_dtype())
    points.create_dataset("block", data=np.array([p.block for p in diagnosis.points], dtype=np.int32))
    scales = group.create_group("scales", track_order=True)
    for name, table in diagnosis.tables.items():
        sub = scales.create_group(name)
        for field in TABLE_ARRAYS:
            sub.create_dataset(field, data=getattr(table, field))
        sub.attrs.update(loss_all=table.loss_all, top1_all=table.top1_all)
    if diagnosis.whatif is not None:
        whatif = group.create_group("whatif")
        for field in WHATIF_ARRAYS:
            whatif.create_dataset(field, data=getattr(diagnosis.whatif, field))
        whatif.attrs.update(to_bits=diagnosis.whatif.to_bits, ranked_by=diagnosis.whatif.ranked_by,
                            top1_none=diagnosis.whatif.top1_none)


def save_diagnosis(path: str | Path, diagnosis: Diagnosis) -> Path:
    """A diagnosis file of its own (``DIAG.h5``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs.update(schema=SCHEMA, schema_version=SCHEMA_VERSION)
            _write_group(f.create_group(GROUP), diagnosis)
    return path


def save_into_run(path: str | Path, diagnosis: Diagnosis) -> Path:
    """Add (or replace) the run file's ``/diagnosis`` group; the file must be the run of the same model."""
    path = Path(path)
    record = load_run(path)   # a readable run file, or a ScaleFileError naming what is wrong
    if record.model_name != diagnosis.model_name:
        raise ScaleFileError(f"{path} is a run of {record.model_name!r}; the diagnosis is of {diagnosis.model_name!r}")
    with atomic_path(path) as tmp:
        shutil.copyfile(path, tmp)
        with h5py.File(tmp, "a") as f:
            if GROUP in f:
                del f[GROUP]
            _write_group(f.create_group(GROUP), diagnosis)
    return path


def _read_group(group: h5py.Group) -> Diagnosis:
    attrs = group.attrs
    version = int(attrs["schema_version"])
    if version > SCHEMA_VERSION:
        raise ScaleFileError(f"the diagnosis has schema version {version}; this build reads up to {SCHEMA_VERSION}")
    p = group["points"]
    points = tuple(Point(owner, role, int(block), kind) for owner, role, kind, block in
                   zip(p["owner"].asstr()[()], p["role"].asstr()[()], p["kind"].asstr()[()], p["block"][()]))
    tables = {name: PointTable(name, *(sub[field][()] for field in TABLE_ARRAYS), float(sub.attrs["loss_all"]),
                               float(sub.attrs["top1_all"])) for name, sub in group["scales"].items()}
    whatif = None
    if "whatif" in group:
        w = group["whatif"]
        arrays = {field: w[field][()] for field in WHATIF_ARRAYS}
        whatif = WhatIf(to_bits=int(w.attrs["to_bits"]), ranked_by=str(w.attrs["ranked_by"]),
                        top1_none=float(w.attrs["top1_none"]), **arrays)
    return Diagnosis(model_name=str(attrs["model_name"]), quantizer=str(attrs["quantizer"]), bits=str(attrs["bits"]),
                     source=str(attrs["source"]), points=points, n_blocks=int(attrs["n_blocks"]),
                     fp_top1=float(attrs["heldout_fp_top1"]), n_calibration=int(attrs["n_calibration"]),
                     n_heldout=int(attrs["n_heldout"]), fitness=json.loads(attrs["fitness"]), tables=tables,
                     whatif=whatif, seconds=float(attrs["seconds"]))


def load_diagnosis(path: str | Path) -> Diagnosis:
    """The diagnosis in a diagnosis file or in a run file's ``/diagnosis`` group."""
    path = Path(path)
    with open_for_reading(path, "diagnosis file") as f:
        if GROUP not in f:
            raise ScaleFileError(f"{path} holds no diagnosis (make one with: python -m engine diagnose {path} "
                                 "--into-run, or --out DIAG.h5)")
        try:
            return _read_group(f[GROUP])
        except (KeyError, ValueError, TypeError) as exc:
            raise ScaleFileError(f"{path}: the diagnosis is damaged or incomplete: {exc}") from None
