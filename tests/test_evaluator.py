"""The cached evaluator's memory and device contract: it holds the input of one block (built in
one tensor, the previous one released first), its losses are those of the per-batch computation,
losses are reduced on the device with one host copy per call, and no tensor is built without a device."""
from __future__ import annotations

import weakref

import numpy as np
import pytest
import torch

from engine.data import calibration_batches
from engine.models import create_model
from engine.quant import QuantConfig, quantize
from engine.search.evaluator import CachedEvaluator, Fitness, NaiveEvaluator, mean_over_batches, reference_outputs
from engine.search.losses import get_loss
from engine.search.segments import Segments, model_segments
from engine.search.space import block_space, mutate
from helpers import calib_batches, tiny_vit


def _evaluators(qmodel, calib, stack_elements=None):
    segments = model_segments(qmodel.model)
    fitness = Fitness(get_loss("contrastive"), 3.0, False, reference_outputs(qmodel, segments, calib, False))
    return (CachedEvaluator(qmodel, segments, calib, fitness, stack_elements),
            NaiveEvaluator(qmodel, segments, calib, fitness))


def _candidates(qmodel, index: int, n: int = 3) -> tuple:
    space = block_space(qmodel, f"blocks.{index}", "all")
    rng = np.random.default_rng(index)
    start = space.read(qmodel)
    return space, np.stack([mutate(start, space.ranges(0.05, 0.1), "relative", rng) for _ in range(n)])


@pytest.fixture(scope="module")
def tiny():
    calib = calib_batches()
    return quantize(tiny_vit(), QuantConfig("percentile", 3, 4), calib), calib


def test_block_cache_is_the_per_batch_block_input_and_only_one_is_held(tiny, monkeypatch):
    qmodel, calib = tiny
    cached, _ = _evaluators(qmodel, calib)
    segments = cached.segments
    with torch.no_grad():
        expected = [torch.cat([segments.block_inputs(images)[b] for images in calib]) for b in range(3)]
    last = cached.block_input(2)
    assert torch.equal(last, expected[2]) and cached.block_input(2) is last   # reused within a block step
    held = weakref.ref(last)
    del last
    seen_alive = []
    original = Segments.block_input

    def spy(self, images, index):
        seen_alive.append(held() is not None)
        return original(self, images, index)

    monkeypatch.setattr(Segments, "block_input", spy)
    assert torch.equal(cached.block_input(0), expected[0])
    assert seen_alive == [False] * len(calib)        # released before the next one was built
    cached.begin_pass()
    assert held() is None and len(seen_alive) == len(calib)


def test_begin_pass_rebuilds_from_the_current_model(tiny):
    """After a block before the searched one changes, begin_pass makes the cache follow the model."""
    qmodel, calib = tiny
    cached, naive = _evaluators(qmodel, calib)
    space0, vectors0 = _candidates(qmodel, 0, 1)
    space2, vectors2 = _candidates(qmodel, 2)
    original = space0.read(qmodel)
    try:
        cached.evaluate(2, space2, vectors2)
        space0.write(qmodel, vectors0[0])
        cached.begin_pass()
        np.testing.assert_allclose(cached.evaluate(2, space2, vectors2), naive.evaluate(space2, vectors2), rtol=1e-5)
    finally:
        space0.write(qmodel, original)


def test_one_host_copy_per_evaluate_call_and_no_float_per_batch(tiny, monkeypatch):
    qmodel, calib = tiny
    cached, naive = _evaluators(qmodel, calib, stack_elements=16 * 17 * 32 * 2)   # several chunks per call
    space, vectors = _candidates(qmodel, 1, 5)
    expected = naive.evaluate(space, vectors)
    cached.block_input(1)
    copies = []
    original_cpu = torch.Tensor.cpu

    def counting_cpu(self, *args, **kwargs):
        copies.append(tuple(self.shape))
        return original_cpu(self, *args, **kwargs)

    def no_sync(self, *args, **kwargs):
        raise AssertionError("a per-batch host sync (float()/item())")

    monkeypatch.setattr(torch.Tensor, "cpu", counting_cpu)
    monkeypatch.setattr(torch.Tensor, "__float__", no_sync)
    monkeypatch.setattr(torch.Tensor, "item", no_sync)
    losses = cached.evaluate(1, space, vectors)
    assert copies == [(5, len(calib))]
    np.testing.assert_allclose(losses, expected, rtol=1e-5)


def test_mean_over_batches_is_the_mean_of_the_per_batch_floats():
    g = torch.Generator().manual_seed(0)
    batch_losses = torch.rand((4, 13), generator=g) * 3
    expected = [np.mean([float(x) for x in row]) for row in batch_losses]
    assert mean_over_batches(batch_losses).tolist() == expected    # bit for bit


def test_evaluators_build_no_tensor_without_a_device(digits_splits):
    """Under a meta default device (a GPU box turned around) with the demo model and data on the CPU,
    a tensor built without a device would land on meta and fail when it meets the CPU ones."""
    calib = calibration_batches(digits_splits, batch_size=16)[:2]
    qmodel = quantize(create_model()[0], QuantConfig("minmax", 4, 4), calib)
    cached, naive = _evaluators(qmodel, calib)
    space, vectors = _candidates(qmodel, 5, 2)
    with torch.device("meta"):
        losses = cached.evaluate(5, space, vectors)
        expected = naive.evaluate(space, vectors)
    assert np.isfinite(losses).all()
    np.testing.assert_allclose(losses, expected, rtol=1e-5)
