"""One device rule: every buffer of a quantizer lives on the device of the module it wraps, whatever
path set it (calibration of every quantizer, load_scale_set, a run file, the search's write-back).

No GPU needed: the model and data stay on the CPU while ``meta`` is torch's default device. That is
a GPU box turned around (there the default is cpu and the model is on cuda): a tensor built without
an explicit device lands on meta, and the next op that meets a CPU tensor, or ``.item()`` /
``.numpy()`` of it, raises.
"""
from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from torch import nn

from engine.data import calibration_batches
from engine.models import create_model
from engine.quant import QuantConfig, QuantizedModel, available_quantizers, quantize
from engine.runrecord import RunRecord
from engine.scalefile import apply_run, load_run, save_run
from engine.search.config import PRESETS
from engine.search.evaluator import CachedEvaluator, search_fitness
from engine.search.segments import model_segments
from engine.search.space import block_space

CONFIG_BITS = (4, 4)


def owner_device(qmodel: QuantizedModel, owner: str) -> torch.device:
    return next(qmodel.model.get_submodule(owner).parameters()).device


def assert_buffers_on_owner_devices(qmodel: QuantizedModel) -> None:
    for (owner, role), quantizer in qmodel.quantizers().items():
        device = owner_device(qmodel, owner)
        assert quantizer.calibrated, f"{owner}/{role} was never calibrated"
        for name, buffer in quantizer.named_buffers():
            assert buffer.device == device, f"{owner}/{role}.{name} is on {buffer.device}, its owner on {device}"


def forward(qmodel: nn.Module, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        out = qmodel(images)
    assert out.device == images.device and torch.isfinite(out).all()
    return out


@pytest.fixture(scope="module")
def demo_batches(digits_splits) -> list[torch.Tensor]:
    """Two small calibration batches of the demo (8 images each), on the CPU."""
    return calibration_batches(digits_splits, batch_size=8)[:2]


@pytest.fixture(scope="module")
def calibrated(demo_batches) -> dict[str, QuantizedModel]:
    """Every quantizer calibrated normally (default device cpu): the scales the load paths reload."""
    return {name: quantize(create_model()[0], QuantConfig(name, *CONFIG_BITS), demo_batches)
            for name in available_quantizers()}


def test_meta_default_device_catches_a_tensor_built_without_device():
    """The premise of this file: under a meta default, a device-less tensor cannot meet a CPU one."""
    with torch.device("meta"):
        stray = torch.zeros(3)
        with pytest.raises((RuntimeError, NotImplementedError)):
            (stray + torch.ones(3, device="cpu")).sum().item()


@pytest.mark.parametrize("name", available_quantizers())
def test_calibration_keeps_buffers_on_the_model_device(demo_batches, name):
    model = create_model()[0]
    with torch.device("meta"):
        qmodel = quantize(model, QuantConfig(name, *CONFIG_BITS), demo_batches)
        assert_buffers_on_owner_devices(qmodel)
        forward(qmodel, demo_batches[0])


@pytest.mark.parametrize("name", available_quantizers())
def test_load_scale_set_and_run_file_keep_buffers_on_the_model_device(tmp_path, calibrated, demo_batches, name):
    reference = calibrated[name]
    images = demo_batches[0]
    expected = forward(reference, images)
    record = RunRecord(model_name="digits-vit", model_source="builtin", weights_sha256="00" * 32,
                       quant=reference.config, calibration={}, scales=reference.scale_set())
    path = save_run(tmp_path / f"{name}.h5", record)
    for load in (lambda q: q.load_scale_set(reference.scale_set()),
                 lambda q: apply_run(load_run(path), q, "digits-vit")):
        model = create_model()[0]
        with torch.device("meta"):
            qmodel = QuantizedModel(model, reference.config)
            load(qmodel)
            assert_buffers_on_owner_devices(qmodel)
            assert torch.equal(forward(qmodel, images), expected)


@pytest.mark.parametrize("name", ["minmax", "ptq4vit", "fqvit", "repqvit"])
def test_search_write_back_keeps_buffers_on_the_model_device(calibrated, demo_batches, name):
    """BlockSpace.write (the search's best member, and resume from a checkpoint) on a model wrapped
    and loaded under the foreign default device."""
    reference = calibrated[name]
    model = create_model()[0]
    with torch.device("meta"):
        qmodel = QuantizedModel(model, reference.config)
        qmodel.load_scale_set(reference.scale_set())
        space = block_space(qmodel, qmodel.blocks()[-1][0], "all")
        vector = space.read(qmodel) * np.float32(1.01)
        space.write(qmodel, vector)
        assert_buffers_on_owner_devices(qmodel)
        np.testing.assert_array_equal(space.read(qmodel), vector)
        forward(qmodel, demo_batches[0])


@pytest.mark.parametrize("name", ["minmax", "fqvit"])
def test_swin_calibration_keeps_buffers_on_the_model_device(name):
    torch.manual_seed(0)
    model = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, num_classes=10).eval()
    images = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.device("meta"):
        qmodel = quantize(model, QuantConfig(name, *CONFIG_BITS), [images])
        assert_buffers_on_owner_devices(qmodel)
        forward(qmodel, images)


@pytest.mark.parametrize("name", ["minmax", "ptq4vit"])
def test_the_guided_searchs_gradient_runs_on_the_model_device(calibrated, demo_batches, name):
    """CachedEvaluator.log_gradient (straight-through autograd from the cached block input) builds
    no tensor off the model's device."""
    reference = calibrated[name]
    qmodel = QuantizedModel(create_model()[0], reference.config)
    qmodel.load_scale_set(reference.scale_set())
    segments = model_segments(qmodel.model)
    fitness = search_fitness(qmodel, segments, demo_batches, PRESETS["default"])
    with torch.device("meta"):
        evaluator = CachedEvaluator(qmodel, segments, demo_batches, fitness)
        space = block_space(qmodel, qmodel.blocks()[0][0], "all")
        gradient = evaluator.log_gradient(0, space, space.read(qmodel))
    assert gradient.shape == (space.size,) and np.isfinite(gradient).all() and np.abs(gradient).max() > 0
