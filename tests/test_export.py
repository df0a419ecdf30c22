"""Export (engine/export): ONNX QDQ with the run's exact scales, parity in onnxruntime, AIMET encodings."""
from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from engine.cli import main
from engine.export.aimet import fp_model, write_aimet
from engine.export.onnx_qdq import ExportError
from engine.export.run import Exported, export_run
from engine.export.graph import MARKER_DOMAIN, MARKER_OP, TRACE_OPSET, trace_marked
from engine.export.onnx_qdq import SUB_BYTE_OPSET, qdq_model, read_points, read_widths
from engine.export.parity import cpu_session
from engine.pipeline import RunSpec, prepare
from engine.plan.file import BitPlan, load_plan, save_plan
from engine.quant import PER_CHANNEL, QuantConfig, QuantParams, ScaleSet
from engine.quant.schemes import get_scheme, uniform_affine
from engine.rebuild import rebuild_model
from engine.runrecord import RunRecord
from engine.scalefile import ScaleFileError, load_run, save_run
from helpers import make_image_folder, save_random_timm_model

ort = pytest.importorskip("onnxruntime")


def quantize(tmp: Path, quantizer: str, bits: str, *extra: str) -> Path:
    out = tmp / f"{quantizer}_{bits}.h5"
    assert main(["quantize", "--quantizer", quantizer, "--bits", bits, "--calib-size", "100", "--quiet",
                 "--out", str(out), *extra]) == 0
    return out


@pytest.fixture(scope="module")
def demo_runs(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("runs")
    return {"W8A8": quantize(tmp, "minmax", "W8A8"), "W4A3": quantize(tmp, "omse", "W4A3")}


def finish(events) -> Exported:
    *_, last = list(events)
    assert isinstance(last, Exported)
    return last


def assert_points_equal_run(model: onnx.ModelProto, scales: ScaleSet) -> None:
    """Every point's QuantizeLinear holds the run's scale and zero-point bit for bit, with its axis."""
    written = read_points(model)
    assert sorted(written) == sorted(f"{o}/{r}" for o, r, _ in scales.points())
    for owner, role, params in scales.points():
        scale, zero_point, axis = written[f"{owner}/{role}"]
        assert scale.dtype == np.float32 and scale.tobytes() == params.scale.tobytes(), (owner, role)
        assert np.array_equal(zero_point.astype(np.float32), params.zero_point), (owner, role)
        assert axis == (params.axis if params.granularity == PER_CHANNEL else None), (owner, role)


def test_demo_w8a8_exports_the_run_scales_bit_for_bit_with_parity(demo_runs, tmp_path):
    record = load_run(demo_runs["W8A8"])
    result = finish(export_run(record, tmp_path / "model.onnx"))
    model = onnx.load(tmp_path / "model.onnx")
    assert_points_equal_run(model, record.scales)
    assert result.n_quantize_nodes == record.scales.n_points() == 75
    assert model.opset_import[0].version == TRACE_OPSET          # 8-bit types only: no opset 21 needed
    assert not any(n.op_type in ("Clip", "Max", "Min") for n in model.graph.node)   # full-width: plain Q/DQ
    parity = result.parity
    assert parity is not None and parity.n == 4500
    assert parity.agreement >= 99.5 and abs(parity.onnx_top1 - parity.torch_top1) <= 0.1
    assert parity.max_logit_diff < 0.5


def demo_test_images(splits, n: int = 64) -> torch.Tensor:
    return torch.stack([splits.test[i][0] for i in range(n)])


def test_three_bit_activations_clip_before_uint8_and_int4_weights_stay_unclipped(demo_runs, tmp_path, digits_splits):
    record = load_run(demo_runs["W4A3"])
    result = finish(export_run(record, tmp_path / "w4a3.onnx", check=False))
    model = onnx.load(tmp_path / "w4a3.onnx")
    assert result.parity is None and model.opset_import[0].version == SUB_BYTE_OPSET
    assert_points_equal_run(model, record.scales)
    values = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    types = {init.name: init.data_type for init in model.graph.initializer}
    clips = {n.name.removesuffix("/Clip"): n for n in model.graph.node if n.op_type == "Clip"}
    for owner, role, params in record.scales.points():
        key = f"{owner}/{role}"
        if role == "weight":
            assert key not in clips and types[f"{key}/zero_point"] == TensorProto.UINT4   # exact in uint4's range
            continue
        assert types[f"{key}/zero_point"] == TensorProto.UINT8
        lo, hi = values[clips[key].input[1]], values[clips[key].input[2]]
        assert lo == params.scale * (0 - params.zero_point) and hi == params.scale * (7 - params.zero_point)
    images = demo_test_images(digits_splits)
    qmodel = rebuild_model(record)
    with torch.no_grad():
        expected = qmodel(images).numpy()
    got = cpu_session(tmp_path / "w4a3.onnx").run(None, {"images": images.numpy()})[0]
    assert np.array_equal(got.argmax(1), expected.argmax(1)) and np.abs(got - expected).max() < 0.5


def _one_point_model(params: QuantParams, shape: tuple[int, ...], weight: np.ndarray | None = None):
    """x -> marker -> y, or a weight initializer -> marker -> y (the shape trace_marked writes)."""
    source, role = ("w", "weight") if weight is not None else ("x", "input")
    node = helper.make_node(MARKER_OP, [source], ["y"], domain=MARKER_DOMAIN, point=f"p/{role}")
    inputs = [] if weight is not None else [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)]
    inits = [numpy_helper.from_array(weight, "w")] if weight is not None else []
    graph = helper.make_graph([node], "g", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
                              initializer=inits)
    marked = helper.make_model(graph, opset_imports=[helper.make_opsetid("", TRACE_OPSET),
                                                     helper.make_opsetid(MARKER_DOMAIN, 1)])
    scales = ScaleSet({"p": {role: params}})
    return qdq_model(marked, scales)


@pytest.mark.parametrize("role", ["input", "weight"])
@pytest.mark.parametrize("bits,signed", [(3, False), (3, True), (6, False), (8, False), (4, True), (2, True)])
def test_a_point_in_onnxruntime_equals_the_fake_quant_bit_for_bit(bits, signed, role):
    """Clip before the wider QuantizeLinear gives exactly the b-bit codes, outliers and ties included."""
    rng = np.random.default_rng(bits)
    qmin, qmax = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    scale, zero_point = np.float32(0.05), np.float32(0 if signed else 2)
    x = rng.normal(0, 1, (4, 64)).astype(np.float32)
    x[0, :8] = (np.arange(8) - 3.5) * scale             # exact ties: round half to even on both sides
    x[1, :2] = (-100.0, 100.0)                           # far outside the range: clamped
    params = QuantParams(scale, zero_point, bits, signed)
    model = _one_point_model(params, x.shape, x if role == "weight" else None)
    got = cpu_session_of(model).run(None, {} if role == "weight" else {"x": x})[0]
    expected = uniform_affine(torch.from_numpy(x), torch.tensor(scale), torch.tensor(zero_point), qmin, qmax, {})
    assert got.tobytes() == expected.numpy().tobytes()


def test_a_per_channel_weight_narrower_than_its_type_is_clamped_per_channel():
    rng = np.random.default_rng(0)
    weight = rng.normal(0, 1, (6, 5)).astype(np.float32)
    scale = np.linspace(0.05, 0.3, 6).astype(np.float32)
    params = QuantParams(scale, np.zeros(6, np.float32), 3, True, PER_CHANNEL, 0)
    model = _one_point_model(params, weight.shape, weight)
    assert [n.op_type for n in model.graph.node] == ["Max", "Min", "QuantizeLinear", "DequantizeLinear"]
    got = cpu_session_of(model).run(None, {})[0]
    expected = uniform_affine(torch.from_numpy(weight), torch.from_numpy(scale)[:, None], torch.zeros(6, 1), -4, 3, {})
    assert got.tobytes() == expected.numpy().tobytes()


def cpu_session_of(model: onnx.ModelProto):
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def test_a_quantizer_one_quantize_linear_cannot_express_is_refused_by_name(tmp_path, capsys):
    run = quantize(tmp_path, "fqvit", "W8A8")
    code = main(["export", str(run), "--out", str(tmp_path / "x.onnx"), "--quiet"])
    message = capsys.readouterr().err
    assert code == 2 and not (tmp_path / "x.onnx").exists()
    assert "blocks.0.attn/probs" in message and "'log2'" in message and "fqvit-nolis" in message


def test_the_suggested_fqvit_nolis_exports_ptf_exactly(tmp_path, digits_splits):
    """PTF (one step s, per-channel factors 2^k): x·(1/f) → Q/DQ(s, z) → ·f, the run's s and z as they are."""
    record = load_run(quantize(tmp_path, "fqvit-nolis", "W8A8"))
    finish(export_run(record, tmp_path / "nolis.onnx", check=False))
    model = onnx.load(tmp_path / "nolis.onnx")
    assert_points_equal_run(model, record.scales)
    params = record.scales.get_point("blocks.0.attn.qkv", "input")
    values = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    assert params.scheme == "ptf" and np.array_equal(values["blocks.0.attn.qkv/input/factor"], params.extra["factor"])
    images = demo_test_images(digits_splits)
    with torch.no_grad():
        expected = rebuild_model(record)(images).numpy()
    got = cpu_session(tmp_path / "nolis.onnx").run(None, {"images": images.numpy()})[0]
    assert np.array_equal(got.argmax(1), expected.argmax(1)) and np.abs(got - expected).max() < 0.5


def test_a_ptf_point_in_onnxruntime_equals_the_fake_quant_bit_for_bit():
    rng = np.random.default_rng(0)
    x = (rng.normal(0, 1, (32, 6)) * np.array([0.2, 1, 3, 8, 0.5, 30])).astype(np.float32)
    factor = np.array([1, 2, 4, 8, 1, 8], np.float32)
    params = QuantParams(np.float32(0.013), np.float32(100), 8, False, scheme="ptf", extra={"factor": factor})
    got = cpu_session_of(_one_point_model(params, x.shape)).run(None, {"x": x})[0]
    expected = get_scheme("ptf")(torch.from_numpy(x), torch.tensor(params.scale), torch.tensor(params.zero_point),
                                 0, 255, {"factor": torch.from_numpy(factor)})
    assert got.tobytes() == expected.numpy().tobytes()


def test_corrupt_and_foreign_run_files_give_the_loaders_errors(tmp_path, capsys, demo_runs):
    corrupt = tmp_path / "corrupt.h5"
    corrupt.write_bytes(demo_runs["W8A8"].read_bytes()[:2000])
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f.attrs["schema"] = "someone-else"
    for path in (corrupt, foreign):
        with pytest.raises(ScaleFileError) as loader:
            load_run(path)
        assert main(["export", str(path), "--out", str(tmp_path / "x.onnx"), "--quiet"]) == 2
        assert capsys.readouterr().err.strip() == f"error: {loader.value}"


def test_without_the_export_extra_the_command_names_it(tmp_path):
    """onnx missing: the CLI still starts (other commands work) and export says what to install."""
    code = ("import sys; sys.modules['onnx'] = None\n"
            "from engine.cli import main\n"
            f"sys.exit(main(['export', {str(tmp_path / 'run.h5')!r}, '--out', 'x.onnx']))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "export needs onnx: pip install 'cptv-studio[export]'" in done.stderr


def test_base_scales_need_a_search_run(demo_runs, tmp_path):
    with pytest.raises(ExportError, match="without --base"):
        finish(export_run(load_run(demo_runs["W8A8"]), tmp_path / "x.onnx", use_base=True))


@pytest.mark.parametrize("name", ["deit_tiny_patch16_224", pytest.param("swin_tiny_patch4_window7_224",
                                                                       marks=pytest.mark.slow)])
def test_timm_models_export_one_quantize_linear_per_point(tmp_path, name):
    weights = save_random_timm_model(name, tmp_path / f"{name}.safetensors", num_classes=3)
    data = make_image_folder(tmp_path / "images", n_classes=3, per_class=2)
    run = tmp_path / "run.h5"
    assert main(["quantize", "--model", name, "--weights", str(weights), "--data", str(data), "--calib-size", "2",
                 "--batch-size", "2", "--quantizer", "minmax", "--bits", "W8A8", "--device", "cpu", "--quiet",
                 "--out", str(run)]) == 0
    record = load_run(run)
    result = finish(export_run(record, tmp_path / "model.onnx", device="cpu"))
    model = onnx.load(tmp_path / "model.onnx")
    n_blocks = sum(1 for owner, role, _ in record.scales.points() if role == "probs")
    assert result.n_quantize_nodes == record.scales.n_points() == sum(n.op_type == "QuantizeLinear" for n in model.graph.node)
    assert sum(n.op_type == "Softmax" for n in model.graph.node) == n_blocks     # attention written out
    assert_points_equal_run(model, record.scales)
    assert result.parity is not None and result.parity.agreement == 100.0


def test_aimet_encodings_hold_the_run_scales_in_format_1_0_0(demo_runs, tmp_path):
    record = load_run(demo_runs["W8A8"])
    result = finish(export_run(record, tmp_path / "fp.onnx", fmt="aimet"))
    model = onnx.load(tmp_path / "fp.onnx")
    document = json.loads((tmp_path / "fp.encodings").read_text())
    assert document["version"] == "1.0.0"
    assert not any(n.op_type in ("QuantizeLinear", "Clip") or n.domain for n in model.graph.node)
    params = {e["name"]: e for e in document["param_encodings"]}
    activations = {e["name"]: e for e in document["activation_encodings"]}
    assert len(params) + len(activations) == record.scales.n_points()
    initializers = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    tensors = {out for node in model.graph.node for out in node.output}
    qkv = params["blocks.0.attn.qkv.weight"]
    point = record.scales.get_point("blocks.0.attn.qkv", "weight")
    assert qkv["enc_type"] == "PER_CHANNEL" and qkv["bw"] == 8 and qkv["is_sym"] is False
    assert np.array_equal(np.float32(qkv["scale"]), point.scale)
    assert qkv["offset"] == [-int(z) for z in point.zero_point]                    # AIMET's offset = −zero-point
    assert initializers["blocks.0.attn.qkv.weight"].shape == (96, 288)             # MatMul layout (in, out)
    assert all(name in tensors for name in activations)
    assert all(e["enc_type"] == "PER_TENSOR" and len(e["scale"]) == 1 for e in activations.values())
    assert result.parity is not None and result.parity.reference == "FP" and result.parity.agreement == 100.0


def test_aimet_refuses_three_bit_runs_with_its_reason(demo_runs, tmp_path):
    with pytest.raises(ExportError, match="AIMET validates bit-widths 4 to 32"):
        finish(export_run(load_run(demo_runs["W4A3"]), tmp_path / "fp.onnx", fmt="aimet", check=False))


def test_aimet_quantsim_reproduces_the_fake_quant_top1(demo_runs, tmp_path, digits_splits):
    """Only where aimet-onnx is installed (it is not part of the export extra: a large, Linux-only wheel)."""
    quantsim = pytest.importorskip("aimet_onnx.quantsim")
    record = load_run(demo_runs["W8A8"])
    finish(export_run(record, tmp_path / "fp.onnx", fmt="aimet", check=False))
    sim = quantsim.QuantizationSimModel(onnx.load(tmp_path / "fp.onnx"))
    # strict=False: AIMET's default config quantizes other tensors (every op output) and not some of ours
    # (Reshape outputs); loading enables exactly the encoded ones and disables the rest
    quantsim.load_encodings_to_sim(sim, str(tmp_path / "fp.encodings"), strict=False)
    images = demo_test_images(digits_splits, 256)
    with torch.no_grad():
        expected = rebuild_model(record)(images).numpy()
    got = sim.session.run(None, {"images": images.numpy()})[0]
    assert (got.argmax(1) == expected.argmax(1)).mean() >= 0.98


def test_onnx_latency_bench_times_both_exports_of_a_run(demo_runs, capsys):
    """``bench --onnx-latency``: a ratio per batch size from the same process (its value is a
    measurement, not a target; here only that both models ran and were timed)."""
    assert main(["bench", "--onnx-latency", str(demo_runs["W8A8"]), "--reps", "2", "--json", "--quiet"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [row["batch"] for row in result["latency"]] == [1, 32]
    for row in result["latency"]:
        assert row["qdq_ms"] > 0 and row["fp32_ms"] > 0
        assert row["qdq_over_fp32"] == pytest.approx(row["qdq_ms"] / row["fp32_ms"])


# ---------------------------------------------------------------- mixed precision: each point at its own width

# Off the W8A8 base: 4-bit weights (uint4), 6-bit weights and 4/6-bit activations (clamped in uint8); all
# at least 4 bits, so AIMET holds the run too.
MIXED = {"patch_embed.proj/weight": 6, "blocks.0.attn.qkv/weight": 4, "blocks.0.attn.qkv/input": 6,
         "blocks.0.attn/probs": 4, "blocks.2.mlp.fc1/weight": 4, "blocks.3.attn/k": 6, "blocks.5.mlp.fc2/input": 4,
         "head/weight": 6}


@pytest.fixture(scope="module")
def mixed_export(tmp_path_factory) -> SimpleNamespace:
    """The demo calibrated (32 images) at the MIXED plan, its run file read back, and that run's scales
    written as ONNX QDQ and as AIMET encodings from one trace."""
    folder = tmp_path_factory.mktemp("mixed")
    prepared = prepare(RunSpec(quant=QuantConfig("minmax", 8, 8, plan=MIXED), calib_size=32, batch_size=32))
    info = prepared.info
    record = load_run(save_run(folder / "mixed.h5", RunRecord(
        model_name=info.name, model_source=info.source, weights_sha256=info.weights_sha256,
        quant=prepared.qmodel.config, calibration=prepared.calibration_meta(), scales=prepared.qmodel.scale_set())))
    marked = trace_marked(prepared.qmodel, torch.zeros((1, *record.calibration["input_size"])))
    onnx.save(qdq_model(marked, record.scales), folder / "mixed.onnx")
    write_aimet(marked, record.scales, folder / "fp.onnx")
    return SimpleNamespace(record=record, qmodel=prepared.qmodel, folder=folder, tensors=fp_model(marked)[1])


def planned_widths(record: RunRecord) -> dict[str, int]:
    """Every point's width as the run's plan gives it."""
    widths = {f"{owner}/{role}": record.quant.bits_of(owner, role) for owner, role, _ in record.scales.points()}
    assert all(widths[name] == bits for name, bits in MIXED.items()) and set(widths.values()) == {4, 6, 8}
    return widths


def test_a_mixed_plan_exports_each_point_at_its_own_width_with_parity(mixed_export, digits_splits):
    model = onnx.load(mixed_export.folder / "mixed.onnx")
    assert read_widths(model) == planned_widths(mixed_export.record)
    assert model.opset_import[0].version == SUB_BYTE_OPSET
    assert_points_equal_run(model, mixed_export.record.scales)
    types = {init.name: init.data_type for init in model.graph.initializer}
    assert types["blocks.0.attn.qkv/weight/zero_point"] == TensorProto.UINT4           # 4-bit weight: its own type
    assert types["blocks.0.attn/probs/zero_point"] == TensorProto.UINT8                # 4-bit activation: clamped
    images = demo_test_images(digits_splits, 256)
    with torch.no_grad():
        expected = mixed_export.qmodel(images).numpy()
    got = cpu_session(mixed_export.folder / "mixed.onnx").run(None, {"images": images.numpy()})[0]
    assert (got.argmax(1) == expected.argmax(1)).mean() >= 0.995 and np.abs(got - expected).max() < 0.5


def test_aimet_encodings_carry_each_points_own_bitwidth(mixed_export):
    document = json.loads((mixed_export.folder / "fp.encodings").read_text())
    bitwidths = {e["name"]: e["bw"] for e in document["param_encodings"] + document["activation_encodings"]}
    written = {key: bitwidths[tensor] for key, tensor in mixed_export.tensors.items()}
    assert written == planned_widths(mixed_export.record)


def test_a_uniform_plan_exports_exactly_as_no_plan(demo_runs, tmp_path):
    """The W8A8 run's plan (every point at 8 bits) is no plan: the same config, the same ONNX file byte for byte."""
    record = load_run(demo_runs["W8A8"])
    plan = load_plan(save_plan(tmp_path / "uniform.json", load_plan(demo_runs["W8A8"])))
    assert isinstance(plan, BitPlan) and len(plan.points) == record.scales.n_points()
    uniform = plan.quant_config()
    assert uniform == record.quant and not uniform.mixed
    finish(export_run(record, tmp_path / "before.onnx", check=False))
    finish(export_run(replace(record, quant=uniform), tmp_path / "planned.onnx", check=False))
    assert (tmp_path / "planned.onnx").read_bytes() == (tmp_path / "before.onnx").read_bytes()
