"""``search``: refine a quantized model's scales with the CPT-V search and save the run file.

Nothing is lost to an interrupt: a checkpoint is written after every block step (to ``--checkpoint``,
else ``<out>.ckpt``, removed once the run file is saved). Ctrl+C leaves it, prints the command that
resumes it and exits 130; a failed save (disk full, permission) leaves it too, and its resume goes
straight to the final report and the save.

``--resume CHECKPOINT`` alone continues the run as it was made (the checkpoint holds its whole
RunSpec and search config); a flag given with it overrides the recorded value (``--weights`` for a
weights file that moved, ``--device``), and one that makes it another run is refused before any work.
"""
from __future__ import annotations

import argparse
import shlex
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Sequence, TextIO

from ..atomic import check_writable
from ..cli import add_model_args, add_output_args, add_quant_args, emit, given_flags, run_spec
from ..pipeline import RunSpec
from ..quant import QuantConfig, parse_bits
from ..scalefile import save_run
from ..search.checkpoint import Checkpoint, load_checkpoint
from ..search.config import PRESETS, SearchConfig, add_search_args, search_config_from_args, search_flag_dests
from ..search.events import BlockDone, Evaluated, Event, Finished, Stage, Started
from ..search.resume import recorded_config, recorded_spec, with_weights
from ..search import run as search_run   # looked up per call: tests and the app wrap it

REFRESH_S = 0.5   # progress line refresh on a terminal


def add_parser(sub) -> None:
    parser = sub.add_parser("search", help="refine the scales block by block (default: the guided search; "
                                           "--preset release: the CPT-V paper's evolutionary search)")
    add_model_args(parser)
    add_quant_args(parser, required=False)
    add_search_args(parser)
    parser.add_argument("--out", required=True, help="run file to write (.h5)")
    parser.add_argument("--checkpoint", type=Path,
                        help="write a resumable checkpoint here after every block step (default: <out>.ckpt, "
                             "removed once the run file is saved)")
    parser.add_argument("--resume", type=Path,
                        help="continue the run of this checkpoint with its recorded settings (flags given override "
                             "them, e.g. --weights for a file that moved); it keeps being updated unless "
                             "--checkpoint names another file")
    add_output_args(parser)
    parser.set_defaults(func=run, parser=parser, quantizer=None)


class Progress:
    """One stderr line: pass, block, evaluations, loss, held-out top-1 and ETA. Rewritten in place
    on a terminal; otherwise one line per block step, so logs stay readable."""

    def __init__(self, stream: TextIO) -> None:
        self.stream, self.tty = stream, stream.isatty()
        self.started: Started | None = None
        self.first_eval, self.clock, self.last_draw = 1, time.perf_counter(), 0.0
        self.heldout = float("nan")

    def update(self, event: Event) -> None:
        if isinstance(event, Stage):
            self._write(event.message, final=True)
        elif isinstance(event, Started):
            self.started, self.heldout = event, event.heldout_base_top1
            self.clock = time.perf_counter()
            self.first_eval = event.evaluations_done
        elif isinstance(event, Evaluated) and self.tty and time.perf_counter() - self.last_draw > REFRESH_S:
            self._write(self._line(event.pass_index, event.block_index, event.evaluation, event.best_loss), final=False)
        elif isinstance(event, BlockDone):
            self.heldout = event.heldout_top1
            self._write(self._line(event.pass_index, event.block_index, event.evaluations, event.best_loss),
                        final=not self.tty)

    def _line(self, pass_index: int, block_index: int, evaluation: int, loss: float) -> str:
        started = self.started
        done = max(1, evaluation - self.first_eval)
        left = started.total_evaluations - evaluation
        eta = (time.perf_counter() - self.clock) / done * left
        return (f"pass {pass_index + 1}/{started.passes}  block {block_index + 1}/{len(started.block_names)}  "
                f"eval {evaluation}/{started.total_evaluations}  loss {loss:.5g}  held-out {self.heldout:.2f}%  "
                f"ETA {int(eta) // 60}:{int(eta) % 60:02d}")

    def _write(self, text: str, final: bool) -> None:
        self.last_draw = time.perf_counter()
        end = "\n" if final else ""
        self.stream.write(("\r\033[K" if self.tty else "") + text + end)
        self.stream.flush()


def default_checkpoint(out: str | Path) -> Path:
    return Path(f"{out}.ckpt")


def rerun_command(argv: Sequence[str], resume: Path | None = None) -> str:
    """This process's command line (``python -m engine ...``), with ``--resume`` set to ``resume`` if given."""
    kept, tokens = [], iter(argv)
    for token in tokens:
        if token == "--resume":
            next(tokens, None)   # and its value
        elif not token.startswith("--resume="):
            kept.append(token)
    resumed = ["--resume", str(resume)] if resume is not None else []
    return shlex.join([sys.executable, "-m", "engine", *kept, *resumed])


def _stopped(reason: str, checkpoint: Path, argv: Sequence[str]) -> None:
    """One message on stderr: why the search stopped and, when a checkpoint holds it, how to go on."""
    if sys.stderr.isatty():
        print(file=sys.stderr)   # end the progress line rewritten in place
    if checkpoint.exists():
        reason += f"; the search so far is in {checkpoint}. Resume it with:\n  {rerun_command(argv, checkpoint)}"
    else:
        reason += "; no block step had finished, so there is nothing to resume: rerun the same command"
    print(reason, file=sys.stderr, flush=True)


SPEC_FLAGS = ("model", "pretrained", "data", "calib_size", "batch_size", "seed", "device", "heldout_from", "compile")


def _resumed_quant(args: argparse.Namespace, given: set[str], recorded: QuantConfig) -> QuantConfig:
    w_bits, a_bits = parse_bits(args.bits) if "bits" in given else (recorded.w_bits, recorded.a_bits)
    return QuantConfig(args.quantizer if "quantizer" in given else recorded.quantizer, w_bits, a_bits,
                       args.attn_bits if "attn_bits" in given else recorded.attn_bits,
                       tuple(args.allow_float) if "allow_float" in given else recorded.allow_float)


def resumed_run(args: argparse.Namespace, checkpoint: Checkpoint) -> tuple[RunSpec, SearchConfig]:
    """The checkpoint's run, with the flags given on this command line in place of the recorded values."""
    given = given_flags(args)
    spec = recorded_spec(checkpoint)
    spec = replace(spec, quant=_resumed_quant(args, given, spec.quant),
                   **{dest: getattr(args, dest) for dest in SPEC_FLAGS if dest in given})
    spec = with_weights(spec, checkpoint, args.weights if "weights" in given else None)
    config = PRESETS[args.preset] if "preset" in given else recorded_config(checkpoint)
    config = replace(config, **{dest: getattr(args, dest) for dest in search_flag_dests() if dest in given})
    return spec, config


def run(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    if args.resume is not None:
        spec, config = resumed_run(args, load_checkpoint(args.resume))
    elif args.quantizer is None or args.bits is None:
        raise ValueError("search needs --quantizer and --bits (or --resume CHECKPOINT to continue a stopped run)")
    else:
        spec, config = run_spec(args), search_config_from_args(args)
    checkpoint = args.checkpoint or args.resume or default_checkpoint(args.out)
    check_writable(args.out)
    check_writable(checkpoint)
    progress = None if args.quiet else Progress(sys.stderr)
    record = None
    try:
        for event in search_run.run_search(spec, config, checkpoint, args.resume):
            if progress is not None:
                progress.update(event)
            if isinstance(event, Finished):
                record = event.run
    except KeyboardInterrupt:
        _stopped("interrupted", checkpoint, args.argv)
        return 130
    except FileNotFoundError:
        raise   # a missing input (e.g. the --resume file): the CLI's one-line error
    except OSError as exc:   # writing the checkpoint (disk full, permission)
        _stopped(f"error: {exc}", checkpoint, args.argv)
        return 2
    try:
        out = save_run(args.out, record)
    except OSError as exc:
        _stopped(f"error: could not write the run file {args.out}: {exc.strerror or exc}", checkpoint, args.argv)
        return 2
    if args.checkpoint is None and checkpoint == default_checkpoint(args.out):
        checkpoint.unlink(missing_ok=True)
    m = record.metrics
    result = {"fp_top1": m["fp_top1"], "base_top1": m["base_top1"], "refined_top1": m["refined_top1"],
              "heldout_base_top1": m["heldout_base_top1"], "heldout_refined_top1": m["heldout_refined_top1"],
              "n_test": m["n_test"], "heldout_source": record.calibration.get("heldout_source"),
              "evaluations": m["evaluations"], "seconds": time.perf_counter() - start,
              "out": str(out)}
    emit(args, result, f"{record.model_name} {record.quant.quantizer} {record.quant.bits_label} {config.preset}: "
                       f"FP {m['fp_top1']:.2f}%  base {m['base_top1']:.2f}%  refined {m['refined_top1']:.2f}%  "
                       f"(n_test={m['n_test']}, held-out: {record.calibration.get('heldout_source')}, "
                       f"{m['evaluations']} evaluations, {m['search_seconds']:.0f} s search)"
                       f"  -> {out}")
    return 0
