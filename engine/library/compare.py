"""The numbers the comparison views show, as plain data, computed headless.

- Accuracy vs bit-width and the quantizer × bit-width matrix aggregate library rows over seeds
  (``accuracy_vs_bits``, ``bits_matrix``): they need no more than the library already read.
- Side by side of N runs reads their records (``side_by_side``): loss curves, held-out top-1 per
  block step and per block, and how far the search moved each layer's scales, as a blocks × layers
  matrix of mean |log(refined/base)| (log, so halving and doubling count the same).
- One layer in detail (``layer_view``): per-channel refined/base ratios, each run's quantization
  grid (levels and clip bounds), and, given a model loader, each run's weight histogram.

Results are frozen dataclasses of numbers and numpy arrays, never tensors, so the GUI can plot them
and ``to_jsonable`` can print them for ``python -m engine compare --json``; ``*_rows`` methods give
flat dicts for CSV export (``rows.write_csv``).
"""
from __future__ import annotations

import math
import re
from collections import defaultdict
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from ..quant import QuantParams, ScaleSet
from ..rebuild import rebuild_model
from ..runrecord import RunRecord
from .rows import LibraryRow, row_from_record

_BLOCK = re.compile(r"^((?:layers\.\d+\.)?blocks\.\d+)\.(.+)$")   # ViT/DeiT "blocks.3", Swin "layers.1.blocks.0"

NamedRun = tuple[str, RunRecord]                 # (display name, e.g. the file name; record)
ModelLoader = Callable[[RunRecord], Any]         # -> the FP torch model the run was made from


# ---------------------------------------------------------------- accuracy vs bit-width, matrix

@dataclass(frozen=True)
class BitsPoint:
    """One (model, preset, quantizer, bit-width) cell over its seeds. Spread = sample std (0 for one
    seed) plus min and max, so a view can draw either error bars or a band."""
    model: str
    preset: str | None
    quantizer: str
    bits: str
    w_bits: int
    a_bits: int
    n: int
    base_mean: float
    base_std: float
    base_min: float
    base_max: float
    refined_mean: float | None      # None when no run of the cell was searched
    refined_std: float | None
    refined_min: float | None
    refined_max: float | None
    delta_mean: float | None
    delta_std: float | None
    files: tuple[str, ...]

    def to_row(self) -> dict[str, Any]:
        row = {f.name: getattr(self, f.name) for f in fields(self)}
        row["files"] = " ".join(self.files)
        return row


def _stats(values: Sequence[float]) -> tuple[float | None, float | None, float | None, float | None]:
    if not values:
        return None, None, None, None
    a = np.asarray(values, dtype=np.float64)
    return float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else 0.0, float(a.min()), float(a.max())


def _point(rows: Sequence[LibraryRow]) -> BitsPoint:
    first = rows[0]
    refined = [r.refined_top1 for r in rows if r.refined_top1 is not None]
    delta_mean, delta_std, _, _ = _stats([r.delta for r in rows if r.delta is not None])
    return BitsPoint(first.model, first.preset, first.quantizer, first.bits, first.w_bits, first.a_bits, len(rows),
                     *_stats([r.base_top1 for r in rows]), *_stats(refined), delta_mean, delta_std,
                     tuple(r.file for r in rows))


def accuracy_vs_bits(rows: Sequence[LibraryRow]) -> list[BitsPoint]:
    """Library rows grouped over seeds. Model and preset are part of the key: averaging runs of
    different searches would hide exactly what the user compares. Unreadable rows are left out."""
    groups: dict[tuple, list[LibraryRow]] = defaultdict(list)
    for row in rows:
        if row.ok and row.base_top1 is not None:
            groups[(row.model, row.preset, row.quantizer, row.bits)].append(row)
    points = [_point(members) for members in groups.values()]
    return sorted(points, key=lambda p: (p.model, p.preset or "", p.quantizer, p.w_bits, p.a_bits, p.bits))


def by_setting(points: Sequence[BitsPoint]) -> dict[tuple[str, str | None], list[BitsPoint]]:
    """Points per (model, preset): one accuracy-vs-bits chart or matrix each."""
    out: dict[tuple[str, str | None], list[BitsPoint]] = defaultdict(list)
    for point in points:
        out[(point.model, point.preset)].append(point)
    return dict(out)


@dataclass(frozen=True)
class BitsMatrix:
    """Quantizer × bit-width cells of one (model, preset); ``values`` NaN where no run exists."""
    value: str                                   # the BitsPoint field shown, e.g. refined_mean or delta_mean
    quantizers: tuple[str, ...]
    bits: tuple[str, ...]                        # ordered by (weight bits, activation bits)
    values: np.ndarray                           # (quantizers, bits)
    files: tuple[tuple[tuple[str, ...], ...], ...]   # the runs behind each cell, to open them

    def rows(self) -> list[dict[str, Any]]:
        return [{"quantizer": q, **{b: _finite(self.values[i, j]) for j, b in enumerate(self.bits)}}
                for i, q in enumerate(self.quantizers)]


def bits_matrix(points: Sequence[BitsPoint], value: str = "refined_mean") -> BitsMatrix:
    """The matrix view of one (model, preset): ``value`` (e.g. refined_mean, delta_mean) per cell."""
    if value not in {f.name for f in fields(BitsPoint)} - {"files", "model", "preset", "quantizer", "bits"}:
        raise ValueError(f"matrix value {value!r} is not a numeric field of BitsPoint")
    settings = by_setting(points)
    if len(settings) > 1:
        raise ValueError(f"one matrix per model and preset; got {sorted(settings, key=str)}")
    quantizers = tuple(dict.fromkeys(p.quantizer for p in points))
    bits = tuple(dict.fromkeys(p.bits for p in sorted(points, key=lambda p: (p.w_bits, p.a_bits, p.bits))))
    values = np.full((len(quantizers), len(bits)), np.nan)
    files = [[() for _ in bits] for _ in quantizers]
    for p in points:
        i, j = quantizers.index(p.quantizer), bits.index(p.bits)
        values[i, j] = np.nan if getattr(p, value) is None else getattr(p, value)
        files[i][j] = p.files
    return BitsMatrix(value, quantizers, bits, values, tuple(tuple(r) for r in files))


# ---------------------------------------------------------------- side by side

def split_block(name: str) -> tuple[str, str] | None:
    """'blocks.3.attn.qkv' -> ('blocks.3', 'attn.qkv'); None outside the transformer blocks."""
    match = _BLOCK.match(name)
    return (match.group(1), match.group(2)) if match else None


def block_names(scales: ScaleSet) -> list[str]:
    """The transformer blocks in forward order (the order History.block_index refers to)."""
    places = (split_block(name) for name in scales)
    return list(dict.fromkeys(where[0] for where in places if where is not None))


def _mean_abs_log_ratio(refined: QuantParams, base: QuantParams) -> float:
    return float(np.mean(np.abs(np.log(refined.scale.astype(np.float64) / base.scale.astype(np.float64)))))


def scale_shift(record: RunRecord) -> dict[tuple[str, str], float]:
    """(block, 'layer/role') -> mean |log(refined/base)| over the point's channels (empty if no base)."""
    if record.base is None:
        return {}
    out = {}
    for name, role, params in record.scales.points():
        where = split_block(name)
        if where is not None and role in record.base.get(name, {}):
            out[(where[0], f"{where[1]}/{role}")] = _mean_abs_log_ratio(params, record.base[name][role])
    return out


@dataclass(frozen=True)
class RunDetail:
    """One run's side-by-side data. Held-out top-1 is the search's own per-step measurement."""
    name: str
    row: LibraryRow
    metrics: dict[str, Any]
    loss: np.ndarray                 # per evaluation
    eval_pass: np.ndarray
    eval_block: np.ndarray           # index into the run's blocks (forward order)
    step_heldout: np.ndarray         # per block step
    step_pass: np.ndarray
    step_block: np.ndarray
    block_heldout: np.ndarray        # per SideBySide.blocks: after the block's last step; NaN if never searched
    shift: np.ndarray                # (SideBySide.blocks, SideBySide.layers); NaN where absent or no base


@dataclass(frozen=True)
class SideBySide:
    blocks: tuple[str, ...]          # union over the runs, forward order of the first run that has them
    layers: tuple[str, ...]          # 'attn.qkv/weight', ... relative to the block
    runs: tuple[RunDetail, ...]

    def loss_rows(self) -> Iterator[dict[str, Any]]:
        for run in self.runs:
            for i, (loss, p, b) in enumerate(zip(run.loss, run.eval_pass, run.eval_block), start=1):
                yield {"run": run.name, "evaluation": i, "pass": int(p), "block": int(b), "loss": float(loss)}

    def block_rows(self) -> Iterator[dict[str, Any]]:
        for j, block in enumerate(self.blocks):
            yield {"block": block, **{run.name: _finite(run.block_heldout[j]) for run in self.runs}}

    def shift_rows(self) -> Iterator[dict[str, Any]]:
        for run in self.runs:
            for i, block in enumerate(self.blocks):
                values = {layer: _finite(run.shift[i, j]) for j, layer in enumerate(self.layers)}
                yield {"run": run.name, "block": block, **values}


def _history_arrays(record: RunRecord) -> dict[str, np.ndarray]:
    h = record.history
    empty_f, empty_i = np.zeros(0, np.float64), np.zeros(0, np.int32)
    if h is None:
        return dict(loss=empty_f, eval_pass=empty_i, eval_block=empty_i, step_heldout=empty_f,
                    step_pass=empty_i, step_block=empty_i)
    return dict(loss=np.asarray(h.loss, np.float64), eval_pass=np.asarray(h.eval_pass),
                eval_block=np.asarray(h.eval_block), step_heldout=np.asarray(h.heldout_top1, np.float64),
                step_pass=np.asarray(h.pass_index), step_block=np.asarray(h.block_index))


def _block_heldout(own_blocks: list[str], arrays: dict[str, np.ndarray], blocks: Sequence[str]) -> np.ndarray:
    last = {own_blocks[b]: acc for b, acc in zip(arrays["step_block"], arrays["step_heldout"]) if b < len(own_blocks)}
    return np.array([last.get(block, np.nan) for block in blocks], dtype=np.float64)


def side_by_side(runs: Sequence[NamedRun]) -> SideBySide:
    if not runs:
        raise ValueError("side by side needs at least one run")
    shifts = [scale_shift(record) for _, record in runs]
    blocks = tuple(dict.fromkeys(b for _, record in runs for b in block_names(record.scales)))
    layers = tuple(dict.fromkeys(layer for shift in shifts for _, layer in shift))
    details = []
    for (name, record), shift in zip(runs, shifts):
        arrays = _history_arrays(record)
        matrix = np.array([[shift.get((b, l), np.nan) for l in layers] for b in blocks], dtype=np.float64)
        details.append(RunDetail(name=name, row=row_from_record(name, record), metrics=dict(record.metrics),
                                 block_heldout=_block_heldout(block_names(record.scales), arrays, blocks),
                                 shift=matrix.reshape(len(blocks), len(layers)), **arrays))
    return SideBySide(blocks, layers, tuple(details))


# ---------------------------------------------------------------- one layer in detail

@dataclass(frozen=True)
class QuantGrid:
    """The values a quantization point can output: levels (q - zero_point) * scale, q in [qmin, qmax]."""
    bits: int
    signed: bool
    scale: float
    zero_point: float
    lo: float                        # clip bounds: the lowest and highest level
    hi: float
    levels: np.ndarray | None        # None for non-uniform schemes (twin uniform, log2), whose levels differ


def quant_grid(params: QuantParams, channel: int | None = None) -> QuantGrid:
    """The grid of a per-tensor point, or of one channel of a per-channel point."""
    if params.scale.size > 1 and channel is None:
        raise ValueError("a per-channel point has one grid per channel: choose a channel")
    index = 0 if params.scale.size == 1 else channel
    if not 0 <= index < params.scale.size:
        raise ValueError(f"channel {channel} out of range (the point has {params.scale.size} channels)")
    scale, zero_point = float(params.scale.reshape(-1)[index]), float(params.zero_point.reshape(-1)[index])
    q = np.arange(params.qmin, params.qmax + 1, dtype=np.float64)
    levels = (q - zero_point) * scale
    return QuantGrid(params.bits, params.signed, scale, zero_point, float(levels[0]), float(levels[-1]),
                     levels if params.scheme == "uniform" else None)


@dataclass(frozen=True)
class LayerRun:
    name: str
    refined: QuantGrid               # the run's scales (calibrated ones for a quantize-only file)
    base: QuantGrid | None           # before the search
    ratios: np.ndarray | None        # refined/base per channel, every channel
    counts: np.ndarray | None        # weight histogram on LayerView.edges; None without a model loader


@dataclass(frozen=True)
class LayerView:
    layer: str
    role: str
    channel: int | None              # the channel the grids and histograms show (None: per-tensor point)
    runs: tuple[LayerRun, ...]
    edges: np.ndarray | None         # bin edges shared by every run's histogram

    def grid_rows(self) -> Iterator[dict[str, Any]]:
        for run in self.runs:
            for kind, grid in (("base", run.base), ("refined", run.refined)):
                if grid is not None:
                    yield {"run": run.name, "scales": kind, "bits": grid.bits, "scale": grid.scale,
                           "zero_point": grid.zero_point, "lo": grid.lo, "hi": grid.hi}


def _point_of(name: str, scales: ScaleSet, layer: str, role: str) -> QuantParams:
    try:
        return scales[layer][role]
    except KeyError:
        raise ValueError(f"run {name} has no quantization point {layer}/{role}") from None


def scale_ratios(name: str, record: RunRecord, layer: str, role: str = "weight") -> np.ndarray | None:
    """refined/base scale per channel of one point (None when the run has no base: not a search)."""
    if record.base is None:
        return None
    refined, base = _point_of(name, record.scales, layer, role), _point_of(name, record.base, layer, role)
    return (refined.scale.astype(np.float64) / base.scale.astype(np.float64)).reshape(-1)


def _weights(model: Any, layer: str, axis: int | None, channel: int | None) -> np.ndarray:
    weight = model.get_submodule(layer).weight.detach().cpu().numpy()
    return (np.take(weight, channel, axis=axis) if channel is not None and axis is not None else weight).ravel()


def layer_view(runs: Sequence[NamedRun], layer: str, role: str = "weight", channel: int | None = None,
               load_model: ModelLoader | None = None, bins: int = 64) -> LayerView:
    """Grids of every run for one point; with ``load_model`` (weights only) each run's histogram.

    Run files do not hold weights, hence the loader. Histograms are per run because a quantizer may
    re-parameterise the weights its grid applies to (repqvit folds LayerNorm into the next Linear).
    """
    if not runs:
        raise ValueError("a layer view needs at least one run")
    first = _point_of(runs[0][0], runs[0][1].scales, layer, role)
    channel = (0 if channel is None else channel) if first.scale.size > 1 else None
    weights = [None] * len(runs)
    edges = None
    if load_model is not None and role == "weight":
        weights = [_weights(load_model(record), layer, first.axis, channel) for _, record in runs]
        edges = np.histogram_bin_edges(np.concatenate(weights), bins=bins)
    return LayerView(layer, role, channel, tuple(
        LayerRun(name, quant_grid(_point_of(name, r.scales, layer, role), channel),
                 quant_grid(_point_of(name, r.base, layer, role), channel) if r.base is not None else None,
                 scale_ratios(name, r, layer, role), np.histogram(w, edges)[0] if w is not None else None)
        for (name, r), w in zip(runs, weights)), edges)


def load_run_model(record: RunRecord) -> Any:
    """The model as the run quantized it (``rebuild.rebuild_model``: weights from ``model_source``,
    checked by hash, with the run's scales loaded, which re-parameterises weights where the quantizer does)."""
    return rebuild_model(record).model


# ---------------------------------------------------------------- JSON

def _finite(value: Any) -> Any:
    value = value.item() if isinstance(value, np.generic) else value
    return None if isinstance(value, float) and not math.isfinite(value) else value


def to_jsonable(value: Any) -> Any:
    """Dataclasses, arrays, tuples and paths as JSON values; NaN/inf (no run, no base) as null."""
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return _finite(value)
