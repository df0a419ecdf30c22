"""Scale files (HDF5, DESIGN §5): one RunRecord per file, readable with plain h5py or HDFView.

Vocabulary follows ONNX QuantizeLinear (scale, zero_point, axis). Writes are atomic (``atomic.py``),
so a crash never leaves a half-written file under the name.

A file that cannot be read fails with the cause a caller can act on: ``DamagedFile`` (truncated, not
HDF5, a group or dataset missing or malformed: it will never load), ``NewerSchema`` (a later build
wrote it: keep it), ``FileUnavailable`` (locked by another process, no permission: the file may be
fine). A sweep moves only a damaged file aside; the other two leave the file untouched.
"""
from __future__ import annotations

import errno
import json
import platform
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import timm
import torch

from .atomic import atomic_path
from .provenance import package_version
from .quant import QuantConfig, QuantizedModel, QuantParams, ScaleMismatch, ScaleSet
from .runrecord import History, RunRecord

SCHEMA = "cptv-scales"
SCHEMA_VERSION = 1
PRODUCER = "cptv-studio"
# errno values of an HDF5 file that exists but cannot be opened now: a lock held elsewhere, no permission
UNAVAILABLE_ERRNOS = {errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES, errno.EPERM, errno.EBUSY}


class ScaleFileError(ValueError):
    """A scale file that cannot be read, or does not fit the model it is loaded into."""


class DamagedFile(ScaleFileError):
    """Truncated, not HDF5, or missing or malforming what the schema needs: it will never load."""


class NewerSchema(ScaleFileError):
    """Written by a later build: readable there, so never to be replaced here."""


class FileUnavailable(ScaleFileError):
    """Exists but cannot be opened now (locked by another process, no permission): may be fine."""


# ---------------------------------------------------------------- writing

def _write_scales(group: h5py.Group, scales: ScaleSet) -> None:
    for name, roles in scales.items():
        module = group.create_group(name, track_order=True)  # keep the model's layer order
        for role, params in roles.items():
            point = module.create_group(role)
            point.create_dataset("scale", data=params.scale)
            point.create_dataset("zero_point", data=params.zero_point)
            point.attrs.update(bits=params.bits, signed=params.signed, granularity=params.granularity,
                               scheme=params.scheme)
            if params.axis is not None:
                point.attrs["axis"] = params.axis
            for key, value in params.extra.items():
                point.create_dataset(f"extra/{key}", data=value)


def _json_attrs(values: dict[str, Any]) -> dict[str, Any]:
    """HDF5 attributes for plain values; lists/dicts as JSON strings."""
    return {k: json.dumps(v) if isinstance(v, (list, tuple, dict)) else ("" if v is None else v)
            for k, v in values.items()}


def save_run(path: str | Path, record: RunRecord) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.attrs.update(schema=SCHEMA, schema_version=SCHEMA_VERSION,
                       created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                       producer=PRODUCER, producer_version=package_version(), host=platform.node(),
                       model_name=record.model_name, model_source=record.model_source,
                       weights_sha256=record.weights_sha256, torch_version=str(torch.__version__),
                       timm_version=str(timm.__version__))
        config = f.create_group("config")
        config.attrs.update(quantizer=record.quant.quantizer, w_bits=record.quant.w_bits,
                            a_bits=record.quant.a_bits, attn_bits=record.quant.attention_bits,
                            attn_bits_explicit=record.quant.attn_bits is not None, seed=record.seed,
                            allow_float=json.dumps(list(record.quant.allow_float)),
                            search=json.dumps(record.search) if record.search is not None else "",
                            run_spec=json.dumps(record.spec) if record.spec is not None else "")
        f.create_group("calibration").attrs.update(_json_attrs(record.calibration))
        _write_scales(f.create_group("layers", track_order=True), record.scales)
        if record.base is not None:
            _write_scales(f.create_group("base", track_order=True), record.base)
        if record.history is not None:
            history = f.create_group("history")
            for key, value in vars(record.history).items():
                history.create_dataset(key, data=np.asarray(value))
        f.create_group("metrics").attrs.update(_json_attrs(record.metrics))
        if record.provenance is not None:
            f.create_group("provenance").attrs.update(_json_attrs(record.provenance))
    return path


# ---------------------------------------------------------------- reading

def _attr(value: Any) -> Any:
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, str) and value[:1] in "[{":
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def _read_scales(group: h5py.Group, where: str) -> ScaleSet:
    scales = ScaleSet()
    for name, module in group.items():
        for role, point in module.items():
            try:
                extra = {k: v[()] for k, v in point["extra"].items()} if "extra" in point else {}
                axis = int(point.attrs["axis"]) if "axis" in point.attrs else None
                params = QuantParams(scale=point["scale"][()], zero_point=point["zero_point"][()],
                                     bits=int(point.attrs["bits"]), signed=bool(point.attrs["signed"]),
                                     granularity=_attr(point.attrs["granularity"]), axis=axis,
                                     scheme=_attr(point.attrs.get("scheme", "uniform")), extra=extra)
            except (KeyError, ValueError) as exc:
                raise DamagedFile(f"{where}/{name}/{role} is malformed: {exc}") from None
            scales.setdefault(name, {})[role] = params
    return scales


def open_for_reading(path: str | Path, what: str = "scale file") -> h5py.File:
    """``path`` opened read-only, or the error a user should read: it is missing (FileNotFoundError),
    cannot be opened now (FileUnavailable), or is not HDF5 (DamagedFile)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        if exc.errno in UNAVAILABLE_ERRNOS or isinstance(exc, (PermissionError, BlockingIOError)):
            raise FileUnavailable(f"{path} cannot be opened now ({exc.strerror or exc}): another process may "
                                  "be writing it, or this user may not read it") from None
        raise DamagedFile(f"{path} is not a readable HDF5 file (truncated or another format): {exc}") from None


def load_run(path: str | Path) -> RunRecord:
    path = Path(path)
    with open_for_reading(path) as f:
        try:
            if _attr(f.attrs.get("schema")) != SCHEMA:
                raise DamagedFile(f"{path} is HDF5 but not a CPT-V scale file (schema attribute missing)")
            version = int(f.attrs["schema_version"])
            if version > SCHEMA_VERSION:
                raise NewerSchema(f"{path} has schema version {version}, written by a later cptv-studio; this build "
                                  f"reads up to {SCHEMA_VERSION}")
            root = {k: _attr(v) for k, v in f.attrs.items()}
            config = {k: _attr(v) for k, v in f["config"].attrs.items()}
            quant = QuantConfig(config["quantizer"], int(config["w_bits"]), int(config["a_bits"]),
                                int(config["attn_bits"]) if config.get("attn_bits_explicit") else None,
                                tuple(config.get("allow_float") or ()))   # absent in older files
            search = config.get("search") or None
            spec = config.get("run_spec") or None   # absent in files written before it was recorded
            history = None
            if "history" in f:
                history = History(**{k: v[()] for k, v in f["history"].items() if k in History.__dataclass_fields__})
            return RunRecord(
                model_name=root["model_name"], model_source=root.get("model_source", ""),
                weights_sha256=root.get("weights_sha256", ""), quant=quant,
                calibration={k: _attr(v) for k, v in f["calibration"].attrs.items()},
                scales=_read_scales(f["layers"], "layers"), seed=int(config.get("seed", 0)),
                base=_read_scales(f["base"], "base") if "base" in f else None,
                search=search if isinstance(search, dict) else None, history=history,
                metrics={k: _attr(v) for k, v in f["metrics"].attrs.items()} if "metrics" in f else {},
                spec=spec if isinstance(spec, dict) else None,
                provenance={k: _attr(v) for k, v in f["provenance"].attrs.items()} if "provenance" in f else None,
            )
        except (KeyError, OSError) as exc:
            raise DamagedFile(f"{path} is damaged or incomplete: {exc}") from None


def apply_run(record: RunRecord, qmodel: QuantizedModel, model_name: str, use_base: bool = False) -> None:
    """Load the record's scales into ``qmodel`` after checking it is the same model and setting."""
    if record.model_name != model_name:
        raise ScaleFileError(f"scale file is for model {record.model_name!r}, not {model_name!r}")
    scales = record.base if use_base else record.scales
    if scales is None:
        raise ScaleFileError("scale file has no base scales (it is not a search run)")
    try:
        qmodel.load_scale_set(scales)
    except ScaleMismatch as exc:
        raise ScaleFileError(f"scale file does not fit {model_name}: {exc}") from None
