"""``plan``: choose a bit-width per quantization point for a budget of mean weight and activation bits
(element-weighted), from per-point costs measured at every allowed width; checked on held-out, never on
the test split. Writes the plan (JSON, what ``search --plan`` reads), optionally a run file and the front
it explored (CSV)."""
from __future__ import annotations

import argparse
import re
import sys
from fractions import Fraction

from ..argtypes import int_range, output_file, positive_int
from ..cli import add_model_args, add_output_args, emit, run_spec
from ..diagnose.events import Measured
from ..atomic import write_text
from ..plan.file import save_plan
from ..plan.run import (DEFAULT_BITS_SET, DEFAULT_FRONT_POINTS, DEFAULT_IMAGES, DEFAULT_RANDOM_DRAWS, PlanConfig,
                        Planned, check_budget, front_csv, plan_run)
from ..quant import QuantConfig, available_quantizers
from ..quant.bitplan import ACTIVATION_BITS
from ..scalefile import save_run
from ..events import Stage

_NUMBER = r"(\d+(?:\.\d+)?)"
_BUDGET = re.compile(rf"^W{_NUMBER}A{_NUMBER}$", re.IGNORECASE)
PROGRESS_STEPS = 10


def mean_bits(text: str) -> Fraction:
    """A mean bit-width, exactly as written (``3.5`` is 7/2): a plain decimal from 2 to 16."""
    if not re.fullmatch(_NUMBER, text.strip()) or not ACTIVATION_BITS[0] <= Fraction(text.strip()) <= ACTIVATION_BITS[1]:
        raise argparse.ArgumentTypeError(f"expected a mean bit-width from {ACTIVATION_BITS[0]} to {ACTIVATION_BITS[1]} "
                                         f"like 4 or 3.5, got {text!r}")
    return Fraction(text.strip())


def budget(text: str) -> tuple[Fraction, Fraction]:
    """``W4A3`` or ``W3.5A3.25``: mean weight and activation bits, each from 2 to 16."""
    match = _BUDGET.match(text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"expected mean bits like W4A3 or W3.5A3.25, got {text!r}")
    values = tuple(Fraction(v) for v in match.groups())
    if not all(ACTIVATION_BITS[0] <= v <= ACTIVATION_BITS[1] for v in values):
        raise argparse.ArgumentTypeError(f"mean bits out of range in {text!r} (each from {ACTIVATION_BITS[0]} to "
                                         f"{ACTIVATION_BITS[1]})")
    return values


def bits_set(text: str) -> tuple[int, ...]:
    """Comma-separated widths, each from 2 to 16: ``3,4,6,8``."""
    try:
        values = tuple(sorted({int(part) for part in text.split(",")}))
    except ValueError:
        values = ()
    if not values or values[0] < ACTIVATION_BITS[0] or values[-1] > ACTIVATION_BITS[1]:
        raise argparse.ArgumentTypeError(f"expected widths from {ACTIVATION_BITS[0]} to {ACTIVATION_BITS[1]} like "
                                         f"3,4,6,8, got {text!r}")
    return values


def add_parser(sub) -> None:
    parser = sub.add_parser("plan", help="mixed precision: a bit-width per quantization point for a budget of mean "
                                         "bits, checked on held-out")
    add_model_args(parser)
    group = parser.add_argument_group("quantization and budget")
    group.add_argument("--quantizer", choices=available_quantizers(), default="minmax",
                       help="the base quantizer every width is calibrated with")
    group.add_argument("--allow-float", action="append", default=None, metavar="MODULE_PATTERN",
                       help="keep the matmuls of modules matching this fnmatch pattern in float (as quantize)")
    group.add_argument("--budget", type=budget, default=None, metavar="WxAy",
                       help="mean weight and activation bits, each weighted by element count: W4A3, W3.5A3.25")
    group.add_argument("--mean-w-bits", type=mean_bits, default=None,
                       help="mean weight bits, weighted by parameter count (overrides --budget's W)")
    group.add_argument("--mean-a-bits", type=mean_bits, default=None,
                       help="mean activation bits, weighted by elements per image (overrides --budget's A)")
    group.add_argument("--target-top1", type=float, default=None, metavar="PERCENT",
                       help="instead of a budget: the fewest mean bits whose plan reaches this held-out top-1 (a "
                            "--mean-w-bits or --mean-a-bits given with it stays fixed)")
    group.add_argument("--bits-set", type=bits_set, default=DEFAULT_BITS_SET, metavar="B[,B...]",
                       help=f"the widths a point may take (default {','.join(map(str, DEFAULT_BITS_SET))})")
    parser.add_argument("--images", type=positive_int, default=DEFAULT_IMAGES,
                        help="the first N calibration images score the fitness loss each cost is")
    parser.add_argument("--heldout-images", type=positive_int, default=None,
                        help="held-out images that check the plans: the first N (default: all)")
    parser.add_argument("--front-points", type=int_range(0), default=DEFAULT_FRONT_POINTS,
                        help="Lagrangian plans measured on held-out along each front (weights, activations)")
    parser.add_argument("--random-draws", type=int_range(0), default=DEFAULT_RANDOM_DRAWS,
                        help="random plans of the same budget measured on held-out, to compare with")
    parser.add_argument("--out", type=output_file, required=True, help="plan file to write (.json)")
    parser.add_argument("--run-out", type=output_file, default=None,
                        help="also write the plan calibrated as a whole as a run file (.h5)")
    parser.add_argument("--csv", type=output_file, default=None,
                        help="write every plan measured (mean bits, predicted and held-out top-1) as CSV")
    add_output_args(parser)
    parser.set_defaults(func=run)


def plan_config(args: argparse.Namespace) -> PlanConfig:
    """The budget from the flags, checked against --bits-set before any model is built."""
    if args.budget is not None and args.target_top1 is not None:
        raise ValueError("--budget and --target-top1 are two ways to say what to plan for: give one")
    w, a = args.budget if args.budget is not None else (None, None)
    w = args.mean_w_bits if args.mean_w_bits is not None else w
    a = args.mean_a_bits if args.mean_a_bits is not None else a
    try:
        check_budget(w, a, args.bits_set)
    except ValueError as exc:
        if args.budget is not None:   # name the flag the value came from
            raise ValueError(f"--budget: {exc}") from None
        raise
    return PlanConfig(w, a, args.bits_set, args.images, args.heldout_images, args.front_points, args.random_draws,
                      target_top1=args.target_top1)


def _progress(event: Measured, shown: list[int]) -> None:
    if sys.stderr.isatty():
        sys.stderr.write(f"\r\033[K[{event.done}/{event.total}] {event.what}")
        sys.stderr.flush()
        return
    step = max(1, event.total // PROGRESS_STEPS)
    if event.done // step > shown[0] or event.done == event.total:
        shown[0] = event.done // step
        print(f"[{event.done}/{event.total}] {event.what}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    config = plan_config(args)
    spec = run_spec(args, QuantConfig(args.quantizer, allow_float=tuple(args.allow_float or ())))
    result, shown = None, [0]
    for event in plan_run(spec, config):
        if isinstance(event, Stage):
            args.heartbeat.doing(event.message)
            if not args.quiet:
                print(event.message, file=sys.stderr, flush=True)
        elif isinstance(event, Measured):
            args.heartbeat.doing(f"[{event.done}/{event.total}] {event.what}")
            if not args.quiet:
                _progress(event, shown)
        elif isinstance(event, Planned):
            result = event.result
    if sys.stderr.isatty() and not args.quiet:
        sys.stderr.write("\n")
    out = {"out": str(save_plan(args.out, result.plan))}
    if args.run_out:
        out["run_out"] = str(save_run(args.run_out, result.record))
    if args.csv:
        out["csv"] = str(write_text(args.csv, front_csv(result.front)))
    info = result.plan.info
    summary = {key: info[key] for key in ("budget", "target_top1", "target_checks", "bits_set", "base_bits", "mean_w_bits", "mean_a_bits",
                                          "heldout_fp_top1", "heldout_predicted_top1", "heldout_planned_top1",
                                          "heldout_composed_top1", "heldout_uniform_top1", "heldout_random_top1",
                                          "measurements", "calibrations", "seconds")}
    emit(args, {**summary, "points": dict(result.plan.points), **out}, human(result, out))
    return 0


def human(result, out: dict[str, str]) -> str:
    """The report: budget and means, held-out top-1 (predicted, measured, uniform, random), the cost, and which
    points the plan moved off the base widths."""
    info = result.plan.info
    random = result.random_top1
    lines = [
        f"{result.plan.model} {result.plan.quantizer}: budget W{info['budget']['mean_w_bits']:g}"
        f"A{info['budget']['mean_a_bits']:g} over widths {','.join(map(str, info['bits_set']))} -> mean "
        f"W{result.mean_w_bits:.3f}A{result.mean_a_bits:.3f} (element-weighted)",
        f"held-out top-1: FP {result.fp_top1:.2f}%  planned {result.planned_top1:.2f}% (predicted "
        f"{result.predicted_top1:.2f}%, composed {result.composed_top1:.2f}%)  uniform "
        f"W{result.base_w_bits}A{result.base_a_bits} {result.uniform_top1:.2f}%"
        + (f"  random plans {sum(random) / len(random):.2f}% (mean of {len(random)})" if random else ""),
        f"{result.measurements} measurements, {result.calibrations} calibrations, {result.seconds:.1f} s",
    ]
    if info["target_top1"] is not None:
        checks = "; ".join(f"W{c['mean_w_bits']:g}A{c['mean_a_bits']:g} predicted {c['predicted_top1']:.2f}% held-out "
                           f"{c['heldout_top1']:.2f}%" for c in info["target_checks"])
        lines.insert(1, f"target held-out top-1 {info['target_top1']:g}%: the budget checked on held-out ({checks})")
    base = {p.name: (result.base_w_bits if p.is_weight else result.base_a_bits) for p in result.points}
    moved = [(name, bits) for name, bits in result.plan.points if bits != base[name] and name not in result.fixed]
    lines.append(f"{len(moved)} of {len(result.points)} points off W{result.base_w_bits}A{result.base_a_bits}:")
    lines += [f"  {name:<34} {base[name]} -> {bits} bits  ({result.elements[name]} elements)" for name, bits in moved]
    lines.append("  -> " + ", ".join(out.values()))
    return "\n".join(lines)
