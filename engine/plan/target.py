"""A target held-out top-1 instead of a budget (``plan --target-top1``): the fewest mean bits that reach it.

The per-point costs do not depend on the budget, so every budget on a grid of quarter bits can be
allocated from the one sweep, and each plan's summed cost turned into a predicted top-1 (the fit of the
uniform pairs measured on held-out). Budgets are tried cheapest first (mean weight plus mean activation
bits, then fewer weight bits; a mean given on the command line stays fixed); each candidate the prediction
clears is composed and measured on held-out. One that falls short raises the bar for the next by as much as
its prediction overshot, so a prediction that runs high does not send the planner through every
neighbouring budget. The first plan measured at or above the target sets the budget.
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Callable, Generator, Sequence

from ..diagnose.events import MeasureCounter, Measured
from ..diagnose.probe import Score
from .allocate import Group, allocate, capacity

GRID_STEP = Fraction(1, 4)
MAX_CHECKS = 6     # plans measured on held-out before the planner gives up on the target


@dataclass(frozen=True, eq=False)
class Candidate:
    """A budget, its two allocations' option indices and the top-1 their summed cost predicts."""
    w_bits: Fraction
    a_bits: Fraction
    choices: tuple                  # (weights' choice, activations' choice)
    predicted_top1: float

    @property
    def mean_bits(self) -> Fraction:
        return self.w_bits + self.a_bits


def mean_grid(bits_set: Sequence[int], fixed: Fraction | None) -> list[Fraction]:
    """The means a budget may take: ``fixed`` alone, or quarter bits from the lowest width to the highest."""
    if fixed is not None:
        return [Fraction(fixed)]
    low, high = min(bits_set), max(bits_set)
    return [low + k * GRID_STEP for k in range(int((high - low) / GRID_STEP) + 1)]


def _allocated(group: Group, means: Sequence[Fraction]) -> dict[Fraction, tuple]:
    """Each mean's least-cost choice and its cost; a mean no plan fits (fixed points) is left out."""
    out = {}
    for mean in means:
        try:
            choice = allocate(group, capacity(mean, group.total_elements)).choice
        except ValueError:
            continue
        out[mean] = (choice, group.cost(choice))
    return out


def candidates(weights: Group, activations: Group, w_means: Sequence[Fraction], a_means: Sequence[Fraction],
               predict: Callable[[float], float]) -> list[Candidate]:
    """Every pair of means, cheapest first, with its predicted top-1."""
    by_w, by_a = _allocated(weights, w_means), _allocated(activations, a_means)
    pairs = [Candidate(w, a, (wc, ac), predict(w_cost + a_cost))
             for w, (wc, w_cost) in by_w.items() for a, (ac, a_cost) in by_a.items()]
    return sorted(pairs, key=lambda c: (c.mean_bits, c.w_bits))


def next_candidate(pairs: Sequence[Candidate], bar: float, tried: Sequence[Candidate]) -> Candidate | None:
    """The cheapest untried pair predicted at or above ``bar``."""
    return next((c for c in pairs if c.predicted_top1 >= bar and all(c is not t for t in tried)), None)


def raised_bar(bar: float, target: float, missed: Candidate, measured_top1: float) -> float:
    """The bar after a candidate measured below the target: the target plus the prediction's overshoot."""
    return max(bar, target + missed.predicted_top1 - measured_top1)


def budget_for_target(target: float, bits_set: Sequence[int], fixed: tuple[Fraction | None, Fraction | None],
                      groups: dict[str, Group], predict: Callable[[float], float],
                      measure: Callable[[str, dict[str, int]], Score], counter: MeasureCounter,
                      checks: list[dict[str, float]]) -> Generator[Measured, None, tuple[Fraction, Fraction]]:
    """The cheapest budget (mean W bits, mean A bits; a mean in ``fixed`` stays) whose plan measures at least
    ``target`` on held-out; each plan checked is appended to ``checks``, and counted. ValueError when none of
    MAX_CHECKS reaches it."""
    weights, activations = groups["weights"], groups["activations"]
    pairs = candidates(weights, activations, mean_grid(bits_set, fixed[0]), mean_grid(bits_set, fixed[1]), predict)
    bar, tried = target, []
    while len(tried) < MAX_CHECKS and (candidate := next_candidate(pairs, bar, tried)) is not None:
        tried.append(candidate)
        bits = {name: int(b) for g, choice in zip((weights, activations), candidate.choices)
                for name, b in zip(g.names, g.bits(choice))}
        top1 = measure("target-check", bits).top1
        checks.append({"mean_w_bits": float(candidate.w_bits), "mean_a_bits": float(candidate.a_bits),
                       "predicted_top1": candidate.predicted_top1, "heldout_top1": top1})
        yield counter.step(f"budget W{float(candidate.w_bits):g}A{float(candidate.a_bits):g}: predicted "
                           f"{candidate.predicted_top1:.2f}%, held-out {top1:.2f}%")
        if top1 >= target:
            return candidate.w_bits, candidate.a_bits
        bar = raised_bar(bar, target, candidate, top1)
    best = max(checks, key=lambda c: c["heldout_top1"], default=None)
    checked = (f"the best of {len(checks)} checked: {best['heldout_top1']:.2f}% at W{best['mean_w_bits']:g}"
               f"A{best['mean_a_bits']:g}" if best else "no budget was predicted to reach it")
    raise ValueError(f"--target-top1 {target:g}: no plan reached it on held-out ({checked}); lower the target, or "
                     "widen --bits-set")
