"""One block step of the ``guided`` search: the gradient proposes, the exact fitness disposes.

Each cycle takes the straight-through gradient of the fitness with respect to the log of every
searched coordinate (``CachedEvaluator.log_gradient``, LSQ's gradient of a scale), turns it into a
direction, and evaluates ``children`` candidates along it, at step sizes r·step·2^-k (k =
children-1 .. 0; r = the coordinate's mutation range, the evolution's step size), in one batched
call of the exact fitness. The best candidate is kept only if it lowers the loss, so the
straight-through estimate never decides alone and a block step never raises the loss. ``step``
doubles when the largest move wins, halves when the smallest does, and quarters when none does.

The direction (``--direction``):

* ``scaled`` (the default): within each quantization point, the gradient over the point's root
  mean square, clipped to ±``CLIP``. Every point moves by about its range, as with the sign, but
  its channels move in proportion to their gradient, none by more than twice the range; a point
  with one scale (an activation's clip range) moves by its range, as with the sign.
* ``sign``: every coordinate moves by its full range, so channels whose gradient is noise move as
  far as the ones that matter.

The raw gradient is neither: scaled by its largest entry, a few coordinates take the whole step.

``guided-null`` is its null baseline: everything but the gradient. A standard normal vector goes
through the same rule, so every move has the size distribution of the guided moves, and the same
acceptance (kept only if it lowers the loss), step adaptation and budget apply. ``guided-random``
is the random walk along the same moves (one candidate written back at random, the step never
adapted): it loses by construction, so it is not a null.
"""
from __future__ import annotations

from typing import Callable, Generator

import numpy as np

from .config import DIRECTIONS
from .steps import BlockResult, Evaluate, EvolutionParams, Step

Gradient = Callable[[np.ndarray], np.ndarray]   # coordinates (size,) -> d loss / d log(coordinate)

GROW, SHRINK, FAIL = 2.0, 0.5, 0.25
CLIP = 2.0   # the ``scaled`` direction's largest move, in mutation ranges


def direction_of(gradient: np.ndarray, rule: str, groups: np.ndarray) -> np.ndarray:
    """Each coordinate's move along ``gradient``, in units of its mutation range (the step goes
    against it); ``groups``: the quantization point of every coordinate (0..n-1)."""
    if rule == "sign":
        return np.sign(gradient)
    if rule == "scaled":
        rms = np.sqrt(np.bincount(groups, weights=np.square(gradient)) / np.bincount(groups))[groups]
        return np.clip(np.divide(gradient, rms, out=np.zeros_like(gradient, np.float64), where=rms > 0), -CLIP, CLIP)
    raise ValueError(f"direction {rule!r}: choose one of {', '.join(DIRECTIONS)}")


def step_ladder(children: int) -> np.ndarray:
    """Relative move of each candidate: 2^-(children-1), ..., 1/2, 1."""
    return 2.0 ** -np.arange(children - 1, -1, -1, dtype=np.float64)


def adapted(step: float, winner: int | None, children: int) -> float:
    """The next cycle's step after ``winner`` (index into the ladder, None: no candidate won)."""
    if winner is None:
        return step * FAIL
    if winner == children - 1:
        return step * GROW
    return step * SHRINK if winner == 0 else step


def guided_block(start: np.ndarray, start_loss: float, evaluate: Evaluate, gradient: Gradient,
                 params: EvolutionParams, rng: np.random.Generator, groups: np.ndarray | None = None,
                 check: Evaluate | None = None) -> Generator[Step, None, BlockResult]:
    """Yields a Step per evaluated candidate (its ``population_losses``: the current loss and this
    cycle's losses so far); returns the block's new coordinates. ``groups``: the quantization
    point of every coordinate (None: one point).

    ``check`` (the two-halves acceptance): ``evaluate`` then gives ``(K, 2)``, each candidate's loss
    and its loss on the checking half of the calibration images, and ``check(start[None])`` the
    start's; the best candidate by loss is kept only if it lowers both, so a move whose gain on
    the calibration images does not carry over to the half it was not chosen on is refused."""
    random_direction = params.strategy in ("guided-null", "guided-random")
    walk = params.strategy == "guided-random"
    ladder = step_ladder(params.children)
    current, loss, step = start.astype(np.float64), float(start_loss), 1.0
    checked = -np.inf if check is None else float(np.asarray(check(start[None]))[0, 1])
    groups = np.zeros(current.size, np.int64) if groups is None else groups
    for cycle in range(params.cycles):
        signal = rng.standard_normal(current.size) if random_direction else gradient(current.astype(np.float32))
        direction = direction_of(signal, params.direction, groups)
        moves = np.outer(ladder * step, direction * params.ranges)
        candidates = (current * np.exp(-moves)).astype(np.float32)
        measured = np.asarray(evaluate(candidates), np.float64)
        losses, halves = (measured, np.full(len(measured), -np.inf)) if check is None else measured.T
        for i, candidate_loss in enumerate(losses):
            yield Step(cycle, float(candidate_loss), np.append(loss, losses[:i + 1]))
        if walk:
            chosen = int(rng.integers(len(losses)))
            current, loss = candidates[chosen].astype(np.float64), float(losses[chosen])
            continue
        best = int(np.argmin(losses))
        winner = best if losses[best] < loss and halves[best] <= checked else None
        if winner is not None:
            current, loss, checked = candidates[winner].astype(np.float64), float(losses[winner]), float(halves[winner])
        step = adapted(step, winner, params.children)
    return BlockResult(current.astype(np.float32), loss, np.array([loss]))
