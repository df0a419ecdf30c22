"""``plan`` (issue 28, item 2): widths under an element-weighted budget, honoured exactly; the allocation
against brute force; the whole planner on the demo, seeded (same seed, same plan), held-out only, its
files (plan JSON, front CSV, run file) and the plan taken by the other commands."""
from __future__ import annotations

import csv
import itertools
import json
from dataclasses import replace
from fractions import Fraction

import numpy as np
import pytest
import torch

from engine.cli import main
from engine.pipeline import RunSpec
from engine.plan import run as plan_module
from engine.plan.allocate import Group, allocate, bisect, capacity, exact, explored_front, improve, random_costs
from engine.plan.file import load_plan
from engine.plan.elements import point_elements
from engine.plan.run import PlanConfig, Planned, base_width, loss_to_top1, plan_run
from engine.quant import QuantConfig, QuantizedModel
from engine.scalefile import load_run
from helpers import tiny_vit

WIDTHS = np.array([2, 3, 4, 6, 8])


def random_group(rng: np.random.Generator, n: int, fixed: int = 0) -> Group:
    """``n`` points with decreasing noisy costs over WIDTHS, and ``fixed`` points with one width only."""
    elements = rng.integers(1, 5000, n + fixed)
    options = [WIDTHS] * n + [np.array([4])] * fixed
    costs = [np.sort(rng.exponential(1.0, 5))[::-1] * rng.uniform(0.1, 3.0) + rng.normal(0, 0.05, 5)
             for _ in range(n)] + [np.array([rng.uniform(0, 1)]) for _ in range(fixed)]
    return Group(tuple(f"p{i}/input" for i in range(n + fixed)), elements, tuple(options), tuple(costs))


def brute_force(group: Group, cap: int) -> float:
    return min(group.cost(np.array(c)) for c in itertools.product(*(range(len(w)) for w in group.options))
               if group.load(np.array(c)) <= cap)


def test_capacity_is_exact():
    assert capacity(Fraction(7, 2), 3) == 10          # 3.5 bits over 3 elements: 10.5 -> 10
    assert capacity(Fraction("3.25"), 4) == 13
    assert capacity(Fraction(3), 1_000_003) == 3_000_009


@pytest.mark.parametrize("seed", range(40))
def test_the_budget_is_honoured_exactly_and_the_plan_is_optimal(seed):
    """Element-weighted mean ≤ budget in exact arithmetic, for any budget between the lowest and the highest
    width; the allocation is the brute-force optimum of the same costs, and the Lagrangian's moves never
    make its plan worse."""
    rng = np.random.default_rng(seed)
    group = random_group(rng, int(rng.integers(2, 6)), fixed=int(rng.integers(0, 2)))
    budget = Fraction(int(rng.integers(20, 81)), 10)
    cap = capacity(budget, group.total_elements)
    if group.min_load() > cap:
        with pytest.raises(ValueError, match="no plan fits"):
            allocate(group, cap)
        return
    allocation = allocate(group, cap)
    bits = group.bits(allocation.choice)
    assert Fraction(int(np.dot(bits, group.elements)), group.total_elements) <= budget
    assert group.cost(allocation.choice) == pytest.approx(brute_force(group, cap), abs=1e-9)
    first, _ = bisect(group, cap)
    improved, _ = improve(group, first, cap)
    assert group.load(first) <= cap and group.load(improved) <= cap
    assert group.cost(improved) <= group.cost(first) + 1e-12
    assert np.array_equal(allocate(group, cap).choice, allocation.choice)   # deterministic


def test_without_the_exact_programme_the_lagrangian_and_moves_still_fit():
    rng = np.random.default_rng(7)
    group = random_group(rng, 16, fixed=2)
    for budget in ("2.5", "4.25", "7.9"):
        cap = capacity(Fraction(budget), group.total_elements)
        heuristic = allocate(group, cap, max_cells=0)
        assert heuristic.method == "lagrangian" and group.load(heuristic.choice) <= cap
        best = allocate(group, cap)
        assert group.cost(best.choice) <= group.cost(heuristic.choice) + 1e-12
        assert exact(group, cap) is not None


def test_the_front_and_random_plans():
    rng = np.random.default_rng(3)
    group = random_group(rng, 12)
    front = explored_front(group, 5)
    loads = [group.load(p) for p in front]
    assert 2 <= len(front) <= 5 and loads == sorted(loads, reverse=True)
    assert loads[0] == group.load(np.full(group.size, len(WIDTHS) - 1)) or group.cost(front[0]) <= group.cost(
        np.full(group.size, len(WIDTHS) - 1))
    cap = capacity(Fraction(4), group.total_elements)
    draws = [allocate(random_costs(group, np.random.default_rng([1, k])), cap).choice for k in range(3)]
    assert all(group.load(d) <= cap for d in draws) and len({tuple(d) for d in draws}) > 1


def test_base_width_and_loss_to_top1():
    assert base_width(Fraction(4), (2, 3, 4, 6, 8)) == 4 and base_width(Fraction("3.9"), (2, 3, 4, 8)) == 3
    assert base_width(Fraction(2), (3, 4)) == 3
    to_top1 = loss_to_top1([(0.0, 99.0), (0.1, 95.0), (0.2, 97.0), (1.0, 60.0), (2.0, 10.0)])
    values = [to_top1(x) for x in (0.0, 0.05, 0.1, 0.15, 0.2, 0.5, 1.0, 3.0)]
    assert values == sorted(values, reverse=True) and values[0] == 99.0 and values[-1] == 10.0
    assert to_top1(0.1) == to_top1(0.2) == 96.0   # pooled: a noisy pair becomes one level


def test_element_counts_are_parameters_and_elements_per_image():
    qmodel = QuantizedModel(tiny_vit(), QuantConfig("minmax", 4, 4))
    counts = point_elements(qmodel, torch.randn(2, 1, 16, 16))
    tokens, dim = 17, 32
    assert counts["blocks.0.attn.qkv/weight"] == 3 * dim * dim
    assert counts["blocks.0.attn.qkv/input"] == tokens * dim
    assert counts["blocks.0.attn/probs"] == 2 * tokens * tokens          # two heads
    assert counts["blocks.0.mlp.fc1/input"] == tokens * dim and counts["head/input"] == dim
    assert counts["patch_embed.proj/weight"] == dim * 16 and "patch_embed.proj/input" not in counts


# ---------------------------------------------------------------- the planner on the demo

SMALL = dict(bits_set=(3, 4), images=32, heldout_images=32, front_points=1, random_draws=1)
SPEC = RunSpec(calib_size=64, batch_size=64, device="cpu")


class NeverRead:
    """A test split whose images fail the test when anything reads them (its size may be told)."""

    def __init__(self, inner) -> None:
        self.n = len(inner)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index):
        raise AssertionError("plan read the test split")


@pytest.fixture(scope="module")
def planned(tmp_path_factory):
    """The demo planned at W3.5A3.5 over widths 3 and 4, twice with seed 0 (the test split never read)."""
    patch = pytest.MonkeyPatch()
    original = plan_module.load_model_and_data

    def without_test(spec):
        model, info, splits, device = original(spec)
        return model, info, replace(splits, test=NeverRead(splits.test)), device

    patch.setattr(plan_module, "load_model_and_data", without_test)
    try:
        config = PlanConfig(Fraction(7, 2), Fraction(7, 2), **SMALL)
        results = [[e for e in plan_run(SPEC, config) if isinstance(e, Planned)][-1].result for _ in range(2)]
    finally:
        patch.undo()
    return results


def test_the_plan_meets_its_budget_and_is_seeded(planned):
    first, again = planned
    assert first.plan == again.plan and first.plan.points == again.plan.points   # same seed, same plan
    assert first.planned_top1 == again.planned_top1
    points = dict(first.plan.points)
    weights = [n for n in points if n.endswith("/weight")]
    activations = [n for n in points if not n.endswith("/weight")]
    for plan in [points] + first.plan.info["random_plans"]:   # the random plans keep the budget too
        for names, budget in ((weights, Fraction(7, 2)), (activations, Fraction(7, 2))):
            load = sum(first.elements[n] * plan[n] for n in names)
            assert Fraction(load, sum(first.elements[n] for n in names)) <= budget
    assert len(first.plan.info["random_plans"]) == len(first.random_top1) >= 1
    assert set(points.values()) <= {3, 4} and len(set(points.values())) == 2       # mixed, within the set
    assert abs(first.mean_w_bits - 3.5) < 0.1 and abs(first.mean_a_bits - 3.5) < 0.1   # the budget is spent
    info = first.plan.info
    n_points = len(points)
    assert info["measurements"] == first.measurements >= 1 + 2 * n_points + 4
    assert first.calibrations == 2 + 1   # widths 3 and 4, then the plan; uniform W3A3 is the width-3 one
    assert first.base_w_bits == first.base_a_bits == 3 and first.uniform_top1 == info["heldout_uniform_top1"]
    assert {row.kind for row in first.front} >= {"uniform", "planned", "planned-composed", "random",
                                                 "weights-front", "activations-front"}
    # minmax calibrates each point from the FP model alone: the composed plan is the plan calibrated whole
    assert first.composed_top1 == first.planned_top1
    assert first.record.quant == first.quant == first.plan.quant_config()


def test_plan_cli_writes_the_plan_the_front_and_a_run_file_others_read(tmp_path, capsys):
    out, run_out, front = tmp_path / "plan.json", tmp_path / "plan.h5", tmp_path / "front.csv"
    argv = ["plan", "--budget", "W3.5A3.5", "--bits-set", "3,4", "--calib-size", "64", "--batch-size", "64",
            "--images", "32", "--heldout-images", "32", "--front-points", "1", "--random-draws", "1",
            "--device", "cpu", "--out", str(out), "--run-out", str(run_out), "--csv", str(front), "--json", "--quiet"]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    plan = load_plan(out)
    assert result["points"] == dict(plan.points) and result["measurements"] == plan.info["measurements"]
    assert plan.info["budget"] == {"mean_w_bits": 3.5, "mean_a_bits": 3.5}
    assert result["mean_w_bits"] <= 3.5 and result["mean_a_bits"] <= 3.5
    record = load_run(run_out)
    assert record.quant == plan.quant_config() and record.planning["measurements"] == result["measurements"]
    assert "fp_top1" not in record.metrics and record.metrics["heldout_base_top1"] == result["heldout_planned_top1"]
    rows = list(csv.DictReader(front.open()))
    assert rows[0].keys() == {"kind", "mean_w_bits", "mean_a_bits", "predicted_loss", "predicted_top1", "loss",
                              "heldout_top1"}
    assert sum(r["kind"] == "uniform" for r in rows) == 4
    # the plan file drives another command: eval calibrates the plan (its quantizer and widths) to the scales
    # the run file holds
    common = ["--split", "heldout", "--calib-size", "64", "--batch-size", "64", "--device", "cpu", "--json", "--quiet"]
    assert main(["eval", "--plan", str(out), *common]) == 0
    from_plan = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert main(["eval", "--scales", str(run_out), *common]) == 0
    from_run = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert from_plan == from_run and from_plan["n_heldout"] > 32
