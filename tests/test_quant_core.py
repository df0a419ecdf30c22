"""Fake-quant core: arithmetic, coverage of every quantization point, ScaleSet round trips."""
from dataclasses import replace

import numpy as np
import pytest
import timm
import torch

from engine.quant import QuantConfig, QuantizedModel, ScaleMismatch, parse_bits, quantize
from engine.quant.observers import affine_from_range, weight_range
from engine.quant.schemes import uniform_affine
from helpers import expected_points, tiny_quant_vit


def test_parse_bits():
    assert parse_bits("W4A8") == (4, 8)
    assert parse_bits("w2a3") == (2, 3)
    for bad in ("4A8", "W4", "W0A8", "W4A1"):
        with pytest.raises(ValueError):
            parse_bits(bad)


def test_uniform_affine_levels_and_clipping():
    scale, zp = affine_from_range(torch.tensor(-1.0), torch.tensor(2.0), 0, 3)  # 2-bit unsigned
    assert scale.item() == pytest.approx(1.0) and zp.item() == 1.0
    x = torch.tensor([-5.0, -1.0, -0.4, 0.6, 1.4, 2.0, 9.0])
    out = uniform_affine(x, scale, zp, 0, 3, {})
    assert out.tolist() == [-1.0, -1.0, 0.0, 1.0, 1.0, 2.0, 2.0]


def test_affine_range_always_contains_zero():
    scale, zp = affine_from_range(torch.tensor(0.5), torch.tensor(4.0), 0, 255)
    assert zp.item() == 0 and scale.item() == pytest.approx(4.0 / 255)


def test_omse_never_worse_than_minmax_and_clips_gaussian_tails():
    torch.manual_seed(0)
    w = torch.randn(4, 4096)

    def l2(lo, hi):
        scale, zp = affine_from_range(lo, hi, 0, 7)
        return (uniform_affine(w, scale[:, None], zp[:, None], 0, 7, {}) - w).pow(2).mean(dim=1)

    lo_mm, hi_mm = weight_range("minmax", w, 0, 7)
    lo, hi = weight_range("omse", w, 0, 7)
    assert torch.all(hi < hi_mm) and torch.all(lo > lo_mm)
    assert torch.all(l2(lo, hi) < l2(lo_mm, hi_mm))


@pytest.mark.parametrize("name,size", [("deit_tiny_patch16_224", 224), ("swin_tiny_patch4_window7_224", 224)])
def test_every_point_of_real_architectures_is_quantized(name, size):
    model = timm.create_model(name, pretrained=False, num_classes=10).eval()
    expected = expected_points(model)
    images = torch.randn(2, 3, size, size)
    with torch.no_grad():
        reference = model(images)
    qmodel = quantize(model, QuantConfig("minmax", 8, 8), [images])
    counts = {}
    for _, role, params in qmodel.scale_set().points():
        counts[role] = counts.get(role, 0) + 1
    assert counts == expected
    with torch.no_grad(), qmodel.full_precision():
        assert torch.allclose(qmodel(images), reference, atol=1e-4)  # our attention forward == timm's
    with torch.no_grad():
        assert not torch.equal(qmodel(images), reference)


def test_attention_bits_default_to_activation_bits_and_can_differ():
    qmodel = QuantizedModel(tiny_quant_vit(), QuantConfig("minmax", 4, 8, attn_bits=4))
    q = qmodel.quantizers()
    assert q[("blocks.0.attn", "probs")].bits == 4 and q[("blocks.0.attn.qkv", "input")].bits == 8
    assert q[("blocks.0.attn.qkv", "weight")].bits == 4
    assert QuantizedModel(tiny_quant_vit(), QuantConfig("minmax", 4, 6)).quantizers()[("blocks.0.attn", "q")].bits == 6


@pytest.mark.parametrize("method", ["minmax", "percentile", "omse"])
def test_scale_set_reload_is_bit_identical(method):
    images = torch.randn(8, 1, 16, 16)
    qmodel = quantize(tiny_quant_vit(), QuantConfig(method, 3, 4), [images])
    fresh = QuantizedModel(tiny_quant_vit(), QuantConfig(method, 3, 4))
    fresh.load_scale_set(qmodel.scale_set())
    with torch.no_grad():
        assert torch.equal(qmodel(images), fresh(images))
    assert fresh.scale_set().equals(qmodel.scale_set())


def test_load_scale_set_names_the_first_mismatch():
    images = torch.randn(4, 1, 16, 16)
    scales = quantize(tiny_quant_vit(), QuantConfig("minmax", 8, 8), [images]).scale_set()
    with pytest.raises(ScaleMismatch, match="blocks.2"):  # deeper model: points missing
        QuantizedModel(tiny_quant_vit(depth=3), QuantConfig()).load_scale_set(scales)
    qkv = scales["blocks.0.attn.qkv"]["weight"]
    bad = scales.with_point("blocks.0.attn.qkv", "weight", replace(qkv, scale=qkv.scale[:50], zero_point=qkv.zero_point[:50]))
    with pytest.raises(ScaleMismatch, match=r"blocks.0.attn.qkv/weight: scale has shape"):
        QuantizedModel(tiny_quant_vit(), QuantConfig()).load_scale_set(bad)
    p = scales["head"]["input"]
    for value in (np.float32(np.nan), np.float32(0.0), np.float32(-1.0)):
        with pytest.raises(ScaleMismatch, match="head/input: scale has non-finite or non-positive"):
            QuantizedModel(tiny_quant_vit(), QuantConfig()).load_scale_set(scales.with_point("head", "input", p.with_scale(value)))
