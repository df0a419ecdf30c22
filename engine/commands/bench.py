"""``bench``: optimised vs naive candidate evaluation on the same model, data and candidates;
with ``--memory``, peak memory of calibration and of one search pass at two calibration sizes; with
``--onnx-latency RUN``, the CPU latency of a run's int8 QDQ export over its FP32 export."""
from __future__ import annotations

import argparse
from dataclasses import replace

from ..argtypes import existing_file, int_range, positive_int
from ..bench import BenchResult, bench_inputs, check_sizes, measure_forwards, run_bench, run_memory_bench
from ..bench.memory import format_table
from ..cli import add_model_args, add_output_args, add_quant_args, emit, run_spec
from ..export import load_export
from ..quant import QuantConfig
from ..scalefile import load_run
from ..search.config import add_search_args, search_config_from_args

DEFAULT_BITS = "W4A8"


def add_parser(sub) -> None:
    parser = sub.add_parser("bench", help="time the search's candidate evaluation: naive vs optimised")
    add_model_args(parser)
    add_quant_args(parser, required=False)
    add_search_args(parser)
    parser.add_argument("--candidates", type=positive_int, default=8, help="candidates per block")
    parser.add_argument("--memory", action="store_true",
                        help="measure peak memory of calibration and of one search pass instead of speed")
    parser.add_argument("--calib-sizes", type=_sizes, default="64,256",
                        help="with --memory: two calibration sizes, e.g. 64,256; --calib-size is unused")
    parser.add_argument("--block-steps", type=int_range(0), default=None,
                        help="with --memory: measure the pass's first N block steps only (for a slow CPU: every "
                             "ViT block input has the same size; 0: calibration only; default: all)")
    parser.add_argument("--repeats", type=positive_int, default=1,
                        help="with --memory: measure each size this many times, each in a fresh process, and judge "
                             "the worst run (a peak that depends on the allocator's luck shows only across runs)")
    parser.add_argument("--onnx-latency", type=existing_file, metavar="RUN_H5",
                        help="instead: onnxruntime CPU latency of this run's int8 QDQ export over its FP32 export "
                             "(batch 1 and 32, alternating in one process; needs the export extra)")
    parser.add_argument("--reps", type=positive_int, default=20,
                        help="with --onnx-latency: timed calls per model and batch")
    add_output_args(parser)
    parser.set_defaults(func=run)


def _sizes(text: str) -> tuple[int, ...]:
    try:
        return check_sizes(tuple(int(part) for part in text.split(",")))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected two increasing image counts such as 64,256, got {text!r}") from None


def _onnx_latency(args: argparse.Namespace) -> int:
    load_export()   # names the extra when onnx or onnxruntime is missing
    from ..export.latency import latency_ratios

    rows = latency_ratios(load_run(args.onnx_latency), reps=args.reps)
    emit(args, {"run": args.onnx_latency, "latency": rows},
         "\n".join(f"batch {r['batch']}: int8 QDQ {r['qdq_ms']:.2f} ms, FP32 {r['fp32_ms']:.2f} ms, "
                   f"ratio {r['qdq_over_fp32']:.2f} (median of {r['reps']}, {r['threads']} thread)" for r in rows))
    return 0


def run(args: argparse.Namespace) -> int:
    if args.onnx_latency:
        return _onnx_latency(args)
    quant = QuantConfig.from_bits(args.quantizer, args.bits or DEFAULT_BITS, args.attn_bits)
    spec = run_spec(args, quant)
    config = search_config_from_args(args)
    if args.memory:
        memory = run_memory_bench(spec, config, args.calib_sizes, args.block_steps, args.repeats)
        emit(args, memory.to_dict(), format_table(memory))
        return 0
    prepared = bench_inputs(spec)
    result = run_bench(prepared.qmodel, prepared.calib, config, spec.model, prepared.device, args.candidates,
                       args.seed, compile_mode=spec.compile)
    if result.compiled is not None or result.fused is not None:
        result = replace(result, forward=measure_forwards(prepared).to_dict())
    emit(args, result.to_dict(), _summary(result))
    return 0


def _summary(result: BenchResult) -> str:
    lines = [f"{result.model} on {result.device}: naive {result.naive_evals_per_s:.2f} evals/s, optimised "
             f"{result.opt_evals_per_s:.2f} evals/s, speedup {result.speedup:.2f}x (CPU time {result.cpu_speedup:.2f}x), "
             f"max relative loss difference {result.max_rel_loss_diff:.1e} ({result.evaluations} evaluations, "
             f"{result.n_calib} images, {result.blocks} blocks); the cached path does {result.work_ratio:.2f}x less "
             f"matmul work (its speedup if every FLOP cost the same)"]
    if result.compiled is not None:
        lines.append(f"compiled{'' if result.compiled else ' (FAILED: ran eager)'}: {result.compiled_evals_per_s:.2f} "
                     f"evals/s, speedup {result.compiled_speedup:.2f}x (CPU time {result.compiled_cpu_speedup:.2f}x), "
                     f"losses {'bit-identical to' if result.compiled_equals_eager else 'DIFFERENT from'} eager, "
                     f"compile {result.compile_s:.1f} s")
    if result.fused is not None:
        lines.append(f"fused fake quantization{'' if result.fused else ' (FAILED: ran eager)'}: "
                     f"{result.fused_evals_per_s:.2f} evals/s, speedup {result.fused_speedup:.2f}x (CPU time "
                     f"{result.fused_cpu_speedup:.2f}x), losses "
                     f"{'bit-identical to' if result.fused_equals_eager else 'DIFFERENT from'} eager, "
                     f"compile {result.fused_compile_s:.1f} s")
    lines.append("matmul GFLOP/s: " + ", ".join(f"{name} {value:.1f}" for name, value in result.gflops.items()))
    if result.forward:
        f = result.forward
        lines.append(f"forward per image: FP {f['fp_s'] * 1e3:.1f} ms, fake-quant eager {f['fq_eager_s'] * 1e3:.1f} ms "
                     f"({f['fq_eager_over_fp']:.2f}x FP), compiled {f['fq_compiled_s'] * 1e3:.1f} ms "
                     f"({f['fq_compiled_over_fp']:.2f}x FP), fused {f['fq_fused_s'] * 1e3:.1f} ms "
                     f"({f['fq_fused_over_fp']:.2f}x FP); plain matmul {f['matmul_gflops']:.1f} GFLOP/s")
    return "\n".join(lines)
