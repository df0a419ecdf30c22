"""A bit plan as people read it: its element-weighted mean bits, a label for tables, the points it moves, and
the plans ``plan`` explored, each with its widths where the plan file keeps them.

The library's bits column and the app's Plan view read these (no GUI works out a mean or a width).
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, replace
from typing import Any, Mapping, Sequence

from ..quant import QuantConfig
from ..quant.bitplan import is_weight_point
from .file import BitPlan

PLANNED = "planned"     # the front row of the plan calibrated as a whole: the plan itself


def mean_width(bits: Mapping[str, int], elements: Mapping[str, int], names: Sequence[str]) -> float:
    """The mean of ``bits`` over ``names``, each point weighted by its element count (NaN for no element)."""
    total = sum(elements[n] for n in names)
    return sum(elements[n] * bits[n] for n in names) / total if total else float("nan")


def mean_bits(bits: Mapping[str, int], elements: Mapping[str, int]) -> tuple[float, float]:
    """Element-weighted mean weight bits and mean activation bits of every point of ``bits``."""
    weights = [n for n in bits if is_weight_point(n)]
    return mean_width(bits, elements, weights), mean_width(bits, elements, [n for n in bits if n not in weights])


def mixed_label(mean_w_bits: float, mean_a_bits: float) -> str:
    """``W3.98A3.00 (plan)``: a mixed plan named by its mean bits, as the tables show it."""
    return f"W{mean_w_bits:.2f}A{mean_a_bits:.2f} (plan)"


def recorded_mean_bits(metrics: Mapping[str, Any], planning: Mapping[str, Any] | None) -> tuple[float, float] | None:
    """The mean bits a run file recorded (a search's or a quantization's metrics, or the planner's /planning)."""
    for source in (metrics, planning or {}):
        if source.get("mean_w_bits") not in (None, "") and source.get("mean_a_bits") not in (None, ""):
            return float(source["mean_w_bits"]), float(source["mean_a_bits"])
    return None


def bits_label(quant: QuantConfig, mean: tuple[float, float] | None) -> str:
    """The uniform label (``W4A3``), or a mixed plan's mean bits when known (else its base label and digest)."""
    return mixed_label(*mean) if quant.mixed and mean is not None else quant.bits_label


def plan_text(quant: QuantConfig) -> str | None:
    """The points a mixed plan moves off its base widths, grouped by width (a table's hover); None if uniform."""
    if not quant.mixed:
        return None
    by_width: dict[int, list[str]] = defaultdict(list)
    for name, bits in quant.plan:
        by_width[bits].append(name)
    base = f"W{quant.w_bits}A{quant.a_bits}" + (f"/attn{quant.attn_bits}" if quant.attn_bits is not None else "")
    lines = [f"{quant.quantizer} {base}, {len(quant.plan)} points off these widths:"]
    lines += [f"{bits} bits: {', '.join(names)}" for bits, names in sorted(by_width.items())]
    return "\n".join(lines)


@dataclass(frozen=True)
class ExploredPlan:
    """One plan ``plan`` measured on held-out (a row of its front) and, where known, every point's width."""
    kind: str                     # uniform, planned, planned-composed, random, weights-front, ...
    mean_w_bits: float
    mean_a_bits: float
    heldout_top1: float
    widths: tuple[tuple[str, int], ...] | None

    @property
    def mean_bits(self) -> float:
        """The one axis a Pareto plot of both budgets draws: the mean of the weight and activation means."""
        return (self.mean_w_bits + self.mean_a_bits) / 2


def _rows(front: Any) -> list[dict[str, Any]]:
    """The front as rows: a plan file keeps a list of rows, a run file's /planning one list per column."""
    if isinstance(front, Mapping):
        columns = list(front)
        return [dict(zip(columns, values)) for values in zip(*(front[c] for c in columns))]
    return list(front or [])


def _number(value: Any) -> float:
    return float("nan") if value is None else float(value)


def _known(widths: Any, names: Sequence[str]) -> tuple[tuple[str, int], ...] | None:
    """Widths kept as a list in the order of ``names``, or as a mapping; None where they do not fit."""
    if isinstance(widths, Mapping) and set(widths) == set(names):
        return tuple((n, int(widths[n])) for n in names)
    if isinstance(widths, list) and len(widths) == len(names):
        return tuple(zip(names, (int(b) for b in widths)))
    return None


def _row_widths(plan: BitPlan, rows: list[dict[str, Any]], names: Sequence[str]) -> list[Any]:
    kept = plan.info.get("front_widths")
    if isinstance(kept, list) and len(kept) == len(rows):
        return kept
    randoms = iter(plan.info.get("random_plans") or [])     # a file written before front_widths: these only
    return [next(randoms, None) if row.get("kind") == "random" else None for row in rows]


def explored_plans(plan: BitPlan) -> list[ExploredPlan]:
    """Every plan the planner measured, as its info keeps them (none for a plan without one), with its widths
    where the info keeps them (``front_widths``, older files ``random_plans``); the planned row's are the plan's."""
    names = [name for name, _ in plan.points]
    rows = _rows(plan.info.get("front"))
    out = []
    for row, widths in zip(rows, _row_widths(plan, rows, names)):
        known = plan.points if row["kind"] == PLANNED else _known(widths, names)
        out.append(ExploredPlan(row["kind"], _number(row["mean_w_bits"]), _number(row["mean_a_bits"]),
                                _number(row["heldout_top1"]), known))
    return out


def plan_of(plan: BitPlan, widths: Sequence[tuple[str, int]]) -> BitPlan:
    """``widths`` as a plan of ``plan``'s model, quantizer and base widths; one width for every weight and one
    for every activation is that uniform config instead (no plan at all, the same run as ``--bits``)."""
    weights = {b for n, b in widths if is_weight_point(n)}
    activations = {b for n, b in widths if not is_weight_point(n)}
    if len(weights) == 1 and len(activations) == 1:
        return BitPlan(plan.model, plan.quantizer, weights.pop(), activations.pop(), tuple(widths), None,
                       plan.allow_float)
    return replace(plan, points=tuple(widths), info={})


def budget_of(plan: BitPlan) -> tuple[float, float] | None:
    """The budget ``plan`` was chosen for (mean weight and activation bits), as a plan file or a run file keeps it."""
    info = plan.info
    budget = info.get("budget")
    if isinstance(budget, Mapping):
        return float(budget["mean_w_bits"]), float(budget["mean_a_bits"])
    if info.get("budget_w_bits") is not None and info.get("budget_a_bits") is not None:
        return float(info["budget_w_bits"]), float(info["budget_a_bits"])
    return None


def with_plan(spec: Any, plan: BitPlan) -> Any:
    """``spec`` (a RunSpec) quantized as ``plan`` says, its quantizer and base widths included, as ``search --plan
    PLAN`` takes them; ValueError when the plan is another model's."""
    if plan.model != spec.model:
        raise ValueError(f"the plan is for {plan.model}, not for the model selected on the left ({spec.model})")
    return replace(spec, quant=plan.quant_config())
