"""Peer quantizers (PTQ4ViT, FQ-ViT, RepQ-ViT): scheme arithmetic, calibration, bit-identical reloads."""
import math

import numpy as np
import pytest
import timm
import torch
from timm.models.vision_transformer import VisionTransformer

from engine.quant import QuantConfig, QuantizedModel, QuantParams, available_quantizers, quantize
from engine.quant.fqvit import ptf_params
from engine.quant.peer_schemes import (PTF_FACTORS, log2_quant, log_sqrt2_quant, post_layernorm_pairs,
                                       power_of_two_factor, twin_gelu, twin_softmax)
from engine.quant.repqvit import REPARAM_B, REPARAM_R, reparam_params, sync_reparam
from engine.quant.schemes import uniform_affine
from engine.runrecord import RunRecord
from engine.scalefile import apply_run, load_run, save_run

PEERS = ["ptq4vit", "ptq4vit-base", "fqvit", "fqvit-percentile", "fqvit-omse", "fqvit-noptf", "fqvit-nolis",
         "repqvit"]


def small_vit() -> VisionTransformer:
    torch.manual_seed(0)
    return VisionTransformer(img_size=16, patch_size=4, in_chans=1, embed_dim=96, depth=2, num_heads=4,
                             num_classes=10).eval()


def images(n=8, size=16, channels=1, seed=1):
    return torch.randn(n, channels, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def calibrated():
    """Each peer quantizer calibrated once on the small ViT (W6A6: away from the 8-bit defaults)."""
    x = images()
    return {name: quantize(small_vit(), QuantConfig(name, 6, 6), [x]) for name in PEERS}, x


def test_peers_are_registered():
    assert set(PEERS) <= set(available_quantizers())


def test_twin_softmax_levels_on_both_sides_of_split():
    split, levels = 2.0**-3, 7                                  # 4 bits: 3 bits per range
    fine = torch.tensor(split / levels)
    x = torch.tensor([0.0, 0.01, 0.05, 0.12, 0.13, 0.5, 0.93, 1.0])
    out = twin_softmax(x, fine, torch.tensor(0.0), 0, 15, {})
    expected = [0.0, 1 * fine, 3 * fine, 7 * fine, 1 / 7, 4 / 7, 7 / 7, 1.0]  # 0.5*7 = 3.5 rounds to even
    torch.testing.assert_close(out, torch.tensor(expected, dtype=torch.float32))
    below, above = out[x < split], out[x >= split]
    assert torch.allclose(below / fine, torch.round(below / fine))           # the fine grid below the split
    assert torch.allclose(above * levels, torch.round(above * levels))       # steps of 1/7 above it


def test_twin_gelu_levels():
    scale, neg_step = torch.tensor(0.5), torch.tensor(0.17 / 8)
    x = torch.tensor([-1.0, -0.17, -0.05, 0.0, 0.2, 1.0, 5.0])
    out = twin_gelu(x, scale, torch.tensor(0.0), -8, 7, {"neg_step": neg_step})
    expected = [-8 * neg_step, -8 * neg_step, -2 * neg_step, 0.0, 0.0, 1.0, 3.5]
    torch.testing.assert_close(out, torch.tensor(expected, dtype=torch.float32))


def test_log2_dequantization_table():
    codes = torch.arange(16, dtype=torch.float32)
    table = log2_quant(torch.exp2(-codes), torch.tensor(1.0), None, 0, 15, {})
    assert torch.equal(table, torch.exp2(-codes))                            # code q -> 2^-q
    x = torch.tensor([0.0, 1.5, 2.0**-15.4, 2.0**-15.6, 2.0**-16])
    out = log2_quant(x, torch.tensor(1.0), None, 0, 15, {})
    assert out.tolist() == [0.0, 1.0, 2.0**-15, 0.0, 0.0]                    # clamps at 1, past code 15 -> 0


def test_log_sqrt2_dequantization_table():
    delta = torch.tensor(0.5)
    codes = torch.arange(8, dtype=torch.float32)
    table = log_sqrt2_quant(delta * torch.exp2(-codes / 2), delta, None, 0, 7, {})
    expected = [0.5 * 2.0 ** -math.ceil(q / 2) * (1 + (math.sqrt(2) - 1) * (q % 2)) for q in range(8)]
    torch.testing.assert_close(table, torch.tensor(expected))
    torch.testing.assert_close(table, delta * torch.exp2(-codes / 2))        # half-octave levels
    out = log_sqrt2_quant(torch.tensor([0.0, 0.9, 0.5 * 2.0**-4.5]), delta, None, 0, 7, {})
    assert out.tolist() == [0.0, 0.5, 0.0]


def test_ptf_factors_are_powers_of_two_and_follow_channel_ranges():
    gen = torch.Generator().manual_seed(0)
    spread = torch.tensor([0.05, 0.4, 1.5, 6.0])
    rows = torch.rand(4096, 4, generator=gen) * spread
    params = ptf_params(rows.min(dim=0).values, rows.max(dim=0).values, rows, 8)
    factors = params.extra["factor"]
    assert set(factors.tolist()) <= set(PTF_FACTORS)
    assert factors[0] == 1 and factors[-1] == 8 and np.all(np.diff(factors) >= 0)
    x = torch.from_numpy(params.scale), torch.from_numpy(params.zero_point), torch.from_numpy(factors)
    out = power_of_two_factor(rows, x[0], x[1], 0, 255, {"factor": x[2]})
    per_channel = uniform_affine(rows, x[0] * x[2], x[1], 0, 255, {})   # = uniform with step s·f per channel
    assert torch.equal(out, per_channel)


def test_log_sqrt2_keeps_its_values_under_autograd_with_the_gradients_of_its_closed_form():
    """x̂ = Δ·2^(-code/2): inside the range it slides with Δ (no gradient to Δ) and tracks x; clipped at
    the top it is Δ·2^(-qmin/2); past qmax it is 0. The release's ceil/parity form gave Δ a sawtooth."""
    delta = torch.tensor(0.5, requires_grad=True)
    x = torch.tensor([0.9, 0.5 * 2.0**-1.6, 0.5 * 2.0**-2.3, 0.5 * 2.0**-9.0], requires_grad=True)
    out = log_sqrt2_quant(x, delta, None, 0, 7, {})
    with torch.no_grad():
        assert torch.equal(out, log_sqrt2_quant(x, delta, None, 0, 7, {}))   # the release's values, bit for bit
    grad_delta, grad_x = torch.autograd.grad(out.sum(), [delta, x])
    assert float(grad_delta) == pytest.approx(1.0)                     # only the clipped 0.9 moves with Δ
    torch.testing.assert_close(grad_x[1:3], (out / x)[1:3].detach())   # inside: d x̂/dx = x̂/x
    assert grad_x[0] == 0 and grad_x[3] == 0                             # clipped, and past qmax (x̂ = 0)


@pytest.mark.parametrize("fn, extra, qmin, qmax", [
    (twin_softmax, {}, 0, 15), (twin_gelu, {"neg_step": torch.tensor(0.02)}, -8, 7), (log2_quant, {}, 0, 15),
    (log_sqrt2_quant, {}, 0, 15), (power_of_two_factor, {"factor": torch.tensor([1.0, 2.0, 4.0, 8.0])}, 0, 15)])
def test_schemes_batch_over_candidate_scales_with_vmap(fn, extra, qmin, qmax):
    """The search evaluates stacked candidate scales with torch.vmap: each scheme must support it."""
    x = torch.rand(3, 4)
    scales = torch.tensor([0.05, 0.1, 0.7])
    batched = torch.vmap(lambda s: fn(x, s, torch.tensor(0.0), qmin, qmax, extra))(scales)
    assert torch.equal(batched, torch.stack([fn(x, s, torch.tensor(0.0), qmin, qmax, extra) for s in scales]))


def test_reparam_per_tensor_equals_per_channel_quantization():
    """RepQ's r, b make per-tensor quantization of x/r - b exactly the per-channel one of x."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(512, 6, generator=gen, dtype=torch.float64) * torch.tensor([0.1, 1, 3, 0.5, 2, 8.0], dtype=torch.float64)
    scale = (x.amax(0) - x.amin(0)) / 15
    zp = torch.round(-x.amin(0) / scale)
    channel = QuantParams(scale.numpy(), zp.numpy(), 4, False, "per_channel", -1)
    tensor = reparam_params(channel)
    r, b = (torch.from_numpy(tensor.extra[k]).double() for k in (REPARAM_R, REPARAM_B))
    s_bar, z_bar = torch.tensor(float(tensor.scale), dtype=torch.float64), float(tensor.zero_point)
    folded = (uniform_affine(x / r - b, s_bar, z_bar, 0, 15, {}) + b) * r        # what W·r and the bias see
    torch.testing.assert_close(folded, uniform_affine(x, scale, zp, 0, 15, {}), atol=1e-5, rtol=1e-5)


def test_reparam_leaves_fp_output_unchanged_and_is_reversible():
    qmodel = QuantizedModel(small_vit(), QuantConfig("repqvit", 8, 8))
    x = images()
    originals = {k: v.clone() for k, v in qmodel.state_dict().items()}
    with torch.no_grad(), qmodel.full_precision():
        before = qmodel(x)
    gen = torch.Generator().manual_seed(0)
    pairs = post_layernorm_pairs(qmodel.model)
    assert len(pairs) == 4                                      # norm1 -> qkv, norm2 -> fc1 in two blocks
    for _, linear in pairs:
        n = qmodel.model.get_submodule(linear).in_features
        qmodel.model.get_submodule(linear).input_quant.set_params(QuantParams(
            np.float32(0.1), np.float32(3), 8, False,
            extra={REPARAM_R: (0.5 + 1.5 * torch.rand(n, generator=gen)).numpy(),
                   REPARAM_B: (0.1 * torch.randn(n, generator=gen)).numpy()}))
    sync_reparam(qmodel)
    with torch.no_grad(), qmodel.full_precision():
        after = qmodel(x)
    assert (after - before).abs().max() <= 1e-5
    assert not torch.equal(qmodel.state_dict()["model.blocks.0.norm1.weight"], originals["model.blocks.0.norm1.weight"])
    for _, linear in pairs:
        quantizer = qmodel.model.get_submodule(linear).input_quant
        quantizer.set_params(QuantParams(np.float32(0.1), np.float32(3), 8, False))
    sync_reparam(qmodel)                                        # no re-parameterisation: the originals again
    state = qmodel.state_dict()
    assert all(torch.equal(state[k], v) for k, v in originals.items() if "quant" not in k)


def test_calibrated_points_use_each_papers_schemes(calibrated):
    qmodels, _ = calibrated
    ptq = qmodels["ptq4vit"].scale_set()
    qkv = ptq["blocks.0.attn.qkv"]["weight"]
    assert qkv.granularity == "per_channel" and len(np.unique(qkv.scale)) == 3
    assert all(len(np.unique(third)) == 1 for third in np.split(qkv.scale, 3))   # one scale each for q, k, v
    assert ptq["blocks.0.attn.proj"]["weight"].granularity == "per_tensor"
    assert ptq["patch_embed.proj"]["weight"].granularity == "per_channel"
    assert ptq["blocks.0.attn"]["probs"].scheme == "twin_softmax"
    assert ptq["blocks.0.mlp.fc2"]["input"].scheme == "twin_gelu"
    assert {p.scheme for _, _, p in qmodels["ptq4vit-base"].scale_set().points()} == {"uniform"}
    fq = qmodels["fqvit"].scale_set()
    assert fq["blocks.0.attn"]["probs"].scheme == "log2" and fq["blocks.0.attn"]["probs"].bits == 4
    for name in ("blocks.0.attn.qkv", "blocks.1.mlp.fc1"):
        assert fq[name]["input"].scheme == "ptf" and set(fq[name]["input"].extra["factor"]) <= set(PTF_FACTORS)
    assert fq["blocks.0.attn.proj"]["weight"].granularity == "per_channel"
    assert qmodels["fqvit-nolis"].scale_set()["blocks.0.attn"]["probs"].scheme == "uniform"
    assert qmodels["fqvit-noptf"].scale_set()["blocks.0.attn.qkv"]["input"].scheme == "uniform"
    repq = qmodels["repqvit"].scale_set()
    assert repq["blocks.0.attn"]["probs"].scheme == "log_sqrt2"
    point = repq["blocks.0.mlp.fc1"]["input"]
    assert point.granularity == "per_tensor" and point.extra[REPARAM_R].shape == (96,)


def test_repqvit_keeps_the_fp_model(calibrated):
    qmodels, x = calibrated
    with torch.no_grad(), qmodels["repqvit"].full_precision():
        torch.testing.assert_close(qmodels["repqvit"](x), small_vit()(x), atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", PEERS)
def test_scale_file_reproduces_the_model_bit_for_bit(tmp_path, calibrated, name):
    qmodels, x = calibrated
    qmodel = qmodels[name]
    record = RunRecord(model_name="small-vit", model_source="random-init", weights_sha256="00" * 32,
                       quant=qmodel.config, calibration={}, scales=qmodel.scale_set())
    loaded = load_run(save_run(tmp_path / f"{name}.h5", record))
    assert loaded.scales.equals(qmodel.scale_set())
    fresh = QuantizedModel(small_vit(), qmodel.config)
    apply_run(loaded, fresh, "small-vit")
    apply_run(loaded, fresh, "small-vit")                        # loading twice must not compound
    with torch.no_grad():
        assert torch.equal(fresh(x), qmodel(x))


def test_loading_another_scheme_undoes_the_reparameterisation(calibrated):
    qmodels, x = calibrated
    qmodel = QuantizedModel(small_vit(), QuantConfig("repqvit", 6, 6))
    qmodel.load_scale_set(qmodels["repqvit"].scale_set())
    qmodel.load_scale_set(qmodels["fqvit"].scale_set())
    with torch.no_grad():
        assert torch.equal(qmodel(x), qmodels["fqvit"](x))


@pytest.mark.parametrize("name", ["fqvit", "repqvit", pytest.param("ptq4vit-base", marks=pytest.mark.slow),
                                  pytest.param("ptq4vit", marks=pytest.mark.slow)])
def test_deit_tiny_calibrates_and_evaluates(name):
    """deit_tiny's layers at their real sizes (224 px, 192 wide, 3 heads); four of its twelve blocks,
    as every block is alike and PTQ4ViT's calibration searches each Linear for seconds."""
    torch.manual_seed(0)
    model = timm.create_model("deit_tiny_patch16_224", pretrained=False, depth=4).eval()
    x = images(n=2, size=224, channels=3)
    with torch.no_grad():
        reference = model(x)
        qmodel = quantize(model, QuantConfig(name, 8, 8), [x])
        logits = qmodel(x)
    assert logits.shape == (2, 1000) and torch.isfinite(logits).all()
    assert torch.nn.functional.cosine_similarity(logits, reference).min() > 0.9
