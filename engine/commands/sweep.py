"""``sweep``: quantizers × bit-widths × seeds, searched one after another in this process.

One progress line per run on stderr; the summary table (one library row per run) on stdout, as a
JSON list on the last line with ``--json``. Rerunning the same command after an interruption skips
the finished runs and resumes the interrupted one.
"""
from __future__ import annotations

import argparse
import sys

from ..cli import add_model_args, add_output_args, emit, run_spec
from ..quant import QuantConfig
from ..search.config import add_search_args, search_config_from_args
from ..sweep import SweepFinished, SweepGrid, describe, run_sweep
from .compare import SUMMARY_COLUMNS, format_table


def add_parser(sub) -> None:
    parser = sub.add_parser("sweep", help="search a grid of quantizers × bit-widths × seeds, one run file each")
    add_model_args(parser)
    grid = parser.add_argument_group("grid")
    grid.add_argument("--quantizers", required=True, help="comma-separated, e.g. minmax,percentile,omse")
    grid.add_argument("--bits", required=True, help="comma-separated bit-widths, e.g. W8A8,W4A8,W3A4")
    grid.add_argument("--seeds", default=None, help="comma-separated seeds, e.g. 0,1 (default: --seed)")
    grid.add_argument("--attn-bits", type=int, default=None, help="bits of q, k, v and attention probabilities")
    add_search_args(parser)
    parser.add_argument("--out-dir", required=True, help="workspace folder for the run files (created if missing)")
    add_output_args(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    seeds = args.seeds if args.seeds is not None else str(args.seed)
    grid = SweepGrid.parse(args.quantizers, args.bits, seeds, args.attn_bits)
    base = run_spec(args, QuantConfig())   # quantization and seed are set per run by the grid
    rows = ()
    for event in run_sweep(grid, base, search_config_from_args(args), args.out_dir):
        line = describe(event)
        if line and not args.quiet:
            print(line, file=sys.stderr, flush=True)
        if isinstance(event, SweepFinished):
            rows = event.rows
    table = [row.to_dict() for row in rows]
    emit(args, table, format_table(table, SUMMARY_COLUMNS))
    return 0 if all(row.ok for row in rows) else 1
