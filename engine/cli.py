"""``python -m engine <command>``: quantize a ViT, refine its quantization scales block by block, export, compare.

The search has a choice of methods (``--preset`` / ``--strategy``). The default is *guided*: the
straight-through gradient of the fitness proposes each move, and the exact fitness (the mean squared
difference between the quantized and the FP logits) keeps a step only if it lowers the loss.
``--preset release`` is the paper's contrastive evolutionary search (CPT-V, arXiv 2211.09643) and
``--preset random`` the default's null baseline. Every command and flag: docs/cli.md.

Each command lives in ``engine/commands/<name>.py`` and exposes ``add_parser(subparsers)``; with
``--json`` a command prints one JSON object as its last stdout line. Known user errors become a
one-line message and exit code 2, never a traceback.
"""
from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from typing import Any, Sequence

from .allocator import keep_freed_memory
from .data import HELDOUT_SOURCES, DataError
from .models import DEMO_MODEL, ModelLoadError
from .quant import QuantConfig, ScaleMismatch, available_quantizers
from .threads import make_thread_invariant

COMMANDS = ("quantize", "eval", "inspect", "train_demo", "search", "bench", "sweep", "compare",
            "make_folder", "export", "diagnose", "coverage")
USER_ERRORS = (DataError, ModelLoadError, ScaleMismatch, OSError, ValueError)   # OSError: a path named in it


def add_model_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model and data")
    group.add_argument("--model", default=DEMO_MODEL, help=f"timm model name or {DEMO_MODEL!r} (default)")
    source = group.add_mutually_exclusive_group()
    source.add_argument("--weights", help="local weights file (.safetensors or .pth state dict)")
    source.add_argument("--pretrained", action="store_true", help="timm's own download (needs network)")
    group.add_argument("--data", help="ImageNet-style folder (train/<class>/*, val/<class>/*); default: built-in digits")
    group.add_argument("--calib-size", type=int, default=1000, help="calibration images (default 1000)")
    group.add_argument("--batch-size", type=int, default=100, help="images per batch (default 100)")
    group.add_argument("--seed", type=int, default=0, help="drives calibration sampling and the search RNG")
    group.add_argument("--device", default=None, help="cuda, cpu, or cuda:N (default: cuda when available)")
    group.add_argument("--heldout-from", choices=HELDOUT_SOURCES, default="train",
                       help="a folder's held-out images: drawn from train/ (default) or from val/, the test split "
                            "then being the rest of val/ (when train/ is the FP model's own training data)")


def add_quant_args(parser: argparse.ArgumentParser, required: bool = True) -> None:
    group = parser.add_argument_group("quantization")
    group.add_argument("--quantizer", choices=available_quantizers(), required=required, default=None if required else "minmax")
    group.add_argument("--bits", required=required, help="bit-widths, e.g. W4A8 (attention bits default to A)")
    group.add_argument("--attn-bits", type=int, default=None, help="bits of q, k, v and attention probabilities")
    group.add_argument("--allow-float", action="append", default=None, metavar="MODULE_PATTERN",
                       help="keep the matmuls of modules matching this fnmatch pattern (qualified name, e.g. "
                            "'blocks.*.attn') in float on purpose; repeatable; recorded in the run file")


def add_output_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    parser.add_argument("--quiet", action="store_true", help="no progress or log lines on stderr")


def quant_config(args: argparse.Namespace) -> QuantConfig:
    return QuantConfig.from_bits(args.quantizer, args.bits, args.attn_bits, tuple(args.allow_float or ()))


def run_spec(args: argparse.Namespace, quant: QuantConfig | None = None):
    from .pipeline import RunSpec

    return RunSpec(model=args.model, weights=args.weights, pretrained=args.pretrained, data=args.data,
                   quant=quant or quant_config(args), calib_size=args.calib_size, batch_size=args.batch_size,
                   seed=args.seed, device=args.device, heldout_from=args.heldout_from,
                   compile=getattr(args, "compile", "auto"))


class _Unset(list):
    """Marks a flag argparse left at its default (a list, so ``action="append"`` can copy it)."""


def given_flags(args: argparse.Namespace) -> set[str]:
    """The dests of the flags given on this command line (not left at their defaults): parsed again
    by the command's own parser into a namespace where every dest is already set, which argparse only
    overwrites for a flag it meets."""
    marked = argparse.Namespace(**{dest: _Unset() for dest in vars(args)})
    args.parser.parse_args(args.argv[1:], namespace=marked)
    return {dest for dest, value in vars(marked).items() if not (isinstance(value, _Unset) and not value)}


def emit(args: argparse.Namespace, result: dict[str, Any], human: str) -> None:
    """The JSON line with --json, else a human summary."""
    print(json.dumps(result, default=float) if args.json else human, flush=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m engine", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f".commands.{name}", __package__).add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)   # for the resume command a command prints
    keep_freed_memory()   # process-wide, so the entry point sets it (engine/allocator.py)
    make_thread_invariant()   # likewise, before any computation (engine/threads.py)
    logging.basicConfig(level=logging.WARNING if getattr(args, "quiet", False) else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        return args.func(args) or 0
    except USER_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
