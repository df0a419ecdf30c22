"""The CLI's contract for bad input: exit code 2, one ``error:`` line naming the flag or path (and with
``--json`` the same message as ``{"error", "exit"}`` on the last stdout line), before any model is
built: the functions that load a model, its data or calibrate are replaced by ones that fail the test.
A closed pipe ends quietly; ``--help`` shows the defaults of the search flags from the presets."""
from __future__ import annotations

import importlib
import json
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import engine
from engine.cli import build_parser, main
from engine.models import DEMO_WEIGHTS, file_sha256
from engine.pipeline import RunSpec
from engine.plan.file import BitPlan, save_plan
from engine.provenance import package_version
from engine.quant import QuantConfig
from engine.runrecord import spec_values
from engine.search.checkpoint import SearchState, save_checkpoint
from engine.search.config import PRESETS
from engine.search.identity import search_run_identity

ROOT = Path(__file__).resolve().parents[1]
SEARCH = ["search", "--quantizer", "minmax", "--bits", "W4A8"]
QUANTIZE = ["quantize", "--quantizer", "minmax", "--bits", "W4A8"]
# The work no bad input may reach: building a model, reading its data, calibrating.
WORK = (("engine.models", "create_model"), ("engine.models", "build_digits_vit"), ("engine.data", "load_splits"),
        ("engine.pipeline", "prepare"), ("engine.pipeline", "load_model_and_data"),
        ("engine.quant.registry", "quantize"))

# (argv, expected words in the error line); {file}: a regular file, {dir}: a folder, {text}: a text file,
# {ckpt}: the checkpoint of a demo search (minmax W4A8, seed 0), {out}: a writable run file.
CASES = [
    (["quantize", "--model", "resnet18", "--quantizer", "minmax", "--bits", "W4A8", "--out", "{out}"],
     ["--model", "resnet18 is not a Vision Transformer", "ResNet has no transformer blocks"]),
    ([*QUANTIZE, "--model", "vit_nonexistent_model", "--out", "{out}"], ["--model", "unknown model"]),
    ([*QUANTIZE, "--attn-bits", "99", "--out", "{out}"], ["--attn-bits", "from 2 to 16", "'99'"]),
    ([*QUANTIZE, "--attn-bits", "1", "--out", "{out}"], ["--attn-bits", "from 2 to 16"]),
    ([*QUANTIZE, "--seed", "-1", "--out", "{out}"], ["--seed", "from 0 to 4294967295", "'-1'"]),
    ([*QUANTIZE, "--batch-size", "0", "--out", "{out}"], ["--batch-size", "at least 1", "'0'"]),
    ([*QUANTIZE, "--calib-size", "0", "--out", "{out}"], ["--calib-size", "at least 1"]),
    ([*QUANTIZE, "--calib-size", "many", "--out", "{out}"], ["--calib-size", "'many'"]),
    (["quantize", "--quantizer", "minmax", "--bits", "W9", "--out", "{out}"], ["--bits", "W4A8"]),
    (["quantize", "--quantizer", "minmax", "--bits", "W4A99", "--out", "{out}"], ["--bits", "activations 2-16"]),
    (["quantize", "--quantizer", "nope", "--bits", "W4A8", "--out", "{out}"], ["--quantizer", "invalid choice"]),
    ([*QUANTIZE, "--device", "nonsense", "--out", "{out}"], ["--device", "unknown device"]),
    ([*QUANTIZE, "--weights", "/no/such/weights.safetensors", "--out", "{out}"], ["--weights", "file not found"]),
    ([*QUANTIZE, "--data", "/no/such/folder", "--out", "{out}"], ["--data", "/no/such/folder"]),
    (QUANTIZE, ["--out", "required"]),
    ([*QUANTIZE, "--out", "{file}/out.h5"], ["--out", "{file}/out.h5", "{file} is a file, not a folder"]),
    ([*QUANTIZE, "--out", "{dir}"], ["--out", "{dir} is a folder"]),
    ([*QUANTIZE, "--bogus", "--out", "{out}"], ["unrecognized arguments: --bogus"]),
    (["export", "{text}", "--out", "{file}/model.onnx"], ["--out", "{file}/model.onnx"]),
    (["export", "{text}", "--out", "{dir}"], ["--out", "{dir} is a folder"]),
    (["export", "/no/such/run.h5", "--out", "{out}"], ["/no/such/run.h5", "not found"]),
    ([*SEARCH, "--out", "{file}/run.h5"], ["--out", "{file}/run.h5"]),
    ([*SEARCH, "--out", "{out}", "--checkpoint", "{file}/run.ckpt"], ["--checkpoint", "{file}/run.ckpt"]),
    (["search", "--resume", "/no/such/run.ckpt", "--out", "{out}"], ["--resume", "file not found: /no/such/run.ckpt"]),
    (["search", "--resume", "{text}", "--out", "{out}"], ["cannot read search checkpoint {text}"]),
    (["search", "--resume", "{ckpt}", "--seed", "1", "--out", "{out}"], ["{ckpt}", "belongs to another run", "seed"]),
    (["search", "--out", "{out}"], ["--quantizer and --bits"]),
    (["quantize", "--bits", "W4A8", "--out", "{out}"], ["quantize needs --quantizer and --bits, or --plan"]),
    ([*SEARCH, "--passes", "0", "--out", "{out}"], ["--passes", "at least 1"]),
    ([*SEARCH, "--children", "0", "--out", "{out}"], ["--children", "at least 1"]),
    ([*SEARCH, "--population", "-3", "--out", "{out}"], ["--population", "at least 1"]),
    ([*SEARCH, "--budget", "1", "--out", "{out}"], ["--budget", "at least 2"]),
    ([*SEARCH, "--temperature", "0", "--out", "{out}"], ["--temperature", "above 0"]),
    ([*SEARCH, "--mutation-range", "nan", "--out", "{out}"], ["--mutation-range", "'nan'"]),
    ([*SEARCH, "--search-images", "0", "--out", "{out}"], ["--search-images", "at least 1"]),
    ([*SEARCH, "--mutation", "absolute", "--out", "{out}"], ["mutation 'absolute'", "guided"]),
    (["diagnose", "--quantizer", "minmax", "--bits", "W4A8", "--out", "{file}/d.h5"], ["--out", "{file}/d.h5"]),
    (["diagnose", "--quantizer", "minmax", "--bits", "W4A8", "--to", "99"], ["--to", "from 2 to 16"]),
    (["diagnose", "--quantizer", "minmax", "--bits", "W4A8", "--raise", "0,2"], ["--raise", "'0,2'"]),
    (["diagnose", "--quantizer", "minmax", "--bits", "W4A8", "--draws", "0"], ["--draws", "at least 1"]),
    (["diagnose", "/no/such/run.h5"], ["run_file", "file not found"]),
    (["sweep", "--quantizers", "minmax", "--bits", "W4A8", "--out-dir", "{file}/ws"], ["--out-dir", "{file}/ws"]),
    (["sweep", "--quantizers", "minmax", "--bits", "W4A8", "--out-dir", "{file}"],
     ["--out-dir", "{file} is a file, not a folder"]),
    (["sweep", "--quantizers", "minmax", "--bits", "W4A8", "--seeds", "0,-1", "--out-dir", "{dir}"],
     ["--seeds", "'-1'"]),
    (["sweep", "--quantizers", "minmax,nope", "--bits", "W4A8", "--out-dir", "{dir}"], ["--quantizers", "'nope'"]),
    (["sweep", "--quantizers", "minmax", "--bits", "W4A8,W1A1", "--out-dir", "{dir}"], ["--bits", "'W1A1'"]),
    (["sweep", "--quantizers", "minmax", "--bits", "W4A8", "--cpus-per-run", "0", "--out-dir", "{dir}"],
     ["cpus per run must be positive"]),
    (["make-folder", "{file}/folder"], ["argument out", "{file}/folder", "is a file"]),
    (["make-folder", "{dir}/f", "--classes", "0"], ["--classes", "at least 1"]),
    (["train-demo", "--out", "{file}/w.safetensors"], ["--out", "{file}/w.safetensors"]),
    (["train-demo", "--out", "{dir}"], ["--out", "is a folder"]),
    (["bench", "--candidates", "0"], ["--candidates", "at least 1"]),
    (["bench", "--memory", "--calib-sizes", "256,64"], ["--calib-sizes", "'256,64'"]),
    (["inspect", "/no/such/run.h5"], ["file", "file not found: /no/such/run.h5"]),
    (["inspect", "{text}"], ["{text}"]),
    (["eval", "--scales", "/no/such/run.h5"], ["--scales", "file not found"]),
    (["eval", "--quantizer", "minmax", "--bits", "W4A8", "--split", "train"], ["--split", "invalid choice"]),
    (["compare", "/no/such/a.h5"], ["files", "file not found"]),
    (["compare", "--dir", "{file}"], ["--dir", "is a file"]),
    (["plan", "--budget", "W4A3", "--out", "{file}/plan.json"], ["--out", "{file}/plan.json"]),
    (["plan", "--out", "{out}"], ["--budget WxAy", "--mean-w-bits"]),
    (["plan", "--budget", "W4", "--out", "{out}"], ["--budget", "'W4'"]),
    (["plan", "--budget", "W4A99", "--out", "{out}"], ["--budget", "2 to 16"]),
    (["plan", "--budget", "W9A3", "--out", "{out}"], ["--budget", "--mean-w-bits 9", "--bits-set"]),
    (["plan", "--budget", "W4A3", "--bits-set", "3,4", "--mean-a-bits", "2.5", "--out", "{out}"],
     ["--mean-a-bits 2.5", "--bits-set 3,4"]),
    (["plan", "--mean-w-bits", "1", "--mean-a-bits", "3", "--out", "{out}"], ["--mean-w-bits", "'1'"]),
    (["plan", "--budget", "W4A3", "--bits-set", "1,4", "--out", "{out}"], ["--bits-set", "'1,4'"]),
    (["plan", "--budget", "W4A3", "--bits-set", "four", "--out", "{out}"], ["--bits-set", "'four'"]),
    (["plan", "--budget", "W4A3", "--front-points", "-1", "--out", "{out}"], ["--front-points", "at least 0"]),
    (["plan", "--budget", "W4A3", "--random-draws", "x", "--out", "{out}"], ["--random-draws", "'x'"]),
    (["plan", "--budget", "W4A3", "--csv", "{dir}", "--out", "{out}"], ["--csv", "{dir} is a folder"]),
    (["plan", "--budget", "W4A3", "--run-out", "{file}/r.h5", "--out", "{out}"], ["--run-out", "{file}/r.h5"]),
    (["search", "--plan", "/no/such/plan.json", "--out", "{out}"], ["--plan", "file not found"]),
    (["search", "--plan", "{text}", "--out", "{out}"], ["--plan", "{text}", "is not JSON"]),
    (["search", "--plan", "{plan}", "--model", "vit_tiny_patch16_224", "--out", "{out}"],
     ["--plan is a plan for digits-vit", "--model vit_tiny_patch16_224"]),
    (["sweep", "--plans", "{plan},{text}", "--out-dir", "{out}"], ["--plans", "{text}", "is not JSON"]),
    (["sweep", "--plans", "{plan}", "--model", "vit_tiny_patch16_224", "--out-dir", "{out}"],
     ["is a plan for digits-vit, not for vit_tiny_patch16_224"]),
    (["sweep", "--plans", "uniform,{plan}", "--out-dir", "{out}"], ["at least one value of quantizers"]),
    (["sweep", "--bits", "W4A8", "--out-dir", "{out}"], ["sweep needs --quantizers and --bits, or --plans"]),
    (["quantize", "--quantizer", "minmax", "--bits", "W4A8", "--plan", "{dir}", "--out", "{out}"],
     ["--plan", "is a folder"]),
    (["eval", "--plan", "{text}"], ["--plan", "is not JSON"]),
    (["diagnose", "{ckpt}", "--plan", "{plan}"], ["run file or --quantizer and --bits (or --plan)"]),
    (["quantise"], ["invalid choice: 'quantise'"]),
    ([], ["required: COMMAND"]),
]


@pytest.fixture
def no_work(monkeypatch):
    """Every alias of the functions in WORK, in every engine module, fails the test when called. Every
    module is imported first: one first imported under the patch would keep the tripwire after the test."""
    for info in pkgutil.walk_packages(engine.__path__, "engine."):
        if not info.name.endswith("__main__"):
            importlib.import_module(info.name)
    for module_name, name in WORK:
        original = getattr(importlib.import_module(module_name), name)

        def tripped(*args, _what=f"{module_name}.{name}", **kwargs):
            raise AssertionError(f"{_what} was called: the bad input was not caught before the work")

        for module in list(sys.modules.values()):
            if getattr(module, "__name__", "").startswith("engine") and getattr(module, name, None) is original:
                monkeypatch.setattr(module, name, tripped)


def demo_checkpoint(path: Path) -> Path:
    """A checkpoint of the demo's guided search with minmax W4A8, seed 0 (its state is not read here)."""
    spec, config = RunSpec(quant=QuantConfig("minmax", 4, 8)), PRESETS["guided"]
    identity = search_run_identity(spec_values(spec), config.to_dict(), file_sha256(DEMO_WEIGHTS))
    state = SearchState(vectors=[np.ones(3)], rng_state={}, base_loss=1.0, heldout_fp_top1=90.0,
                        heldout_base_top1=80.0, current_loss=1.0)
    return save_checkpoint(path, state, identity, spec.to_dict(), config.to_dict())


@pytest.fixture(scope="module")
def places(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("contract")
    (root / "file.txt").write_text("a regular file\n")
    (root / "notes.txt").write_text("not a checkpoint, not a run file\n")
    (root / "folder").mkdir()
    return {"file": str(root / "file.txt"), "text": str(root / "notes.txt"), "dir": str(root / "folder"),
            "out": str(root / "out" / "run.h5"), "ckpt": str(demo_checkpoint(root / "demo.ckpt")),
            "plan": str(save_plan(root / "plan.json", BitPlan("digits-vit", "minmax", 4, 3,
                                                              (("blocks.0.attn/probs", 8),))))}


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
@pytest.mark.parametrize("argv,words", CASES, ids=[" ".join(argv)[:70] or "(no command)" for argv, _ in CASES])
def test_bad_input_fails_fast_in_one_line(argv, words, as_json, places, no_work, capsys):
    argv = [arg.format(**places) for arg in argv] + (["--json"] if as_json else [])
    code = main(argv)
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for word in words:
        assert word.format(**places) in lines[0]
    assert "Traceback" not in err
    assert not Path(places["out"]).parent.exists(), "a refused command created the output's folder"
    if as_json:
        assert json.loads(out.strip().splitlines()[-1]) == {"error": lines[0][len("error: "):], "exit": 2}


def test_the_table_is_what_the_issue_asked_for():
    """At least the issue's 31 bad inputs, and every command that takes input."""
    assert len(CASES) >= 31
    named = {argv[0] for argv, _ in CASES if argv}
    assert named >= {"quantize", "eval", "inspect", "train-demo", "search", "bench", "sweep", "compare",
                     "make-folder", "export", "diagnose", "plan"}


def test_calibration_beyond_the_digits_warns_with_the_numbers(caplog):
    from engine.cli import warn_calibration_size

    warn_calibration_size(None, 99999)
    assert "--calib-size 99999 is more than the 1097 distinct training images" in caplog.text
    assert "about 91 times" in caplog.text
    caplog.clear()
    warn_calibration_size(None, 1000)
    assert caplog.text == ""


def test_help_shows_the_search_defaults_of_every_preset():
    search = build_parser()._subparsers._group_actions[0].choices["search"]
    text = " ".join(search.format_help().split())
    for flag, values in (("--passes", "guided: 1, cptv-paper: 10, null: 1"), ("--cycles", "guided: 8, cptv-paper: 3"),
                         ("--seed", "(default: 0)"), ("--population", "15 in every preset")):
        assert flag in text and values in text
    bench = build_parser()._subparsers._group_actions[0].choices["bench"]
    assert "(default: 64,256)" in " ".join(bench.format_help().split())


def test_version(capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["--version"])
    assert stopped.value.code == 0 and capsys.readouterr().out.strip() == f"cptv-studio {package_version()}"


def test_a_closed_pipe_ends_quietly(tmp_path):
    """``python -m engine compare --dir D | head`` whose reader has gone: no traceback, exit 141."""
    process = subprocess.Popen([sys.executable, "-m", "engine", "compare", "--dir", str(tmp_path)], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    process.stdout.close()   # the reader leaves before the first line
    err = process.stderr.read().decode()
    assert process.wait(timeout=300) == 141 and err == ""
