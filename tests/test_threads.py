"""The same run gives the same result on any number of CPU threads (engine/threads.py and
engine/quant/fixed_order.py): the default search on the demo, and the two replaced kernels."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from engine.data import TensorImages
from engine.pipeline import RunSpec, prepare
from engine.quant import QuantConfig
from engine.quant.fixed_order import broadcast_scale, softmax
from engine.search.config import PRESETS
from engine.search.events import Finished
from engine.search.run import search_prepared
from engine.threads import thread_invariant


def on_threads(threads: int, fn):
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return fn()
    finally:
        torch.set_num_threads(before)


def _head(dataset: TensorImages, n: int) -> TensorImages:
    return TensorImages(dataset.images[:n], dataset.labels[:n], dataset.originals[:n])


def guided_run():
    prepared = prepare(RunSpec(calib_size=100, batch_size=100, quant=QuantConfig.from_bits("omse", "W4A3")))
    splits = replace(prepared.splits, heldout=_head(prepared.splits.heldout, 200), test=_head(prepared.splits.test, 200))
    config = replace(PRESETS["guided"], passes=1, cycles=2, joint_steps=10)   # one check of the joint phase
    return next(e.run for e in search_prepared(replace(prepared, splits=splits), config) if isinstance(e, Finished))


def test_the_default_search_gives_the_same_run_on_one_and_two_threads():
    assert thread_invariant()                       # tests/conftest.py does what every entry point does
    one, two = on_threads(1, guided_run), on_threads(2, guided_run)
    assert (one.provenance["threads"], two.provenance["threads"]) == (1, 2)
    for (name, role, a), (_, _, b) in zip(one.scales.points(), two.scales.points()):
        assert a.scale.tobytes() == b.scale.tobytes(), f"{name}/{role}"
    assert not one.scales.equals(one.base)          # the search moved something, identically
    for field in vars(one.history):
        np.testing.assert_array_equal(getattr(one.history, field), getattr(two.history, field))
    timing = {"search_seconds", "calibration_seconds"}
    assert {k: v for k, v in one.metrics.items() if k not in timing} == {
        k: v for k, v in two.metrics.items() if k not in timing}


@pytest.mark.parametrize("shape, scale_shape", [((100, 17, 96), ()), ((288, 96), (288, 1)), ((4, 3, 5), (1,))])
def test_a_broadcast_scales_gradient_is_autograds_and_the_same_on_any_thread_count(shape, scale_shape):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    scale = torch.rand(scale_shape, generator=torch.Generator().manual_seed(1)) + 0.5

    def gradient(fixed: bool) -> torch.Tensor:
        s = scale.clone().requires_grad_(True)
        b = broadcast_scale(s, x) if fixed else s
        ((x / b).round() * b - x).square().sum().backward()
        return s.grad

    ours = {t: on_threads(t, lambda: gradient(True)) for t in (1, 2, 3)}
    assert torch.equal(ours[1], ours[2]) and torch.equal(ours[1], ours[3])
    torch.testing.assert_close(ours[1], gradient(False), rtol=1e-4, atol=1e-3)
    assert broadcast_scale(scale, x) is scale      # without a gradient: untouched


def test_the_softmax_backward_is_autograds_and_the_same_on_any_thread_count():
    scores = torch.randn(100, 3, 17, 17, generator=torch.Generator().manual_seed(0))
    weights = torch.randn(100, 3, 17, 17, generator=torch.Generator().manual_seed(1))

    def gradient(fn) -> torch.Tensor:
        x = scores.clone().requires_grad_(True)
        (fn(x) * weights).sum().backward()
        return x.grad

    ours = {t: on_threads(t, lambda: gradient(softmax)) for t in (1, 2, 3)}
    assert torch.equal(ours[1], ours[2]) and torch.equal(ours[1], ours[3])
    torch.testing.assert_close(ours[1], gradient(lambda x: x.softmax(dim=-1)))
    with torch.no_grad():
        assert torch.equal(softmax(scores), scores.softmax(dim=-1))
