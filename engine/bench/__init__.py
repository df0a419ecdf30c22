"""Benchmarks of the search's hot paths, each a CLI ``bench`` mode; the figures go to docs/performance.md.

Rooms: ``inputs`` (the calibrated model every bench measures on), ``forward`` (fake quantization's cost
over the float forward, and the matmul work of each part), ``evaluation`` (candidate evaluation, the
release's way against the search's cached and batched one) and ``memory`` (peak memory of calibration
and of one search pass, each size in a fresh process). The evaluator they time lives in
``engine/search/evaluator.py``.
"""
from .evaluation import BenchResult, run_bench
from .forward import ForwardBench, SegmentFlops, bench_forwards, measure_forwards, segment_flops
from .inputs import bench_inputs
from .memory import MemoryResult, SizePeaks, check_sizes, run_memory_bench

__all__ = [
    "BenchResult", "ForwardBench", "MemoryResult", "SegmentFlops", "SizePeaks", "bench_forwards", "bench_inputs",
    "check_sizes", "measure_forwards", "run_bench", "run_memory_bench", "segment_flops",
]
