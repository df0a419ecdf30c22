"""Plan files: a bit plan as JSON, what ``plan`` writes and ``search --plan`` reads.

```
{"format": "cptv-bitplan", "version": 1, "model": "digits-vit", "quantizer": "minmax",
 "bits": "W4A3", "attn_bits": null, "allow_float": [],
 "points": {"blocks.0.attn.qkv/weight": 4, "blocks.0.attn.qkv/input": 6, ...},
 "elements": {"blocks.0.attn.qkv/weight": 27648, ...}, ...what ``plan`` measured}
```

``points`` gives every quantization point of the model its width; ``bits`` (and ``attn_bits``) are the
uniform widths the plan started from, the base a point the plan leaves out keeps. Any other key is
information (the budget, the predicted and measured held-out top-1, the explored front) that readers
keep but never compute with. A run file (.h5) is a plan too: every point at the width its scales have.
Every way a file can be wrong is one ``PlanFileError`` line naming the file and the entry.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..atomic import write_text
from ..quant import QuantConfig, parse_bits
from ..quant.bitplan import ACTIVATION_BITS, check_bits, split_point

FORMAT = "cptv-bitplan"
VERSION = 1
MAX_PLAN_BYTES = 64 << 20   # far above any model's plan (ViT-B: ~100 points); a bigger file is not one


class PlanFileError(ValueError):
    """A plan file that cannot be read: one line naming the file and what is wrong."""


@dataclass(frozen=True)
class BitPlan:
    """Every quantization point's width (module order), and the uniform config it started from."""
    model: str
    quantizer: str
    w_bits: int
    a_bits: int
    points: tuple[tuple[str, int], ...]
    attn_bits: int | None = None
    allow_float: tuple[str, ...] = ()
    info: dict[str, Any] = field(default_factory=dict, compare=False)   # what ``plan`` measured

    @property
    def bits_label(self) -> str:
        return f"W{self.w_bits}A{self.a_bits}"

    def quant_config(self, quantizer: str | None = None, bits: str | None = None, attn_bits: int | None = None,
                     allow_float: tuple[str, ...] | None = None) -> QuantConfig:
        """The plan as a QuantConfig: the plan's quantizer and base widths unless given, every point at
        the plan's width (canonical: the points at their role's base width drop out)."""
        w, a = parse_bits(bits) if bits else (self.w_bits, self.a_bits)
        return QuantConfig(quantizer or self.quantizer, w, a, attn_bits if attn_bits is not None else self.attn_bits,
                           tuple(allow_float) if allow_float else self.allow_float, self.points)

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": VERSION, "model": self.model, "quantizer": self.quantizer,
                "bits": self.bits_label, "attn_bits": self.attn_bits, "allow_float": list(self.allow_float),
                "points": dict(self.points), **{k: v for k, v in self.info.items() if k not in _OWN_KEYS}}


_OWN_KEYS = ("format", "version", "model", "quantizer", "bits", "attn_bits", "allow_float", "points")


def _plain(value: Any) -> Any:
    """JSON has no NaN or infinity: written as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def save_plan(path: str | Path, plan: BitPlan) -> Path:
    """Write atomically (a crash never leaves half a plan under the name)."""
    path = Path(path)
    return write_text(path, json.dumps(_plain(plan.to_dict()), indent=1) + "\n")


def plan_from_dict(values: Any) -> BitPlan:
    """A BitPlan from a decoded plan file; ValueError naming the first entry at fault."""
    if not isinstance(values, dict):
        raise ValueError("not a JSON object")
    if values.get("format") != FORMAT:
        raise ValueError(f"format is {values.get('format')!r}, not {FORMAT!r} (not a plan file)")
    version = values.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(f"version is {version!r}, not a positive integer")
    if version > VERSION:
        raise ValueError(f"version {version} was written by a later cptv-studio; this build reads up to {VERSION}")
    for key in ("model", "quantizer", "bits"):
        if not isinstance(values.get(key), str) or not values[key]:
            raise ValueError(f"{key!r} is {values.get(key)!r}, not a name")
    w_bits, a_bits = parse_bits(values["bits"])
    attn_bits = values.get("attn_bits")
    if attn_bits is not None and (isinstance(attn_bits, bool) or not isinstance(attn_bits, int)
                                  or not ACTIVATION_BITS[0] <= attn_bits <= ACTIVATION_BITS[1]):
        raise ValueError(f"'attn_bits' is {attn_bits!r}, not null or an integer from {ACTIVATION_BITS[0]} to "
                         f"{ACTIVATION_BITS[1]}")
    allow_float = values.get("allow_float", [])
    if not (isinstance(allow_float, list) and all(isinstance(p, str) for p in allow_float)):
        raise ValueError("'allow_float' is not a list of module patterns")
    points = values.get("points")
    if not isinstance(points, dict) or not points:
        raise ValueError("'points' is not an object of point name -> bits")
    for name, bits in points.items():
        split_point(name)
        check_bits(name, bits)
    info = {k: v for k, v in values.items() if k not in _OWN_KEYS}
    return BitPlan(values["model"], values["quantizer"], w_bits, a_bits, tuple(points.items()), attn_bits,
                   tuple(allow_float), info)


def load_plan(path: str | Path) -> BitPlan:
    """The plan in ``path``: a plan file (JSON) or a run file (.h5, every point at its scales' width)."""
    path = Path(path)
    if path.suffix.lower() in (".h5", ".hdf5"):
        return _plan_of_run(path)
    try:
        if path.stat().st_size > MAX_PLAN_BYTES:
            raise PlanFileError(f"plan file {path} is {path.stat().st_size} bytes: not a plan file")
        values = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PlanFileError(f"plan file {path} is not JSON: {' '.join(str(exc).split())}") from None
    try:
        return plan_from_dict(values)
    except ValueError as exc:
        raise PlanFileError(f"plan file {path}: {' '.join(str(exc).split())}") from None


def _plan_of_run(path: Path) -> BitPlan:
    from ..scalefile import ScaleFileError, load_run   # the run file reader imports the engine

    try:
        record = load_run(path)
    except ScaleFileError as exc:
        raise PlanFileError(str(exc)) from None
    quant = record.quant
    points = tuple((f"{owner}/{role}", params.bits) for owner, role, params in record.scales.points())
    return BitPlan(record.model_name, quant.quantizer, quant.w_bits, quant.a_bits, points, quant.attn_bits,
                   quant.allow_float, dict(record.planning or {}))
