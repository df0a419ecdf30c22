"""Progress of long steps, for any front end (no Qt): ticks, a heartbeat, and the search's ETA.

- ``report(what, done, total)``: engine code marks its progress at natural points (a calibration
  batch, a batch of a top-1 pass). It costs one context-variable read unless a front end listens
  (``listening``): the app does not, the CLI's ``Heartbeat`` does.
- ``Heartbeat``: when its stream is not a terminal (a log file, a pipe), a line at least every
  ``HEARTBEAT_S`` seconds saying what is being done and the counts so far, written from a thread so
  that it comes even while one long computation runs.
- ``SearchEta``: the remaining time of a block-wise search, which is not proportional to the
  evaluations left: a candidate of block i reruns blocks i..N-1 (the guided gradient goes forward and
  backward through the same blocks), so steps get slower as the search nears the first block.
"""
from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence, TextIO

HEARTBEAT_S = 8.0   # silence before a heartbeat line; the thread polls each second, so gaps stay under 10 s


@dataclass(frozen=True)
class Tick:
    what: str            # "calibration batches", "images", ...
    done: int
    total: int | None


_listener: ContextVar[Callable[[Tick], None] | None] = ContextVar("progress_listener", default=None)


def report(what: str, done: int, total: int | None = None) -> None:
    """Tell whoever listens in this context (thread) that ``done`` of ``total`` ``what`` are done."""
    listener = _listener.get()
    if listener is not None:
        listener(Tick(what, done, total))


@contextmanager
def listening(listener: Callable[[Tick], None]) -> Iterator[None]:
    """Send this context's ``report`` calls to ``listener`` (a generator's body runs in its consumer's context)."""
    token = _listener.set(listener)
    try:
        yield
    finally:
        _listener.reset(token)


def clock_text(seconds: float) -> str:
    """``1:05`` or ``2:01:05``."""
    seconds = int(max(0.0, seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):   # no isatty, or closed
        return False


def is_log(stream: TextIO) -> bool:
    """A file or a pipe: a stream with a file descriptor that is not a terminal (not an in-memory
    capture, such as a test's, whose reader wants only what the command itself writes)."""
    try:
        stream.fileno()
    except (AttributeError, OSError, ValueError):   # io.UnsupportedOperation is both
        return False
    return not is_terminal(stream)


class Heartbeat:
    """Lines on ``stream`` (not a terminal): the owner's own lines through ``write``, and between them,
    whenever ``interval`` seconds pass in silence, ``... ACTIVITY: WHAT DONE/TOTAL (M:SS elapsed)``.

    Use as a context manager: it listens to ``report`` and runs its thread inside the block. It beats
    on a log (``is_log``) unless told; on a terminal the owner redraws its line in place instead."""

    def __init__(self, stream: TextIO, interval: float = HEARTBEAT_S, clock: Callable[[], float] = time.monotonic,
                 enabled: bool | None = None) -> None:
        self.stream, self.interval, self.clock = stream, interval, clock
        self.enabled = is_log(stream) if enabled is None else enabled
        self.activity: str | Callable[[], str] = ""
        self.tick: Tick | None = None
        self.started = self.last_line = clock()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._listening = None

    def __enter__(self) -> "Heartbeat":
        self._listening = listening(self.on_tick)
        self._listening.__enter__()
        if self.enabled:
            self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._listening.__exit__(*exc)

    def doing(self, activity: str | Callable[[], str]) -> None:
        """What is being done now, or a function that says it when asked (the heartbeat's thread asks);
        the counts of the previous activity no longer apply."""
        self.activity, self.tick = activity, None

    def on_tick(self, tick: Tick) -> None:
        self.tick = tick

    def write(self, line: str, end: str = "\n") -> None:
        """A line of the owner's (it restarts the silence)."""
        with self._lock:
            self.stream.write(line + end)
            self.stream.flush()
            self.last_line = self.clock()

    def line(self, now: float) -> str:
        tick = self.tick
        counts = f": {tick.what} {tick.done}" + (f"/{tick.total}" if tick.total else "") if tick else ""
        activity = self.activity() if callable(self.activity) else self.activity
        return f"... {activity or 'working'}{counts} ({clock_text(now - self.started)} elapsed)"

    def beat(self) -> bool:
        """Write the heartbeat line if the stream has been silent for ``interval``; whether it did."""
        now = self.clock()
        if not self.enabled or now - self.last_line < self.interval:
            return False
        self.write(self.line(now))
        return True

    def _run(self) -> None:
        while not self._stop.wait(min(1.0, self.interval / 4)):
            try:
                self.beat()
            except (OSError, ValueError):   # the stream was closed (a pipe's reader left): stay silent
                return


class SearchEta:
    """Seconds left in a block-wise search, from the steps seen so far.

    A block step at block b of N costs ``fixed + cycles·(per_cycle + per_block·(N - b)) + input·b``:
    each cycle reruns blocks b..N-1 (candidates, and the guided gradient's forward and backward) and
    pays a part that no block count scales (the head, the loss, the step's bookkeeping); the step
    first builds its block's input, a forward through the b blocks before it; then the held-out top-1
    and the checkpoint (``fixed``). Each part is fitted from the times of the evaluations
    (``Evaluated.cycle`` tells the cycles apart): the gaps between a step's cycles give the cycle's
    cost at that step's block count, and once two block counts are seen a weighted least-squares line
    through them splits it into ``per_cycle`` and ``per_block`` (until then all of it scales with
    the blocks); its first cycle's excess gives ``input``, the time after its last evaluation
    ``fixed``. With one cycle per step the first cycle's time stands for the cycle."""

    @classmethod
    def for_passes(cls, n_blocks: int, passes: int, done: int, now: float) -> "SearchEta":
        """The ETA of a search of ``passes`` passes over the blocks, last to first."""
        return cls(n_blocks, [b for _ in range(passes) for b in reversed(range(n_blocks))], done, now)

    def __init__(self, n_blocks: int, blocks: Sequence[int], done: int, now: float) -> None:
        """``blocks``: the block of every step of the run, in order; ``done``: the steps done already."""
        self.n, self.blocks, self.done = n_blocks, list(blocks), done
        self.cycles = 1                                    # per step, as seen
        self.step_start = now
        self.cycle_ends: dict[int, float] = {}             # cycle index -> its last evaluation's time
        self.cycle_samples: list[tuple[int, float, int]] = []   # (blocks rerun, seconds, cycles) per step
        self.input_time = self.input_units = 0.0           # seconds, and blocks before the searched one
        self.fixed_time, self.steps_seen = 0.0, 0

    def evaluated(self, cycle: int, now: float) -> None:
        self.cycle_ends[cycle] = now

    def step_done(self, now: float) -> None:
        block = self.blocks[self.done]
        rerun = self.n - block
        ends = [self.cycle_ends[c] for c in sorted(self.cycle_ends)] or [now]
        self.cycles = max(self.cycles, len(ends))
        first = ends[0] - self.step_start
        if len(ends) > 1:
            gaps = ends[-1] - ends[0]
            self.cycle_samples.append((rerun, gaps, len(ends) - 1))
            self.input_time += max(0.0, first - gaps / (len(ends) - 1))
            self.input_units += block
        else:
            self.cycle_samples.append((rerun, first, 1))
        self.fixed_time += now - ends[-1]
        self.steps_seen += 1
        self.done += 1
        self.step_start, self.cycle_ends = now, {}

    def cycle_cost(self) -> tuple[float, float]:
        """``(per_cycle, per_block)``: a cycle's seconds are ``per_cycle + per_block · blocks rerun``."""
        samples = self.cycle_samples
        proportional = (0.0, sum(s for _, s, _ in samples) / sum(r * c for r, _, c in samples))
        if len({r for r, _, _ in samples}) < 2:
            return proportional
        # weighted least squares of the mean cycle time on the blocks rerun, each step weighted by its cycles
        w = sum(c for _, _, c in samples)
        mean_r = sum(r * c for r, _, c in samples) / w
        mean_t = sum(s for _, s, _ in samples) / w
        var = sum(c * (r - mean_r) ** 2 for r, _, c in samples)
        per_block = sum((r - mean_r) * (s - c * mean_t) for r, s, c in samples) / var
        per_cycle = mean_t - per_block * mean_r
        return (per_cycle, per_block) if per_cycle >= 0 and per_block > 0 else proportional

    def step_seconds(self, block: int) -> float:
        per_cycle, per_block = self.cycle_cost()
        per_input = self.input_time / self.input_units if self.input_units else 0.0
        return (self.fixed_time / self.steps_seen + self.cycles * (per_cycle + per_block * (self.n - block))
                + per_input * block)

    def remaining(self, now: float) -> float | None:
        """None until a step has been seen; the step under way counts what it has left."""
        if not self.cycle_samples:
            return None
        if self.done >= len(self.blocks):
            return 0.0
        current = max(0.0, self.step_seconds(self.blocks[self.done]) - (now - self.step_start))
        return current + sum(self.step_seconds(block) for block in self.blocks[self.done + 1:])
