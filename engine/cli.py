"""``python -m engine <command>``: quantize a ViT, refine its quantization scales block by block, export, compare.

The search has a choice of methods (``--preset`` / ``--strategy``). The default is *guided*: the
straight-through gradient of the fitness proposes each move, and the exact fitness (the mean squared
difference between the quantized and the FP logits) keeps a step only if it lowers the loss.
``--preset release`` is the paper's contrastive evolutionary search (CPT-V, arXiv 2211.09643) and
``--preset random`` the default's null baseline. Every command and flag: docs/cli.md.

Each command lives in ``engine/commands/<name>.py`` and exposes ``add_parser(subparsers)``; with
``--json`` a command prints one JSON object as its last stdout line. When stderr is not a terminal,
``args.heartbeat`` (engine/progress.py) writes a line at least every 10 s while a command works.

The contract (tests/test_cli_contract.py): every flag is checked when it is parsed, by the argparse
types below, which name the flag and the allowed range, and every path a command reads or writes is
checked then too, so bad input fails before any model is built. A user error (these, a known error
of the engine, any OSError) is one ``error:`` line on stderr and exit code 2, and with ``--json``
also ``{"error": ..., "exit": 2}`` as the last stdout line; a closed pipe (``inspect F.h5 | head``)
ends quietly with 141, Ctrl+C with 130.
"""
from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
from typing import Any, NoReturn, Sequence


from .allocator import keep_freed_memory
from .argtypes import (BITS_RANGE, SEED_MAX, bit_widths, bits, data_source, device, existing_file, plan_file,
                       positive_int, seed, vit_model)
from .data import DIGITS, HELDOUT_SOURCES, DataError, digits_split_indices
from .models import BUILTIN_MODELS, DEMO_MODEL, ModelLoadError
from .progress import Heartbeat
from .provenance import DISTRIBUTION, package_version
from .quant import QuantConfig, ScaleMismatch, available_quantizers
from .threads import make_thread_invariant

log = logging.getLogger(__name__)

COMMANDS = ("quantize", "eval", "inspect", "train_demo", "search", "bench", "sweep", "compare",
            "make_folder", "export", "diagnose", "coverage", "plan")
USER_ERRORS = (DataError, ModelLoadError, ScaleMismatch, OSError, ValueError)   # OSError: a path named in it
EXIT_USER_ERROR, EXIT_INTERRUPTED, EXIT_CLOSED_PIPE = 2, 130, 141   # 141 = 128 + SIGPIPE, as a Unix tool


class UsageError(ValueError):
    """argparse's own complaint: an unknown flag, a missing one, a value out of its range."""


class HelpFormatter(argparse.HelpFormatter):
    """Every flag's default in ``--help``, unless its text already says it or there is none."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (not action.option_strings or "default" in text or action.default is None or action.default is False
                or action.default == argparse.SUPPRESS or isinstance(action.default, list)):
            return text
        return f"{text} (default: %(default)s)"


class Parser(argparse.ArgumentParser):
    """Raises UsageError instead of printing the usage and exiting, so ``main`` reports it like any
    other bad input (one line, and the JSON line with --json). Subparsers are of this class too."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see {self.prog} --help)")


# ---------------------------------------------------------------- flags shared by several commands

def add_model_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model and data")
    group.add_argument("--model", type=vit_model, default=DEMO_MODEL,
                       help=f"timm model name or a built-in one ({', '.join(BUILTIN_MODELS)}); default: {DEMO_MODEL}")
    source = group.add_mutually_exclusive_group()
    source.add_argument("--weights", type=existing_file, help="local weights file (.safetensors or .pth state dict)")
    source.add_argument("--pretrained", action="store_true", help="timm's own download (needs network)")
    group.add_argument("--data", type=data_source,
                       help="ImageNet-style folder (train/<class>/*, val/<class>/*); default: built-in digits")
    group.add_argument("--calib-size", type=positive_int, default=1000, help="calibration images")
    group.add_argument("--batch-size", type=positive_int, default=100, help="images per batch")
    group.add_argument("--seed", type=seed, default=0,
                       help=f"drives calibration sampling and the search RNG (0 to {SEED_MAX})")
    group.add_argument("--device", type=device, default=None,
                       help="cuda, cpu, or cuda:N (default: cuda when available)")
    group.add_argument("--heldout-from", choices=HELDOUT_SOURCES, default="train",
                       help="a folder's held-out images: drawn from train/ (default) or from val/, the test split "
                            "then being the rest of val/ (when train/ is the FP model's own training data)")


def add_quant_args(parser: argparse.ArgumentParser, required: bool = True, plan: bool = False) -> None:
    group = parser.add_argument_group("quantization")
    group.add_argument("--quantizer", choices=available_quantizers(), required=required,
                       default=None if required or plan else "minmax",
                       help=None if required or not plan else "default: the --plan's quantizer, else minmax")
    group.add_argument("--bits", type=bit_widths, required=required,
                       help="bit-widths, e.g. W4A8: weights 1-16, activations 2-16 (attention bits default to A)")
    group.add_argument("--attn-bits", type=bits, default=None,
                       help=f"bits of q, k, v and attention probabilities ({BITS_RANGE[0]}-{BITS_RANGE[1]})")
    group.add_argument("--allow-float", action="append", default=None, metavar="MODULE_PATTERN",
                       help="keep the matmuls of modules matching this fnmatch pattern (qualified name, e.g. "
                            "'blocks.*.attn') in float on purpose; repeatable; recorded in the run file")
    if plan:
        group.add_argument("--plan", type=plan_file, default=None, metavar="PLAN",
                           help="mixed precision: every point at the width this plan gives it (a plan file from "
                                "'plan', or a run file); --bits then sets only the points it leaves out "
                                "(default: the plan's own base widths)")


def require_quant_or_plan(args: argparse.Namespace, command: str, also: str = "") -> None:
    """ValueError when neither --quantizer and --bits nor --plan say what to quantize (checked before any work)."""
    if (args.quantizer is None or args.bits is None) and getattr(args, "plan", None) is None:
        raise ValueError(f"{command} needs --quantizer and --bits, or --plan PLAN{also}")


def add_output_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    parser.add_argument("--quiet", action="store_true", help="no progress or log lines on stderr")


def quant_config(args: argparse.Namespace) -> QuantConfig:
    plan = getattr(args, "plan", None)
    if plan is None:
        return QuantConfig.from_bits(args.quantizer or "minmax", args.bits, args.attn_bits,
                                     tuple(args.allow_float or ()))
    if plan.model != args.model:
        raise ValueError(f"--plan is a plan for {plan.model}, not for --model {args.model}")
    return plan.quant_config(args.quantizer, args.bits, args.attn_bits, tuple(args.allow_float or ()))


def warn_calibration_size(data: str | None, calib_size: int) -> None:
    """The built-in digits fill a calibration set beyond their distinct training images with shifted,
    noisy copies of them: say so, with the numbers (a folder uses fewer images, and folders.py says so)."""
    if data not in (None, DIGITS):
        return
    available = len(digits_split_indices()["train"])
    if calib_size > available:
        log.warning("--calib-size %d is more than the %d distinct training images of the built-in digits: "
                    "calibration sees each about %d times (shifted, noisy copies)", calib_size, available,
                    round(calib_size / available))


def run_spec(args: argparse.Namespace, quant: QuantConfig | None = None):
    from .pipeline import RunSpec

    warn_calibration_size(args.data, args.calib_size)
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


# ---------------------------------------------------------------- failures

def error_text(exc: BaseException) -> str:
    """One line: an OSError as ``PATH: why``, any message's lines joined."""
    if isinstance(exc, OSError) and exc.strerror and exc.filename:
        text = f"{exc.filename}: {exc.strerror}"
    else:
        text = str(exc) or type(exc).__name__
    return "; ".join(line.strip() for line in text.splitlines() if line.strip())


def json_error(as_json: bool, message: str, code: int = EXIT_USER_ERROR) -> int:
    """With --json, the failure as the last stdout line; returns ``code``."""
    if as_json:
        print(json.dumps({"error": message, "exit": code}), flush=True)
    return code


def fail(message: str, as_json: bool, code: int = EXIT_USER_ERROR) -> int:
    print(f"error: {message}", file=sys.stderr, flush=True)
    return json_error(as_json, message, code)


def _closed_pipe() -> int:
    """The reader left (``inspect F.h5 | head``): say nothing more, and let no flush at exit complain."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    for stream in (sys.stdout, sys.stderr):
        try:
            os.dup2(devnull, stream.fileno())
        except (AttributeError, OSError, ValueError):   # not a real file (a test's capture)
            pass
    os.close(devnull)
    return EXIT_CLOSED_PIPE


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="python -m engine", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"{DISTRIBUTION} {package_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f".commands.{name}", __package__).add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    as_json = "--json" in argv
    keep_freed_memory()   # process-wide, so the entry point sets it (engine/allocator.py)
    make_thread_invariant()   # likewise, before any computation (engine/threads.py)
    try:
        args = build_parser().parse_args(argv)
        args.argv = argv   # for the resume command a command prints
        quiet = getattr(args, "quiet", False)
        logging.basicConfig(level=logging.WARNING if quiet else logging.INFO,
                            format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
        with Heartbeat(sys.stderr, enabled=False if quiet else None) as args.heartbeat:
            args.heartbeat.doing(args.command)   # a command says more as it goes
            return args.func(args) or 0
    except BrokenPipeError:
        return _closed_pipe()
    except USER_ERRORS as exc:
        try:
            return fail(error_text(exc), as_json)
        except BrokenPipeError:
            return _closed_pipe()
    except KeyboardInterrupt:
        return fail("interrupted", as_json, EXIT_INTERRUPTED)
