"""``bench``: optimised vs naive candidate evaluation on the same model, data and candidates;
with ``--memory``, peak memory of calibration and of one search pass at two calibration sizes."""
from __future__ import annotations

import argparse

from ..bench import bench_inputs, run_bench
from ..bench_memory import format_table, run_memory_bench
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
    parser.add_argument("--memory", action="store_true",
                        help="measure peak memory of calibration and of one search pass instead of speed")
    parser.add_argument("--calib-sizes", type=_sizes, default=(64, 256),
                        help="with --memory: two calibration sizes, e.g. 64,256 (default); --calib-size is unused")
    parser.add_argument("--block-steps", type=int, default=None,
                        help="with --memory: measure the pass's first N block steps only (for a slow CPU: every "
                             "ViT block input has the same size; default: all)")
    add_output_args(parser)
    parser.set_defaults(func=run)


def _sizes(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected image counts such as 64,256, got {text!r}") from None


def run(args: argparse.Namespace) -> int:
    if args.candidates < 1:
        raise ValueError("--candidates must be at least 1")
    quant = QuantConfig.from_bits(args.quantizer, args.bits or DEFAULT_BITS, args.attn_bits)
    spec = run_spec(args, quant)
    config = search_config_from_args(args)
    if args.memory:
        memory = run_memory_bench(spec, config, args.calib_sizes, args.block_steps)
        emit(args, memory.to_dict(), format_table(memory))
        return 0
    prepared = bench_inputs(spec)
    result = run_bench(prepared.qmodel, prepared.calib, config, spec.model, prepared.device, args.candidates, args.seed)
    emit(args, result.to_dict(),
         f"{result.model} on {result.device}: naive {result.naive_evals_per_s:.2f} evals/s, optimised "
         f"{result.opt_evals_per_s:.2f} evals/s, speedup {result.speedup:.2f}x (CPU time {result.cpu_speedup:.2f}x), "
         f"max relative loss difference {result.max_rel_loss_diff:.1e} ({result.evaluations} evaluations, "
         f"{result.n_calib} images, {result.blocks} blocks)")
    return 0
