"""RunState: folding engine events into the model the GUI redraws from (no Qt needed)."""
from __future__ import annotations

import numpy as np

from app.run.state import FINISHED, LOADED, PREPARING, RUNNING, RunState
from engine.search.events import BlockDone, Evaluated, Finished, PassDone, Stage, Started
from engine.quant import QuantConfig, ScaleSet
from engine.runrecord import History, RunRecord

NAMES = ("blocks.0", "blocks.1", "blocks.2")


def _events(start_eval: int = 1, steps=((0, 2), (0, 1), (0, 0)), per_step: int = 4, first_step: int = 1):
    n = start_eval
    step = first_step - 1
    for p, b in steps:
        for c in range(per_step):
            n += 1
            loss = 1.0 / n
            yield Evaluated(n, p, b, c, loss, loss, np.array([loss, 2 * loss, 3 * loss]))
        step += 1
        yield BlockDone(step, p, b, 1.0 / n, 80.0 + step, n)


def test_events_fill_history_and_bars():
    state = RunState()
    state.apply(Stage("loading"))
    assert state.status == PREPARING and state.stage == "loading"
    state.apply(Started(NAMES, 1, 13, 97.0, 80.0, 1.0, "cpu", 0))
    assert state.status == RUNNING
    for event in _events():
        state.apply(event)
    state.apply(PassDone(0, 0.1))
    assert len(state.loss) == 12 and state.evaluations == 13
    assert np.all(np.diff(state.best_loss.view()) <= 0)          # best so far never rises
    top1, _ = state.latest_heldout_per_block()
    assert list(top1) == [83.0, 82.0, 81.0]                      # visited last to first
    assert len(state.block_boundaries()) == 2
    assert len(state.pop_x) == 4 and state.population.size == 3  # the current block only


def test_resume_drops_the_interrupted_step():
    state = RunState()
    state.apply(Started(NAMES, 1, 13, 97.0, 80.0, 1.0, "cpu", 0))
    events = list(_events())
    for event in events[:7]:          # step 1 done (5 events), 2 evaluations into step 2
        state.apply(event)
    assert len(state.loss) == 6 and len(state.steps) == 1
    state.apply(Started(NAMES, 1, 13, 97.0, 80.0, 1.0, "cpu", resumed_from_step=1, evaluations_done=5))
    assert len(state.loss) == 4 and state.evaluations == 5 and len(state.steps) == 1
    for event in events[5:]:
        state.apply(event)
    assert list(state.eval_number.view()) == list(range(2, 14))


def _record(n_evals=13):
    blocks = np.array([0] + [2] * 4 + [1] * 4 + [0] * 4, np.int32)
    history = History(loss=np.linspace(1, 0.5, n_evals), eval_pass=np.zeros(n_evals, np.int32), eval_block=blocks,
                      heldout_top1=np.array([81.0, 82.0, 83.0]), step_loss=np.array([0.8, 0.6, 0.5]),
                      block_index=np.array([2, 1, 0], np.int32), pass_index=np.zeros(3, np.int32))
    return RunRecord("digits-vit", "builtin", "0", QuantConfig("minmax", 4, 8), {}, ScaleSet(), 0, ScaleSet(),
                     {"preset": "default", "passes": 1}, history,
                     {"fp_top1": 98.0, "base_top1": 90.0, "refined_top1": 91.0, "heldout_fp_top1": 97.0,
                      "heldout_base_top1": 80.0, "device": "cpu"})


def test_from_record_shows_a_saved_run():
    state = RunState.from_record(_record(), "run.h5")
    assert state.status == LOADED and state.n_blocks == 3
    assert len(state.loss) == 13 and state.best_loss.view()[-1] == 0.5
    top1, _ = state.latest_heldout_per_block()
    assert list(top1) == [83.0, 82.0, 81.0]
    assert state.heldout_fp_top1 == 97.0 and state.heldout_base_top1 == 80.0
    assert [s.evaluations for s in state.steps] == [5, 9, 13]


def test_finished_keeps_the_run():
    state = RunState()
    state.apply(Started(NAMES, 1, 13, 97.0, 80.0, 1.0, "cpu", 0))
    for event in _events():
        state.apply(event)
    state.apply(Finished(_record()))
    assert state.status == FINISHED and state.run is not None
    assert len(state.loss) == 13       # the file's history is complete (it counts the base evaluation)


def test_the_eta_is_the_engines_and_knows_that_steps_slow_down_towards_the_first_block():
    """Each cycle reruns the blocks from the searched one to the last: 1 s per block rerun here."""
    state = RunState()
    state.apply(Started(NAMES, 1, 13, 97.0, 80.0, 1.0, "cpu", 0), now=0.0)
    assert state.eta(now=0.0) is None
    now = 0.0
    for event in list(_events())[:5]:          # the first step, at the last block: 1 block per cycle
        if isinstance(event, Evaluated):
            now += 1.0
        state.apply(event, now=now)
    # two steps left, at blocks 1 and 0: 2 and 3 blocks per cycle, 4 cycles each
    assert np.isclose(state.eta(now=now), 4 * 2.0 + 4 * 3.0)
