"""One block step with CMA-ES (the ``cmaes`` library), the ``cmaes`` strategy.

CMA-ES samples each generation from a Gaussian whose mean, step size and covariance it adapts to
the ranking of the previous generations: on a 10-50-dimensional smooth problem it learns which
directions and couplings lower the loss, where the evolution's uniform mutation only keeps the
lucky ones. It works in normalised log coordinates, y = log(c / c_start) / r (r = the mutation
range of each coordinate), starting at the block's current coordinates with the step size of the
evolution's mutation (the standard deviation of U(-r, r)), so both strategies start from
perturbations of the same size.

``cycles`` generations of ``children`` candidates, each generation evaluated in one batched call.
The step is elitist: it writes back the lowest loss seen, the start included, so a block step
never raises the loss. The library's generator is seeded from the search's numpy Generator, so a
run is bit-reproducible and a checkpoint (the Generator's state) resumes it exactly.
"""
from __future__ import annotations

from typing import Generator

import numpy as np
from cmaes import CMA

from .steps import BlockResult, Evaluate, EvolutionParams, Step

INITIAL_SIGMA = 1.0 / np.sqrt(3.0)   # the standard deviation of U(-1, 1), in units of r


def cmaes_block(start: np.ndarray, start_loss: float, evaluate: Evaluate, params: EvolutionParams,
                rng: np.random.Generator) -> Generator[Step, None, BlockResult]:
    """Yields a Step per evaluated candidate (its ``population_losses``: the best so far and this
    generation's losses); returns the best member."""
    start = start.astype(np.float64)
    ranges = np.asarray(params.ranges, np.float64)
    optimizer = CMA(mean=np.zeros(start.size), sigma=INITIAL_SIGMA, seed=int(rng.integers(2 ** 31 - 1)),
                    population_size=params.children)
    best, best_loss = start.astype(np.float32), float(start_loss)
    for generation in range(params.cycles):
        normalised = np.stack([optimizer.ask() for _ in range(optimizer.population_size)])
        candidates = (start * np.exp(normalised * ranges)).astype(np.float32)
        losses = np.asarray(evaluate(candidates), np.float64)
        optimizer.tell(list(zip(normalised, losses)))
        for i, loss in enumerate(losses):
            if loss < best_loss:
                best, best_loss = candidates[i].copy(), float(loss)
            yield Step(generation, float(loss), np.append(best_loss, losses[:i + 1]))
    return BlockResult(best, best_loss, np.array([best_loss]))
