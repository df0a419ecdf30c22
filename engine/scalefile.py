"""Scale files (HDF5, DESIGN §5): one RunRecord per file, readable with plain h5py or HDFView.

Vocabulary follows ONNX QuantizeLinear (scale, zero_point, axis). Writes are atomic (``atomic.py``),
so a crash never leaves a half-written file under the name.

A file that cannot be read fails with the cause a caller can act on (``h5read.py``): ``DamagedFile``,
``NewerSchema`` or ``FileUnavailable``. A sweep moves only a damaged file aside; the other two leave
the file untouched.
"""
from __future__ import annotations

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
from .evaluate import QUALITY_LABELS
from .h5read import (H5_ERRORS, MAX_BITS, MAX_POINT_VALUES, MAX_SERIES_VALUES, DamagedFile, FileUnavailable,
                     NewerSchema, ScaleFileError, array, child, flag_attr, integer_attr, json_attr, members,
                     number_attr, open_for_reading, plain_attrs, text_attr)
from .provenance import package_version
from .quant import PER_CHANNEL, PER_TENSOR, QuantConfig, QuantizedModel, QuantParams, ScaleMismatch, ScaleSet
from .quant.schemes import SCHEMES
from .readcheck import Malformed, bad_values, is_int, is_real, one_line, shown
from .runrecord import History, RunRecord

SCHEMA = "cptv-scales"
SCHEMA_VERSION = 2   # 2: /config bit_plan (mixed precision) and /planning; version 1 files read as uniform
PRODUCER = "cptv-studio"
__all__ = ["DamagedFile", "FileUnavailable", "NewerSchema", "ScaleFileError", "apply_run", "load_run",
           "open_for_reading", "save_run"]


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
                            bit_plan=json.dumps(dict(record.quant.plan)),
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
        if record.planning is not None:
            f.create_group("planning").attrs.update(_json_attrs(record.planning))
    return path


# ---------------------------------------------------------------- reading

# The extra arrays a scheme reads (engine/quant/peer_schemes.py): without them a forward would fail.
SCHEME_EXTRAS = {"twin_gelu": ("neg_step",), "ptf": ("factor",)}
HISTORY_PER_EVALUATION = ("loss", "eval_pass", "eval_block")
HISTORY_PER_STEP = ("heldout_top1", "step_loss", "block_index", "pass_index")
HISTORY_INTEGERS = ("eval_pass", "eval_block", "block_index", "pass_index")
# Metrics the front ends format as numbers ("" where the writer had None)
NUMERIC_METRICS = ("fp_top1", "base_top1", "refined_top1", "heldout_fp_top1", "heldout_base_top1",
                   "heldout_refined_top1", "base_loss", "refined_loss", "search_seconds", "calibration_seconds",
                   "fp_feature_cosine", "base_feature_cosine", "refined_feature_cosine", "heldout_fp_feature_cosine",
                   "heldout_base_feature_cosine", "heldout_refined_feature_cosine",   # these six: no classifier
                   "mean_w_bits", "mean_a_bits")   # a mixed plan's element-weighted widths
METRIC_COUNTS = ("n_test", "selected_step", "evaluations")
CALIBRATION_COUNTS = ("n_samples", "n_calibration", "n_heldout", "n_test", "seed")
CALIBRATION_TEXTS = ("dataset", "heldout_source", "class_map")
PLANNING_NUMBERS = ("budget_w_bits", "budget_a_bits", "mean_w_bits", "mean_a_bits", "heldout_predicted_top1",
                    "heldout_planned_top1", "heldout_uniform_top1", "heldout_fp_top1", "seconds")
PLANNING_COUNTS = ("measurements", "calibrations", "seed")


def _read_point(point: h5py.Group, where: str) -> QuantParams:
    attrs = plain_attrs(point, where)
    granularity = text_attr(attrs, "granularity", where, (PER_TENSOR, PER_CHANNEL))
    scheme = text_attr(attrs, "scheme", where, tuple(sorted(SCHEMES)), default="uniform")   # older files: uniform
    axis = integer_attr(attrs, "axis", where, default=None)
    scale = array(child(point, "scale", where, h5py.Dataset), f"{where}/scale", "f", 1, MAX_POINT_VALUES)
    zero_point = array(child(point, "zero_point", where, h5py.Dataset), f"{where}/zero_point", "f", 1,
                       MAX_POINT_VALUES)
    if granularity == PER_TENSOR and scale.shape != ():
        raise Malformed(f"{where}: scale has shape {scale.shape}; a per-tensor scale is a single value")
    if granularity == PER_CHANNEL and (axis is None or scale.ndim != 1 or scale.size == 0):
        raise Malformed(f"{where} is per channel, so it needs an axis and one scale per channel; it has axis "
                        f"{axis} and a scale of shape {scale.shape}")
    if zero_point.shape != scale.shape:
        raise Malformed(f"{where}: scale has shape {scale.shape}, zero_point has shape {zero_point.shape}")
    bad = bad_values(scale, positive=True)
    if bad:
        raise Malformed(f"{where}: scale has non-finite or non-positive values ({bad})")
    bad = bad_values(zero_point, integral=True)
    if bad:
        raise Malformed(f"{where}: zero_point has non-finite or non-integer values ({bad})")
    extra = {}
    if "extra" in point:
        for key, dataset in members(child(point, "extra", where, h5py.Group), f"{where}/extra", h5py.Dataset):
            extra[key] = array(dataset, f"{where}/extra/{key}", "f", 1, MAX_POINT_VALUES)
            bad = bad_values(extra[key])
            if bad:
                raise Malformed(f"{where}: extra/{key} has non-finite values ({bad})")
    if extra and "scheme" not in attrs:   # files from before schemes had uniform points without extras
        raise Malformed(f"{where} has extra arrays but no scheme")
    missing = [key for key in SCHEME_EXTRAS.get(scheme, ()) if key not in extra]
    if missing:
        raise Malformed(f"{where} uses the {scheme} scheme but has no extra/{', extra/'.join(missing)}")
    return QuantParams(scale=scale, zero_point=zero_point, bits=integer_attr(attrs, "bits", where, 1, MAX_BITS),
                       signed=flag_attr(attrs, "signed", where), granularity=granularity, axis=axis, scheme=scheme,
                       extra=extra)


def _read_scales(group: h5py.Group, where: str) -> ScaleSet:
    scales = ScaleSet()
    for name, module in members(group, where, h5py.Group):
        points = members(module, f"{where}/{name}", h5py.Group)
        if not points:
            raise Malformed(f"{where}/{name} holds no quantization point")
        for role, point in points:
            scales.setdefault(name, {})[role] = _read_point(point, f"{where}/{name}/{role}")
    return scales


def _same_points(scales: ScaleSet, base: ScaleSet) -> None:
    """A search changes scale values only: the refined and base scales have the same points, each with
    the same settings and shapes, so a point missing or reshaped in one of them is damage."""
    for name, role, params in base.points():
        if role not in scales.get(name, {}):
            raise Malformed(f"base/{name}/{role} is missing from layers")
    for name, role, params in scales.points():
        other = base.get(name, {}).get(role)
        if other is None:
            raise Malformed(f"layers/{name}/{role} is missing from base")
        for what, mine, theirs in (("bits", params.bits, other.bits), ("signed", params.signed, other.signed),
                                   ("granularity", params.granularity, other.granularity),
                                   ("axis", params.axis, other.axis), ("scheme", params.scheme, other.scheme),
                                   ("scale shape", params.scale.shape, other.scale.shape),
                                   ("extra arrays", {k: v.shape for k, v in params.extra.items()},
                                    {k: v.shape for k, v in other.extra.items()})):
            if mine != theirs:
                raise Malformed(f"layers/{name}/{role} has {what} {mine}, base/{name}/{role} has {theirs}")


def _read_history(group: h5py.Group) -> History:
    values = {}
    for fields in (HISTORY_PER_EVALUATION, HISTORY_PER_STEP):
        for key in fields:
            values[key] = array(child(group, key, "history", h5py.Dataset), f"history/{key}",
                                "iu" if key in HISTORY_INTEGERS else "f", 1, MAX_SERIES_VALUES)
            if values[key].ndim != 1:
                raise Malformed(f"history/{key} has shape {values[key].shape}, not 1-D")
        lengths = {key: len(values[key]) for key in fields}
        if len(set(lengths.values())) > 1:
            raise Malformed(f"history arrays that must have one length do not: "
                            f"{', '.join(f'{k} {n}' for k, n in lengths.items())}")
    return History(**values)


def _read_config(attrs: dict[str, Any]) -> QuantConfig:
    allow_float = json_attr(attrs, "allow_float", "config", list) or []   # absent in older files
    if not all(isinstance(pattern, str) for pattern in allow_float):
        raise Malformed(f"config attribute 'allow_float' is {shown(allow_float)}, not a list of module patterns")
    explicit = flag_attr(attrs, "attn_bits_explicit", "config", default=False)
    plan = json_attr(attrs, "bit_plan", "config", dict) or {}   # absent in schema 1: uniform
    try:
        return QuantConfig(text_attr(attrs, "quantizer", "config"),
                           integer_attr(attrs, "w_bits", "config", 1, MAX_BITS),
                           integer_attr(attrs, "a_bits", "config", 1, MAX_BITS),
                           integer_attr(attrs, "attn_bits", "config", 1, MAX_BITS) if explicit else None,
                           tuple(allow_float), plan)
    except ValueError as exc:   # a plan entry that is no point name or no width
        raise Malformed(f"config attribute 'bit_plan': {one_line(exc)}") from None


def _check_plan(quant: QuantConfig, scales: ScaleSet) -> None:
    """Every planned point is a point of the file, at the plan's width."""
    for name, bits in quant.plan:
        owner, _, role = name.rpartition("/")
        params = scales.get(owner, {}).get(role)
        if params is None:
            raise Malformed(f"config attribute 'bit_plan' names {name}, which /layers does not hold")
        if params.bits != bits:
            raise Malformed(f"layers/{name} has {params.bits} bits, but the bit plan gives it {bits}")


def _read_planning(attrs: dict[str, Any]) -> dict[str, Any]:
    """What ``plan`` recorded: numbers and text, and the explored front as lists of numbers of one length."""
    for key in PLANNING_NUMBERS:
        if attrs.get(key, "") != "":
            number_attr(attrs, key, "planning")
    for key in PLANNING_COUNTS:
        if attrs.get(key, "") != "":
            integer_attr(attrs, key, "planning", 0)
    front = json_attr(attrs, "front", "planning", dict) or {}
    lengths = set()
    for key, values in front.items():
        if not (isinstance(values, list) and all(is_real(v) or v is None or isinstance(v, str) for v in values)):
            raise Malformed(f"planning attribute 'front' has {key!r} that is not a list of values")
        lengths.add(len(values))
    if len(lengths) > 1:
        raise Malformed("planning attribute 'front' has columns of different lengths")
    return attrs


def _check_calibration(attrs: dict[str, Any]) -> None:
    """The fields a consumer computes with (the export builds its example input from ``input_size``)."""
    for key in CALIBRATION_COUNTS:
        integer_attr(attrs, key, "calibration", 0, default=None)
    for key in CALIBRATION_TEXTS:
        text_attr(attrs, key, "calibration", default=None)
    size = attrs.get("input_size", [1])
    if not (isinstance(size, list) and size and all(is_int(n) and n > 0 for n in size)):
        raise Malformed(f"calibration attribute 'input_size' is {shown(size)}, not a list of positive sizes")
    for key in ("mean", "std"):
        values = attrs.get(key, [])
        if not (isinstance(values, list) and all(is_real(v) for v in values)):
            raise Malformed(f"calibration attribute {key!r} is {shown(values)}, not a list of numbers")


def _check_metrics(attrs: dict[str, Any]) -> None:
    for key in NUMERIC_METRICS:
        if attrs.get(key, "") != "":
            number_attr(attrs, key, "metrics")
    for key in METRIC_COUNTS:
        if attrs.get(key, "") != "":
            integer_attr(attrs, key, "metrics", 0)
    text_attr(attrs, "device", "metrics", default=None)
    text_attr(attrs, "quality", "metrics", tuple(QUALITY_LABELS), default=None)   # absent in older files: top-1


def _read_run(f: h5py.File, path: Path) -> RunRecord:
    root = plain_attrs(f, "the file")
    if root.get("schema") != SCHEMA:
        raise DamagedFile(f"{path} is HDF5 but not a CPT-V scale file (schema attribute missing)")
    version = integer_attr(root, "schema_version", "the file")
    if version > SCHEMA_VERSION:
        raise NewerSchema(f"{path} has schema version {version}, written by a later cptv-studio; this build "
                          f"reads up to {SCHEMA_VERSION}")
    config = plain_attrs(child(f, "config", "the file", h5py.Group), "config")
    calibration = plain_attrs(child(f, "calibration", "the file", h5py.Group), "calibration")
    _check_calibration(calibration)
    scales = _read_scales(child(f, "layers", "the file", h5py.Group), "layers")
    base = _read_scales(child(f, "base", "the file", h5py.Group), "base") if "base" in f else None
    if base is not None:
        _same_points(scales, base)
    elif "history" in f:   # a search writes both
        raise Malformed("the file has a search history but no base scales (/base)")
    metrics = plain_attrs(child(f, "metrics", "the file", h5py.Group), "metrics") if "metrics" in f else {}
    _check_metrics(metrics)
    quant = _read_config(config)
    _check_plan(quant, scales)
    planning = (_read_planning(plain_attrs(child(f, "planning", "the file", h5py.Group), "planning"))
                if "planning" in f else None)
    return RunRecord(
        model_name=text_attr(root, "model_name", "the file"),
        model_source=text_attr(root, "model_source", "the file", default=""),
        weights_sha256=text_attr(root, "weights_sha256", "the file", default=""), quant=quant,
        calibration=calibration, scales=scales, seed=integer_attr(config, "seed", "config", default=0), base=base,
        search=json_attr(config, "search", "config", dict),
        history=_read_history(child(f, "history", "the file", h5py.Group)) if "history" in f else None,
        metrics=metrics,
        spec=json_attr(config, "run_spec", "config", dict),   # absent in files written before it was recorded
        provenance=(plain_attrs(child(f, "provenance", "the file", h5py.Group), "provenance")
                    if "provenance" in f else None),
        planning=planning,
    )


def load_run(path: str | Path) -> RunRecord:
    """The run in ``path``; every way a file can be broken is one DamagedFile line naming it and what is wrong."""
    path = Path(path)
    with open_for_reading(path) as f:
        try:
            return _read_run(f, path)
        except ScaleFileError:
            raise
        except Malformed as exc:
            raise DamagedFile(f"{path}: {one_line(exc)}") from None
        except H5_ERRORS as exc:
            raise DamagedFile(f"{path} is damaged or incomplete: {one_line(exc)}") from None


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
