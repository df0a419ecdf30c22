"""The stronger search's parts: the ``points`` vector, the CMA-ES block step, ``--budget``, and the
whole search with CMA-ES (bit-reproducible, resumable mid-pass, its null on the same budget)."""
from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest

from engine.runrecord import identity_mismatch
from engine.search.cma_es import cmaes_block
from engine.search.config import PRESETS, SearchConfig
from engine.search.evaluator import CachedEvaluator
from engine.search.steps import EvolutionParams
from engine.search.identity import record_identity, search_run_identity
from engine.search.vector import searched_vector
from helpers import (TINY_SEARCH as TINY, assert_resumed_mid_pass_equals_uninterrupted, block_space_of, final, run_all,
                     scales_of, tiny_prepared)

CMAES = replace(TINY, strategy="cmaes", vector="points", scope="all", children=4, cycles=2)


def _run_block(seed: int, params: EvolutionParams, start: np.ndarray):
    """A CMA-ES block step on a quadratic bowl whose minimum is away from ``start``."""
    target = np.linspace(0.5, 2.0, start.size)
    calls: list[int] = []

    def evaluate(candidates: np.ndarray) -> np.ndarray:
        calls.append(len(candidates))
        return ((np.log(candidates / target)) ** 2).sum(axis=1)

    step = cmaes_block(start, float(evaluate(start[None])[0]), evaluate, params, np.random.default_rng(seed))
    losses = []
    while True:
        try:
            losses.append(next(step).loss)
        except StopIteration as done:
            return done.value, losses, calls[1:]


def test_points_vector_moves_one_factor_per_quantization_point():
    space = block_space_of([(3,), (), (2,)])
    scales = np.array([1.0, 2.0, 3.0, 0.5, 4.0, 8.0], np.float32)
    vector = searched_vector("points", space, scales)
    assert vector.size == 3 and np.array_equal(vector.start(), np.ones(3))
    np.testing.assert_allclose(vector.expand(np.array([[2.0, 1.0, 0.5]])), [[2, 4, 6, 0.5, 2, 4]])
    assert np.array_equal(vector.ranges(np.array([0.1, 0.1, 0.1, 0.2, 0.3, 0.3])), [0.1, 0.2, 0.3])
    both = searched_vector("points+channels", space, scales)
    assert both.size == 9 and np.array_equal(both.expand(both.start()[None])[0], scales)
    np.testing.assert_allclose(both.expand(np.concatenate([scales, [1.0, 2.0, 1.0]])[None]), [[1, 2, 3, 1, 4, 8]])
    channels = searched_vector("channels", space, scales)
    assert channels.size == 6 and np.array_equal(channels.expand(scales[None])[0], scales)
    with pytest.raises(ValueError, match="vector 'rows'"):
        searched_vector("rows", space, scales)


def test_cmaes_block_is_seeded_bit_reproducible_elitist_and_spends_its_budget():
    params = EvolutionParams(population=1, tournament=1, cycles=6, children=6, strategy="cmaes", mutation="relative",
                             ranges=np.full(5, 0.3))
    start = np.ones(5, np.float32)
    a, losses_a, calls = _run_block(0, params, start)
    b, losses_b, _ = _run_block(0, params, start)
    c, _, _ = _run_block(1, params, start)
    assert calls == [6] * 6 and len(losses_a) == 36                     # one batched call per generation
    assert losses_a == losses_b and np.array_equal(a.vector, b.vector)   # bit for bit, same seed
    assert not np.array_equal(a.vector, c.vector)
    assert a.loss == min(losses_a) and a.loss < ((np.log(1 / np.linspace(0.5, 2.0, 5))) ** 2).sum()


def test_budget_sets_the_cycles_per_block_step():
    config = replace(PRESETS["default"], budget=385, passes=2, children=4, joint_steps=0)
    assert config.cycles_for(6) == 8 and config.evaluations(6) == 385
    assert replace(config, joint_steps=300).evaluations(6) == 385        # the joint phase's cost is its own
    assert replace(config, budget=100).evaluations(6) <= 100
    assert replace(config, budget=2).cycles_for(6) == 1                  # never below one cycle
    assert replace(config, budget=None, cycles=3).evaluations(6) == 1 + 2 * 6 * 3 * 4
    with pytest.raises(ValueError, match="budget"):
        SearchConfig(budget=1)
    with pytest.raises(ValueError, match="cmaes needs at least 2"):
        SearchConfig(strategy="cmaes", children=1)


def test_files_written_before_vector_budget_and_direction_read_as_what_they_ran():
    """The channel search, no budget, the sign direction; and a sweep asking for another vector or
    the scaled direction does not take such a file for its own cell."""
    old = {k: v for k, v in PRESETS["default"].to_dict().items() if k not in ("vector", "budget", "direction")}
    then = replace(PRESETS["default"], vector="channels", budget=None, direction="sign")
    assert SearchConfig.from_dict(old) == then
    record = SimpleNamespace(spec={"model": "digits-vit", "seed": 0}, search=old, weights_sha256="0" * 64, provenance=None)
    for wanted, field in ((replace(then, vector="points"), "config.vector 'channels'"),
                          (PRESETS["default"], "config.direction 'sign'")):
        assert field in identity_mismatch(record_identity(record), search_run_identity(record.spec, wanted.to_dict(), "0" * 64))
    assert identity_mismatch(record_identity(record), search_run_identity(record.spec, then.to_dict(), "0" * 64)) is None


def test_a_cmaes_search_is_bit_reproducible_and_never_raises_the_loss():
    a, b = run_all(tiny_prepared(), CMAES), run_all(tiny_prepared(), CMAES)
    assert all(np.array_equal(x, y) for x, y in zip(scales_of(a), scales_of(b)))
    run = final(a).run
    assert run.metrics["refined_loss"] < run.metrics["base_loss"] and not run.scales.equals(run.base)
    assert run.metrics["evaluations"] == 1 + 3 * 2 * 4


def test_a_cmaes_search_resumed_mid_pass_equals_the_uninterrupted_one(tmp_path):
    assert_resumed_mid_pass_equals_uninterrupted(CMAES, tmp_path)


@pytest.mark.parametrize("preset", ["default", "random"])
def test_the_default_and_its_null_evaluate_the_same_number_of_candidates(preset, monkeypatch):
    """Counted where the work is done: every vector that reaches the evaluator. Besides the budget, each of
    the 3 block steps measures its start once, for the two-halves acceptance (its loss on the checking half)."""
    counted: list[int] = []
    batch_losses = CachedEvaluator.batch_losses
    monkeypatch.setattr(CachedEvaluator, "batch_losses",
                        lambda self, b, s, vectors: counted.append(len(vectors)) or batch_losses(self, b, s, vectors))
    config = replace(PRESETS[preset], passes=1, budget=1 + 3 * 2 * PRESETS["default"].children, joint_steps=0)
    run = final(run_all(tiny_prepared(), config)).run
    assert sum(counted) - 3 == run.metrics["evaluations"] == config.budget
    assert run.search["vector"] == PRESETS["default"].vector and run.search["budget"] == config.budget
