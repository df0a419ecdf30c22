"""The attention adapters (engine/quant/attention/), one family each on a tiny random-init instance: with the
quantizers off the wrapped model is timm's forward; the coverage probe finds no float matmul; the search's
segments (engine/search/segments.py) cut it into the blocks ``transformer_blocks`` names, whose sequential
run is the whole forward; and a one-pass search runs on it."""
from __future__ import annotations

from dataclasses import replace

import pytest
import timm
import torch
from torch import nn

from engine.data import Splits, TensorImages
from engine.models import ModelInfo
from engine.pipeline import Prepared, RunSpec
from engine.quant import QuantConfig, QuantizedModel, coverage_report, quantize
from engine.quant.attention import ATTENTION_ADAPTERS
from engine.quant.attention.core import ConstantLinear
from engine.quant.coverage import QUANTIZED
from engine.search.config import PRESETS
from engine.search.events import Finished
from engine.search.run import search_prepared
from engine.search.segments import UnsupportedModel, model_segments

# timm name -> kwargs of a tiny instance (a classifier head on every one: DINOv2, SigLIP and EVA-02 have none
# by default); the attention classes each one must contain, re-classed
FAMILIES = {
    "beit_base_patch16_224": ({"depth": 2, "img_size": 64, "embed_dim": 192}, {"beit.Attention"}),
    "beitv2_base_patch16_224": ({"depth": 2, "img_size": 64, "embed_dim": 192, "use_rel_pos_bias": False,
                                 "use_shared_rel_pos_bias": True}, {"beit.Attention"}),   # one bias, every block
    "eva02_tiny_patch14_224": ({"depth": 2, "img_size": 56}, {"eva.EvaAttention"}),
    "vit_relpos_small_patch16_224": ({"depth": 2, "img_size": 64}, {"vision_transformer_relpos.RelPosAttention"}),
    "vit_small_patch16_rope_224": ({"depth": 2, "img_size": 64}, {"attention.AttentionRope"}),
    "swinv2_tiny_window8_256": ({"depths": (1, 1, 1, 1), "img_size": 64}, {"swin_transformer_v2.WindowAttention"}),
    "cait_xxs24_224": ({"depth": 2, "depth_token_only": 1, "img_size": 64}, {"cait.TalkingHeadAttn", "cait.ClassAttn"}),
    "twins_svt_small": ({"depths": (2, 1, 1, 1), "img_size": 64},
                        {"twins.LocallyGroupedAttn", "twins.GlobalSubSampleAttn"}),
    "vit_small_patch14_reg4_dinov2": ({"depth": 2, "img_size": 56}, {"attention.Attention"}),
    "vit_base_patch16_siglip_224": ({"depth": 2, "img_size": 64, "embed_dim": 192},
                                    {"attention.Attention", "attention_pool.AttentionPoolLatent"}),
    "xcit_nano_12_p16_224": ({"depth": 2, "img_size": 64}, {"xcit.XCA", "cait.ClassAttn"}),
    "pit_ti_224": ({"depth": (1, 1, 1), "img_size": 64}, {"attention.Attention"}),   # timm's Attention; PiT's cut
}
CLASSES = 10


def tiny(name: str) -> tuple[nn.Module, torch.Tensor]:
    kwargs, _ = FAMILIES[name]
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, num_classes=CLASSES, **kwargs).eval()
    with torch.no_grad():   # timm starts position biases, q/v biases and layer scales at 0: make them count
        for key, p in model.named_parameters():
            p.add_((1.0 if "relative_position_bias_table" in key else 0.02) * torch.randn_like(p))
    size = kwargs["img_size"]
    return model, torch.randn((2, 3, size, size), generator=torch.Generator().manual_seed(1))


def adapted(model: nn.Module) -> dict[str, str]:
    """Module name -> ``module.Class`` of the timm class its adapter subclasses, for each adapted attention."""
    adapters = set(ATTENTION_ADAPTERS.values())
    return {name: f"{type(m).__bases__[-1].__module__.rpartition('.')[2]}.{type(m).__bases__[-1].__qualname__}"
            for name, m in model.named_modules() if type(m) in adapters}


def close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """Float tolerance, relative to the outputs' size (random heads start tiny: BEiT's are scaled by 1e-3)."""
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-5 * float(expected.abs().max()))


@pytest.mark.parametrize("name", FAMILIES)
def test_adapter_is_timms_forward_fully_covered_and_cut_into_its_blocks(name):
    model, images = tiny(name)
    with torch.no_grad():
        expected = model(images)
    qmodel = QuantizedModel(model, QuantConfig())
    attentions = adapted(qmodel.model)
    assert set(attentions.values()) == FAMILIES[name][1]

    report = coverage_report(qmodel, images)
    assert report.fully_quantized and not report.allowed, report.table()
    # q·kᵀ and probs·v of every adapted attention, written out (no fused kernel), on quantized operands
    matmuls = [(r.module, r.op, r.operands) for r in report.rows if r.module in attentions for _ in range(r.count)]
    assert sorted(matmuls) == sorted((m, "bmm", (QUANTIZED, QUANTIZED)) for m in attentions for _ in range(2))

    model_segments(qmodel.model)
    segments = model_segments(qmodel.model)   # binds what some blocks take besides the tokens, once
    assert all(len(b._forward_pre_hooks) <= 1 for b in segments.blocks)
    blocks = qmodel.blocks()
    assert [id(b) for _, b in blocks] == [id(b) for b in segments.blocks] and len(blocks) >= 2
    with torch.no_grad(), qmodel.full_precision():
        close(qmodel(images), expected)   # the model's own forward, bound blocks included
        x = segments.stem(images)
        for join, block in zip(segments.joins, segments.blocks):
            x = block(join(x))
        close(segments.head(x, False), expected)
        middle = len(blocks) // 2
        inputs = segments.block_inputs(images)
        close(segments.run_after(segments.blocks[middle](inputs[middle]), middle, False), expected)


def tiny_prepared(name: str) -> Prepared:
    """Two images per split, labelled by the FP model itself; minmax W8A8 calibrated on the first two."""
    model, images = tiny(name)
    with torch.no_grad():
        labels = model(images).argmax(-1)
    split = TensorImages(images, labels, torch.arange(len(images)))
    size = tuple(images.shape[1:])
    splits = Splits("synthetic", split, split, split, size, (0.0,) * 3, (1.0,) * 3, 2, 2,
                    tuple(str(c) for c in range(CLASSES)))
    # compile off: the same losses by design (search/compiled.py), without minutes of kernel compilation here
    spec = RunSpec(model=name, quant=QuantConfig(), calib_size=2, batch_size=2, device="cpu", compile="off")
    info = ModelInfo(name, "random-init", "0" * 64, size, (0.0,) * 3, (1.0,) * 3, CLASSES)
    return Prepared(spec, info, splits, torch.device("cpu"), quantize(model, spec.quant, [images]), [images], 0.0)


@pytest.mark.parametrize("name", FAMILIES)
def test_one_pass_search_runs(name):
    prepared = tiny_prepared(name)
    config = replace(PRESETS["default"], passes=1, cycles=1, children=2, joint_steps=0)
    finished = [e for e in search_prepared(prepared, config) if isinstance(e, Finished)]
    run = finished[0].run
    assert sorted(run.history.block_index) == list(range(len(prepared.qmodel.blocks())))   # each block once


def test_a_model_the_search_cannot_cut_is_refused_as_a_user_error():
    model = timm.create_model("levit_128s", pretrained=False, depth=(1, 1, 1)).eval()
    with pytest.raises(UnsupportedModel, match="the search supports timm .* not Levit") as info:
        model_segments(model)
    assert isinstance(info.value, ValueError)   # the CLI's USER_ERRORS: one 'error:' line, exit 2


@pytest.mark.parametrize("name,mlp", [("swinv2_tiny_window8_256", "layers.0.blocks.0.attn.cpb_mlp"),
                                      ("vit_relpos_small_patch16_224", "blocks.0.attn.rel_pos.mlp")])
def test_position_bias_mlps_of_constant_coordinates_stay_float(name, mlp):
    model, images = tiny(name)
    qmodel = QuantizedModel(model, QuantConfig())
    linears = [n for n, m in qmodel.model.get_submodule(mlp).named_modules() if isinstance(m, nn.Linear)]
    assert linears and all(type(qmodel.model.get_submodule(f"{mlp}.{n}")) is ConstantLinear for n in linears)
    assert not any(owner.startswith(mlp) for owner, _ in qmodel.quantizers())   # nothing to calibrate or search
    rows = [r for r in coverage_report(qmodel, images).rows if r.module.startswith(mlp)]
    assert len(rows) == len(linears) and all(r.status == "constant" for r in rows)
