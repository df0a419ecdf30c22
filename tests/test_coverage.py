"""Coverage (engine/quant/coverage.py): every matmul-like op is measured, and a float one is refused by name."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import timm
import torch
from timm.layers import Attention
from torch import nn

import engine.data.synthetic
from engine.cli import main
from engine.commands.coverage import DOC_MODELS, TABLE_HEADER, table_row
from engine.models import _state_sha256, create_model
from engine.quant import QuantConfig, QuantizedModel, UncoveredMatmul, coverage_report, quantize
from engine.quant.coverage import FLOAT, IMAGE, QUANTIZED, WEIGHT_QUANTIZED
from engine.quant.quantizer import FakeQuantizer
from engine.scalefile import load_run

DOCS = Path(__file__).resolve().parent.parent / "docs" / "coverage.md"
HIERA_SMALL = {"stages": (1, 1, 1, 1)}   # Hiera: an attention no adapter rewrites (yet)
HIERA_FLOAT = ("blocks.*.attn",)
HIERA_ATTN = {f"blocks.{i}.attn" for i in range(4)}


def timm_model(name: str, **kwargs) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, **kwargs).eval()
    return model, torch.randn(2, *model.pretrained_cfg["input_size"])


def report_of(model: nn.Module, images: torch.Tensor, **config):
    return coverage_report(QuantizedModel(model, QuantConfig(**config)), images)


def test_attentions_without_an_adapter_are_found_and_named():
    report = report_of(*timm_model("hiera_tiny_224", **HIERA_SMALL))
    assert {(r.module, r.module_type) for r in report.uncovered} == {(m, "hiera.MaskUnitAttention") for m in HIERA_ATTN}
    unit = [r for r in report.uncovered if r.module == "blocks.0.attn"]   # mask-unit attention, written out
    assert [(r.op, r.count, r.operands) for r in unit] == [("bmm", 2, (FLOAT, FLOAT))]  # q·kᵀ and attn·v
    fused = [r for r in report.uncovered if r.module == "blocks.3.attn"]  # global attention: the fused kernel
    assert [(r.op, r.operands) for r in fused] == [("scaled_dot_product_attention", (FLOAT, FLOAT, FLOAT))]
    assert not report.fully_quantized and "blocks.*.attn (hiera.MaskUnitAttention) x4" in report.summary()
    assert all(r.covered for r in report.rows if not r.module.endswith(".attn"))   # the Linears around them are


def test_quantize_refuses_the_uncovered_model_and_allow_float_lets_it_through():
    model, images = timm_model("hiera_tiny_224", **HIERA_SMALL)
    with pytest.raises(UncoveredMatmul, match=r"^blocks\.0\.attn \(hiera\.MaskUnitAttention\) runs bmm") as info:
        quantize(model, QuantConfig(), [images])
    assert isinstance(info.value, ValueError)   # the CLI's USER_ERRORS: one 'error:' line, exit 2
    model, images = timm_model("hiera_tiny_224", **HIERA_SMALL)
    qmodel = quantize(model, QuantConfig(allow_float=HIERA_FLOAT), [images])
    report = coverage_report(qmodel, images)
    assert report.fully_quantized and {r.module for r in report.allowed} == HIERA_ATTN
    assert all(r.status == "allowed float" for r in report.allowed)


class GatedAttention(Attention):
    """A user's Attention subclass: its own forward, which quantize_attention cannot rewrite."""

    def forward(self, x, attn_mask=None, is_causal=False):
        return super().forward(x) * 0.5


class CrossAttention(nn.Module):
    """An attention of some other library (not a timm Attention at all)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, 2, batch_first=True)

    def forward(self, x, attn_mask=None, is_causal=False):
        return self.attn(x, x, x, need_weights=False)[0]


@pytest.mark.parametrize("make_attention", [lambda: GatedAttention(32, num_heads=2, qkv_bias=True),
                                            lambda: CrossAttention(32)])
def test_an_attention_of_no_adapter_is_never_left_float_silently(make_attention):
    torch.manual_seed(0)
    model = timm.models.vision_transformer.VisionTransformer(
        img_size=16, patch_size=4, in_chans=1, embed_dim=32, depth=2, num_heads=2, num_classes=10).eval()
    model.blocks[1].attn = make_attention()
    with pytest.raises(UncoveredMatmul, match=r"^blocks\.1\.attn"):
        quantize(model, QuantConfig(), [torch.randn(2, 1, 16, 16)])


@pytest.mark.parametrize("name,kwargs", [("deit_tiny_patch16_224", {"depth": 2}),
                                         ("swin_tiny_patch4_window7_224", {"depths": (2, 2, 2, 2)})])
def test_supported_architectures_are_fully_covered(name, kwargs):
    report = report_of(*timm_model(name, **kwargs))
    assert report.fully_quantized and not report.allowed and report.summary().startswith("fully quantized")
    assert report.rows[0].module == "patch_embed.proj" and report.rows[0].operands == (IMAGE, WEIGHT_QUANTIZED)
    attention = [r for r in report.rows if r.op == "bmm"]   # q·kᵀ and probs·v, written out by the adapters
    assert attention and all(r.operands == (QUANTIZED, QUANTIZED) and r.count == 2 for r in attention)


def test_demo_model_is_fully_covered():
    model, info = create_model()
    report = report_of(model, torch.randn(2, *info.input_size))
    assert report.fully_quantized and report.n_ops == 6 * 6 + 2   # 6 blocks x (4 Linears + 2 matmuls), conv, head


def test_pit_pooling_convs_are_quantized_and_the_image_conv_takes_the_image():
    model, images = timm_model("pit_ti_224")
    qmodel = QuantizedModel(model, QuantConfig())
    points = set(qmodel.quantizers())
    for conv in ("transformers.1.pool.conv", "transformers.2.pool.conv"):
        assert {(conv, "weight"), (conv, "input")} <= points
    assert ("patch_embed.conv", "weight") in points and ("patch_embed.conv", "input") not in points
    rows = {r.module: r for r in coverage_report(qmodel, images).rows if r.op == "convolution"}
    assert rows["patch_embed.conv"].operands == (IMAGE, WEIGHT_QUANTIZED)
    assert rows["transformers.1.pool.conv"].operands == (QUANTIZED, WEIGHT_QUANTIZED)


def test_hybrid_stem_convs_keep_their_forward_and_are_quantized():
    """vit_tiny_r_s16_p8_224: a weight-standardised, same-padded stem conv (timm StdConv2dSame)."""
    model, images = timm_model("vit_tiny_r_s16_p8_224", depth=1)
    with torch.no_grad():
        reference = model(images)
    qmodel = QuantizedModel(model, QuantConfig())
    with torch.no_grad(), qmodel.full_precision():
        assert torch.allclose(qmodel(images), reference, atol=1e-5)
    report = coverage_report(qmodel, images)
    convs = {r.module: r.operands for r in report.rows if r.op == "convolution"}
    assert convs == {"patch_embed.backbone.conv": (IMAGE, WEIGHT_QUANTIZED),
                     "patch_embed.proj": (QUANTIZED, WEIGHT_QUANTIZED)}
    assert report.fully_quantized


class Probe(nn.Module):
    """A quantized tensor through value-preserving ops (still quantized) and through an add (float)."""

    def __init__(self, preserve: bool) -> None:
        super().__init__()
        self.a_quant, self.b_quant = FakeQuantizer(8, torch.device("cpu")), FakeQuantizer(8, torch.device("cpu"))
        self.preserve = preserve

    def forward(self, x):
        a, b = self.a_quant(x), self.b_quant(x)
        if self.preserve:
            a = (a.transpose(1, 2).contiguous().reshape(a.shape[0], -1, a.shape[1]) * 0.5)[:, :4].unbind(0)[0]
            b = torch.cat([b, b], dim=-1).flatten(1).view(b.shape[0], -1, b.shape[2])[0] / 3
            return a @ b[: a.shape[1]]
        return (a + 1) @ (b * torch.ones_like(b)).transpose(-2, -1)


@pytest.mark.parametrize("preserve", [True, False])
def test_views_and_python_scalars_keep_a_value_quantized_arithmetic_does_not(preserve):
    report = coverage_report(Probe(preserve), torch.randn(2, 4, 4))
    assert [r.operands for r in report.rows] == [(QUANTIZED, QUANTIZED) if preserve else (FLOAT, FLOAT)]


def test_weights_only_matmuls_are_constant_not_uncovered():
    class Table(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.table, self.lookup = nn.Parameter(torch.randn(3, 5)), nn.Parameter(torch.randn(5, 7))

        def forward(self, x):
            return x + (self.table @ self.lookup).sum()

    (row,) = coverage_report(Table(), torch.randn(2, 2)).rows
    assert row.status == "constant" and row.covered


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def small_timm(monkeypatch):
    """Every timm model built small (one block per stage of Hiera), and the synthetic test split 2 images: the
    CLI's whole path, a few seconds."""
    create = timm.create_model
    monkeypatch.setattr(timm, "create_model", lambda name, **kwargs: create(name, **{**kwargs, **HIERA_SMALL}))
    monkeypatch.setattr(engine.data.synthetic, "SYNTHETIC_TEST", 2)


HIERA_ARGS = ("--model", "hiera_tiny_224", "--data", "synthetic", "--quantizer", "minmax", "--bits", "W8A8",
             "--calib-size", "2", "--batch-size", "2", "--device", "cpu", "--quiet")


@pytest.mark.parametrize("command", ["quantize", "search"])
def test_quantize_and_search_refuse_with_one_error_line(tmp_path, capsys, small_timm, command):
    code, _, err = run_cli(capsys, command, *HIERA_ARGS, "--out", str(tmp_path / "run.h5"))
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("error: blocks.0.attn (hiera.MaskUnitAttention) runs bmm on FLOAT, FLOAT operands")
    assert "--allow-float" in err and not (tmp_path / "run.h5").exists()


def test_allow_float_is_recorded_in_the_run_file(tmp_path, capsys, small_timm):
    out = tmp_path / "run.h5"
    patterns = [arg for p in HIERA_FLOAT for arg in ("--allow-float", p)]
    code, stdout, _ = run_cli(capsys, "quantize", *HIERA_ARGS, *patterns, "--out", str(out), "--json")
    assert code == 0 and json.loads(stdout.splitlines()[-1])["allow_float"] == list(HIERA_FLOAT)
    assert load_run(out).quant.allow_float == HIERA_FLOAT
    code, stdout, _ = run_cli(capsys, "inspect", str(out), "--json")
    assert code == 0 and json.loads(stdout.splitlines()[-1])["allow_float"] == list(HIERA_FLOAT)


def test_coverage_command_prints_the_table_and_json(capsys):
    code, out, _ = run_cli(capsys, "coverage", "digits-vit")
    assert code == 0 and "blocks.0.attn.qkv" in out and out.rstrip().splitlines()[-1].startswith("summary: fully")
    code, out, _ = run_cli(capsys, "coverage", "digits-vit", "--json")
    result = json.loads(out.splitlines()[-1])
    assert result["fully_quantized"] and result["n_ops"] == 38 and result["rows"][0]["operands"] == [
        "input image", "weight quantized"]


def test_state_hash_handles_0_dim_tensors_of_any_dtype_and_keeps_earlier_hashes():
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))   # num_batches_tracked: a 0-dim int64 buffer
    model.register_buffer("gain", torch.tensor(0.5, dtype=torch.bfloat16))
    model.register_parameter("step", nn.Parameter(torch.tensor(2.0)))
    first = _state_sha256(model)
    with torch.no_grad():
        model.step.fill_(3.0)
    assert _state_sha256(model) != first

    plain = nn.Linear(3, 2)   # no 0-dim tensor: the hash is the one earlier releases computed
    digest = hashlib.sha256()
    for key, tensor in plain.state_dict().items():
        digest.update(f"{key}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    assert _state_sha256(plain) == digest.hexdigest()


DOC_SAMPLE = ("digits-vit", "digits-swin", "pit_ti_224", "levit_128s", "xcit_nano_12_p16_224")


def test_docs_coverage_table_is_in_sync():
    """docs/coverage.md lists every DOC_MODELS row; the cheap ones are regenerated and must match
    (after an adapter lands: ``python -m engine coverage --table docs/coverage.md``)."""
    text = DOCS.read_text()
    assert TABLE_HEADER in text
    rows = {line.split("|")[1].strip().strip("`"): line for line in text.splitlines() if line.startswith("| `")}
    assert list(rows) == list(DOC_MODELS)
    for name in DOC_SAMPLE:
        assert table_row(name) == rows[name]
