"""The Plan tab and mixed plans in the library: the views draw a plan file as the engine reads it, a clicked
plan starts a search that carries it, Plan starts the engine's planner with the form's budget, and the library
names a mixed run by its mean bits."""
from __future__ import annotations

import app_conftest_helpers  # noqa: F401  (offscreen Qt, isolated settings; before Qt)
from app_conftest_helpers import dialogs, window  # noqa: F401  (shared fixtures)

from collections import Counter
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QPushButton

from app.jobs.background import wait_for  # noqa: E402
from app.library.model import FIELDS, LibraryModel  # noqa: E402
from engine.diagnose.points import quantization_points  # noqa: E402
from engine.library import read_row  # noqa: E402
from engine.models import create_model  # noqa: E402
from engine.plan import BitPlan, load_plan, save_plan  # noqa: E402
from engine.plan.elements import mean_bits_metrics, point_elements  # noqa: E402
from engine.plan.run import PlanConfig  # noqa: E402
from engine.plan.summary import mean_bits, mixed_label  # noqa: E402
from engine.quant import QuantConfig, quantize  # noqa: E402
from engine.runrecord import RunRecord  # noqa: E402
from engine.scalefile import save_run  # noqa: E402

KINDS = {"uniform": 4, "random": 2, "weights-front": 2, "activations-front": 1, "planned-composed": 1, "planned": 1,
         "uniform-calibrated": 1}


def _widths(name: str, block_bits: int) -> int:
    if name.endswith("/weight"):
        return block_bits if name.startswith(("blocks.0.", "blocks.1.")) else 3
    return 2 if name.endswith("/q") else 3


@pytest.fixture(scope="module")
def demo():
    """The demo's quantization points and element counts, and a mixed plan over them (6-bit early weights)."""
    model, _ = create_model()
    images = torch.randn(2, 1, 16, 16)
    quant = quantize(model, QuantConfig("minmax", 3, 3), [images])
    names = [p.name for p in quantization_points(quant)]
    return names, point_elements(quant, images), {n: _widths(n, 6) for n in names}, images


@pytest.fixture(scope="module")
def plan_file(demo, tmp_path_factory) -> Path:
    """A plan file as ``plan`` writes one: the plan, its budget and means, and the front it explored with every
    row's widths (uniform rows: one width per role)."""
    names, elements, chosen, _ = demo
    rows, widths = [], []
    for kind, count in KINDS.items():
        for i in range(count):
            bits = ({n: (3 + i % 2 if n.endswith("/weight") else 3 + i // 2) for n in names} if kind == "uniform"
                    else chosen if kind.startswith("planned") else {n: _widths(n, 4 + i) for n in names})
            rows.append({"kind": kind, **dict(zip(("mean_w_bits", "mean_a_bits"), mean_bits(bits, elements))),
                         "heldout_top1": 50.0 + len(rows)})
            widths.append([bits[n] for n in names])
    mean_w, mean_a = mean_bits(chosen, elements)
    info = {"budget": {"mean_w_bits": 4.0, "mean_a_bits": 3.0}, "mean_w_bits": mean_w, "mean_a_bits": mean_a,
            "heldout_fp_top1": 99.0, "heldout_planned_top1": 90.0, "front": rows, "front_widths": widths}
    path = tmp_path_factory.mktemp("plans") / "plan.json"
    save_plan(path, BitPlan("digits-vit", "minmax", 3, 3, tuple((n, chosen[n]) for n in names), info=info))
    return path


def _wait_idle(win) -> None:
    assert wait_for(lambda: not win.jobs.busy, 30)


def _plan_tab(win):
    win.view_tabs.setCurrentWidget(win.plan)
    return win.plan


def test_the_views_draw_the_plan_file(window, plan_file, demo):
    names, _, chosen, _ = demo
    panel = _plan_tab(window)
    plan = panel.open_plan(plan_file)
    assert plan is not None and "digits-vit" in panel.status.text()
    counts = {kind: len(scatter.data) for kind, scatter in panel.pareto.scatters.items()}
    assert counts == KINDS
    assert Counter(row["kind"] for row in panel.pareto.rows) == Counter(KINDS)
    table = panel.bits.table
    assert table.kinds[:6] == ("qkv w", "qkv in", "q", "k", "v", "probs") and table.n_blocks == 6
    assert table.bits[0, 0] == chosen["blocks.0.attn.qkv/weight"] == 6 and table.bits[3, 2] == 2
    shown = {row["point"]: row["bits"] for row in panel.bits.rows}
    assert shown == chosen and {name for name, _ in table.others} == {"patch_embed.proj/weight", "head/weight",
                                                                        "head/input"}
    panel.pareto.axis.setCurrentIndex(1)             # mean weight bits on the axis
    planned = panel.pareto.scatters["planned"].data[0]
    assert planned["x"] == pytest.approx(plan.info["mean_w_bits"])


def test_clicking_a_plan_starts_a_search_that_carries_it(window, plan_file, demo):
    specs = []
    window.search_fn = lambda spec, config, checkpoint=None, resume=None: (specs.append(spec), iter(()))[1]
    panel = _plan_tab(window)
    plan = panel.open_plan(plan_file)
    planned = panel.pareto.scatters["planned"].data[0]["data"]
    assert panel.pareto.click(planned)
    assert window.view_tabs.currentIndex() == 0              # the search shows on the Search tab
    _wait_idle(window)
    assert specs[-1].quant == plan.quant_config() and specs[-1].quant.mixed
    assert dict(specs[-1].quant.plan) == {n: b for n, b in plan.points if b != 3}
    assert window.run_panel.spec().quant == plan.quant_config()    # the form shows it: Start reruns the plan
    uniform = panel.pareto.scatters["uniform"].data[1]["data"]    # W4A3: the plain uniform config, no plan
    _plan_tab(window)
    assert panel.pareto.click(uniform)
    _wait_idle(window)
    assert specs[-1].quant == QuantConfig("minmax", 4, 3)
    assert not window.run_panel.spec().quant.mixed


def test_the_run_panel_searches_a_plan_file_and_keeps_a_shown_runs_plan(window, plan_file, tmp_path, dialogs):
    form = window.run_panel
    plan = form.bit_plan
    assert form.spec().quant.plan == () and plan.text.text() == ""
    assert plan.open_file(str(plan_file))
    opened = load_plan(plan_file)
    assert form.spec().quant == opened.quant_config() and "plan.json" in plan.text.text()
    form.w_bits.setValue(8)               # the plan's points keep their widths; W sets only what it leaves out
    weights = {n: b for n, b in opened.points if n.endswith("/weight")}     # 3 and 6 bits: none at the new W
    assert weights.items() <= dict(form.spec().quant.plan).items()
    form.model.setCurrentText("deit_tiny_patch16_224")
    with pytest.raises(ValueError, match="the bit plan is for digits-vit, not for the model selected"):
        form.spec()
    form.model.setCurrentText("digits-vit")
    form.set_values(replace(form.spec(), quant=QuantConfig("minmax", 4, 3)))    # a uniform run shown
    assert form.spec().quant == QuantConfig("minmax", 4, 3) and plan.text.text() == ""
    form.set_values(replace(form.spec(), quant=opened.quant_config()))           # a mixed run shown, reopened
    assert form.spec().quant == opened.quant_config() and "the run shown" in plan.text.text()
    (tmp_path / "broken.json").write_text("{")
    assert not plan.open_file(str(tmp_path / "broken.json")) and "is not JSON" in dialogs[-1][1]
    assert form.spec().quant == opened.quant_config()          # a file it cannot read changes nothing
    form.findChild(QPushButton, "uniformBitPlan").click()
    assert not form.spec().quant.mixed


def test_plan_starts_the_planner_with_the_form(window, qtbot):
    panel = _plan_tab(window)
    panel.budget.setText("W3.5A3.5")
    panel.widths.setText("3,4")
    panel.images.setValue(32)
    panel.heldout.setValue(32)
    assert panel.config() == PlanConfig(Fraction(7, 2), Fraction(7, 2), (3, 4), 32, 32, 8, 5)
    assert panel.start()
    job = window.jobs.job
    panel.stop()
    qtbot.waitUntil(lambda: not window.jobs.busy, timeout=60_000)
    assert job.outcome == "stopped" and job.kind.config.bits_set == (3, 4)
    assert job.kind.spec.model == "digits-vit"
    panel.budget.setText("W9A3")
    assert not panel.start()          # the engine's budget check, as a dialog


def test_the_library_shows_a_mixed_run_by_its_mean_bits(demo, tmp_path):
    names, elements, chosen, images = demo
    quant = QuantConfig("minmax", 3, 3, plan=chosen)
    model, info = create_model()
    qmodel = quantize(model, quant, [images])
    metrics = {"quality": "top1", "fp_top1": 90.0, "base_top1": 80.0, **mean_bits_metrics(qmodel, images)}
    record = RunRecord(info.name, info.source, info.weights_sha256, quant, {"dataset": "synthetic", "n_samples": 2},
                       qmodel.scale_set(), metrics=metrics)
    row = read_row(save_run(tmp_path / "mixed.h5", record))
    expected = mixed_label(*mean_bits(chosen, elements))
    assert row.bits == expected and expected.endswith("(plan)") and not expected.startswith("W3.00")
    model_view = LibraryModel()
    model_view.set_rows([row])
    index = model_view.index(0, FIELDS.index("bits"))
    assert model_view.data(index) == expected
    tip = model_view.data(index, Qt.ItemDataRole.ToolTipRole)
    assert "blocks.0.attn.qkv/weight" in tip and "6 bits" in tip and np.isfinite(metrics["mean_w_bits"])
