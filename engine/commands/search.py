"""``search``: refine a quantized model's scales with the CPT-V search and save the run file.

Nothing is lost to an interrupt: a checkpoint is written after every block step and at each check of the
joint phase (to ``--checkpoint``,
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
from typing import Callable, Sequence

from ..atomic import check_writable
from ..argtypes import existing_file, output_file
from ..cli import (add_model_args, add_output_args, add_quant_args, emit, error_text, given_flags, json_error,
                   require_quant_or_plan, run_spec)
from ..evaluate import TOP1, quality_key, quality_of
from ..pipeline import RunSpec
from ..progress import Heartbeat, SearchEta, clock_text, is_terminal
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
    add_quant_args(parser, required=False, plan=True)
    add_search_args(parser)
    parser.add_argument("--out", type=output_file, required=True, help="run file to write (.h5)")
    parser.add_argument("--checkpoint", type=_writable_path,
                        help="write a resumable checkpoint here after every block step and every check of the joint phase "
                             "(default: <out>.ckpt, "
                             "removed once the run file is saved)")
    parser.add_argument("--resume", type=_existing_path,
                        help="continue the run of this checkpoint with its recorded settings (flags given override "
                             "them, e.g. --weights for a file that moved); it keeps being updated unless "
                             "--checkpoint names another file")
    add_output_args(parser)
    parser.set_defaults(func=run, parser=parser, quantizer=None)


def _writable_path(text: str) -> Path:
    return Path(output_file(text))


def _existing_path(text: str) -> Path:
    return Path(existing_file(text))


class Progress:
    """The search on stderr: pass, block, evaluations, loss, held-out top-1 and the ETA (SearchEta:
    steps slow down as the search nears the first block). Rewritten in place on a terminal; otherwise
    one line per stage and block step (``lines``), and between them the heartbeat's line every 10 s
    saying the same, after ``label`` (a sweep's run)."""

    def __init__(self, heartbeat: Heartbeat, label: str = "", lines: bool = True,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.heartbeat, self.label, self.lines, self.clock = heartbeat, label, lines, clock
        self.tty = is_terminal(heartbeat.stream)
        self.started: Started | None = None
        self.eta: SearchEta | None = None
        self.steps: list[tuple[int, int]] = []   # (pass, block) of every block step
        self.stage = "starting"               # the preparation or report step under way, "" while searching
        self.at = (0, 0, 0, float("nan"))   # pass, block, evaluation, best loss of the step under way
        self.heldout, self.last_draw = float("nan"), 0.0

    def update(self, event: Event) -> None:
        now = self.clock()
        if isinstance(event, Stage):
            self.stage = event.message
            self.heartbeat.doing(self.activity)
            self._write(event.message, final=True)
        elif isinstance(event, Started):
            self.started, self.heldout, self.stage = event, event.heldout_base_top1, ""
            steps = self.steps = search_run.schedule(event.passes, len(event.block_names))
            self.eta = SearchEta.for_passes(len(event.block_names), event.passes, event.resumed_from_step, now)
            pass_index, block = steps[min(event.resumed_from_step, len(steps) - 1)]
            self.at = (pass_index, block, event.evaluations_done, event.base_loss)
            self.heartbeat.doing(self.activity)
        elif isinstance(event, Evaluated):
            self.eta.evaluated(event.cycle, now)
            self.at = (event.pass_index, event.block_index, event.evaluation, event.best_loss)
            self.heartbeat.doing(self.activity)
            if self.tty and now - self.last_draw > REFRESH_S:
                self._write(self.status(), final=False)
        elif isinstance(event, BlockDone):
            self.eta.step_done(now)
            self.heldout = event.heldout_top1
            self.at = (event.pass_index, event.block_index, event.evaluations, event.best_loss)
            self._write(self.status(), final=not self.tty)
            if event.step < len(self.steps):   # the heartbeat speaks of the next step, without the held-out counts
                self.at = (*self.steps[event.step], event.evaluations, event.best_loss)
            self.heartbeat.doing(self.activity)

    def activity(self) -> str:
        """What the heartbeat says is being done."""
        return self.label + (self.stage or self.status())

    def status(self) -> str:
        started, (pass_index, block_index, evaluation, loss) = self.started, self.at
        left = self.eta.remaining(self.clock())
        return (f"pass {pass_index + 1}/{started.passes}  block {block_index + 1}/{len(started.block_names)}  "
                f"eval {evaluation}/{started.total_evaluations}  loss {loss:.5g}  held-out "
                f"{'' if started.quality == TOP1 else 'feature cosine '}{self.heldout:.2f}%  "
                f"ETA {'--' if left is None else clock_text(left)}")

    def _write(self, text: str, final: bool) -> None:
        if not self.lines:
            return
        self.last_draw = self.clock()
        if self.tty:
            self.heartbeat.write("\r\033[K" + text, end="\n" if final else "")
        else:
            self.heartbeat.write(text)


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
        reason += ("; nothing had been checkpointed yet (the first checkpoint comes at the joint phase's first "
                   "check or the first block step), so there is nothing to resume: rerun the same command")
    print(reason, file=sys.stderr, flush=True)


SPEC_FLAGS = ("model", "pretrained", "data", "calib_size", "batch_size", "seed", "device", "heldout_from", "compile")


def _resumed_quant(args: argparse.Namespace, given: set[str], recorded: QuantConfig) -> QuantConfig:
    w_bits, a_bits = parse_bits(args.bits) if "bits" in given else (recorded.w_bits, recorded.a_bits)
    quant = QuantConfig(args.quantizer if "quantizer" in given else recorded.quantizer, w_bits, a_bits,
                        args.attn_bits if "attn_bits" in given else recorded.attn_bits,
                        tuple(args.allow_float) if "allow_float" in given else recorded.allow_float, recorded.plan)
    if "plan" in given:   # compared with the recorded plan by the identity rule, like any flag
        quant = args.plan.quant_config(quant.quantizer, f"W{quant.w_bits}A{quant.a_bits}", quant.attn_bits,
                                       quant.allow_float)
    return quant


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
    else:
        require_quant_or_plan(args, "search", " (or --resume CHECKPOINT to continue a stopped run)")
        spec, config = run_spec(args), search_config_from_args(args)
    checkpoint = args.checkpoint or args.resume or default_checkpoint(args.out)
    check_writable(checkpoint)   # --out is checked as it is parsed
    record, progress = None, Progress(args.heartbeat, lines=not args.quiet)
    try:
        for event in search_run.run_search(spec, config, checkpoint, args.resume):
            progress.update(event)
            if isinstance(event, Finished):
                record = event.run
    except KeyboardInterrupt:
        _stopped("interrupted", checkpoint, args.argv)
        return 130
    except (FileNotFoundError, BrokenPipeError):
        raise   # a missing input (e.g. the run's weights), or stderr's reader left: the CLI's own handling
    except OSError as exc:   # writing the checkpoint (disk full, permission)
        message = error_text(exc)
        _stopped(f"error: {message}", checkpoint, args.argv)
        return json_error(args.json, message)
    try:
        out = save_run(args.out, record)
    except OSError as exc:
        message = f"could not write the run file {args.out}: {exc.strerror or exc}"
        _stopped(f"error: {message}", checkpoint, args.argv)
        return json_error(args.json, message)
    if args.checkpoint is None and checkpoint == default_checkpoint(args.out):
        checkpoint.unlink(missing_ok=True)
    m, quality = record.metrics, quality_of(record.metrics)   # top1, or feature_cosine (no classifier)
    key = {which: quality_key(quality, which) for which in ("fp", "base", "refined", "heldout_base", "heldout_refined")}
    result = {"quality": quality, **{name: m[name] for name in key.values()},
              "n_test": m["n_test"], "heldout_source": record.calibration.get("heldout_source"),
              "evaluations": m["evaluations"], "seconds": time.perf_counter() - start,
              "out": str(out)}
    emit(args, result, f"{record.model_name} {record.quant.quantizer} {record.quant.bits_label} {config.preset}: "
                       + (f"FP {m[key['fp']]:.2f}%  " if quality == TOP1 else "no classifier: feature cosine to FP ")
                       + f"base {m[key['base']]:.2f}%  refined {m[key['refined']]:.2f}%  "
                       f"(n_test={m['n_test']}, held-out: {record.calibration.get('heldout_source')}, "
                       f"{m['evaluations']} evaluations, {m['search_seconds']:.0f} s search)"
                       f"  -> {out}")
    return 0
