"""``compare``: the comparison views' numbers, headless.

``compare RUN1.h5 RUN2.h5 ...`` -> side by side (summary, loss curves, held-out top-1 per block,
scale shift per block × layer) and, with ``--layer``, that layer's grids and weight histogram.
``compare --dir WORKSPACE`` -> the library table and accuracy vs bit-width over seeds, plus one
quantizer × bit-width matrix per (model, preset).
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..argtypes import existing_file, existing_folder, int_range
from ..cli import emit
from ..library import (accuracy_vs_bits, bits_matrix, by_setting, layer_view, load_run_model, scan_workspace,
                       side_by_side, to_jsonable)
from ..scalefile import load_run

SUMMARY_COLUMNS = ("file", "quantizer", "bits", "seed", "preset", "fp_top1", "base_top1", "refined_top1", "delta",
                   "evaluations", "seconds")
POINT_COLUMNS = ("model", "preset", "quantizer", "bits", "n", "base_mean", "base_std", "refined_mean", "refined_std",
                 "delta_mean", "delta_std")


def add_parser(sub) -> None:
    parser = sub.add_parser("compare", help="compare run files side by side, or summarise a workspace folder")
    parser.add_argument("files", nargs="*", type=existing_file, help="run files (.h5) to put side by side")
    parser.add_argument("--dir", type=existing_folder, help="workspace folder: library table and accuracy vs bit-width")
    parser.add_argument("--layer", help="with files: one layer in detail, e.g. blocks.5.attn.qkv")
    parser.add_argument("--role", default="weight", help="with --layer: the point (weight, input, q, k, v, probs)")
    parser.add_argument("--channel", type=int_range(0), default=None,
                        help="with --layer: channel of a per-channel point (default 0)")
    parser.add_argument("--no-weights", action="store_true",
                        help="with --layer: skip the weight histograms (they rebuild each run's model)")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    parser.set_defaults(func=run)


def format_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """Plain fixed-width text; None as '-'; floats with 2 decimals (top-1 points), small ones (scales,
    clip bounds) with 3 significant digits."""
    def cell(value: Any) -> str:
        if value is None or (isinstance(value, float) and not np.isfinite(value)):
            return "-"
        if isinstance(value, float):
            return f"{value:.2f}" if value == 0 or abs(value) >= 1 else f"{value:.3g}"
        return str(value)

    cells = [[cell(row.get(c)) for c in columns] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(line, widths)).rstrip() for line in [list(columns), *cells])


def _workspace(folder: str) -> tuple[dict[str, Any], str]:
    rows = scan_workspace(folder)
    points = accuracy_vs_bits(rows)
    matrices = [{"model": model, "preset": preset, "refined": bits_matrix(group, "refined_mean"),
                 "delta": bits_matrix(group, "delta_mean")} for (model, preset), group in by_setting(points).items()]
    result = {"library": rows, "accuracy_vs_bits": points, "matrices": matrices}
    dicts = [r.to_dict() for r in rows]
    bad = [f"unreadable: {r.file}: {r.error}" for r in rows if not r.ok]
    text = "\n\n".join([format_table(dicts, SUMMARY_COLUMNS), *(["\n".join(bad)] if bad else []),
                        "accuracy vs bit-width (mean and std over seeds)",
                        format_table([p.to_row() for p in points], POINT_COLUMNS)])
    return result, text


def _runs(args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    names = [Path(path).name for path in args.files]
    names = names if len(set(names)) == len(names) else list(args.files)   # short names unless ambiguous
    runs = [(name, load_run(path)) for name, path in zip(names, args.files)]
    sbs = side_by_side(runs)
    result: dict[str, Any] = {"side_by_side": sbs}
    lines = [format_table([{**d.row.to_dict(), "file": d.name} for d in sbs.runs], SUMMARY_COLUMNS), "",
             "held-out top-1 after each block's last step",
             format_table(list(sbs.block_rows()), ["block", *(d.name for d in sbs.runs)]), "",
             "scale shift, mean |log(refined/base)| per block (mean over layers)"]
    for detail in sbs.runs:
        searched = not np.isnan(detail.shift).all()
        per_block = " ".join(f"{v:.4f}" for v in np.nanmean(detail.shift, axis=1)) if searched else "no base scales"
        lines.append(f"{detail.name}: {per_block}")
    if args.layer:
        view = layer_view(runs, args.layer, args.role, args.channel, None if args.no_weights else load_run_model)
        result["layer"] = view
        lines += ["", f"{args.layer}/{args.role} (channel {view.channel})",
                  format_table(list(view.grid_rows()), ("run", "scales", "bits", "scale", "zero_point", "lo", "hi"))]
        if view.edges is not None:
            lines.append(f"weights in [{view.edges[0]:.3g}, {view.edges[-1]:.3g}], {view.edges.size - 1} histogram "
                         "bins per run (--json for the counts)")
    return result, "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    if bool(args.files) == bool(args.dir):
        raise ValueError("compare needs run files or --dir WORKSPACE (not both)")
    if args.layer and not args.files:
        raise ValueError("--layer needs run files")
    result, text = _workspace(args.dir) if args.dir else _runs(args)
    emit(args, to_jsonable(result), text)
    return 0
