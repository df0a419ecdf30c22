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
from ..h5read import (H5_ERRORS, MAX_BITS, MAX_SERIES_VALUES, DamagedFile, NewerSchema, ScaleFileError, array, child,
                      integer_attr, json_attr, members, number_attr, open_for_reading, plain_attrs, text_attr)
from ..readcheck import Malformed, one_line
from ..scalefile import load_run
from .points import Point
from .result import Diagnosis, PointTable, WhatIf

SCHEMA = "cptv-diagnosis"
SCHEMA_VERSION = 1
GROUP = "diagnosis"
TABLE_ARRAYS = ("sqnr_db", "loss_only", "top1_only", "loss_without", "top1_without")
MEMBERS = ("points", "scales", "whatif")
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


def _strings(points: h5py.Group, key: str) -> list[str]:
    dataset = child(points, key, "diagnosis/points", h5py.Dataset)
    if h5py.check_string_dtype(dataset.dtype) is None or dataset.ndim != 1 or dataset.size > MAX_SERIES_VALUES:
        raise Malformed(f"diagnosis/points/{key} is a {dataset.dtype} array of shape {dataset.shape}, not a list "
                        "of strings")
    return list(dataset.asstr()[()])


def _series(group: h5py.Group, key: str, where: str, kinds: str, shape: tuple[int, ...]) -> np.ndarray:
    """A measured array of ``shape`` (None: any length there)."""
    values = array(child(group, key, where, h5py.Dataset), f"{where}/{key}", kinds, len(shape), MAX_SERIES_VALUES)
    if values.ndim != len(shape) or any(n is not None and n != m for n, m in zip(shape, values.shape)):
        raise Malformed(f"{where}/{key} has shape {values.shape}, not {tuple('n' if n is None else n for n in shape)}")
    return values


def _read_points(group: h5py.Group, n_blocks: int) -> tuple[Point, ...]:
    p = child(group, "points", "diagnosis", h5py.Group)
    owners, roles, kinds = _strings(p, "owner"), _strings(p, "role"), _strings(p, "kind")
    blocks = _series(p, "block", "diagnosis/points", "iu", (len(owners),))
    if not len(owners) == len(roles) == len(kinds):
        raise Malformed(f"diagnosis/points has {len(owners)} owners, {len(roles)} roles and {len(kinds)} kinds")
    outside = (blocks < -1) | (blocks > n_blocks)
    if outside.any():
        raise Malformed(f"diagnosis/points/block has {int(outside.sum())} value(s) outside -1..{n_blocks}")
    return tuple(Point(owner, role, int(block), kind) for owner, role, kind, block in zip(owners, roles, kinds, blocks))


def _read_table(name: str, sub: h5py.Group, n_points: int) -> PointTable:
    where = f"diagnosis/scales/{name}"
    attrs = plain_attrs(sub, where)
    return PointTable(name, *(_series(sub, field, where, "f", (n_points,)) for field in TABLE_ARRAYS),
                      float(number_attr(attrs, "loss_all", where)), float(number_attr(attrs, "top1_all", where)))


def _read_whatif(w: h5py.Group, n_points: int, tables: dict[str, PointTable]) -> WhatIf:
    where = "diagnosis/whatif"
    attrs = plain_attrs(w, where)
    k = _series(w, "k", where, "iu", (None,))
    ranking = _series(w, "ranking", where, "iu", (None,))
    arrays = {"k": k, "ranking": ranking, "top1_random": _series(w, "top1_random", where, "f", (len(k), None)),
              **{field: _series(w, field, where, "f", (len(k),))
                 for field in ("top1_top", "mean_act_bits_top", "mean_act_bits_random")}}
    if not len(k) or (k < 1).any() or (k > len(ranking)).any():
        raise Malformed(f"{where}/k is {k.tolist()}, not point counts from 1 to the {len(ranking)} ranked")
    if ((ranking < 0) | (ranking >= n_points)).any() or len(set(ranking.tolist())) != len(ranking):
        raise Malformed(f"{where}/ranking is not distinct point indices below {n_points}")
    return WhatIf(to_bits=integer_attr(attrs, "to_bits", where, 2, MAX_BITS),
                  ranked_by=text_attr(attrs, "ranked_by", where, tuple(tables)),
                  top1_none=float(number_attr(attrs, "top1_none", where)), **arrays)


def _read_group(group: h5py.Group, path: Path) -> Diagnosis:
    attrs = plain_attrs(group, "diagnosis")
    if attrs.get("schema") != SCHEMA:
        raise Malformed("the diagnosis group is not a CPT-V diagnosis (schema attribute missing)")
    version = integer_attr(attrs, "schema_version", "diagnosis")
    if version > SCHEMA_VERSION:
        raise NewerSchema(f"{path}: the diagnosis has schema version {version}; this build reads up to "
                          f"{SCHEMA_VERSION}")
    unknown = sorted(set(group) - set(MEMBERS))   # a later layout adds members with a new schema version
    if unknown:
        raise Malformed(f"diagnosis holds {', '.join(unknown)}, which no diagnosis of version {version} has")
    n_blocks = integer_attr(attrs, "n_blocks", "diagnosis", 0)
    points = _read_points(group, n_blocks)
    tables = {name: _read_table(name, sub, len(points))
              for name, sub in members(child(group, "scales", "diagnosis", h5py.Group), "diagnosis/scales", h5py.Group)}
    if not tables:
        raise Malformed("diagnosis/scales holds no table")
    whatif = _read_whatif(child(group, "whatif", "diagnosis", h5py.Group), len(points), tables) \
        if "whatif" in group else None
    fitness = json_attr(attrs, "fitness", "diagnosis", dict)
    if fitness is None:
        raise Malformed("diagnosis has no attribute 'fitness'")
    return Diagnosis(model_name=text_attr(attrs, "model_name", "diagnosis"),
                     quantizer=text_attr(attrs, "quantizer", "diagnosis"), bits=text_attr(attrs, "bits", "diagnosis"),
                     source=text_attr(attrs, "source", "diagnosis"), points=points, n_blocks=n_blocks,
                     fp_top1=float(number_attr(attrs, "heldout_fp_top1", "diagnosis")),
                     n_calibration=integer_attr(attrs, "n_calibration", "diagnosis", 0),
                     n_heldout=integer_attr(attrs, "n_heldout", "diagnosis", 0), fitness=fitness, tables=tables,
                     whatif=whatif, seconds=float(number_attr(attrs, "seconds", "diagnosis")))


def load_diagnosis(path: str | Path) -> Diagnosis:
    """The diagnosis in a diagnosis file or in a run file's ``/diagnosis`` group; one ScaleFileError line
    naming the file and what is wrong if it holds none or a damaged one."""
    path = Path(path)
    with open_for_reading(path, "diagnosis file") as f:
        try:
            if GROUP not in f:
                raise ScaleFileError(f"{path} holds no diagnosis (make one with: python -m engine diagnose {path} "
                                     "--into-run, or --out DIAG.h5)")
            return _read_group(child(f, GROUP, "the file", h5py.Group), path)
        except ScaleFileError:
            raise
        except Malformed as exc:
            raise DamagedFile(f"{path}: {one_line(exc)}") from None
        except H5_ERRORS as exc:
            raise DamagedFile(f"{path}: the diagnosis is damaged or incomplete: {one_line(exc)}") from None
