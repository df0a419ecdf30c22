"""``plan --target-top1`` (issue 28, item 2): the fewest mean bits whose plan reaches a held-out top-1, with
the allocation's costs known and the held-out measurement played by a function whose answer is known."""
from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from engine.cli import main
from engine.diagnose.events import MeasureCounter
from engine.diagnose.probe import Score
from engine.plan.allocate import Group
from engine.plan.target import MAX_CHECKS, budget_for_target, candidates, cheapest_line, mean_grid

WIDTHS = np.array([2, 3, 4, 6, 8])


def group(kind: str, elements: list[int]) -> Group:
    """Points whose cost falls with their width, the larger points costing more."""
    costs = tuple(np.array([e / w ** 2 / 10 for w in WIDTHS]) for e in elements)
    return Group(tuple(f"p{i}/{kind}" for i in range(len(elements))), np.array(elements, np.int64),
                 (WIDTHS,) * len(elements), costs)


GROUPS = {"weights": group("weight", [100, 300, 50]), "activations": group("input", [40, 10, 200])}


def predict(loss: float) -> float:
    return 100.0 - loss


def measured_as(top1_of) -> tuple:
    """A measure(kind, bits) whose held-out top-1 is ``top1_of(bits)``, and the list of what it measured."""
    seen = []

    def measure(kind: str, bits: dict[str, int]) -> Score:
        seen.append(bits)
        return Score(loss=0.0, top1=top1_of(bits))

    return measure, seen


def run(target: float, measure, fixed=(None, None)) -> tuple[tuple[Fraction, Fraction], list[dict]]:
    checks, events = [], []
    steps = budget_for_target(target, tuple(WIDTHS), fixed, GROUPS, predict, measure, MeasureCounter(10), checks)
    while True:
        try:
            events.append(next(steps))
        except StopIteration as done:
            assert len(events) == len(checks)          # every plan measured is counted
            return done.value, checks


def test_the_grid_is_quarter_bits_or_the_fixed_mean():
    assert mean_grid((2, 4), None) == [2, Fraction(9, 4), Fraction(5, 2), Fraction(11, 4), 3, Fraction(13, 4),
                                       Fraction(7, 2), Fraction(15, 4), 4]
    assert mean_grid((2, 4), Fraction(3)) == [3]


def test_candidates_come_cheapest_first_and_their_prediction_rises_with_the_bits():
    pairs = candidates(GROUPS["weights"], GROUPS["activations"], mean_grid(WIDTHS, None), mean_grid(WIDTHS, None),
                       predict)
    assert [c.mean_bits for c in pairs] == sorted(c.mean_bits for c in pairs)
    fixed_w = [c for c in pairs if c.w_bits == 4]
    assert all(a.predicted_top1 <= b.predicted_top1 for a, b in zip(fixed_w, fixed_w[1:]))


def line_of(fixed=(None, None)) -> list:
    return cheapest_line(candidates(GROUPS["weights"], GROUPS["activations"], mean_grid(WIDTHS, fixed[0]),
                                    mean_grid(WIDTHS, fixed[1]), predict))


def measured_below_prediction(by: float):
    loss = {name: cost for g in GROUPS.values() for name, cost in zip(g.names, g.costs)}
    return measured_as(lambda bits: 100.0 - by - sum(loss[n][list(WIDTHS).index(b)] for n, b in bits.items()))


def test_a_prediction_that_holds_takes_the_cheapest_budget_predicted_to_reach_the_target():
    cheapest = next(c for c in line_of() if c.predicted_top1 >= 90.0)
    (w, a), checks = run(90.0, measured_below_prediction(0.0)[0])
    assert (w, a) == (cheapest.w_bits, cheapest.a_bits) and len(checks) == 1 and checks[0]["heldout_top1"] >= 90


def test_an_optimistic_prediction_is_corrected_by_bisection_between_it_and_the_most_bits():
    """Every plan measures 3 points below its prediction: the planner measures the most bits next, then
    bisects, and ends at the cheapest budget of the line whose plan measures at least the target."""
    (w, a), checks = run(90.0, measured_below_prediction(3.0)[0])
    line = line_of()
    assert checks[0]["heldout_top1"] < 90.0 and (checks[1]["mean_w_bits"], checks[1]["mean_a_bits"]) == (8, 8)
    cheapest = next(c for c in line if c.predicted_top1 - 3.0 >= 90.0)
    assert (w, a) == (cheapest.w_bits, cheapest.a_bits) and len(checks) <= MAX_CHECKS


def test_an_unreachable_target_names_the_best_checked():
    measure, seen = measured_as(lambda bits: 50.0)
    with pytest.raises(ValueError, match=r"--target-top1 90: no plan reached it on held-out \(the best of 2 "
                                         r"checked: 50.00% at W"):
        run(90.0, measure)


def test_a_fixed_mean_stays():
    measure, seen = measured_below_prediction(1.0)
    (w, a), checks = run(95.0, measure, fixed=(Fraction(4), None))
    assert w == 4 and all(c["mean_w_bits"] == 4 for c in checks) and checks[-1]["heldout_top1"] >= 0
    weights = GROUPS["weights"]
    assert all(sum(int(e) * bits[n] for n, e in zip(weights.names, weights.elements)) <= 4 * weights.total_elements
               for bits in seen)


@pytest.mark.parametrize("flags, says", [
    (["--budget", "W4A3", "--target-top1", "90"], "--budget and --target-top1 are two ways"),
    (["--mean-w-bits", "4", "--mean-a-bits", "3", "--target-top1", "90"], "at most one of --mean-w-bits"),
    (["--target-top1", "190"], "above 0 and at most 100, got 190"),
    ([], "plan needs a budget (--budget WxAy, or --mean-w-bits and --mean-a-bits) or --target-top1"),
])
def test_what_to_plan_for_is_checked_before_any_work(flags, says, tmp_path, capsys):
    assert main(["plan", *flags, "--out", str(tmp_path / "plan.json")]) == 2
    assert says in capsys.readouterr().err and not (tmp_path / "plan.json").exists()
