"""``sweep``: quantizers × bit-widths × bit plans × seeds, searched one after another in this process, or as
tasks on a Ray cluster with ``--backend ray`` (``engine/sweep/ray_backend.py``).

One progress line per run on stderr; the summary table (one library row per run) on stdout, as a
JSON list on the last line with ``--json``. Rerunning the same command after an interruption skips
the finished runs and resumes the interrupted one: Ctrl+C leaves the current run's checkpoint (in
``<out-dir>/.checkpoints``), prints that command and exits 130.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any, Callable

from ..argtypes import bit_widths, bits, output_folder, plan_file, seed
from ..cli import add_model_args, add_output_args, emit, error_text, json_error, run_spec
from ..quant import QuantConfig, available_quantizers
from ..search.config import add_search_args, search_config_from_args
from ..sweep import (BACKENDS, CellResources, RunProgress, RunStarted, SweepFinished, SweepGrid, describe,
                     run_sweep)
from .compare import SUMMARY_COLUMNS, format_table
from .search import Progress, rerun_command


def add_parser(sub) -> None:
    parser = sub.add_parser("sweep", help="search a grid of quantizers × bit-widths × bit plans × seeds, one run "
                                          "file each")
    add_model_args(parser)
    grid = parser.add_argument_group("grid")
    grid.add_argument("--quantizers", type=_quantizers, default=None,
                      help="comma-separated, e.g. minmax,percentile,omse (default with --plans: each plan's own)")
    grid.add_argument("--bits", type=_each(bit_widths), default=None,
                      help="comma-separated bit-widths, e.g. W8A8,W4A8,W3A4; with --plans they set only the points "
                           "a plan leaves out (default with --plans: each plan's own base widths)")
    grid.add_argument("--plans", type=_plans, default=None, metavar="PLANS",
                      help="comma-separated bit plans (plan files from 'plan', or run files), crossed with the other "
                           "axes; 'uniform' is the plan of --bits, e.g. uniform,w4a3.json")
    grid.add_argument("--seeds", type=_each(seed), default=None,
                      help="comma-separated seeds, e.g. 0,1 (default: --seed)")
    grid.add_argument("--attn-bits", type=bits, default=None, help="bits of q, k, v and attention probabilities")
    add_search_args(parser)
    cluster = parser.add_argument_group("backend")
    cluster.add_argument("--backend", choices=BACKENDS, default="local",
                         help="local: one run after another in this process; ray: each run a task on a Ray cluster")
    cluster.add_argument("--address", default=None,
                         help="ray: the cluster, 'auto' (started with ray start on this machine) or ray://HOST:PORT "
                              "(default: RAY_ADDRESS, else a new local cluster)")
    cluster.add_argument("--cpus-per-run", type=float, default=None, help="ray: CPUs (and torch threads) per run (1)")
    cluster.add_argument("--gpus-per-run", type=float, default=None, help="ray: GPUs per run (0)")
    cluster.add_argument("--max-retries", type=int, default=None,
                         help="ray: times a run is restarted after its worker or node dies (3)")
    parser.add_argument("--out-dir", type=output_folder, required=True,
                        help="workspace folder for the run files (created if missing)")
    add_output_args(parser)
    parser.set_defaults(func=run)


def _each(parse: Callable[[str], Any]) -> Callable[[str], str]:
    """A comma-separated list whose every item ``parse`` accepts (the text itself is kept)."""
    def check(text: str) -> str:
        items = [item.strip() for item in text.split(",") if item.strip()]
        if not items:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}")
        for item in items:
            parse(item)
        return text

    return check


def _quantizer(name: str) -> str:
    if name not in available_quantizers():
        raise argparse.ArgumentTypeError(f"unknown quantizer {name!r}; choose from "
                                         f"{', '.join(available_quantizers())}")
    return name


_quantizers = _each(_quantizer)


def _plans(text: str) -> tuple:
    """Each item a plan file read and checked now (``plan_file``), or None for 'uniform'."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list of plan files, got {text!r}")
    return tuple(None if item == "uniform" else plan_file(item) for item in items)


def _stopped(reason: str, current: RunStarted | None, argv: list[str]) -> None:
    """Why the sweep stopped, where its work is, and the command that continues it."""
    kept = f"; the current run's checkpoint {current.run.checkpoint} is kept" if (
        current is not None and current.run.checkpoint.exists()) else ""
    print(f"{reason}{kept}; finished runs are kept. Continue the sweep with the same command:\n  "
          f"{rerun_command(argv)}", file=sys.stderr, flush=True)


def _resources(args: argparse.Namespace) -> CellResources | None:
    """The per-run resources given on the command line (None: none given)."""
    given = {name: value for name, value in (("cpus", args.cpus_per_run), ("gpus", args.gpus_per_run),
                                             ("max_retries", args.max_retries)) if value is not None}
    return CellResources(**given) if given else None


def run(args: argparse.Namespace) -> int:
    if args.plans is None and (args.quantizers is None or args.bits is None):
        raise ValueError("sweep needs --quantizers and --bits, or --plans PLANS")
    seeds = args.seeds if args.seeds is not None else str(args.seed)
    grid = SweepGrid.parse(args.quantizers or "", args.bits or "", seeds, args.attn_bits, args.plans or (None,))
    base = run_spec(args, QuantConfig())   # quantization and seed are set per run by the grid
    rows, current, progress = (), None, None
    try:
        for event in run_sweep(grid, base, search_config_from_args(args), args.out_dir, backend=args.backend,
                               address=args.address, resources=_resources(args)):
            line = describe(event)
            if line and not args.quiet:
                args.heartbeat.write(line)
            if isinstance(event, RunStarted):
                current = event
                progress = Progress(args.heartbeat, label=f"[{event.run.index}/{event.run.total}] {event.run.label}: ",
                                    lines=False)
                args.heartbeat.doing(progress.activity)
            if isinstance(event, RunProgress):
                progress.update(event.event)
            if isinstance(event, SweepFinished):
                rows = event.rows
    except KeyboardInterrupt:
        _stopped("interrupted", current, args.argv)
        return 130
    except (FileNotFoundError, BrokenPipeError):
        raise   # a missing input, or stderr's reader left: the CLI's one-line error or quiet exit
    except OSError as exc:   # writing a run file or checkpoint (disk full, permission)
        message = error_text(exc)
        _stopped(f"error: {message}", current, args.argv)
        return json_error(args.json, message)
    table = [row.to_dict() for row in rows]
    emit(args, table, format_table(table, SUMMARY_COLUMNS))
    return 0 if all(row.ok for row in rows) else 1
