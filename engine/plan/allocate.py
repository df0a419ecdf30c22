"""Widths under an element-weighted budget: a multiple-choice knapsack over measured costs.

Each point of a group (the weights, or the activations: each has its own budget) takes one width of its
options; a width costs what the diagnosis measured for the point at that width (the fitness loss it adds,
everything else at the base widths), and uses ``elements × bits`` of the budget. The group's load is
``Σ elements × bits``; a budget of mean ``B`` bits allows ``floor(B × Σ elements)`` (``capacity``), all
in integers, so "element-weighted mean ≤ budget" holds exactly, never up to rounding.

``allocate``:

1. Lagrangian: for a price λ of one element-bit every point takes ``argmin cost + λ·elements·bits``
   (each point alone: the load falls as λ rises); λ is bisected to the smallest price whose plan fits.
   Such a plan is optimal for its own load, but leaves some budget unused.
2. Then moves that lower the predicted cost and still fit, best first: one point to another width
   (a move that frees budget first, else the best cost per element-bit), and when none is left, a pair
   (one point up, another down) that fits where neither alone would; until neither kind improves.
3. Where the table is small enough (the load counted in units of the elements' greatest common divisor:
   the demo's and ViT-B's are), a dynamic programme finds the exact optimum of the same costs, and is
   taken when it is lower. The Lagrangian plan and its moves are kept in the result for comparison.

Everything is deterministic: ties go to the lower width and the earlier point.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

BISECTIONS = 200
DP_CELLS = 20_000_000   # points × load units the exact dynamic programme may tabulate (int8: 20 MB)


@dataclass(frozen=True)
class Group:
    """Points that share one budget, each with its allowed widths (ascending) and their costs."""
    names: tuple[str, ...]
    elements: np.ndarray              # (n,) int64
    options: tuple[np.ndarray, ...]   # per point: widths, ascending (one width: the point is fixed)
    costs: tuple[np.ndarray, ...]     # per point: predicted cost at each width (lower is better)

    def __post_init__(self) -> None:
        if not (len(self.names) == len(self.elements) == len(self.options) == len(self.costs)):
            raise ValueError("a group needs names, elements, options and costs of one length")
        for name, widths, cost in zip(self.names, self.options, self.costs):
            if len(widths) == 0 or len(widths) != len(cost) or np.any(np.diff(widths) <= 0):
                raise ValueError(f"{name}: its widths must be ascending with one cost each")
            if not np.all(np.isfinite(cost)):
                raise ValueError(f"{name}: a cost is not finite")

    @property
    def size(self) -> int:
        return len(self.names)

    @property
    def total_elements(self) -> int:
        return int(np.sum(self.elements))

    def bits(self, choice: np.ndarray) -> np.ndarray:
        return np.array([int(w[c]) for w, c in zip(self.options, choice)], dtype=np.int64)

    def load(self, choice: np.ndarray) -> int:
        """Σ elements × bits: exact (Python integers)."""
        return sum(int(e) * int(w[c]) for e, w, c in zip(self.elements, self.options, choice))

    def cost(self, choice: np.ndarray) -> float:
        return float(sum(float(cost[c]) for cost, c in zip(self.costs, choice)))

    def min_load(self) -> int:
        return self.load(np.zeros(self.size, np.int64))

    def mean_bits(self, choice: np.ndarray) -> float:
        return self.load(choice) / self.total_elements if self.total_elements else float("nan")

    def choice_of(self, bits: dict[str, int]) -> np.ndarray:
        """The option index of each point's width in ``bits`` (every point must be there, at an option)."""
        return np.array([int(np.flatnonzero(w == bits[name])[0]) for name, w in zip(self.names, self.options)],
                        dtype=np.int64)


def capacity(budget: Fraction, total_elements: int) -> int:
    """The most element-bits a mean of ``budget`` bits allows: floor(budget × elements), exactly."""
    return math.floor(Fraction(budget) * total_elements)


def lagrangian(group: Group, price: float) -> np.ndarray:
    """Each point's width minimising cost + price × elements × bits (ties: the lower width)."""
    return np.array([int(np.argmin(cost + price * float(e) * widths.astype(np.float64)))
                     for e, widths, cost in zip(group.elements, group.options, group.costs)], dtype=np.int64)


def highest_price(group: Group) -> float:
    """A price above which every point takes its lowest width (the steepest cost per element-bit)."""
    steepest = 0.0
    for e, widths, cost in zip(group.elements, group.options, group.costs):
        for j in range(len(widths)):
            for k in range(j + 1, len(widths)):
                steepest = max(steepest, (cost[j] - cost[k]) / (float(e) * float(widths[k] - widths[j])))
    return steepest * 2.0 + 1e-300


def bisect(group: Group, cap: int) -> tuple[np.ndarray, float]:
    """The plan of the smallest price whose load fits ``cap``, and that price."""
    low, high = 0.0, highest_price(group)
    best = lagrangian(group, low)
    if group.load(best) <= cap:
        return best, low
    best = lagrangian(group, high)
    for _ in range(BISECTIONS):
        middle = (low + high) / 2
        if not low < middle < high:
            break
        plan = lagrangian(group, middle)
        if group.load(plan) <= cap:
            high, best = middle, plan
        else:
            low = middle
    return best, high


def _moves(group: Group, choice: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every single move from ``choice``: (point, option, Δload, Δcost), in point then option order."""
    points, options, dload, dcost = [], [], [], []
    for i, (e, widths, cost) in enumerate(zip(group.elements, group.options, group.costs)):
        current = choice[i]
        for j in range(len(widths)):
            if j != current:
                points.append(i)
                options.append(j)
                dload.append(int(e) * int(widths[j] - widths[current]))
                dcost.append(float(cost[j] - cost[current]))
    return (np.array(points, np.int64), np.array(options, np.int64), np.array(dload, np.int64),
            np.array(dcost, np.float64))


def improve(group: Group, choice: np.ndarray, cap: int) -> tuple[np.ndarray, int]:
    """Single moves, then pair moves, that lower the cost and fit, until none does; and how many were made."""
    choice = choice.copy()
    scale = max([1.0] + [float(np.max(np.abs(c))) for c in group.costs])
    tolerance = 1e-12 * scale
    made = 0
    for _ in range(100 * max(1, sum(len(w) for w in group.options))):
        load = group.load(choice)
        points, options, dload, dcost = _moves(group, choice)
        if points.size == 0:
            break
        fits = load + dload <= cap
        better = fits & (dcost < -tolerance)
        if better.any():
            freeing = better & (dload <= 0)
            if freeing.any():
                pick = np.flatnonzero(freeing)[np.argmin(dcost[freeing])]
            else:
                ratio = np.where(better, dcost / np.maximum(dload, 1), np.inf)
                pick = int(np.argmin(ratio))
            choice[points[pick]] = options[pick]
            made += 1
            continue
        up, down = np.flatnonzero(dload > 0), np.flatnonzero(dload < 0)
        if up.size == 0 or down.size == 0:
            break
        total = dcost[up][:, None] + dcost[down][None, :]
        ok = ((load + dload[up][:, None] + dload[down][None, :] <= cap)
              & (points[up][:, None] != points[down][None, :]) & (total < -tolerance))
        if not ok.any():
            break
        flat = int(np.argmin(np.where(ok, total, np.inf)))
        u, d = up[flat // down.size], down[flat % down.size]
        choice[points[u]], choice[points[d]] = options[u], options[d]
        made += 1
    return choice, made


def exact(group: Group, cap: int, max_cells: int = DP_CELLS) -> np.ndarray | None:
    """The plan of least predicted cost that fits ``cap``, by dynamic programming over the load (in units of
    the elements' greatest common divisor, above every point's lowest width); None when the table would
    pass ``max_cells`` (points × load units)."""
    unit = math.gcd(*(int(e) for e in group.elements)) or 1
    steps = [(int(e) // unit) * (widths - widths[0]).astype(np.int64) for e, widths in zip(group.elements, group.options)]
    room = (cap - group.min_load()) // unit
    if room < 0:
        return None
    if group.size * (room + 1) > max_cells:
        return None
    best = np.zeros(room + 1)           # least cost of the points so far within each load
    taken = np.zeros((group.size, room + 1), np.int8)
    for i, (step, cost) in enumerate(zip(steps, group.costs)):
        new = np.full(room + 1, np.inf)
        for j in range(len(step)):      # ascending widths: ties keep the lower one
            if step[j] > room:
                break
            candidate = np.full(room + 1, np.inf)
            candidate[step[j]:] = best[:room + 1 - step[j]] + cost[j]
            better = candidate < new
            new[better] = candidate[better]
            taken[i, better] = j
        best = new
    choice = np.zeros(group.size, np.int64)
    left = int(np.argmin(best))          # the least cost over every load that fits (the first: the least load)
    for i in range(group.size - 1, -1, -1):
        choice[i] = taken[i, left]
        left -= int(steps[i][choice[i]])
    return choice


@dataclass(frozen=True)
class Allocation:
    choice: np.ndarray      # option index per point
    method: str             # "exact" (the dynamic programme) or "lagrangian" (price, then moves)
    price: float            # the Lagrangian price of the first plan
    lagrangian_cost: float  # the predicted cost of the Lagrangian plan, before the moves
    moves: int              # single and pair moves made after it
    heuristic_cost: float   # the predicted cost after the moves


def allocate(group: Group, cap: int, max_cells: int = DP_CELLS) -> Allocation:
    """The plan of least predicted cost found whose load is at most ``cap``: the Lagrangian plan improved by
    moves, or the exact optimum where the dynamic programme fits ``max_cells``. ValueError if none fits."""
    if group.min_load() > cap:
        raise ValueError(f"no plan fits: every point at its lowest width already uses {group.min_load()} "
                         f"element-bits, the budget allows {cap}")
    first, price = bisect(group, cap)
    choice, moves = improve(group, first, cap)
    heuristic = group.cost(choice)
    optimum = exact(group, cap, max_cells)
    if optimum is not None and group.cost(optimum) <= heuristic:
        return Allocation(optimum, "exact", price, group.cost(first), moves, heuristic)
    return Allocation(choice, "lagrangian", price, group.cost(first), moves, heuristic)


def explored_front(group: Group, n: int) -> list[np.ndarray]:
    """Up to ``n`` distinct Lagrangian plans (each optimal for its own load) from the highest load to the
    lowest, evenly spread over the loads they span: the cost against mean bits front the prices trace."""
    high = highest_price(group)
    prices = [0.0, *np.geomspace(high * 1e-8, high, 400)]
    seen: dict[tuple[int, ...], np.ndarray] = {}
    for price in prices:
        plan = lagrangian(group, float(price))
        seen.setdefault(tuple(plan.tolist()), plan)
    plans = sorted(seen.values(), key=lambda p: (-group.load(p), tuple(p.tolist())))
    if len(plans) <= n:
        return plans
    loads = np.array([group.load(p) for p in plans], np.float64)
    targets = np.linspace(loads[0], loads[-1], n)
    picked = sorted({int(np.argmin(np.abs(loads - t))) for t in targets})
    return [plans[i] for i in picked]


def random_costs(group: Group, rng: np.random.Generator) -> Group:
    """The group with random costs: each point a random importance u, cost -u × elements × log2(bits), so
    the allocator spends the same budget on points drawn at random (a plan to compare against)."""
    weights = rng.uniform(0.0, 1.0, group.size)
    costs = tuple(-u * float(e) * np.log2(widths.astype(np.float64))
                  for u, e, widths in zip(weights, group.elements, group.options))
    return Group(group.names, group.elements, group.options, costs)
