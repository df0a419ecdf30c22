"""One block step of the evolutionary search, independent of models and tensors.

The release's loop (DESIGN §4) with ``children`` > 1 allowed per cycle so that a cycle's children
can be evaluated in one batched call: each child gets its own tournament, all are evaluated
together, then inserted one by one (each insertion drops the worst member, which keeps exactly
the ``population`` best of old members and children). With ``children = 1`` it is the release.

``strategy = "random"`` is the null baseline: parents, dropped members and the written-back
member are drawn uniformly, so losses are computed (and logged) but never steer anything.
"""
from __future__ import annotations

from typing import Generator

import numpy as np

from .space import mutate
from .steps import BlockResult, Evaluate, EvolutionParams, Step


def choose_parent(losses: np.ndarray, params: EvolutionParams, rng: np.random.Generator) -> int:
    """Tournament: the lowest loss among ``tournament`` members drawn with replacement
    (ties go to the first drawn)."""
    if params.strategy == "random":
        return int(rng.integers(len(losses)))
    drawn = rng.integers(len(losses), size=params.tournament)
    return int(drawn[np.argmin(losses[drawn])])


def insert(population: np.ndarray, losses: np.ndarray, child: np.ndarray, loss: float,
           params: EvolutionParams, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Add ``child`` and drop one member: the worst (ties: the oldest), or a random one."""
    population = np.concatenate([population, child[None]])
    losses = np.append(losses, loss)
    drop = int(rng.integers(len(losses))) if params.strategy == "random" else int(np.argmax(losses))
    keep = np.arange(len(losses)) != drop
    return population[keep], losses[keep]


def evolve_block(start: np.ndarray, start_loss: float, evaluate: Evaluate, params: EvolutionParams,
                 rng: np.random.Generator) -> Generator[Step, None, BlockResult]:
    """Yields a Step per evaluated child; returns the member to write back (the best, or a random
    one for the null baseline). The start vector is in the population, so the best never loses."""
    population = np.repeat(start[None].astype(np.float32), params.population, axis=0)
    losses = np.full(params.population, float(start_loss))
    for cycle in range(params.cycles):
        parents = [choose_parent(losses, params, rng) for _ in range(params.children)]
        children = np.stack([mutate(population[p], params.ranges, params.mutation, rng) for p in parents])
        child_losses = evaluate(children)
        for child, loss in zip(children, child_losses):
            population, losses = insert(population, losses, child, float(loss), params, rng)
            yield Step(cycle, float(loss), losses.copy())
    chosen = int(rng.integers(len(losses))) if params.strategy == "random" else int(np.argmin(losses))
    return BlockResult(population[chosen].copy(), float(losses[chosen]), losses.copy())
