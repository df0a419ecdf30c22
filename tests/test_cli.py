"""The headless CLI end to end: quantize / eval / inspect on the demo and on real timm architectures."""
import hashlib
import json

import pytest
import timm

from engine.cli import main
from engine.scalefile import load_run
from helpers import expected_points, make_image_folder, other_demo_weights, save_random_timm_model


def run_cli(capsys, *argv) -> tuple[int, dict | None, str]:
    code = main([*argv])
    out, err = capsys.readouterr()
    lines = out.strip().splitlines()
    return code, (json.loads(lines[-1]) if code == 0 and "--json" in argv else None), err


def test_demo_quantize_eval_inspect(tmp_path, capsys):
    out = tmp_path / "w8a8.h5"
    code, result, _ = run_cli(capsys, "quantize", "--quantizer", "minmax", "--bits", "W8A8", "--out", str(out),
                              "--json", "--quiet")
    assert code == 0 and result["n_test"] >= 4000 and result["n_calib"] == 1000
    assert result["fp_top1"] >= 97.0
    assert result["fp_top1"] - result["quant_top1"] <= 0.5  # W8A8 minmax is near lossless
    code, evaluated, _ = run_cli(capsys, "eval", "--scales", str(out), "--json", "--quiet")
    assert code == 0 and evaluated["quant_top1"] == result["quant_top1"]  # same scales, same answer
    code, inspected, _ = run_cli(capsys, "inspect", str(out), "--json")
    assert code == 0 and inspected["model_name"] == "digits-vit" and inspected["bits"] == "W8A8"
    assert {row["kind"] for row in inspected["layers"]} == {"weight", "input", "q", "k", "v", "probs"}


@pytest.mark.parametrize("name", ["deit_tiny_patch16_224", "swin_tiny_patch4_window7_224"])
def test_real_architecture_quantizes_every_point_from_a_local_folder(tmp_path, capsys, name):
    weights = save_random_timm_model(name, tmp_path / f"{name}.safetensors", num_classes=3)
    data = make_image_folder(tmp_path / "images", n_classes=3, per_class=3, corrupt=1)
    out = tmp_path / "run.h5"
    code, result, err = run_cli(capsys, "quantize", "--model", name, "--weights", str(weights), "--data", str(data),
                                "--quantizer", "omse", "--bits", "W4A8", "--calib-size", "4", "--batch-size", "4",
                                "--device", "cpu", "--out", str(out), "--json")
    assert code == 0, err
    assert result["n_test"] == 9 and result["n_calib"] == 4  # the corrupt val image is skipped, not fatal
    code, inspected, _ = run_cli(capsys, "inspect", str(out), "--json")
    counts = {}
    for row in inspected["layers"]:
        counts[row["kind"]] = counts.get(row["kind"], 0) + 1
    assert counts == expected_points(timm.create_model(name, num_classes=3))


@pytest.mark.parametrize("argv,message", [
    (["eval", "--model", "vit_nonexistent_model", "--quantizer", "minmax", "--bits", "W8A8"], "vit_nonexistent_model"),
    (["eval", "--quantizer", "minmax", "--bits", "W8A8", "--data", "/no/such/folder"], "/no/such/folder"),
    (["eval", "--quantizer", "minmax", "--bits", "W9"], "W4A8"),
    (["eval", "--scales", "/no/such/file.h5"], "not found"),
    (["eval", "--weights", "/no/such/weights.safetensors", "--quantizer", "minmax", "--bits", "W8A8"], "weights"),
])
def test_bad_input_is_one_clear_line(capsys, argv, message):
    code, _, err = run_cli(capsys, *argv)
    assert code == 2
    assert err.strip().startswith("error:") and message in err and "Traceback" not in err


def test_scale_file_of_another_model_is_refused(tmp_path, capsys):
    weights = save_random_timm_model("deit_tiny_patch16_224", tmp_path / "deit.safetensors", num_classes=3)
    data = make_image_folder(tmp_path / "images", n_classes=3, per_class=2)
    out = tmp_path / "deit.h5"
    assert run_cli(capsys, "quantize", "--model", "deit_tiny_patch16_224", "--weights", str(weights), "--data", str(data),
                   "--quantizer", "minmax", "--bits", "W8A8", "--calib-size", "2", "--out", str(out), "--quiet")[0] == 0
    code, _, err = run_cli(capsys, "eval", "--scales", str(out))  # default model: digits-vit
    assert code == 2 and "deit_tiny_patch16_224" in err and "digits-vit" in err


def test_eval_refuses_a_run_made_with_other_weights(tmp_path, capsys):
    out = tmp_path / "run.h5"
    assert run_cli(capsys, "quantize", "--quantizer", "minmax", "--bits", "W8A8", "--calib-size", "100",
                   "--out", str(out), "--quiet")[0] == 0
    other = other_demo_weights(tmp_path / "other.safetensors")
    code, _, err = run_cli(capsys, "eval", "--scales", str(out), "--weights", str(other))
    made_with, loaded = load_run(out).weights_sha256, hashlib.sha256(other.read_bytes()).hexdigest()
    assert code == 2 and err.startswith("error:") and "Traceback" not in err
    assert f"made with weights sha256 {made_with[:12]}" in err and f"weights are sha256 {loaded[:12]}" in err
    assert f"file:{other.resolve()}" in err
