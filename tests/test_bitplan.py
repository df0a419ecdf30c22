"""Bit plans (issue 28, items 1 and 3): a width per quantization point carried through QuantConfig,
calibration, the search, the run file and the run identity. A uniform plan is today's quantization bit for
bit; a mixed one calibrates, searches (every strategy), saves and loads at its own widths; older files read
as uniform; bad plans are one line."""
from __future__ import annotations

import json
from dataclasses import asdict, replace

import h5py
import numpy as np
import pytest
import torch

from engine.data import Splits, TensorImages
from engine.models import ModelInfo
from engine.pipeline import Prepared, RunSpec
from engine.plan.file import BitPlan, PlanFileError, load_plan, save_plan
from engine.quant import PlanMismatch, QuantConfig, QuantizedModel, quantize
from engine.quant.bitplan import canonical_plan, role_default
from engine.runrecord import RunRecord, identity_mismatch, spec_values
from engine.scalefile import DamagedFile, load_run, save_run
from engine.search import run as search_run
from engine.search.config import STRATEGIES, PRESETS
from engine.search.identity import record_identity, saved_identity, search_run_identity
from engine.search.space import block_space, planned_ranges
from helpers import TINY_BATCH, TINY_SEARCH, calib_batches, final, tiny_vit, with_schema_version


def all_points(quant: QuantConfig) -> dict[str, int]:
    """Every point of the tiny ViT at the width ``quant`` gives it."""
    qmodel = QuantizedModel(tiny_vit(), quant)
    return {f"{owner}/{role}": q.bits for (owner, role), q in qmodel.quantizers().items()}


def everything_at(quant: QuantConfig, width: int) -> dict[str, int]:
    return dict.fromkeys(all_points(quant), width)


def tiny_prepared_with(quant: QuantConfig) -> Prepared:
    """helpers.tiny_prepared with another QuantConfig: a random 3-block ViT whose labels are its FP predictions."""
    model = tiny_vit()

    def images(n: int, offset: int) -> TensorImages:
        x = torch.randn((n, 1, 16, 16), generator=torch.Generator().manual_seed(offset))
        with torch.no_grad():
            return TensorImages(x, model(x).argmax(-1), torch.arange(n))

    calib, heldout, test = images(96, 1), images(64, 2), images(64, 3)
    splits = Splits("synthetic", calib, heldout, test, (1, 16, 16), (0.0,), (1.0,), 64, 64,
                    tuple(str(c) for c in range(10)))
    spec = RunSpec(model="tiny-vit", quant=quant, calib_size=96, batch_size=TINY_BATCH, device="cpu")
    batches = [calib.images[i:i + TINY_BATCH] for i in range(0, 96, TINY_BATCH)]
    info = ModelInfo("tiny-vit", "random-init", "0" * 64, (1, 16, 16), (0.0,), (1.0,), 10)
    return Prepared(spec, info, splits, torch.device("cpu"), quantize(model, quant, batches), batches, 0.0)


# ---------------------------------------------------------------- the plan as data

def test_a_plan_is_canonical_an_explicit_uniform_plan_is_none():
    uniform = QuantConfig("minmax", 4, 3)
    explicit = QuantConfig("minmax", 4, 3, plan=all_points(uniform))
    assert explicit == uniform and explicit.plan == () and hash(explicit) == hash(uniform)
    mixed = QuantConfig("minmax", 4, 3, plan={"blocks.1.attn/probs": 8, "blocks.0.attn.qkv/weight": 4,
                                              "blocks.0.mlp.fc1/input": 6})
    assert mixed.plan == (("blocks.0.mlp.fc1/input", 6), ("blocks.1.attn/probs", 8))   # defaults drop, sorted
    assert mixed.mixed and mixed.bits_label.startswith("W4A3+plan-") and mixed.bits_of("blocks.1.attn", "probs") == 8
    assert mixed.bits_of("blocks.1.attn", "q") == 3 and mixed.bits_of("head", "weight") == 4
    # attention operands default to --attn-bits: an explicit attn width is no override at that width
    assert QuantConfig("minmax", 4, 8, 3, plan={"blocks.0.attn/q": 3, "blocks.0.attn.qkv/input": 8}).plan == ()
    assert role_default("mixed", 4, 8, 3) == 3   # CaiT's talking-heads operand is an attention operand
    # read back from JSON (pairs as lists), the same config
    again = QuantConfig(**json.loads(json.dumps(asdict(mixed))))
    assert again == mixed and again.bits_label == mixed.bits_label


@pytest.mark.parametrize("plan,words", [
    ({"blocks.0.attn.qkv": 4}, ["not a quantization point name"]),
    ({"blocks.0.attn.qkv/weight": 17}, ["blocks.0.attn.qkv/weight", "1 to 16"]),
    ({"blocks.0.attn/probs": 1}, ["blocks.0.attn/probs", "2 to 16"]),
    ({"blocks.0.attn/probs": 4.0}, ["integer"]),
    ({"blocks.0.attn/probs": True}, ["integer"]),
    ([("blocks.0.attn/q", 4), ("blocks.0.attn/q", 5)], ["twice"]),
    ([("blocks.0.attn/q",)], ["pair"]),
])
def test_bad_plans_are_one_line_value_errors(plan, words):
    with pytest.raises(ValueError) as error:
        canonical_plan(plan, 4, 4, 4)
    assert "\n" not in str(error.value) and all(w in str(error.value) for w in words)


def test_a_point_the_model_lacks_or_the_quantizer_fixes_is_refused():
    with pytest.raises(PlanMismatch, match="blocks.7.attn/q"):
        QuantizedModel(tiny_vit(), QuantConfig("minmax", 4, 4, plan={"blocks.7.attn/q": 8}))
    with pytest.raises(PlanMismatch, match="fqvit fixes it at 4 bits"):   # Log-Int-Softmax
        quantize(tiny_vit(), QuantConfig("fqvit", 4, 4, plan={"blocks.0.attn/probs": 8}), calib_batches())


# ---------------------------------------------------------------- a uniform plan is today's, bit for bit

@pytest.mark.parametrize("quantizer", ["minmax", "omse", "ptq4vit", "repqvit"])
def test_every_point_at_8_bits_is_w8a8_bit_for_bit(quantizer):
    """A W4A4 config whose plan puts every point at 8 bits calibrates exactly what W8A8 does: the planned
    widths reach every quantizer before calibration reads them."""
    batches = calib_batches()
    planned = QuantConfig(quantizer, 4, 4, plan=everything_at(QuantConfig(quantizer, 4, 4), 8))
    assert len(planned.plan) == len(all_points(planned))
    mixed = quantize(tiny_vit(), planned, batches).scale_set()
    assert mixed.equals(quantize(tiny_vit(), QuantConfig(quantizer, 8, 8), batches).scale_set())


def test_a_uniform_plan_searches_exactly_as_no_plan():
    """The same calibrated scales and the same short search, with and without an explicit uniform plan,
    and a W4A4 config planned to 8 bits everywhere searches as W8A8 (each point's mutation range is its own
    width's)."""
    uniform = QuantConfig("percentile", 3, 4)
    runs = {}
    for name, quant in (("none", uniform), ("explicit", QuantConfig("percentile", 3, 4, plan=all_points(uniform))),
                        ("w8a8", QuantConfig("percentile", 8, 8)),
                        ("planned8", QuantConfig("percentile", 3, 4, plan=everything_at(uniform, 8)))):
        runs[name] = final(list(search_run.search_prepared(tiny_prepared_with(quant), TINY_SEARCH))).run
    for a, b in (("none", "explicit"), ("w8a8", "planned8")):
        assert runs[a].base.equals(runs[b].base) and runs[a].scales.equals(runs[b].scales)
        assert np.array_equal(runs[a].history.loss, runs[b].history.loss)
        assert np.array_equal(runs[a].history.heldout_top1, runs[b].history.heldout_top1)
    assert not runs["none"].scales.equals(runs["w8a8"].scales)


def test_planned_points_move_by_their_own_widths_range():
    quant = QuantConfig("minmax", 4, 4, plan={"blocks.0.attn.qkv/weight": 8, "blocks.0.attn/probs": 2})
    prepared = tiny_prepared_with(quant)
    space = block_space(prepared.qmodel, "blocks.0", "all")
    ranges = planned_ranges(space, quant, PRESETS["guided"].resolved_ranges)
    by_key = dict(zip(space.keys, space.split(ranges)))
    assert np.all(by_key[("blocks.0.attn.qkv", "weight")] == 0.05 / 16)    # halved per bit above 4
    assert np.all(by_key[("blocks.0.attn.proj", "weight")] == 0.05)
    assert by_key[("blocks.0.attn", "probs")] == 0.1 and by_key[("blocks.0.attn", "q")] == 0.1
    uniform = QuantConfig("minmax", 4, 4)
    assert np.array_equal(planned_ranges(space, uniform, PRESETS["guided"].resolved_ranges),
                          space.ranges(*PRESETS["guided"].resolved_ranges(4, 4)))


MIXED = {"blocks.2.attn.qkv/weight": 8, "blocks.2.attn/probs": 6, "blocks.1.mlp.fc2/input": 2,
         "blocks.0.attn.proj/weight": 3, "head/weight": 8}


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_strategy_searches_a_mixed_plan(strategy):
    quant = QuantConfig("percentile", 3, 4, plan=MIXED)
    config = replace(TINY_SEARCH, strategy=strategy, mutation="relative", children=4)
    run = final(list(search_run.search_prepared(tiny_prepared_with(quant), config))).run
    assert run.quant == quant
    for name, bits in MIXED.items():
        owner, _, role = name.rpartition("/")
        assert run.scales.get_point(owner, role).bits == bits == run.base.get_point(owner, role).bits
    assert run.scales.get_point("blocks.2.attn", "q").bits == 4 and not run.scales.equals(run.base)


# ---------------------------------------------------------------- run files and identity

@pytest.fixture(scope="module")
def mixed_run(tmp_path_factory):
    quant = QuantConfig("percentile", 3, 4, plan=MIXED)
    run = final(list(search_run.search_prepared(tiny_prepared_with(quant), replace(TINY_SEARCH, cycles=1)))).run
    run.planning = {"budget_w_bits": 4.0, "budget_a_bits": 3.0, "measurements": 12, "seconds": 1.5,
                    "front": {"kind": ["uniform", "planned"], "heldout_top1": [50.0, None]}}
    return save_run(tmp_path_factory.mktemp("mixed") / "mixed.h5", run), run


def test_a_mixed_run_round_trips_through_its_file(mixed_run):
    path, run = mixed_run
    loaded = load_run(path)
    off = {n: b for n, b in MIXED.items() if n != "blocks.0.attn.proj/weight"}   # 3 bits: the base W3
    assert loaded.quant == run.quant and loaded.quant.plan == tuple(sorted(off.items()))
    assert loaded.scales.equals(run.scales) and loaded.base.equals(run.base)
    assert loaded.planning["measurements"] == 12 and loaded.planning["front"]["kind"] == ["uniform", "planned"]
    with h5py.File(path) as f:
        assert f.attrs["schema_version"] == 2 and json.loads(f["config"].attrs["bit_plan"]) == off
    assert record_identity(loaded) == record_identity(run)
    assert load_plan(path).quant_config() == run.quant   # a run file is a plan too


def test_files_before_plans_read_as_uniform(tmp_path, mixed_run):
    """A schema 1 file (no bit_plan) reads as uniform, and its identity is that of a uniform run."""
    quant = QuantConfig("percentile", 3, 4)
    run = final(list(search_run.search_prepared(tiny_prepared_with(quant), replace(TINY_SEARCH, cycles=1)))).run
    path = save_run(tmp_path / "old.h5", run)
    with h5py.File(path, "r+") as f:
        del f["config"].attrs["bit_plan"]
        spec = json.loads(f["config"].attrs["run_spec"])
        del spec["quant"]["plan"]
        f["config"].attrs["run_spec"] = json.dumps(spec)
    with_schema_version(path, 1)
    old = load_run(path)
    assert old.quant == quant and old.quant.plan == () and old.scales.equals(run.scales)
    assert "plan" not in old.spec["quant"]
    assert identity_mismatch(record_identity(old), record_identity(run)) is None
    mixed = record_identity(mixed_run[1])
    assert "spec.quant.plan" in identity_mismatch(record_identity(old), mixed)


@pytest.mark.parametrize("value,words", [
    ('{"blocks.0.attn.qkv": 4}', ["bit_plan", "not a quantization point name"]),
    ('{"blocks.0.attn.qkv/weight": 99}', ["bit_plan", "1 to 16"]),
    ("[1, 2]", ["bit_plan", "not a JSON dict"]),
    ('{"blocks.9.attn/q": 8}', ["names blocks.9.attn/q", "/layers does not hold"]),
    ('{"blocks.2.attn/probs": 5}', ["layers/blocks.2.attn/probs has 6 bits", "gives it 5"]),
])
def test_bad_plans_in_a_run_file_are_one_line(tmp_path, mixed_run, value, words):
    path = tmp_path / "bad.h5"
    path.write_bytes(mixed_run[0].read_bytes())
    with h5py.File(path, "r+") as f:
        f["config"].attrs["bit_plan"] = value
    with pytest.raises(DamagedFile) as error:
        load_run(path)
    assert "\n" not in str(error.value) and str(path) in str(error.value)
    assert all(w in str(error.value) for w in words), str(error.value)


def test_the_plan_is_part_of_the_run_identity():
    config = PRESETS["guided"].to_dict()
    uniform, mixed = RunSpec(quant=QuantConfig("minmax", 4, 3)), RunSpec(quant=QuantConfig("minmax", 4, 3, plan=MIXED))
    a = search_run_identity(spec_values(uniform), config, "ab")
    b = search_run_identity(spec_values(mixed), config, "ab")
    assert identity_mismatch(a, b).startswith("spec.quant.plan")
    assert identity_mismatch(b, search_run_identity(spec_values(mixed), config, "ab")) is None
    older = {**a, "spec": {**a["spec"], "quant": {k: v for k, v in a["spec"]["quant"].items() if k != "plan"}}}
    assert identity_mismatch(saved_identity(older), a) is None          # a checkpoint from before plans: uniform
    assert identity_mismatch(saved_identity(older), b).startswith("spec.quant.plan")


# ---------------------------------------------------------------- plan files

def test_plan_files_round_trip_and_make_configs(tmp_path):
    points = tuple(sorted({**all_points(QuantConfig("minmax", 4, 3)), **MIXED}.items()))
    plan = BitPlan("digits-vit", "omse", 4, 3, points, info={"budget": {"mean_w_bits": 4.0}, "x": float("nan")})
    loaded = load_plan(save_plan(tmp_path / "p.json", plan))
    assert loaded == plan and loaded.info["budget"] == {"mean_w_bits": 4.0} and loaded.info["x"] is None
    assert loaded.quant_config() == QuantConfig("omse", 4, 3, plan=MIXED)
    # another base: every point keeps the plan's width, the canonical overrides change
    other = loaded.quant_config("minmax", "W8A8")
    assert other.quantizer == "minmax" and all(other.bits_of(*n.rsplit("/", 1)) == b for n, b in points)


@pytest.mark.parametrize("text,words", [
    ("not json", ["is not JSON"]),
    ("[1]", ["not a JSON object"]),
    ('{"format": "other"}', ["not 'cptv-bitplan'"]),
    ('{"format": "cptv-bitplan", "version": 9, "model": "m", "quantizer": "minmax", "bits": "W4A4", '
     '"points": {"a/weight": 4}}', ["version 9", "later"]),
    ('{"format": "cptv-bitplan", "version": 1, "model": "m", "quantizer": "minmax", "bits": "W4A99", '
     '"points": {"a/weight": 4}}', ["W4A99"]),
    ('{"format": "cptv-bitplan", "version": 1, "model": "m", "quantizer": "minmax", "bits": "W4A4", '
     '"points": {}}', ["'points'"]),
    ('{"format": "cptv-bitplan", "version": 1, "model": "m", "quantizer": "minmax", "bits": "W4A4", '
     '"points": {"a/input": 1}}', ["a/input", "2 to 16"]),
    ('{"format": "cptv-bitplan", "version": 1, "model": "m", "quantizer": "minmax", "bits": "W4A4", '
     '"attn_bits": "x", "points": {"a/input": 4}}', ["attn_bits"]),
])
def test_bad_plan_files_are_one_line(tmp_path, text, words):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(PlanFileError) as error:
        load_plan(path)
    message = str(error.value)
    assert "\n" not in message and str(path) in message and all(w in message for w in words), message
