"""The ``guided`` search: straight-through rounding, the scales' gradient from the block-input cache,
the block step (elitist, its null random), and the whole search (bit-reproducible, resumable)."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from engine.quant.schemes import get_scheme
from engine.search.config import NULL_OF
from engine.search.evaluator import CachedEvaluator, search_fitness
from engine.search.steps import EvolutionParams
from engine.search.guided import CLIP, adapted, direction_of, guided_block, step_ladder
from engine.search.segments import model_segments
from engine.search.space import block_space
from engine.search.vector import searched_vector
from helpers import (TINY_SEARCH as TINY, assert_resumed_mid_pass_equals_uninterrupted, block_space_of, final, run_all,
                     scales_of, tiny_prepared)

GUIDED = replace(TINY, strategy="guided", scope="all", children=3, cycles=2)
TARGET = np.linspace(0.5, 2.0, 6)


def test_rounding_is_straight_through_under_autograd_with_the_same_values():
    """LSQ's gradient of a scale: round(x/s) − x/s inside the range, the clamped code outside."""
    x = torch.tensor([0.3, 1.1, -0.7, 2.6, 9.0, -9.0])
    scale = torch.full((6,), 0.5, requires_grad=True)
    uniform = get_scheme("uniform")
    out = uniform(x, scale, torch.zeros(6), -4, 3, {})
    assert torch.equal(out, uniform(x, scale.detach(), torch.zeros(6), -4, 3, {}))
    grad, = torch.autograd.grad(out.sum(), scale)
    v = x / 0.5
    np.testing.assert_allclose(grad[:3], (torch.round(v) - v)[:3], rtol=1e-6)
    assert grad[4] == 3 and grad[5] == -4
    twin = get_scheme("twin_gelu")(x, scale, torch.zeros(6), -4, 3, {"neg_step": torch.tensor(0.05)})
    assert torch.autograd.grad(twin.sum(), scale)[0].abs().sum() > 0   # peer schemes too


def test_the_cached_gradient_equals_the_full_forwards():
    """d loss / d log(scale) from block 1's cached input equals autograd through the whole model."""
    prepared = tiny_prepared()
    qmodel, calib = prepared.qmodel, prepared.calib
    segments = model_segments(qmodel.model)
    fitness = search_fitness(qmodel, segments, calib, GUIDED)
    evaluator = CachedEvaluator(qmodel, segments, calib, fitness)
    name = qmodel.blocks()[1][0]
    space = block_space(qmodel, name, "all")
    vector = space.read(qmodel)
    cached = evaluator.log_gradient(1, space, vector)

    quantizers = [qmodel.quantizers()[key] for key in space.keys]
    originals = [q.scale for q in quantizers]
    log_factors = [torch.zeros_like(s, requires_grad=True) for s in originals]
    for q, s, u in zip(quantizers, originals, log_factors):
        q.scale = s * u.exp()
    loss = sum(fitness.batch_loss(segments.forward(images), j) for j, images in enumerate(calib)) / len(calib)
    full = torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, log_factors)]).numpy()
    for q, s in zip(quantizers, originals):
        q.scale = s
    assert np.abs(full).max() > 0
    np.testing.assert_allclose(cached, full, rtol=1e-4, atol=1e-7 * np.abs(full).max())


def test_the_scaled_direction_moves_each_point_by_its_range_and_its_channels_with_the_gradient():
    gradient = np.array([0.0, 1e-3, -2e-3, 1e-2, -5.0, 0.5, -3e-4])
    groups = np.array([0, 0, 0, 0, 0, 1, 2])        # a weight point of five channels, two single scales
    scaled = direction_of(gradient, "scaled", groups)
    rms = np.sqrt(np.mean(gradient[:5] ** 2))
    np.testing.assert_allclose(scaled[:4], gradient[:4] / rms)           # in proportion below the clip
    assert scaled[4] == -CLIP
    np.testing.assert_array_equal(scaled[5:], [1.0, -1.0])              # a point of one scale: its sign
    np.testing.assert_array_equal(direction_of(gradient, "sign", groups), np.sign(gradient))
    np.testing.assert_array_equal(direction_of(np.zeros(3), "scaled", np.array([0, 0, 1])), np.zeros(3))
    with pytest.raises(ValueError, match="direction 'raw'"):
        direction_of(gradient, "raw", groups)


def _guided_step(strategy: str, seed: int = 0, cycles: int = 5, children: int = 4, flip: bool = False,
                 direction: str = "scaled"):
    """A block step on a bowl in log coordinates whose minimum is away from the start (``flip``: the
    bowl upside down, a fitness that ranks every candidate the other way)."""
    params = EvolutionParams(population=1, tournament=1, cycles=cycles, children=children, strategy=strategy,
                             mutation="relative", ranges=np.full(6, 0.2), direction=direction)
    calls = {"evaluate": [], "gradient": 0}

    def evaluate(candidates: np.ndarray) -> np.ndarray:
        calls["evaluate"].append(len(candidates))
        return (-1 if flip else 1) * (np.log(candidates / TARGET) ** 2).sum(axis=1)

    def gradient(coordinates: np.ndarray) -> np.ndarray:
        calls["gradient"] += 1
        return 2 * np.log(coordinates / TARGET)

    start = np.ones(6, np.float32)
    step = guided_block(start, float(evaluate(start[None])[0]), evaluate, gradient, params,
                        np.random.default_rng(seed))
    calls["evaluate"].clear()
    losses = []
    while True:
        try:
            losses.append(next(step).loss)
        except StopIteration as done:
            return done.value, losses, calls


@pytest.mark.parametrize("direction", ["scaled", "sign"])
def test_a_guided_step_descends_never_raises_the_loss_and_spends_its_budget(direction):
    result, losses, calls = _guided_step("guided", direction=direction)
    start_loss = float((np.log(1 / TARGET) ** 2).sum())
    assert calls["evaluate"] == [4] * 5 and calls["gradient"] == 5 and len(losses) == 20
    assert result.loss == min([start_loss] + losses) and result.loss < 0.2 * start_loss
    np.testing.assert_array_equal(step_ladder(4), [0.125, 0.25, 0.5, 1.0])
    assert adapted(1.0, 3, 4) == 2.0 and adapted(1.0, 0, 4) == 0.5 and adapted(1.0, None, 4) == 0.25


def test_the_null_moves_as_far_without_the_gradient_keeps_only_improvements_and_is_seeded():
    a, losses_a, calls = _guided_step("guided-null", seed=0)
    b, losses_b, _ = _guided_step("guided-null", seed=0)
    c, _, _ = _guided_step("guided-null", seed=1)
    assert calls["gradient"] == 0 and calls["evaluate"] == [4] * 5
    assert losses_a == losses_b and np.array_equal(a.vector, b.vector) and not np.array_equal(a.vector, c.vector)
    start_loss = float((np.log(1 / TARGET) ** 2).sum())
    assert a.loss <= start_loss and a.loss == pytest.approx(float((np.log(a.vector / TARGET) ** 2).sum()))
    for direction, equal_moves in (("scaled", False), ("sign", True)):   # one cycle: the rule's sizes
        moved, _, _ = _guided_step("guided-random", seed=0, cycles=1, direction=direction)
        moves = np.abs(np.log(moved.vector))
        assert np.allclose(moves, moves[0], rtol=1e-4) == equal_moves and moves.max() <= CLIP * 0.2 * 1.0001
    assert NULL_OF["guided"] == "guided-null"
    flipped, _, _ = _guided_step("guided-null", seed=0, flip=True)   # the same draws, another acceptance
    assert not np.array_equal(flipped.vector, a.vector)


def test_the_random_walk_keeps_every_move_whatever_the_fitness():
    walk, _, calls = _guided_step("guided-random", seed=0)
    assert calls["gradient"] == 0 and np.all(np.abs(np.log(walk.vector)) > 0)   # every coordinate moved
    flipped, _, _ = _guided_step("guided-random", seed=0, flip=True)   # the fitness decides nothing
    np.testing.assert_array_equal(flipped.vector, walk.vector)


def test_a_points_vector_sums_its_elements_gradient():
    space_scales = np.array([1.0, 2.0, 3.0, 4.0], np.float32)
    vector = searched_vector("points", block_space_of([(3,), ()]), space_scales)
    np.testing.assert_allclose(vector.log_gradient(np.array([1.0, 2.0, 3.0, -1.0])), [6.0, -1.0])
    both = searched_vector("points+channels", block_space_of([(3,), ()]), space_scales)
    np.testing.assert_allclose(both.log_gradient(np.array([1.0, 2.0, 3.0, -1.0])), [1, 2, 3, -1, 6, -1])


def test_a_guided_search_is_bit_reproducible_and_lowers_the_loss():
    a, b = run_all(tiny_prepared(), GUIDED), run_all(tiny_prepared(), GUIDED)
    assert all(np.array_equal(x, y) for x, y in zip(scales_of(a), scales_of(b)))
    sign = run_all(tiny_prepared(), replace(GUIDED, direction="sign"))     # --direction reaches the step
    assert not all(np.array_equal(x, y) for x, y in zip(scales_of(a), scales_of(sign)))
    run = final(a).run
    assert run.metrics["refined_loss"] < run.metrics["base_loss"] and not run.scales.equals(run.base)
    assert run.metrics["evaluations"] == 1 + 3 * 2 * 3


def test_a_guided_search_resumed_mid_pass_equals_the_uninterrupted_one(tmp_path):
    assert_resumed_mid_pass_equals_uninterrupted(GUIDED, tmp_path)


def test_a_vector_numbers_its_points_for_the_scaled_direction():
    scales = np.array([1.0, 2.0, 3.0, 4.0], np.float32)
    space = block_space_of([(3,), ()])
    assert searched_vector("channels", space, scales).groups().tolist() == [0, 0, 0, 1]
    assert searched_vector("points", space, scales).groups().tolist() == [0, 1]
    assert searched_vector("points+channels", space, scales).groups().tolist() == [0, 0, 0, 1, 2, 3]
