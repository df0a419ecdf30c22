"""The parts of the guided default around its block steps: the joint phase (every block's scales moved
together by Adam on the straight-through gradient, early-stopped on half of the calibration images), the
two-halves acceptance of a block step's moves, and the gradient on a subset of the images."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from engine.quant import schemes
from engine.errors import CheckpointError
from engine.search import run as search_run
from engine.search.checkpoint import load_checkpoint
from engine.search.config import SearchConfig
from engine.search.evaluator import CachedEvaluator, search_fitness
from engine.search.guided import guided_block
from engine.search.steps import EvolutionParams
from engine.search.events import Stage, Started
from engine.search.joint import CHECK_EVERY, CHECK_EVERY_WHOLE_BATCHES, PATIENCE, joint_phase, split_batches, stepping_parts
from engine.search.segments import model_segments
from engine.search.space import block_space, planned_ranges
from helpers import (TINY_SEARCH as TINY, assert_resumed_mid_pass_equals_uninterrupted, final, run_all, scales_of,
                     tiny_prepared)

JOINT = replace(TINY, joint_steps=80)   # quarter-batch steps (joint_images 25 of 32), a check every 20


def test_the_calibration_batches_split_into_a_stepping_and_a_checking_half():
    batches = [torch.full((4, 1), float(i)) for i in range(5)]
    stepping, checking = split_batches(batches, [b + 10 for b in batches])
    assert [float(x[0]) for x, _ in stepping] == [0, 2, 4] and [float(x[0]) for x, _ in checking] == [1, 3]
    assert all(torch.equal(x + 10, y) for x, y in stepping + checking)       # each batch keeps its own targets
    (step_x, step_y), = split_batches([torch.arange(5.0)], [torch.arange(5.0)])[0]
    (check_x, _), = split_batches([torch.arange(5.0)], [torch.arange(5.0)])[1]
    assert step_x.tolist() == [0, 1] and step_y.tolist() == [0, 1] and check_x.tolist() == [2, 3, 4]
    one = split_batches([torch.ones(1, 3)], [torch.ones(1, 3)])
    assert one[0][0][0].shape == one[1][0][0].shape == (1, 3)                # one image: in both halves


def test_each_stepping_batch_steps_in_interleaved_parts_of_at_most_the_step_images():
    batches = [(torch.arange(100.0) + 1000 * b, torch.arange(100.0) + 1000 * b) for b in range(2)]
    parts = stepping_parts(batches, 25)
    assert len(parts) == 8 and all(len(x) == 25 and torch.equal(x, y) for x, y in parts)
    assert parts[1][0][:3].tolist() == [1, 5, 9] and parts[4][0][0] == 1000    # every 4th image, batch by batch
    assert sorted(torch.cat([x for x, _ in parts[:4]]).tolist()) == batches[0][0].tolist()
    assert [len(x) for x, _ in stepping_parts([batches[0]], 30)] == [25] * 4     # ceil(100 / 30) parts
    assert stepping_parts(batches, 0) == batches and len(stepping_parts([(torch.ones(3), torch.ones(3))], 25)) == 1


def _phase(prepared, max_steps: int, random_direction=None, step_images: int = 25):
    qmodel = prepared.qmodel
    segments = model_segments(qmodel.model)
    spaces = [block_space(qmodel, name, "all") for name, _ in qmodel.blocks()]
    fitness = search_fitness(qmodel, segments, prepared.calib, TINY)
    ranges = [planned_ranges(space, qmodel.config, TINY.resolved_ranges) for space in spaces]
    phase = joint_phase(segments, spaces, [space.read(qmodel) for space in spaces], ranges, prepared.calib, fitness,
                        max_steps, step_images, random_direction)
    checks = []
    while True:
        try:
            checks.append(next(phase))
        except StopIteration as done:
            return checks, done.value


@pytest.mark.parametrize("step_images, every", [(25, CHECK_EVERY), (0, CHECK_EVERY_WHOLE_BATCHES)])
def test_the_joint_phase_lowers_the_checking_halfs_loss_and_keeps_its_best_point(step_images, every):
    checks, result = _phase(tiny_prepared(), 6 * every, step_images=step_images)
    assert [check.step for check in checks] == list(range(every, result.steps + 1, every))
    assert result.moves is not None and result.best_check_loss == min(check.check_loss for check in checks)
    assert result.best_check_loss < result.start_check_loss


def test_the_null_joint_phase_stops_after_its_patience_without_a_better_point():
    still = lambda n: np.zeros(n)   # noqa: E731 - a "gradient" that never moves Adam: no point beats the start
    checks, result = _phase(tiny_prepared(), 500, random_direction=still)
    assert result.moves is None and result.steps == CHECK_EVERY * PATIENCE and len(checks) == PATIENCE


def test_a_search_with_a_joint_phase_never_raises_the_loss_and_starts_the_block_steps_from_it():
    events = run_all(tiny_prepared(), JOINT)
    run = final(events).run
    stages = [e.message for e in events if isinstance(e, Stage) and e.message.startswith("joint phase")]
    assert stages[-1].startswith("joint phase kept") and any("step 20 of at most 80" in s for s in stages)
    started = next(e for e in events if isinstance(e, Started))   # the phase's measurements are not candidates
    assert started.evaluations_done == 1 and started.total_evaluations == JOINT.evaluations(3) == run.metrics["evaluations"]
    assert run.metrics["refined_loss"] < run.metrics["base_loss"]
    assert run.history.loss[0] <= run.metrics["base_loss"]    # the first block step starts from the joint result


def test_a_search_with_a_joint_phase_is_bit_reproducible():
    a, b = run_all(tiny_prepared(), JOINT), run_all(tiny_prepared(), JOINT)
    assert all(np.array_equal(x, y) for x, y in zip(scales_of(a), scales_of(b)))


def test_a_resumed_run_does_not_redo_its_joint_phase(tmp_path):
    assert_resumed_mid_pass_equals_uninterrupted(replace(JOINT, strategy="guided"), tmp_path)


def _stopped_in_the_joint_phase(config: SearchConfig, checkpoint, at_step: int) -> None:
    events = search_run.search_prepared(tiny_prepared(), config, checkpoint=checkpoint)
    for event in events:
        if isinstance(event, Stage) and event.message.startswith(f"joint phase: step {at_step} "):
            events.close()


@pytest.mark.parametrize("strategy", ["guided", "guided-null"])
def test_a_run_stopped_in_its_joint_phase_goes_on_from_its_last_check_bit_for_bit(tmp_path, strategy):
    """Adam's point and moments, the averaged and the best point, and (for the null) the random
    generator are checkpointed at each check: the resumed run is the uninterrupted one."""
    config = replace(JOINT, strategy=strategy)
    uninterrupted = run_all(tiny_prepared(), config)
    checkpoint = tmp_path / "run.ckpt"
    _stopped_in_the_joint_phase(config, checkpoint, 40)
    saved = load_checkpoint(checkpoint).state
    assert saved.joint.step == 40 and not saved.joint_done and saved.step == 0 and saved.evaluations == 1
    resumed = run_all(tiny_prepared(), config, checkpoint=checkpoint, resume=checkpoint)
    stages = [e.message for e in resumed if isinstance(e, Stage) and e.message.startswith("joint phase")]
    assert stages[0].startswith("joint phase: step 60 ") and stages[-1] == next(
        e.message for e in reversed(uninterrupted) if isinstance(e, Stage) and e.message.startswith("joint phase"))
    assert all(np.array_equal(x, y) for x, y in zip(scales_of(resumed), scales_of(uninterrupted)))
    np.testing.assert_array_equal(final(resumed).run.history.loss, final(uninterrupted).run.history.loss)


def test_a_checkpoint_taken_as_the_joint_phase_ends_resumes_at_the_first_block_step(tmp_path):
    checkpoint = tmp_path / "run.ckpt"
    events = search_run.search_prepared(tiny_prepared(), JOINT, checkpoint=checkpoint)
    for event in events:
        if isinstance(event, Stage) and event.message.startswith("joint phase kept"):
            events.close()
    saved = load_checkpoint(checkpoint).state
    assert saved.joint_done and saved.joint is None and saved.current_loss < saved.base_loss
    resumed = run_all(tiny_prepared(), JOINT, checkpoint=checkpoint, resume=checkpoint)
    assert not any(isinstance(e, Stage) and e.message.startswith("joint phase") for e in resumed)
    assert all(np.array_equal(x, y) for x, y in zip(scales_of(resumed), scales_of(run_all(tiny_prepared(), JOINT))))


@pytest.mark.parametrize("damage, words", [
    (lambda meta, arrays: arrays.update(joint_coords=arrays["joint_coords"][:-1]), "joint_coords"),
    (lambda meta, arrays: arrays.update(joint_exp_avg_sq=np.full_like(arrays["joint_exp_avg_sq"], np.nan)), "NaN"),
    (lambda meta, arrays: arrays.pop("joint_best"), "missing joint_best"),
    (lambda meta, arrays: meta.update(joint_done=True), "after the phase ended"),
    (lambda meta, arrays: meta["joint"].update(step=0), "step"),
    (lambda meta, arrays: meta.pop("joint_done"), "joint_done"),
])
def test_a_damaged_joint_phase_in_a_checkpoint_is_one_error_naming_it(tmp_path, damage, words):
    checkpoint = tmp_path / "run.ckpt"
    _stopped_in_the_joint_phase(JOINT, checkpoint, 40)
    assert load_checkpoint(checkpoint).state.joint.best is not None   # the tiny phase beats its start by then
    with np.load(checkpoint) as data:
        arrays = {key: data[key] for key in data.files}
    meta = json.loads(str(arrays["meta"]))
    damage(meta, arrays)
    arrays["meta"] = np.array(json.dumps(meta))
    with open(checkpoint, "wb") as f:
        np.savez(f, **arrays)
    with pytest.raises(CheckpointError, match=words):
        load_checkpoint(checkpoint)


def test_the_null_runs_the_same_phase_along_random_directions():
    events = run_all(tiny_prepared(), replace(JOINT, strategy="guided-null"))
    run = final(events).run
    assert run.metrics["refined_loss"] <= run.metrics["base_loss"]
    assert any(isinstance(e, Stage) and e.message.startswith("joint phase") for e in events)


def test_no_joint_phase_for_the_strategies_that_do_not_use_it():
    assert not SearchConfig(strategy="evolution", joint_steps=300).joint and SearchConfig(joint_steps=300).joint
    assert "joint_steps" not in SearchConfig(strategy="evolution").identity()
    assert "gradient_images" not in SearchConfig(strategy="guided-null").identity()
    assert "joint_images" not in SearchConfig(joint_steps=0).identity() and "joint_images" in SearchConfig().identity()
    for name in ("joint_steps", "joint_images"):
        with pytest.raises(ValueError, match=name):
            SearchConfig(**{name: -1})


def test_the_gradient_on_the_first_images_is_the_gradient_of_those_images():
    prepared = tiny_prepared()
    qmodel, calib = prepared.qmodel, prepared.calib
    segments = model_segments(qmodel.model)
    space = block_space(qmodel, qmodel.blocks()[1][0], "all")
    vector = space.read(qmodel)
    whole = CachedEvaluator(qmodel, segments, calib, search_fitness(qmodel, segments, calib, TINY))
    first = CachedEvaluator(qmodel, segments, calib[:1], search_fitness(qmodel, segments, calib[:1], TINY))
    subset = whole.log_gradient(1, space, vector, images=len(calib[0]))
    np.testing.assert_allclose(subset * len(calib), first.log_gradient(1, space, vector), rtol=1e-5, atol=1e-9)
    half = whole.log_gradient(1, space, vector, images=len(calib[0]) // 2)
    assert np.isfinite(half).all() and not np.allclose(half, subset)
    np.testing.assert_array_equal(whole.log_gradient(1, space, vector, images=10**6), whole.log_gradient(1, space, vector))


def test_the_uniform_schemes_written_out_gradient_equals_autograds_of_the_textbook_formula():
    torch.manual_seed(0)
    x = torch.randn(8, 5, 12, requires_grad=True)
    scale = (torch.rand(1, 1, 12) * 0.3 + 0.05).requires_grad_(True)
    zero_point = torch.full((1, 1, 12), 3.0)
    grad = torch.randn(8, 5, 12)

    def textbook(x, scale):
        code = schemes.rounded(torch.div(x, scale)) + zero_point
        return (code.clamp(-4, 3) - zero_point) * scale

    expected = torch.autograd.grad(textbook(x, scale), (x, scale), grad)
    out = schemes.get_scheme("uniform")(x, scale.expand_as(x), zero_point, -4, 3, {})
    assert torch.equal(out, textbook(x, scale).detach())
    for mine, theirs in zip(torch.autograd.grad(out, (x, scale), grad), expected):
        torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-5)


def _block_step(evaluate, check=None):
    params = EvolutionParams(population=1, tournament=1, cycles=3, children=2, strategy="guided",
                             mutation="relative", ranges=np.full(2, 0.1))
    step = guided_block(np.ones(2, np.float32), 1.0, evaluate, lambda x: np.ones(2), params,
                        np.random.default_rng(0), check=check)
    while True:
        try:
            next(step)
        except StopIteration as done:
            return done.value


def test_the_two_halves_acceptance_refuses_a_move_the_checking_half_does_not_confirm():
    """Every move lowers the loss; with the checking half's loss rising along it, none is kept."""
    def halves(candidates, rising=True):
        shrink = 1.0 - candidates.mean(axis=1)            # > 0 for every move along the gradient
        return np.stack([1.0 - shrink, 1.0 + shrink if rising else 1.0 - 2 * shrink], axis=1)

    assert _block_step(lambda c: halves(c)[:, 0]).loss < 1.0                                  # the loss alone: kept
    refused = _block_step(halves, check=halves)
    assert refused.loss == 1.0 and np.array_equal(refused.vector, np.ones(2, np.float32))
    confirmed = _block_step(lambda c: halves(c, rising=False), check=lambda c: halves(c, rising=False))
    assert confirmed.loss < 1.0
