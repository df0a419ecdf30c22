"""``plan``: choose a bit-width per quantization point for a budget of mean bits, as a generator of events.

1. Calibrate the quantizer at every allowed width ``b`` (uniform ``WbAb``) on the calibration images.
2. Count each point's elements (``elements.point_elements``) and find the points the quantizer fixes
   (FQ-ViT's 4-bit Log-Int-Softmax): they keep their width and count in the budget at it.
3. The base: every weight at the largest allowed width within the weight budget, every activation
   likewise. Score it, then every point at every other allowed width with the rest at the base
   (``measure.width_sweep``): the fitness loss on the calibration images (the cost the allocation
   minimises, label-free) and the held-out top-1 (for the prediction only).
4. Allocate the weights and the activations, each under its own budget (``allocate.py``).
5. Check on held-out: the plan's scales composed from the per-width calibrations, the plan calibrated
   as a whole (what ``search --plan`` starts from), the uniform base, random plans of the same budget,
   and the front the Lagrangian prices trace (the weights' with the chosen activations, and the other way).

The test split is never read. Every measurement is counted; the same seed gives the same plan.
"""
from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import Any, Iterator, Sequence

import numpy as np

from ..data import TensorImages, calibration_batches, first_images, materialize
from ..diagnose.events import MeasureCounter, Measured
from ..diagnose.points import Point, quantization_points
from ..diagnose.probe import Probe, Score
from ..pipeline import RunSpec, load_model_and_data
from ..quant import QuantConfig, QuantizedModel, ScaleSet, quantize
from ..runrecord import RunRecord, spec_values
from ..search.config import PRESETS, SearchConfig
from ..search.evaluator import search_fitness
from ..events import Stage
from ..search.segments import model_segments
from .allocate import Allocation, Group, allocate, capacity, explored_front, random_costs
from .target import MAX_CHECKS, budget_for_target
from .file import BitPlan
from .elements import point_elements
from .measure import LossProbe, compose, width_sweep
from .summary import mean_width

log = logging.getLogger(__name__)

DEFAULT_BITS_SET = (2, 3, 4, 6, 8)
DEFAULT_IMAGES = 256        # calibration images that score the fitness loss (as the diagnosis)
DEFAULT_FRONT_POINTS = 8    # Lagrangian plans measured on each of the two fronts
DEFAULT_RANDOM_DRAWS = 5
PLAN_STREAM = 0xB175        # the random plans' draws: independent of the calibration draw of the same seed


@dataclass(frozen=True)
class PlanConfig:
    budget_w_bits: Fraction | None           # element-weighted mean weight bits, at most (None: the target's)
    budget_a_bits: Fraction | None           # element-weighted mean activation bits, at most (None: the target's)
    bits_set: tuple[int, ...] = DEFAULT_BITS_SET
    images: int | None = DEFAULT_IMAGES      # the first N calibration images score the fitness; None: all
    heldout_images: int | None = None        # the first N held-out images score top-1; None: all
    front_points: int = DEFAULT_FRONT_POINTS
    random_draws: int = DEFAULT_RANDOM_DRAWS
    fitness: SearchConfig = field(default_factory=lambda: PRESETS["default"])
    target_top1: float | None = None         # held-out top-1 (%) to reach with the fewest bits, instead of a budget

    def __post_init__(self) -> None:
        bits = tuple(sorted(set(self.bits_set)))
        if not bits or bits[0] < 2 or bits[-1] > 16:
            raise ValueError(f"--bits-set needs widths from 2 to 16, got {list(self.bits_set)}")
        object.__setattr__(self, "bits_set", bits)
        given = [name for name in ("budget_w_bits", "budget_a_bits") if getattr(self, name) is not None]
        for name in given:
            object.__setattr__(self, name, Fraction(getattr(self, name)))
        if self.target_top1 is None and len(given) < 2:
            raise ValueError("plan needs a budget (--budget WxAy, or --mean-w-bits and --mean-a-bits) or "
                             "--target-top1")
        if self.target_top1 is not None and len(given) == 2:
            raise ValueError("--target-top1 chooses the budget: give it at most one of --mean-w-bits and "
                             "--mean-a-bits")
        if self.target_top1 is not None and not 0 < self.target_top1 <= 100:
            raise ValueError(f"--target-top1 is a held-out top-1 in percent, above 0 and at most 100, got "
                             f"{self.target_top1:g}")
        check_budget(self.budget_w_bits, self.budget_a_bits, bits)
        for name in ("images", "heldout_images"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        if self.front_points < 0 or self.random_draws < 0:
            raise ValueError("front points and random draws cannot be negative")


def check_budget(w_bits: Fraction | None, a_bits: Fraction | None, bits_set: Sequence[int]) -> None:
    """ValueError naming the flag when a mean lies outside the allowed widths (no plan could meet it, or
    every plan would, trivially); a mean not given (None) is the target's to choose."""
    low, high = min(bits_set), max(bits_set)
    for flag, value in (("--mean-w-bits", w_bits), ("--mean-a-bits", a_bits)):
        if value is not None and not low <= value <= high:
            raise ValueError(f"{flag} {float(value):g} is outside the widths of --bits-set "
                             f"{','.join(map(str, bits_set))} ({low} to {high})")


def base_width(budget: Fraction, bits_set: Sequence[int]) -> int:
    """The largest allowed width within ``budget`` (the uniform plan the costs are measured around)."""
    return max([b for b in bits_set if b <= budget] or [min(bits_set)])


@dataclass(frozen=True)
class FrontRow:
    kind: str                 # uniform, weights-front, activations-front, random, planned-composed, planned
    mean_w_bits: float
    mean_a_bits: float
    predicted_loss: float     # NaN where the costs do not predict it (a plan calibrated as a whole)
    predicted_top1: float
    loss: float               # the fitness loss on the calibration images
    heldout_top1: float


@dataclass(frozen=True, eq=False)
class PlanResult:
    plan: BitPlan                       # every point's width; its info holds what follows, as JSON
    quant: QuantConfig                  # the plan as a config (canonical), what ``search --plan`` builds
    record: RunRecord                   # the plan calibrated as a whole, for the run file
    points: tuple[Point, ...]
    elements: dict[str, int]
    fixed: tuple[str, ...]              # points whose width the quantizer fixes
    base_w_bits: int
    base_a_bits: int
    mean_w_bits: float
    mean_a_bits: float
    predicted_loss: float
    predicted_top1: float
    composed_top1: float                # the plan's scales composed from the per-width calibrations
    planned_top1: float                 # the plan calibrated as a whole: "measured"
    planned_loss: float
    uniform_top1: float                 # the base widths, uniform, calibrated as a whole
    fp_top1: float
    random_top1: tuple[float, ...]      # random plans of the same budget (composed)
    allocations: dict[str, Allocation]  # "weights", "activations"
    front: tuple[FrontRow, ...]
    measurements: int
    calibrations: int
    seconds: float


@dataclass(frozen=True)
class Planned:
    result: PlanResult


Event = Stage | Measured | Planned


def _heldout(images: TensorImages, limit: int | None) -> TensorImages:
    if limit is None or limit >= len(images):
        return images
    return TensorImages(images.images[:limit], images.labels[:limit], images.originals[:limit])


def plan_run(spec: RunSpec, config: PlanConfig) -> Iterator[Event]:
    """Yields Stage, Measured and finally Planned. ``spec.quant`` names the quantizer (its bits are unused:
    the widths come from ``config``) and ``allow_float``."""
    start = time.perf_counter()
    quantizer, allow_float = spec.quant.quantizer, spec.quant.allow_float
    yield Stage(f"loading {spec.model} and its data")
    model, info, splits, device = load_model_and_data(replace(spec, quant=QuantConfig(quantizer)))
    if info.num_classes == 0:
        raise ValueError(f"{info.name} has no classifier: plan checks its plans by held-out top-1")
    fp_model = copy.deepcopy(model)
    calib = calibration_batches(splits, spec.batch_size, device)
    calibrations = 0

    def calibrated(quant: QuantConfig) -> QuantizedModel:
        nonlocal calibrations
        calibrations += 1
        return quantize(copy.deepcopy(fp_model), quant, calib)

    by_width: dict[int, ScaleSet] = {}
    qmodel = None
    for width in config.bits_set:
        yield Stage(f"calibrating {quantizer} at W{width}A{width}")
        qmodel = calibrated(QuantConfig(quantizer, width, width, None, allow_float))
        by_width[width] = qmodel.scale_set()
    points = quantization_points(qmodel)
    names = [p.name for p in points]
    elements = point_elements(qmodel, calib[0][:2])
    fixed = tuple(p.name for p in points
                  if any(by_width[w].get_point(p.owner, p.role).bits != w for w in config.bits_set))
    fixed_bits = {p.name: by_width[config.bits_set[0]].get_point(p.owner, p.role).bits for p in points
                  if p.name in fixed}
    weights = [p for p in points if p.is_weight]
    activations = [p for p in points if not p.is_weight]
    any_width = by_width[config.bits_set[0]]   # the scales a composed plan starts from (fixed points: theirs)

    segments = model_segments(qmodel.model)
    limits = [n for n in (config.images, config.fitness.search_images) if n is not None]
    images = first_images(calib, min(limits) if limits else None)
    yield Stage(f"computing the FP reference on {sum(len(x) for x in images)} calibration images")
    fitness = search_fitness(qmodel, segments, images, config.fitness)
    heldout = _heldout(materialize(splits.heldout, spec.batch_size, device), config.heldout_images)
    probe = Probe(segments, fitness, images, heldout, spec.batch_size, device)
    with qmodel.full_precision():
        fp_score = probe.score_from_images()

    # every point at every width alone (a fixed point at its own width, once)
    swept = {i: [config.bits_set[0]] if p.name in fixed else list(config.bits_set) for i, p in enumerate(points)}
    n_sweep = sum(len(v) for v in swept.values())
    # announced up front; the fronts may hold fewer distinct plans, counted exactly once they are known
    counter = MeasureCounter(1 + n_sweep + 3 + len(config.bits_set) ** 2 + 2 * config.front_points + config.random_draws
                             + (MAX_CHECKS if config.target_top1 is not None else 0))
    yield counter.step(f"FP: held-out {fp_score.top1:.2f}%")
    loss_at: dict[str, dict[int, float]] = {p.name: {} for p in points}
    for index, width, measured in width_sweep(qmodel, LossProbe(probe), points, by_width, swept):
        name = points[index].name
        loss_at[name][fixed_bits.get(name, width)] = measured.loss
        yield counter.step(f"only {name} at {fixed_bits.get(name, width)} bits: loss {measured.loss:.4g}")

    def group(members: Sequence[Point]) -> Group:
        widths = [np.array(sorted(loss_at[p.name]), np.int64) for p in members]
        return Group(tuple(p.name for p in members), np.array([elements[p.name] for p in members], np.int64),
                     tuple(widths), tuple(np.array([loss_at[p.name][int(w)] for w in ws]) for p, ws in
                                          zip(members, widths)))

    groups = {"weights": group(weights), "activations": group(activations)}

    def predicted_loss(bits: dict[str, int]) -> float:
        return float(sum(loss_at[n][b] for n, b in bits.items()))

    measured_rows: list[tuple[str, dict[str, int], Score]] = []

    def measure(kind: str, bits: dict[str, int]) -> Score:
        qmodel.load_scale_set(compose(any_width, by_width, {n: b for n, b in bits.items() if n not in fixed}))
        measured = probe.score_from_images()
        measured_rows.append((kind, bits, measured))
        return measured

    yield Stage("checking the uniform widths on held-out")
    for w in config.bits_set:
        for a in config.bits_set:
            measured = measure("uniform", {p.name: fixed_bits.get(p.name, w if p.is_weight else a) for p in points})
            yield counter.step(f"uniform W{w}A{a}: held-out {measured.top1:.2f}%")
    to_top1 = loss_to_top1([(0.0, fp_score.top1)] + [(m.loss, m.top1) for kind, _, m in measured_rows
                                                      if kind == "uniform"])
    budget_w, budget_a, target_checks = config.budget_w_bits, config.budget_a_bits, []
    if config.target_top1 is not None:
        yield Stage(f"finding the fewest mean bits that reach {config.target_top1:g}% on held-out")
        budget_w, budget_a = yield from budget_for_target(config.target_top1, config.bits_set, (budget_w, budget_a),
                                                          groups, to_top1, measure, counter, target_checks)
    w_base, a_base = base_width(budget_w, config.bits_set), base_width(budget_a, config.bits_set)
    base_bits = {p.name: fixed_bits.get(p.name, w_base if p.is_weight else a_base) for p in points}
    budgets = {"weights": budget_w, "activations": budget_a}
    caps = {kind: capacity(budgets[kind], g.total_elements) for kind, g in groups.items()}
    allocations = {}
    for kind, g in groups.items():
        try:
            allocations[kind] = allocate(g, caps[kind])
        except ValueError as exc:
            flag = "--mean-w-bits" if kind == "weights" else "--mean-a-bits"
            raise ValueError(f"{flag} {float(budgets[kind]):g}: {exc} (the points {quantizer} fixes count at their "
                             "width)") from None
    chosen = {name: int(bits) for kind, g in groups.items()
              for name, bits in zip(g.names, g.bits(allocations[kind].choice))}
    fronts = {kind: explored_front(g, config.front_points) for kind, g in groups.items()}
    counter.total = counter.done + 3 + sum(map(len, fronts.values())) + config.random_draws

    yield Stage("checking on held-out: the plan, the fronts, random plans")
    composed = measure("planned-composed", chosen)
    yield counter.step(f"the plan (composed): held-out {composed.top1:.2f}%")
    for kind, g in groups.items():
        for plan in fronts[kind]:
            measured = measure(f"{kind}-front", {**chosen, **dict(zip(g.names, (int(b) for b in g.bits(plan))))})
            yield counter.step(f"{kind} front at {g.mean_bits(plan):.3f} bits: held-out {measured.top1:.2f}%")
    rng = np.random.default_rng([PLAN_STREAM, spec.seed])
    random_top1, random_plans = [], []
    for draw in range(config.random_draws):
        bits = {}
        for kind, g in groups.items():
            pick = allocate(random_costs(g, rng), caps[kind]).choice
            bits.update(zip(g.names, (int(b) for b in g.bits(pick))))
        random_plans.append(bits)
        random_top1.append(measure("random", bits).top1)
        yield counter.step(f"random plan {draw + 1}/{config.random_draws}: held-out {random_top1[-1]:.2f}%")

    yield Stage(f"calibrating {quantizer} with the plan, and uniform W{w_base}A{a_base}")
    planned_quant = QuantConfig(quantizer, w_base, a_base, None, allow_float, chosen)
    planned_scales = calibrated(planned_quant).scale_set()
    qmodel.load_scale_set(planned_scales)
    planned = probe.score_from_images()
    yield counter.step(f"the plan (calibrated): held-out {planned.top1:.2f}%")
    uniform_scales = (by_width[w_base] if w_base == a_base
                      else calibrated(QuantConfig(quantizer, w_base, a_base, None, allow_float)).scale_set())
    qmodel.load_scale_set(uniform_scales)
    uniform = probe.score_from_images()
    yield counter.step(f"uniform W{w_base}A{a_base} (calibrated): held-out {uniform.top1:.2f}%")
    seconds = time.perf_counter() - start

    weight_names, activation_names = [p.name for p in weights], [p.name for p in activations]

    def front_row(kind: str, bits: dict[str, int], measured: Score, predicted: bool = True) -> FrontRow:
        loss = predicted_loss(bits) if predicted else float("nan")
        return FrontRow(kind, mean_width(bits, elements, weight_names), mean_width(bits, elements, activation_names),
                        loss, to_top1(loss) if predicted else float("nan"), measured.loss, measured.top1)

    front = [front_row(kind, bits, m) for kind, bits, m in measured_rows]
    front.append(front_row("planned", chosen, planned, predicted=False))
    front.append(front_row("uniform-calibrated", base_bits, uniform, predicted=False))
    mean_w, mean_a = mean_width(chosen, elements, weight_names), mean_width(chosen, elements, activation_names)
    plan_loss = predicted_loss(chosen)
    result_info = {
        "budget": {"mean_w_bits": float(budget_w), "mean_a_bits": float(budget_a)},
        "target_top1": config.target_top1, "target_checks": target_checks,
        "bits_set": list(config.bits_set), "base_bits": f"W{w_base}A{a_base}", "seed": spec.seed,
        "mean_w_bits": mean_w, "mean_a_bits": mean_a,
        "heldout_fp_top1": fp_score.top1, "heldout_predicted_top1": to_top1(plan_loss),
        "heldout_planned_top1": planned.top1, "heldout_composed_top1": composed.top1,
        "heldout_uniform_top1": uniform.top1, "heldout_random_top1": random_top1, "random_plans": random_plans,
        "predicted_loss": plan_loss, "planned_loss": planned.loss, "uniform_loss": uniform.loss,
        "measurements": counter.done, "calibrations": calibrations, "seconds": seconds,
        "n_calibration": sum(len(x) for x in images), "n_heldout": len(heldout),
        "fitness": {"loss": config.fitness.loss, "temperature": config.fitness.temperature,
                    "features": config.fitness.features},
        "allocation": {kind: {"method": a.method, "price": a.price, "lagrangian_cost": a.lagrangian_cost,
                              "moves": a.moves, "lagrangian_moves_cost": a.heuristic_cost,
                              "cost": groups[kind].cost(a.choice)} for kind, a in allocations.items()},
        "fixed": list(fixed), "elements": elements, "costs": loss_at,
        "front": [vars(r) for r in front],
        # each front row's widths, in the order of the plan's points (a plan the app can search from)
        "front_widths": [[bits[n] for n in names] for bits in [b for _, b, _ in measured_rows] + [chosen, base_bits]],
    }
    plan = BitPlan(info.name, quantizer, w_base, a_base, tuple((n, chosen[n]) for n in names), None, allow_float,
                   result_info)
    record = RunRecord(model_name=info.name, model_source=info.source, weights_sha256=info.weights_sha256,
                       quant=planned_quant, calibration=_calibration_meta(spec, info, splits), scales=planned_scales,
                       seed=spec.seed, spec=spec_values(replace(spec, quant=planned_quant)),
                       metrics={"quality": "top1", "heldout_fp_top1": fp_score.top1,
                                "heldout_base_top1": planned.top1, "device": str(device)},
                       planning=planning_attrs(result_info))
    log.info("planned %d points in %.1f s: %d measurements, %d calibrations", len(points), seconds, counter.done,
             calibrations)
    yield Planned(PlanResult(plan, planned_quant, record, tuple(points), elements, fixed, w_base, a_base, mean_w,
                             mean_a, plan_loss, to_top1(plan_loss), composed.top1, planned.top1, planned.loss,
                             uniform.top1, fp_score.top1, tuple(random_top1), allocations, tuple(front), counter.done,
                             calibrations, seconds))


def loss_to_top1(pairs: Sequence[tuple[float, float]]):
    """Held-out top-1 as a function of the fitness loss, fitted to measured ``(loss, top1)`` pairs: the
    non-increasing fit of least squares (pool adjacent violators) over log loss, interpolated between them
    and flat beyond. It turns a predicted loss into a predicted top-1."""
    pairs = sorted(pairs)
    x = np.log10(np.maximum([p[0] for p in pairs], 1e-12))
    blocks: list[list[float]] = []   # [sum, count, first x index]
    for i, (_, top1) in enumerate(pairs):
        blocks.append([top1, 1.0, i])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] < blocks[-1][0] / blocks[-1][1]:
            total, count, _ = blocks.pop()
            blocks[-1][0] += total
            blocks[-1][1] += count
    fitted = np.empty(len(pairs))
    for j, (total, count, first) in enumerate(blocks):
        last = blocks[j + 1][2] if j + 1 < len(blocks) else len(pairs)
        fitted[int(first):int(last)] = total / count

    def predict(loss: float) -> float:
        return float(np.interp(np.log10(max(loss, 1e-12)), x, fitted))

    return predict


def _calibration_meta(spec: RunSpec, info, splits) -> dict[str, Any]:
    meta = splits.describe()
    return {"dataset": meta["dataset"], "n_samples": meta["n_calibration"], "seed": spec.seed,
            "input_size": list(info.input_size), "mean": list(info.mean), "std": list(info.std),
            "heldout_source": meta["heldout_source"], "class_map": meta["class_map"]}


FRONT_COLUMNS = ("kind", "mean_w_bits", "mean_a_bits", "predicted_loss", "predicted_top1", "loss", "heldout_top1")


def planning_attrs(info: dict[str, Any]) -> dict[str, Any]:
    """What the run file's /planning keeps: the numbers, and the front as columns (JSON lists)."""
    front = info["front"]
    return {"budget_w_bits": info["budget"]["mean_w_bits"], "budget_a_bits": info["budget"]["mean_a_bits"],
            "bits_set": info["bits_set"], "base_bits": info["base_bits"], "seed": info["seed"],
            "mean_w_bits": info["mean_w_bits"], "mean_a_bits": info["mean_a_bits"],
            "heldout_fp_top1": info["heldout_fp_top1"], "heldout_predicted_top1": info["heldout_predicted_top1"],
            "heldout_planned_top1": info["heldout_planned_top1"],
            "heldout_uniform_top1": info["heldout_uniform_top1"], "measurements": info["measurements"],
            "calibrations": info["calibrations"], "seconds": info["seconds"],
            "front": {column: [_finite(row[column]) for row in front] for column in FRONT_COLUMNS}}


def _finite(value: Any) -> Any:
    return None if isinstance(value, float) and not np.isfinite(value) else value


def front_csv(rows: Sequence[FrontRow]) -> str:
    lines = [",".join(FRONT_COLUMNS)]
    for r in rows:
        lines.append(",".join([r.kind] + [("" if not np.isfinite(v) else f"{v:.6g}") for v in
                                          (r.mean_w_bits, r.mean_a_bits, r.predicted_loss, r.predicted_top1,
                                           r.loss, r.heldout_top1)]))
    return "\n".join(lines) + "\n"
