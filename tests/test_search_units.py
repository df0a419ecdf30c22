"""Search building blocks: presets and flags, the searched vector, the evolution loop, model segments,
and the cached/batched evaluator against the naive full forward."""
from __future__ import annotations

import argparse
from dataclasses import replace

import numpy as np
import pytest
import torch
from timm.models.swin_transformer import SwinTransformer

from engine.quant import QuantConfig, quantize
from engine.search.config import (NULL_OF, PRESETS, SearchConfig, add_search_args, preset_label,
                                  search_config_from_args)
from engine.data import first_images
from engine.search.evaluator import CachedEvaluator, Fitness, NaiveEvaluator, reference_outputs
from engine.search.evolution import evolve_block
from engine.search.steps import EvolutionParams
from engine.search.losses import get_loss
from engine.search.segments import model_segments
from engine.search.space import MIN_SCALE, block_space, mutate
from helpers import calib_batches, tiny_vit


# ---------------------------------------------------------------- config

def test_release_preset_is_the_release_recipe():
    r = PRESETS["release"]
    assert (r.scope, r.population, r.tournament, r.cycles, r.children, r.passes) == ("attn", 15, 10, 3, 1, 10)
    assert (r.mutation, r.loss, r.temperature, r.features, r.strategy) == ("absolute", "contrastive", 3.0, "logits",
                                                                          "evolution")
    assert r.resolved_ranges(4, 8)[0] == 1e-3 and r.resolved_ranges(3, 8)[0] == 1e-3
    assert r.resolved_ranges(8, 8)[0] == 1e-4


def test_default_relative_ranges_shrink_above_four_bits_only():
    d = PRESETS["default"]
    assert d.resolved_ranges(4, 3) == d.resolved_ranges(2, 4) == (0.05, 0.1)   # the hard settings keep the prototypes'
    assert d.resolved_ranges(4, 8) == (0.05, 0.1 / 16)
    assert d.resolved_ranges(6, 6) == (0.05 / 4, 0.1 / 4)
    assert replace(d, mutation_range=0.2).resolved_ranges(8, 8)[0] == 0.2      # an explicit range is used as given


def test_the_null_preset_is_the_null_of_guided_and_old_names_are_aliases():
    assert PRESETS["null"].strategy == NULL_OF[PRESETS["guided"].strategy] == "guided-null"
    assert replace(PRESETS["null"], preset="guided", strategy="guided") == PRESETS["guided"]
    assert PRESETS["null"].evaluations(6) == PRESETS["guided"].evaluations(6)
    for alias, name in (("default", "guided"), ("release", "cptv-paper"), ("random", "null")):
        assert PRESETS[alias] is PRESETS[name] and preset_label(alias) == preset_label(name) != name


def test_flags_override_the_preset_only_when_given():
    parser = argparse.ArgumentParser()
    add_search_args(parser)
    config = search_config_from_args(parser.parse_args(["--preset", "release", "--passes", "2", "--scope", "all"]))
    assert config == replace(PRESETS["release"], passes=2, scope="all")
    assert search_config_from_args(parser.parse_args([])) == PRESETS["default"]


def test_config_round_trip_and_validation():
    config = replace(PRESETS["default"], mutation_range=0.02)
    assert SearchConfig.from_dict(config.to_dict()) == config
    for bad in ({"scope": "attn+ffn"}, {"population": 0}, {"loss": "hinge"}, {"temperature": 0.0},
                {"mutation_range": -1.0}, {"select": "best-test"}, {"search_images": 0}):
        with pytest.raises(ValueError):
            replace(config, **bad)
    with pytest.raises(ValueError, match="unknown search parameters"):
        SearchConfig.from_dict({**config.to_dict(), "lr": 1})


def test_first_images_keeps_whole_batches_then_cuts_the_last():
    batches = [torch.full((4, 1), float(i)) for i in range(3)]
    assert [len(b) for b in first_images(batches, 6)] == [4, 2]
    assert [len(b) for b in first_images(batches, 8)] == [4, 4]
    assert first_images(batches, None) == batches and len(first_images(batches, 100)) == 3
    assert torch.equal(torch.cat(first_images(batches, 6)), torch.cat(batches)[:6])


# ---------------------------------------------------------------- space

def test_block_space_selects_by_scope():
    qmodel = quantize(tiny_vit(), QuantConfig("minmax", 4, 8), calib_batches())
    attn = block_space(qmodel, "blocks.1", "attn")
    assert [k for k in attn.keys] == [("blocks.1.attn.qkv", "weight"), ("blocks.1.attn.proj", "weight")]
    assert attn.size == 96 + 32 and attn.is_weight.all()
    full = block_space(qmodel, "blocks.1", "all")
    roles = sorted(role for _, role in full.keys)
    assert roles.count("weight") == 4 and roles.count("input") == 4
    assert {"q", "k", "v", "probs"} <= set(roles)
    assert (~full.is_weight).sum() == 8          # eight per-tensor activation scales
    vector = full.read(qmodel)
    full.write(qmodel, vector * 2)
    assert np.array_equal(full.read(qmodel), (vector * 2).astype(np.float32))


def test_mutation_modes():
    rng = np.random.default_rng(0)
    parent = np.array([1e-4, 0.5, 2.0], np.float32)
    child = mutate(parent, np.full(3, 1e-3), "absolute", rng)
    assert np.all(child >= MIN_SCALE) and np.all(np.abs(child - parent) <= 1e-3 + 1e-4)
    child = mutate(parent, np.full(3, 0.1), "relative", rng)
    assert np.all(np.abs(np.log(child / parent)) <= 0.1 + 1e-6)


# ---------------------------------------------------------------- evolution

def _quadratic(target):
    return lambda vectors: ((vectors - target) ** 2).sum(axis=1).astype(np.float64)


def _run(params, seed=0, start=None):
    start = np.ones(5, np.float32) if start is None else start
    evaluate = _quadratic(np.full(5, 1.2))
    search = evolve_block(start, float(evaluate(start[None])[0]), evaluate, params, np.random.default_rng(seed))
    steps = []
    while True:
        try:
            steps.append(next(search))
        except StopIteration as done:
            return steps, done.value


def test_evolution_never_loses_and_spends_cycles_times_children():
    params = EvolutionParams(15, 10, 6, 4, "evolution", "relative", np.full(5, 0.05))
    steps, result = _run(params)
    assert len(steps) == 24
    assert result.loss <= 0.2 and result.loss == min(result.population_losses)
    assert result.loss == pytest.approx(((result.vector - 1.2) ** 2).sum(), rel=1e-5)


def test_random_strategy_spends_the_same_evaluations():
    params = EvolutionParams(15, 10, 6, 4, "random", "relative", np.full(5, 0.05))
    steps, _ = _run(params)
    assert len(steps) == 24


def test_evolution_is_deterministic_per_seed():
    params = EvolutionParams(5, 3, 3, 2, "evolution", "absolute", np.full(5, 1e-2))
    assert np.array_equal(_run(params, 1)[1].vector, _run(params, 1)[1].vector)
    assert not np.array_equal(_run(params, 1)[1].vector, _run(params, 2)[1].vector)


# ---------------------------------------------------------------- segments and evaluators

def test_segments_reproduce_the_forward_vit_and_swin():
    vit = quantize(tiny_vit(), QuantConfig("minmax", 4, 8), calib_batches())
    torch.manual_seed(0)
    swin = SwinTransformer(img_size=32, patch_size=4, in_chans=3, num_classes=5, embed_dim=16, depths=(1, 2),
                           num_heads=(1, 2), window_size=4).eval()
    swin_calib = calib_batches(2, 4, (3, 32, 32))
    swin = quantize(swin, QuantConfig("minmax", 4, 8), swin_calib)
    for qmodel, images in ((vit, calib_batches()[0]), (swin, swin_calib[0])):
        segments = model_segments(qmodel.model)
        assert len(segments.blocks) == len(qmodel.blocks())
        with torch.no_grad():
            assert torch.equal(segments.forward(images), qmodel(images))
            x = segments.block_input(images, 1)
            assert torch.equal(segments.run_after(segments.blocks[1](x), 1, False), qmodel(images))


@pytest.mark.parametrize("loss,features", [("contrastive", "logits"), ("kl", "logits"), ("mse", "prelogits")])
def test_cached_batched_losses_match_the_naive_forward(loss, features):
    calib = calib_batches()
    qmodel = quantize(tiny_vit(), QuantConfig("percentile", 3, 4), calib)
    segments = model_segments(qmodel.model)
    pre_logits = features == "prelogits"
    fitness = Fitness(get_loss(loss), 3.0, pre_logits, reference_outputs(qmodel, segments, calib, pre_logits))
    naive = NaiveEvaluator(qmodel, segments, calib, fitness)
    # A tiny stacking budget forces several candidate and batch chunks.
    for budget in (1 << 25, 16 * 17 * 32 * 2):
        cached = CachedEvaluator(qmodel, segments, calib, fitness, stack_elements=budget)
        cached.begin_pass()
        rng = np.random.default_rng(0)
        for index in (2, 0):
            space = block_space(qmodel, f"blocks.{index}", "all")
            start = space.read(qmodel)
            vectors = np.stack([mutate(start, space.ranges(0.05, 0.1), "relative", rng) for _ in range(3)])
            expected = naive.evaluate(space, vectors)
            np.testing.assert_allclose(cached.evaluate(index, space, vectors), expected, rtol=1e-5)
            assert np.array_equal(space.read(qmodel), start)   # evaluation never touches the model
