"""A target held-out top-1 instead of a budget (``plan --target-top1``): the fewest mean bits that reach it.

The per-point costs do not depend on the budget, so every budget on a grid of quarter bits can be
allocated from the one sweep, and each plan's summed cost turned into a predicted top-1 (the fit of the
uniform pairs measured on held-out). For each total of mean weight plus mean activation bits the pair
predicted best stands for it (a mean given on the command line stays fixed). The first plan measured on
held-out is the cheapest predicted to reach the target. The prediction runs high at low widths (the points'
errors are not independent there), so when that plan falls short the most bits are measured next, and
then the budgets between the two are bisected: the measured top-1 rises with the bits along this line, and
a handful of measurements find the cheapest that reaches the target.
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Callable, Generator, Iterator, Sequence

from ..diagnose.events import MeasureCounter, Measured
from ..diagnose.probe import Score
from .allocate import Group, allocate, capacity

GRID_STEP = Fraction(1, 4)
MAX_CHECKS = 8     # plans measured on held-out, the two ends of the bisection included (a line of 64)


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


def cheapest_line(pairs: Sequence[Candidate]) -> list[Candidate]:
    """For each total of mean bits, the pair predicted best (fewer weight bits on a tie), in rising bits."""
    best: dict[Fraction, Candidate] = {}
    for c in pairs:
        if c.mean_bits not in best or c.predicted_top1 > best[c.mean_bits].predicted_top1:
            best[c.mean_bits] = c
    return [best[total] for total in sorted(best)]


def budget_for_target(target: float, bits_set: Sequence[int], fixed: tuple[Fraction | None, Fraction | None],
                      groups: dict[str, Group], predict: Callable[[float], float],
                      measure: Callable[[str, dict[str, int]], Score], counter: MeasureCounter,
                      checks: list[dict[str, float]]) -> Generator[Measured, None, tuple[Fraction, Fraction]]:
    """The cheapest budget (mean W bits, mean A bits; a mean in ``fixed`` stays) whose plan measures at least
    ``target`` on held-out; each plan checked is appended to ``checks``, and counted. A budget cheaper than
    the first one predicted to reach the target is not measured. ValueError when the most bits fall short too."""
    weights, activations = groups["weights"], groups["activations"]
    line = cheapest_line(candidates(weights, activations, mean_grid(bits_set, fixed[0]), mean_grid(bits_set, fixed[1]),
                                    predict))
    reached: dict[int, bool] = {}

    def check(index: int) -> Iterator[Measured]:
        candidate = line[index]
        bits = {name: int(b) for g, choice in zip((weights, activations), candidate.choices)
                for name, b in zip(g.names, g.bits(choice))}
        top1 = measure("target-check", bits).top1
        reached[index] = top1 >= target
        checks.append({"mean_w_bits": float(candidate.w_bits), "mean_a_bits": float(candidate.a_bits),
                       "predicted_top1": candidate.predicted_top1, "heldout_top1": top1})
        yield counter.step(f"budget W{float(candidate.w_bits):g}A{float(candidate.a_bits):g}: predicted "
                           f"{candidate.predicted_top1:.2f}%, held-out {top1:.2f}%")

    first = next((i for i, c in enumerate(line) if c.predicted_top1 >= target), len(line) - 1)
    yield from check(first)
    if not reached[first] and first != len(line) - 1:
        yield from check(len(line) - 1)
    low, high = first, len(line) - 1            # low: the last known short of it; high: the first known to reach it
    while reached.get(high) and not reached[low] and high - low > 1 and len(checks) < MAX_CHECKS:
        middle = (low + high) // 2
        yield from check(middle)
        low, high = (low, middle) if reached[middle] else (middle, high)
    passed = [i for i, ok in reached.items() if ok]
    if passed:
        return line[min(passed)].w_bits, line[min(passed)].a_bits
    best = max(checks, key=lambda c: c["heldout_top1"])
    raise ValueError(f"--target-top1 {target:g}: no plan reached it on held-out (the best of {len(checks)} checked: "
                     f"{best['heldout_top1']:.2f}% at W{best['mean_w_bits']:g}A{best['mean_a_bits']:g}); lower "
                     "the target, or widen --bits-set")
