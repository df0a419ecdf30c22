"""``bench``: optimised vs naive candidate evaluation on the same model, data and candidates."""
from __future__ import annotations

import argparse

from ..bench import bench_inputs, run_bench
from ..cli import add_model_args, add_output_args, add_quant_args, emit, run_spec
from ..quant import QuantConfig
from ..search.config import add_search_args, search_config_from_args

DEFAULT_BITS = "W4A8"


def add_parser(sub) -> None:
    parser = sub.add_parser("bench", help="time the search's candidate evaluation: naive vs optimised")
    add_model_args(parser)
    add_quant_args(parser, required=False)
    add_search_args(parser)
    parser.add_argument("--candidates", type=int, default=8, help="candidates per block (default 8)")
    add_output_args(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.candidates < 1:
        raise ValueError("--candidates must be at least 1")
    quant = QuantConfig.from_bits(args.quantizer, args.bits or DEFAULT_BITS, args.attn_bits)
    spec = run_spec(args, quant)
    qmodel, calib, device = bench_inputs(spec)
    result = run_bench(qmodel, calib, search_config_from_args(args), spec.model, device, args.candidates, args.seed)
    emit(args, result.to_dict(),
         f"{result.model} on {result.device}: naive {result.naive_evals_per_s:.2f} evals/s, optimised "
         f"{result.opt_evals_per_s:.2f} evals/s, speedup {result.speedup:.2f}x (CPU time {result.cpu_speedup:.2f}x), "
         f"max relative loss difference {result.max_rel_loss_diff:.1e} ({result.evaluations} evaluations, "
         f"{result.n_calib} images, {result.blocks} blocks)")
    return 0
