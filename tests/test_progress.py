"""Progress you can see: a line at least every 10 s when stderr is not a terminal, ticks from
calibration and top-1 passes, and a search ETA that knows a step at block i reruns blocks i..N-1."""
from __future__ import annotations

import io
import time

import numpy as np
import torch
from torch import nn

from engine.commands.search import Progress
from engine.data import TensorImages
from engine.evaluate import top1
from engine.progress import HEARTBEAT_S, Heartbeat, SearchEta, Tick, clock_text, listening, report
from engine.quant.registry import run_batches
from engine.search.events import BlockDone, Evaluated, Stage, Started
from engine.search.run import schedule


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_report_reaches_only_a_listener_of_this_context():
    seen: list[Tick] = []
    report("batches", 1, 2)   # nobody listens: nothing happens
    with listening(seen.append):
        report("batches", 2, 3)
    report("batches", 3, 3)
    assert seen == [Tick("batches", 2, 3)]


def test_calibration_and_top1_passes_tick():
    seen: list[Tick] = []
    model = nn.Flatten()
    images = torch.zeros(5, 2)
    with listening(seen.append):
        run_batches(model, [images[:2], images[2:]])
        top1(model, TensorImages(images, torch.zeros(5, dtype=torch.long), torch.arange(5)), batch_size=2)
    assert seen == [Tick("calibration batches", 1, 2), Tick("calibration batches", 2, 2),
                    Tick("images", 2, 5), Tick("images", 4, 5), Tick("images", 5, 5)]


def test_heartbeat_fills_every_silence_of_ten_seconds():
    """A line after the interval's silence; with the thread's one-second polls a gap stays under 10 s."""
    assert HEARTBEAT_S + 1.0 < 10.0
    clock, stream = FakeClock(), io.StringIO()
    beat = Heartbeat(stream, interval=10.0, clock=clock, enabled=True)
    beat.doing("calibrating omse W4A3")
    clock.now = 9.9
    assert not beat.beat()
    clock.now = 10.0
    beat.on_tick(Tick("calibration batches", 3, 10))
    assert beat.beat()
    clock.now = 15.0
    beat.write("a line of the owner's")
    clock.now = 24.0
    assert not beat.beat()                    # the owner's line restarted the silence
    beat.doing(lambda: f"asked at {clock.now:.0f}")
    clock.now = 25.0
    assert beat.beat()
    assert stream.getvalue().splitlines() == [
        "... calibrating omse W4A3: calibration batches 3/10 (0:10 elapsed)", "a line of the owner's",
        "... asked at 25 (0:25 elapsed)"]


def test_heartbeat_thread_writes_while_the_caller_is_busy():
    stream = io.StringIO()
    with Heartbeat(stream, interval=0.05, enabled=True) as beat:
        beat.doing("one long forward")       # then one computation that reports nothing, until two beats
        deadline = time.monotonic() + 30
        while len(stream.getvalue().splitlines()) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
    lines = stream.getvalue().splitlines()
    assert len(lines) >= 2 and all(line.startswith("... one long forward") for line in lines)


def test_heartbeat_beats_on_a_log_only(tmp_path):
    class Terminal(io.StringIO):
        def fileno(self) -> int:
            return 2

        def isatty(self) -> bool:
            return True

    with open(tmp_path / "log.txt", "w") as log:
        assert Heartbeat(log).enabled
    assert not Heartbeat(Terminal()).enabled and not Heartbeat(io.StringIO()).enabled


def simulate(eta: SearchEta, clock: FakeClock, n: int, blocks: list[int], cycles: int, cycle_s: float, input_s: float,
             fixed_s: float, steps: int, per_cycle_s: float = 0.0) -> None:
    """``steps`` block steps whose parts cost exactly what SearchEta's model says."""
    for block in blocks[:steps]:
        clock.now += input_s * block
        for cycle in range(cycles):
            clock.now += per_cycle_s + cycle_s * (n - block)
            eta.evaluated(cycle, clock.now)
        clock.now += fixed_s
        eta.step_done(clock.now)


def test_eta_knows_that_steps_slow_down_towards_the_first_block():
    n, cycles = 12, 3
    blocks = [b for _, b in schedule(2, n)]
    clock, eta = FakeClock(), SearchEta(n, blocks, 0, 0.0)
    assert eta.remaining(0.0) is None
    simulate(eta, clock, n, blocks, cycles, cycle_s=0.5, input_s=0.1, fixed_s=2.0, steps=1)
    truth = sum(2.0 + 0.1 * b + cycles * 0.5 * (n - b) for b in blocks[1:])
    assert np.isclose(eta.remaining(clock.now), truth)
    flat = (clock.now / 1) * (len(blocks) - 1)   # what a constant cost per step would predict
    assert flat < 0.5 * truth
    clock.now += 1.0                          # a second into the next step
    assert np.isclose(eta.remaining(clock.now), truth - 1.0)


def test_eta_splits_a_cycles_cost_into_a_fixed_part_and_a_part_per_block_once_two_steps_are_seen():
    n, cycles = 6, 8
    blocks = [b for _, b in schedule(2, n)]
    clock, eta = FakeClock(), SearchEta(n, blocks, 0, 0.0)
    costs = dict(cycles=cycles, cycle_s=0.7, input_s=0.05, fixed_s=0.8, per_cycle_s=0.35)
    simulate(eta, clock, n, blocks, steps=1, **costs)
    truth = sum(0.8 + 0.05 * b + cycles * (0.35 + 0.7 * (n - b)) for b in blocks[1:])
    assert eta.remaining(clock.now) > truth   # one step: the whole cycle counted per block, an overestimate
    simulate(eta, clock, n, blocks[1:], steps=1, **costs)
    truth = sum(0.8 + 0.05 * b + cycles * (0.35 + 0.7 * (n - b)) for b in blocks[2:])
    assert np.isclose(eta.remaining(clock.now), truth)


def test_eta_with_one_cycle_per_step_and_after_a_resume():
    n = 6
    blocks = [b for _, b in schedule(1, n)]
    clock, eta = FakeClock(), SearchEta(n, blocks, 2, 0.0)    # two steps were done before the resume
    simulate(eta, clock, n, blocks[2:], 1, cycle_s=1.0, input_s=0.0, fixed_s=0.5, steps=1)
    assert np.isclose(eta.remaining(clock.now), sum(0.5 + (n - b) for b in blocks[3:]))
    simulate(eta, clock, n, blocks[3:], 1, cycle_s=1.0, input_s=0.0, fixed_s=0.5, steps=3)
    assert eta.remaining(clock.now) == 0.0


def started(n: int = 6, passes: int = 1) -> Started:
    return Started(block_names=tuple(f"blocks.{i}" for i in range(n)), passes=passes,
                   total_evaluations=1 + passes * n * 2, heldout_fp_top1=99.0, heldout_base_top1=90.0,
                   base_loss=1.0, device="cpu")


def test_search_progress_lines_in_a_log():
    clock, stream = FakeClock(), io.StringIO()
    beat = Heartbeat(stream, clock=clock, enabled=True)
    progress = Progress(beat, clock=clock)
    progress.update(Stage("loading digits-vit and calibrating minmax W4A8"))
    progress.update(started())
    for cycle in range(2):
        clock.now += 5.0
        progress.update(Evaluated(2 + cycle, 0, 5, cycle, 0.9, 0.9, np.array([0.9])))
    clock.now += 12.0
    assert beat.beat()                        # 12 s after the last line, inside the step: the heartbeat
    clock.now += 1.0
    beat.on_tick(Tick("images", 1000, 1000))   # the held-out pass that ends the step
    progress.update(BlockDone(step=1, pass_index=0, block_index=5, best_loss=0.9, heldout_top1=91.0, evaluations=3))
    clock.now += 10.0
    assert beat.beat()
    lines = stream.getvalue().splitlines()
    assert lines[3].startswith("... pass 1/1  block 5/6  eval 3/13") and "images" not in lines[3]
    assert lines[0] == "loading digits-vit and calibrating minmax W4A8"
    assert lines[1].startswith("... pass 1/1  block 6/6  eval 3/13  loss 0.9  held-out 90.00%  ETA --")
    assert lines[2].startswith("pass 1/1  block 6/6  eval 3/13  loss 0.9  held-out 91.00%  ETA ")
    # cycles of 5 s per rerun block, 13 s after the last evaluation, no input time measured (block 5 of 6)
    expected = sum(13.0 + 2 * 5.0 * (6 - b) for b in range(4, -1, -1))
    assert lines[2].endswith(f"ETA {clock_text(expected)}")


def test_clock_text():
    assert clock_text(65.4) == "1:05" and clock_text(7265) == "2:01:05" and clock_text(-3) == "0:00"
