"""The whole search on a tiny synthetic setup (events, loss, resume, determinism, test-split hygiene,
the random null's budget), and the search command on the demo."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from engine.cli import main
from engine.scalefile import load_run
from engine.search.checkpoint import load_checkpoint
from engine.search.config import SearchConfig
from engine.data import first_images
from engine.search.evaluator import Fitness, NaiveEvaluator, reference_outputs
from engine.search.events import BlockDone, Evaluated, Finished, PassDone, Stage, Started
from engine.search.losses import get_loss
from engine.search.run import search_prepared
from engine.search.segments import model_segments
from engine.search.space import block_space
from helpers import TINY_SEARCH as TINY, final, run_all, scales_of, tiny_prepared

def test_tiny_search_events_and_calibration_loss():
    events = run_all(tiny_prepared(), TINY)
    kinds = [type(e) for e in events]
    assert kinds[0] is Stage and Started in kinds
    started = next(e for e in events if isinstance(e, Started))
    evaluated = [e for e in events if isinstance(e, Evaluated)]
    done = [e for e in events if isinstance(e, BlockDone)]
    assert len(evaluated) == 3 * 2 * 3 and started.total_evaluations == 1 + len(evaluated)
    assert [e.block_index for e in done] == [2, 1, 0] and kinds.count(PassDone) == 1
    assert [e.evaluation for e in evaluated] == list(range(2, 2 + len(evaluated)))
    run = final(events).run
    m = run.metrics
    assert m["refined_loss"] <= m["base_loss"]                      # the best member is kept: never worse
    assert [e.best_loss for e in done] == sorted((e.best_loss for e in done), reverse=True)
    assert m["evaluations"] == started.total_evaluations
    assert m["fp_top1"] == 100.0 and m["n_test"] == 64
    assert len(run.history.loss) == m["evaluations"] and len(run.history.heldout_top1) == 3
    assert not run.scales.equals(run.base)
    assert all(isinstance(e.population_losses, np.ndarray) for e in evaluated)


def test_search_images_limit_the_fitness_to_the_first_calibration_images():
    def base_loss(config: SearchConfig) -> float:
        return next(e for e in search_prepared(tiny_prepared(), config) if isinstance(e, Started)).base_loss

    prepared = tiny_prepared()
    segments, space = model_segments(prepared.qmodel.model), block_space(prepared.qmodel, "blocks.2", TINY.scope)
    images = first_images(prepared.calib, 40)                       # one whole batch of 32, then 8 images
    fitness = Fitness(get_loss(TINY.loss), TINY.temperature, False,
                      reference_outputs(prepared.qmodel, segments, images, False))
    expected = NaiveEvaluator(prepared.qmodel, segments, images, fitness).evaluate(space, space.read(prepared.qmodel)[None])[0]
    assert base_loss(replace(TINY, search_images=40)) == pytest.approx(expected, rel=1e-5)
    assert base_loss(replace(TINY, search_images=None)) != pytest.approx(expected, rel=1e-3)


def test_same_seed_same_scales_and_another_seed_differs():
    """The seed drives the evolution's random numbers. The default (guided) draws none: on the same
    calibration images every seed gives its scales, and seeds differ by their calibration draw."""
    evolution = replace(TINY, strategy="evolution")
    a = scales_of(run_all(tiny_prepared(0), evolution))
    b = scales_of(run_all(tiny_prepared(0), evolution))
    c = scales_of(run_all(tiny_prepared(1), evolution))
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))
    guided = [scales_of(run_all(tiny_prepared(seed), TINY)) for seed in (0, 1)]
    assert all(np.array_equal(x, y) for x, y in zip(*guided))


def test_resume_equals_uninterrupted(tmp_path):
    config = replace(TINY, passes=2, select="best-loss")
    uninterrupted = run_all(tiny_prepared(), config)
    checkpoint = tmp_path / "run.ckpt"
    events = search_prepared(tiny_prepared(), config, checkpoint=checkpoint)
    for event in events:                         # stop in the middle of the 4th block step
        if isinstance(event, Evaluated) and event.evaluation > 3 * 6 + 2:
            events.close()
    state = load_checkpoint(checkpoint).state
    assert state.step == 3
    resumed = run_all(tiny_prepared(), config, checkpoint=checkpoint, resume=checkpoint)
    assert next(e for e in resumed if isinstance(e, Started)).resumed_from_step == 3
    assert all(np.array_equal(x, y) for x, y in zip(scales_of(resumed), scales_of(uninterrupted)))
    a, b = final(resumed).run, final(uninterrupted).run
    np.testing.assert_array_equal(a.history.loss, b.history.loss)
    np.testing.assert_array_equal(a.history.heldout_top1, b.history.heldout_top1)
    assert a.metrics["refined_top1"] == b.metrics["refined_top1"]


def test_resume_refuses_another_run(tmp_path):
    checkpoint = tmp_path / "run.ckpt"
    run_all(tiny_prepared(), TINY, checkpoint=checkpoint)
    with pytest.raises(ValueError, match="config.cycles"):
        run_all(tiny_prepared(), replace(TINY, cycles=3), resume=checkpoint)
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read"):
        run_all(tiny_prepared(), TINY, resume=tmp_path / "junk.ckpt")


def test_test_split_is_read_only_at_the_end():
    prepared = tiny_prepared(spy=True)
    spy = prepared.splits.test
    for event in search_prepared(prepared, replace(TINY, select="best-heldout")):
        if not isinstance(event, Finished):
            assert spy.reads == 0, f"test split read before the end (at {type(event).__name__})"
    assert spy.items_read == len(spy.inner)   # once for FP, base and refined together


def test_heldout_is_decoded_once_per_run_and_gives_the_same_history():
    spied, plain = tiny_prepared(spy=True), tiny_prepared()
    events = run_all(spied, TINY)
    assert spied.splits.heldout.items_read == len(spied.splits.heldout.inner)   # not once per block step
    spied_run, plain_run = final(events).run, final(run_all(plain, TINY)).run
    assert np.array_equal(spied_run.history.heldout_top1, plain_run.history.heldout_top1)
    assert spied_run.metrics["refined_top1"] == plain_run.metrics["refined_top1"]


@pytest.mark.parametrize("select", ["last", "best-loss", "best-heldout"])
def test_random_null_spends_the_same_budget_under_the_same_rule(select):
    search = replace(TINY, select=select)
    null = replace(search, strategy="random")
    a, b = final(run_all(tiny_prepared(), search)).run, final(run_all(tiny_prepared(), null)).run
    assert a.metrics["evaluations"] == b.metrics["evaluations"]
    assert b.search["select"] == select
    if select == "best-heldout":
        # best-heldout counts the base as step 0, so it can never be below the base on held-out.
        assert b.metrics["heldout_refined_top1"] >= b.metrics["heldout_base_top1"]


@pytest.mark.slow
def test_search_command_writes_a_run_file_that_eval_reads(tmp_path, capsys):
    out = tmp_path / "run.h5"
    assert main(["search", "--quantizer", "minmax", "--bits", "W4A4", "--calib-size", "100", "--passes", "1",
                 "--cycles", "1", "--joint-steps", "0", "--children", "2", "--device", "cpu", "--out", str(out), "--json", "--quiet"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(result) == {"quality", "fp_top1", "base_top1", "refined_top1", "heldout_base_top1",
                           "heldout_refined_top1", "n_test", "heldout_source", "evaluations", "seconds", "out"}
    assert result["evaluations"] == 1 + 6 * 2 and result["n_test"] == 4500 and result["heldout_source"] == "builtin"
    record = load_run(out)
    assert record.base is not None and record.search["preset"] == "guided"
    assert len(record.history.loss) == result["evaluations"] and len(record.history.heldout_top1) == 6
    assert record.metrics["refined_top1"] == result["refined_top1"]
    assert main(["eval", "--scales", str(out), "--split", "heldout", "--calib-size", "100", "--device", "cpu",
                 "--json", "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["quant_top1"] == result["heldout_refined_top1"]
