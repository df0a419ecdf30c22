"""``diagnose``: where a quantized model loses accuracy, point by point, and what the search repaired.

``diagnose RUN.h5`` measures a run file's base and refined scales on the run's own model and data;
``diagnose --quantizer Q --bits WxAy`` calibrates first. Held-out only: the test split is never read.
"""
from __future__ import annotations

import argparse
import logging
import sys

from ..atomic import check_writable
from ..argtypes import bits, existing_file, output_file, positive_int
from ..cli import add_model_args, add_output_args, add_quant_args, emit, quant_config, run_spec
from ..diagnose import DiagnoseConfig, Diagnosed, Diagnosis, Measured, diagnose_calibrated, diagnose_run
from ..diagnose.store import save_diagnosis, save_into_run
from ..diagnose.run import DEFAULT_IMAGES
from ..diagnose.whatif import DEFAULT_DRAWS, DEFAULT_K
from ..models import DEMO_MODEL
from ..scalefile import load_run
from ..events import Stage

log = logging.getLogger(__name__)

PROGRESS_STEPS = 10   # progress lines per diagnosis when stderr is not a terminal
SHOWN_POINTS = 5


def _point_counts(text: str) -> tuple[int, ...]:
    if text.strip().lower() == "none":
        return ()
    try:
        counts = tuple(int(part) for part in text.split(","))
    except ValueError:
        counts = ()
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"expected point counts of at least 1 like 1,2,4,8,16 (or none), "
                                         f"got {text!r}")
    return counts


def add_parser(sub) -> None:
    parser = sub.add_parser("diagnose", help="per-point SQNR and sensitivity, base vs refined; what-if bit-widths")
    parser.add_argument("run_file", nargs="?", type=existing_file,
                        help="run or scale file (.h5) to diagnose (its own model, weights, data and seed); or give "
                             "--quantizer and --bits")
    add_model_args(parser)
    add_quant_args(parser, required=False, plan=True)
    parser.add_argument("--split", choices=("heldout",), default="heldout",
                        help="where top-1 is measured: the held-out split (the test split is never read)")
    parser.add_argument("--raise", dest="raise_k", type=_point_counts, default=DEFAULT_K, metavar="K[,K...]",
                        help="what-if: held-out top-1 with the K most sensitive points (and K random ones) at --to "
                             f"bits (default {','.join(map(str, DEFAULT_K))}; none skips it)")
    parser.add_argument("--to", dest="to_bits", type=bits, default=8, help="bit-width of raised points")
    parser.add_argument("--draws", type=positive_int, default=DEFAULT_DRAWS, help="random draws per K")
    parser.add_argument("--images", type=positive_int, default=DEFAULT_IMAGES,
                        help=f"the first N calibration images score the fitness loss (default {DEFAULT_IMAGES}; "
                             "fewer if the run's search compared fewer)")
    parser.add_argument("--heldout-images", type=positive_int, default=None,
                        help="held-out images that score top-1: the first N (default: all)")
    parser.add_argument("--out", type=output_file, help="write the diagnosis to this file (.h5)")
    parser.add_argument("--into-run", action="store_true", help="add the diagnosis to the run file (/diagnosis)")
    add_output_args(parser)
    parser.set_defaults(func=run)


def _events(args: argparse.Namespace, config: DiagnoseConfig):
    if args.run_file:
        if args.bits or args.plan is not None:
            raise ValueError("give a run file or --quantizer and --bits (or --plan), not both")
        if args.model != DEMO_MODEL or args.weights or args.pretrained:
            raise ValueError("a run file is diagnosed on the model and weights it records; --model, --weights and "
                             "--pretrained go with --quantizer and --bits")
        return diagnose_run(load_run(args.run_file), config, args.run_file, data=args.data, device=args.device)
    if args.into_run:
        raise ValueError("--into-run needs a run file to diagnose")
    if not args.bits and args.plan is None:
        raise ValueError("diagnose needs a run file, or --quantizer Q and --bits WxAy, or --plan PLAN")
    return diagnose_calibrated(run_spec(args, quant_config(args)), config)


def _progress(event: Measured, shown: list[int]) -> None:
    """A line per tenth of the work (rewritten in place on a terminal)."""
    if sys.stderr.isatty():
        sys.stderr.write(f"\r\033[K[{event.done}/{event.total}] {event.what}")
        sys.stderr.flush()
        return
    step = max(1, event.total // PROGRESS_STEPS)
    if event.done // step > shown[0] or event.done == event.total:
        shown[0] = event.done // step
        log.info("[%d/%d] %s", event.done, event.total, event.what)


def summary(d: Diagnosis) -> str:
    """The human report: accuracy per set of scales, the most sensitive points, the what-if table."""
    names = list(d.tables)
    lines = [f"{d.model_name} {d.quantizer} {d.bits} ({d.source}): held-out FP {d.fp_top1:.2f}%  " + "  ".join(
        f"{name} {t.top1_all:.2f}% (loss {t.loss_all:.4g})" for name, t in d.tables.items()),
        f"most sensitive points by {names[-1]} (fitness loss with only that point quantized"
        f"{', ' + ' -> '.join(names) if len(names) > 1 else ''}; SQNR dB):"]
    for rank, i in enumerate(d.most_sensitive(SHOWN_POINTS), 1):
        point = d.points[i]
        sens = " -> ".join(f"{d.tables[n].sensitivity[i]:.4g}" for n in names)
        sqnr = " -> ".join(f"{d.tables[n].sqnr_db[i]:.1f}" for n in names)
        lines.append(f"  {rank}. {point.name:<32} {point.where(d.n_blocks):<8} {sens}   SQNR {sqnr}")
    if d.whatif is not None:
        w = d.whatif
        lines.append(f"what-if, held-out top-1 with K points at {w.to_bits} bits (by {w.ranked_by}; none raised "
                     f"{w.top1_none:.2f}%):")
        lines += [f"  K={k:<3} most sensitive {top:.2f}%   random {rnd:.2f}% (mean of {w.top1_random.shape[1]})"
                  for k, top, rnd in zip(w.k, w.top1_top, w.top1_random_mean)]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    config = DiagnoseConfig(raise_k=args.raise_k, to_bits=args.to_bits, draws=args.draws, images=args.images,
                            heldout_images=args.heldout_images)
    if args.into_run and args.run_file:
        check_writable(args.run_file)   # before the work, not after
    diagnosis, shown = None, [0]
    for event in _events(args, config):
        if isinstance(event, Stage):
            log.info(event.message)
            args.heartbeat.doing(event.message)
        elif isinstance(event, Measured) and not args.quiet:
            args.heartbeat.doing(f"[{event.done}/{event.total}] {event.what}")
            _progress(event, shown)
        elif isinstance(event, Diagnosed):
            diagnosis = event.diagnosis
    if sys.stderr.isatty() and not args.quiet:
        sys.stderr.write("\n")
    result = diagnosis.to_dict()
    if args.out:
        result["out"] = str(save_diagnosis(args.out, diagnosis))
    if args.into_run:
        result["into_run"] = str(save_into_run(args.run_file, diagnosis))
    emit(args, result, summary(diagnosis))
    return 0
