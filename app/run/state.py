"""RunState: a plain (Qt-free) model of the latest state of a search, fed by the engine's events.

The worker thread only queues events; the GUI thread folds them into a RunState
(``apply``) and redraws from it on a timer, so a burst of events costs one redraw.
A RunState can also be built from a finished run file (``from_record``): the same plots
and results card then show a run without re-running it.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engine.evaluate import quality_key, quality_of
from engine.progress import SearchEta
from engine.search.events import BlockDone, Evaluated, Finished, PassDone, Stage, Started

# Status values, in the order a run goes through them.
IDLE, PREPARING, RUNNING, PAUSED, STOPPING, STOPPED, FINISHED, FAILED, LOADED = (
    "idle", "preparing", "running", "paused", "stopping", "stopped", "finished", "failed", "loaded")


class Series:
    """A growable float array: append is amortised O(1), ``view()`` is a no-copy numpy view."""

    def __init__(self, dtype=np.float64) -> None:
        self._data = np.empty(256, dtype)
        self._n = 0

    def append(self, value: float) -> None:
        if self._n == len(self._data):
            self._data = np.concatenate([self._data, np.empty_like(self._data)])
        self._data[self._n] = value
        self._n += 1

    def truncate(self, n: int) -> None:
        self._n = max(0, min(n, self._n))

    def replace(self, values: np.ndarray) -> None:
        values = np.asarray(values, self._data.dtype).ravel()
        self._data = np.empty(max(256, 2 * len(values)), self._data.dtype)
        self._data[:len(values)] = values
        self._n = len(values)

    def view(self) -> np.ndarray:
        return self._data[:self._n]

    def __len__(self) -> int:
        return self._n


@dataclass
class StepRecord:
    """One finished block step (one bar update in the held-out plot)."""
    step: int
    pass_index: int
    block_index: int
    best_loss: float
    heldout_top1: float
    evaluations: int          # evaluations done when the step finished (running count)


@dataclass
class RunState:
    status: str = IDLE
    stage: str = ""
    # From Started
    block_names: tuple[str, ...] = ()
    passes: int = 0
    total_evaluations: int = 0
    heldout_fp_top1: float = float("nan")
    heldout_base_top1: float = float("nan")
    quality: str = "top1"              # what the held-out numbers measure: top-1, or "feature_cosine" (no head)
    base_loss: float = float("nan")
    device: str = ""
    resumed_from_step: int = 0
    strategy: str = ""                 # the search's strategy (SearchConfig.strategy): what "population" means
    # Live position
    evaluations: int = 0
    pass_index: int = -1
    block_index: int = -1
    cycle: int = -1
    # History (one entry per evaluation)
    eval_number: Series = field(default_factory=Series)
    loss: Series = field(default_factory=Series)
    best_loss: Series = field(default_factory=Series)       # best so far over the run
    eval_block: Series = field(default_factory=lambda: Series(np.int32))
    steps: list[StepRecord] = field(default_factory=list)
    pass_best: dict[int, float] = field(default_factory=dict)
    # Population spread of the current block: x = evaluation number, min/median/max of the population
    pop_x: Series = field(default_factory=Series)
    pop_min: Series = field(default_factory=Series)
    pop_median: Series = field(default_factory=Series)
    pop_max: Series = field(default_factory=Series)
    population: np.ndarray = field(default_factory=lambda: np.zeros(0))
    # The end
    run: Any = None                    # engine.runrecord.RunRecord once finished (or loaded)
    error: str = ""
    source_path: str = ""              # the run file shown, for a loaded run
    saved: bool = False                # the finished run is in a file (saved, opened, or written by a sweep)
    # Timing (wall clock of this session; a resumed run restarts the clock)
    started_at: float | None = None
    finished_at: float | None = None
    search_eta: SearchEta | None = None   # the engine's model of the time left (engine/progress.py)
    version: int = 0                   # bumped on every change; the view redraws when it moves

    # ------------------------------------------------------------------ events

    def apply(self, event: Any, now: float | None = None) -> None:
        """Fold one engine event into the state."""
        now = time.monotonic() if now is None else now
        self.version += 1
        if isinstance(event, Evaluated):
            self._evaluated(event, now)
        elif isinstance(event, BlockDone):
            if self.search_eta is not None:
                self.search_eta.step_done(now)
            self.steps.append(StepRecord(event.step, event.pass_index, event.block_index, event.best_loss,
                                         event.heldout_top1, event.evaluations))
        elif isinstance(event, Stage):
            self.stage = event.message
            if self.status in (IDLE, STOPPED, FAILED, FINISHED, LOADED):
                self.status = PREPARING
        elif isinstance(event, Started):
            self._started(event, now)
        elif isinstance(event, PassDone):
            self.pass_best[event.pass_index] = event.best_loss
        elif isinstance(event, Finished):
            self._finished(event.run, now)

    def _started(self, event: Started, now: float) -> None:
        self.block_names = tuple(event.block_names)
        self.passes = event.passes
        self.total_evaluations = event.total_evaluations
        self.heldout_fp_top1 = event.heldout_fp_top1
        self.heldout_base_top1 = event.heldout_base_top1
        self.quality = getattr(event, "quality", "top1")
        self.base_loss = event.base_loss
        self.device = event.device
        self.resumed_from_step = event.resumed_from_step
        # A resumed run repeats the block step that was interrupted: keep the history up to the
        # last finished step it resumes from, drop what came after it.
        kept = [s for s in self.steps if s.step <= event.resumed_from_step]
        self.steps = kept
        keep_evals = kept[-1].evaluations if kept else 0
        n = int(np.searchsorted(self.eval_number.view(), keep_evals, side="right"))
        for series in (self.eval_number, self.loss, self.best_loss, self.eval_block):
            series.truncate(n)
        self.evaluations = int(getattr(event, "evaluations_done", keep_evals))
        self._clear_population()
        self.status = RUNNING
        self.stage = "searching"
        self.started_at = now
        self.search_eta = SearchEta.for_passes(len(self.block_names), self.passes, self.resumed_from_step, now)
        self.finished_at = None

    def _evaluated(self, event: Evaluated, now: float) -> None:
        if event.block_index != self.block_index or event.pass_index != self.pass_index:
            self._clear_population()
        if self.search_eta is not None:
            self.search_eta.evaluated(event.cycle, now)
        self.evaluations = event.evaluation
        self.pass_index, self.block_index, self.cycle = event.pass_index, event.block_index, event.cycle
        self.eval_number.append(event.evaluation)
        self.loss.append(event.loss)
        previous = self.best_loss.view()[-1] if len(self.best_loss) else np.inf
        self.best_loss.append(min(previous, event.loss))   # best so far over the whole run
        self.eval_block.append(event.block_index)
        population = np.asarray(event.population_losses, np.float64).ravel()
        self.population = population
        if population.size:
            self.pop_x.append(event.evaluation)
            self.pop_min.append(float(population.min()))
            self.pop_median.append(float(np.median(population)))
            self.pop_max.append(float(population.max()))

    def _clear_population(self) -> None:
        for series in (self.pop_x, self.pop_min, self.pop_median, self.pop_max):
            series.truncate(0)
        self.population = np.zeros(0)

    def _finished(self, run: Any, now: float) -> None:
        self.run = run
        self.saved = False
        self.status = FINISHED
        self.stage = "finished"
        self.finished_at = now
        history = getattr(run, "history", None)
        if history is not None and len(history.loss) > len(self.loss):
            self._history_from_record(history)   # a resumed run: the file knows the steps before it

    @property
    def unsaved(self) -> bool:
        """A finished run that is in no file: closing the window would lose it."""
        return self.run is not None and not self.saved

    def mark(self, status: str, error: str = "") -> None:
        self.status, self.error = status, error
        if status in (STOPPED, FAILED, FINISHED):
            self.finished_at = time.monotonic()
        self.version += 1

    # ------------------------------------------------------------------ run files

    @classmethod
    def from_record(cls, run: Any, path: str = "") -> "RunState":
        """A state showing a finished run read from a file (no population spread: files don't keep it)."""
        state = cls(status=LOADED, stage="loaded from file", run=run, source_path=path, saved=True)
        metrics = run.metrics or {}
        state.quality = quality_of(metrics)   # older files: top-1
        state.heldout_fp_top1 = float(metrics.get(quality_key(state.quality, "heldout_fp"), float("nan")))
        state.heldout_base_top1 = float(metrics.get(quality_key(state.quality, "heldout_base"), float("nan")))
        state.device = str(metrics.get("device", ""))
        search = run.search or {}
        state.passes = int(search.get("passes", 0) or 0)
        state.strategy = str(search.get("strategy", ""))
        if run.history is not None:
            state._history_from_record(run.history)
            state.total_evaluations = len(run.history.loss)
        names = _block_names(run)
        n_blocks = max([len(names)] + [s.block_index + 1 for s in state.steps]
                       + [int(v) + 1 for v in state.eval_block.view()])
        state.block_names = tuple(names) if len(names) == n_blocks else tuple(f"block {i}" for i in range(n_blocks))
        state.version = 1
        return state

    def load_history(self, history: Any) -> None:
        """Show the history of a checkpoint before its run is resumed."""
        self._history_from_record(history)

    def _history_from_record(self, history: Any) -> None:
        loss = np.asarray(history.loss, np.float64)
        n = len(loss)
        self.eval_number.replace(np.arange(1, n + 1))
        self.loss.replace(loss)
        self.best_loss.replace(np.minimum.accumulate(loss) if n else loss)
        self.eval_block.replace(np.asarray(history.eval_block, np.int32) if len(history.eval_block) == n
                                else np.zeros(n, np.int32))
        self.evaluations = n
        heldout = np.asarray(history.heldout_top1, np.float64)
        blocks = np.asarray(history.block_index)
        passes = np.asarray(history.pass_index)
        step_loss = np.asarray(history.step_loss, np.float64)
        ends = _step_ends(np.asarray(history.eval_block), np.asarray(history.eval_pass), len(heldout))
        self.steps = [StepRecord(i + 1, int(passes[i]) if i < len(passes) else 0,
                                 int(blocks[i]) if i < len(blocks) else 0,
                                 float(step_loss[i]) if i < len(step_loss) else float("nan"),
                                 float(heldout[i]), int(ends[i])) for i in range(len(heldout))]
        self.version += 1

    # ------------------------------------------------------------------ derived, for the views

    @property
    def n_blocks(self) -> int:
        return len(self.block_names)

    def block_boundaries(self) -> np.ndarray:
        """Evaluation numbers (x) where a new block step begins, i.e. between two steps."""
        blocks = self.eval_block.view()
        if len(blocks) < 2:
            return np.zeros(0)
        change = np.flatnonzero(blocks[1:] != blocks[:-1]) + 1
        x = self.eval_number.view()
        return (x[change - 1] + x[change]) / 2.0

    def latest_heldout_per_block(self) -> tuple[np.ndarray, np.ndarray]:
        """(top-1, pass index) of the latest finished step of each block; NaN / -1 if none yet."""
        top1 = np.full(self.n_blocks, np.nan)
        passes = np.full(self.n_blocks, -1)
        for step in self.steps:
            if 0 <= step.block_index < self.n_blocks:
                top1[step.block_index] = step.heldout_top1
                passes[step.block_index] = step.pass_index
        return top1, passes

    def elapsed(self, now: float | None = None) -> float:
        if self.started_at is None:
            return 0.0
        end = self.finished_at if self.finished_at is not None else (time.monotonic() if now is None else now)
        return max(0.0, end - self.started_at)

    def eta(self, now: float | None = None) -> float | None:
        """Seconds left, by the engine's model of a block-wise search (later steps rerun more blocks);
        None before the first block step of this session."""
        if self.search_eta is None or self.status != RUNNING:
            return None
        return self.search_eta.remaining(time.monotonic() if now is None else now)


def _block_names(run: Any) -> list[str]:
    """Transformer block names from the refined scales' module names (``blocks.3.attn.qkv`` -> ``blocks.3``)."""
    names: list[str] = []
    for module in getattr(run, "scales", {}) or {}:
        parts = module.split(".")
        for i in range(len(parts) - 1):
            if parts[i] == "blocks" and parts[i + 1].isdigit():
                name = ".".join(parts[:i + 2])
                if name not in names:
                    names.append(name)
                break
    return names


def _step_ends(eval_block: np.ndarray, eval_pass: np.ndarray, n_steps: int) -> np.ndarray:
    """Running evaluation count at the end of each block step."""
    if len(eval_block) == 0:
        return np.zeros(n_steps, int)
    change = np.flatnonzero((eval_block[1:] != eval_block[:-1]) | (eval_pass[1:] != eval_pass[:-1])) + 1
    ends = np.append(change, len(eval_block))[-n_steps:] if n_steps else np.zeros(0, int)
    # A leading segment (the base model's evaluation) is not a step: keep the last n_steps segments.
    out = np.zeros(n_steps, int)
    out[n_steps - len(ends):] = ends
    return out
