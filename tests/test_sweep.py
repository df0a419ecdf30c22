"""Sweeps: the grid, resumability, and real (cut-down) searches on the built-in demo.

The searches are the real engine search (``search_prepared``) on a cut-down demo: 50 calibration,
50 held-out and 100 test images, one pass with 2 children per block step, so a run takes seconds.
"""
import io
import json
import logging
import shlex
import shutil
import sys
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import replace
from hashlib import sha256
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pytest
import torch

from engine.cli import main
from engine.models import create_model
from engine.runrecord import run_identity, spec_values
from engine.quant import QuantConfig
from engine.scalefile import load_run
from engine.search import run as search_run
from engine.search.checkpoint import SearchState, save_checkpoint
from engine.search.events import BlockDone, Finished
from engine.sweep import (RunProgress, RunSkipped, RunStarted, SweepGrid, SweepStarted, plan_sweep, run_file_name,
                          run_sweep)
from engine.sweep.local import _resumable
from engine.plan.file import save_plan
from helpers import (SWEEP_BASE as BASE, SWEEP_PLAN, SWEEP_TINY as TINY, SWEEP_TINY_FLAGS as TINY_FLAGS, W4, W8, first_stop,
                     other_demo_weights, small_search)

GRID = SweepGrid(("minmax",), ("W8A8", "W4A8"), (0,))


def test_grid_parse_order_and_errors():
    grid = SweepGrid.parse("minmax, omse", "w4a8,W8A8", "0,1")
    cells = [(q.quantizer, q.bits_label, seed) for q, seed in grid.cells()]
    assert cells[:4] == [("minmax", "W4A8", 0), ("minmax", "W8A8", 0), ("omse", "W4A8", 0), ("omse", "W8A8", 0)]
    assert len(cells) == 8 and cells[4] == ("minmax", "W4A8", 1)       # seed-major
    for args, message in ((("nope", "W4A8", "0"), "unknown quantizer 'nope'"), (("minmax", "W4", "0"), "W4A8"),
                          (("minmax", "W4A8,W4A8", "0"), "bits has a value twice"),
                          (("minmax", "W4A8", "a"), "integers"), (("minmax", "", "0"), "at least one value of bits")):
        with pytest.raises(ValueError, match=message):
            SweepGrid.parse(*args)


def test_plans_are_an_axis_crossed_with_the_others_and_part_of_each_runs_name(tmp_path):
    planned = SWEEP_PLAN.quant_config()
    grid = SweepGrid.parse("minmax,omse", "W8A8", "0", plans=(None, SWEEP_PLAN))
    assert [(q.quantizer, q.plan, seed) for q, seed in grid.cells()] == [
        ("minmax", (), 0), ("minmax", planned.plan, 0), ("omse", (), 0), ("omse", planned.plan, 0)]
    own = SweepGrid.parse("", "", "0,1", plans=(SWEEP_PLAN,))        # each plan's own quantizer and base widths
    assert own.cells() == [(planned, 0), (planned, 1)]
    runs = plan_sweep(grid, BASE, TINY, tmp_path)
    assert runs[1].path.name == f"digits-vit_minmax_{planned.bits_label.replace('+', '-')}_s0.h5"
    assert runs[1].label == f"minmax {planned.bits_label} s0" and planned.bits_label.startswith("W8A8+plan-")
    assert runs[1].spec.quant == planned and runs[1].identity != runs[0].identity
    other_model = replace(SWEEP_PLAN, model="deit_tiny_patch16_224")
    for plans, bits, message in (((None, SWEEP_PLAN), "", "at least one value of bits"),
                                 ((SWEEP_PLAN, replace(SWEEP_PLAN)), "W8A8", "plans has a value twice"),
                                 ((None, replace(SWEEP_PLAN, points=())), "W8A8", "the same width"),
                                 ((other_model,), "W8A8", "is a plan for deit_tiny_patch16_224, not for digits-vit")):
        with pytest.raises(ValueError, match=message):
            plan_sweep(SweepGrid.parse("minmax", bits, "0", plans=plans), BASE, TINY, tmp_path)


def test_a_sweep_of_plan_files_searches_each_at_its_widths_and_skips_it_once_done(tmp_path, monkeypatch, capsys):
    plan = save_plan(tmp_path / "plan.json", SWEEP_PLAN)
    argv = ["sweep", "--plans", str(plan), "--calib-size", "50", "--batch-size", "50", *TINY_FLAGS,
            "--out-dir", str(tmp_path / "sweep"), "--json"]
    monkeypatch.setattr(search_run, "run_search", small_search)
    assert main(argv) == 0
    rows = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    record = load_run(tmp_path / "sweep" / rows[0]["file"])
    assert len(rows) == 1 and record.quant == SWEEP_PLAN.quant_config()
    assert record.scales.get_point("blocks.5.attn.qkv", "weight").bits == 4
    assert record.scales.get_point("blocks.5.attn", "probs").bits == 6
    assert main(argv) == 0 and ": done already" in capsys.readouterr().err     # the plan is in the run's identity


def test_run_file_names_are_deterministic_and_safe():
    assert run_file_name("digits-vit", QuantConfig("omse", 4, 8), 1) == "digits-vit_omse_W4A8_s1.h5"
    assert run_file_name("vit/base", QuantConfig("minmax", 4, 8, attn_bits=6), 0) == "vit-base_minmax_W4A8-attn6_s0.h5"


def is_block_step(event, run_index, step):
    return (isinstance(event, RunProgress) and event.run.index == run_index and isinstance(event.event, BlockDone)
            and event.event.step == step)


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """One 2-run sweep, interrupted twice: at run 1's Finished, then in run 2 after 2 of its 6 block
    steps; the CLI then finishes it. Two real (cut-down) searches in all."""
    folder = tmp_path_factory.mktemp("workspace")
    argv = ["sweep", "--quantizers", "minmax", "--bits", "W8A8,W4A8", "--seeds", "0", "--calib-size", "50",
            "--batch-size", "50", *TINY_FLAGS, "--out-dir", str(folder), "--json"]
    out, err = io.StringIO(), io.StringIO()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)   # tiny tensors: intra-op threads only add sync cost (tens of times slower on a busy CPU)
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(search_run, "run_search", small_search)
            phase1 = first_stop(run_sweep(GRID, BASE, TINY, folder),
                                lambda e: isinstance(e, RunProgress) and isinstance(e.event, Finished))
            files1 = sorted(p.name for p in folder.rglob("*") if p.is_file())
            phase2 = first_stop(run_sweep(GRID, BASE, TINY, folder), lambda e: is_block_step(e, 2, 2))
            files2 = sorted(p.name for p in folder.rglob("*") if p.is_file())
            with redirect_stdout(out), redirect_stderr(err):
                code = main(argv)
    finally:
        torch.set_num_threads(threads)
    return SimpleNamespace(folder=folder, phase1=phase1, files1=files1, phase2=phase2, files2=files2, code=code,
                           out=out.getvalue(), err=err.getvalue())


def test_stopping_at_finished_keeps_the_run(swept):
    assert isinstance(swept.phase1[0], SweepStarted) and [r.index for r in swept.phase1[0].runs] == [1, 2]
    assert swept.files1 == [f"{W8}.h5"]                  # written before Finished went out; no checkpoint left


def test_rerun_skips_the_finished_run_and_resumes_the_interrupted_one(swept):
    kinds = [type(e) for e in swept.phase2 if not isinstance(e, RunProgress)]
    assert kinds == [SweepStarted, RunSkipped, RunStarted] and not swept.phase2[2].resumed
    assert swept.files2 == [f"{W4}.ckpt", f"{W8}.h5"]
    assert "[1/2] minmax W8A8 s0: done already" in swept.err
    assert "[2/2] minmax W4A8 s0: resuming from its checkpoint" in swept.err
    assert "[2/2] minmax W4A8 s0: base" in swept.err


def test_sweep_ends_with_its_run_files_and_a_summary(swept):
    assert swept.code == 0
    rows = json.loads(swept.out.strip().splitlines()[-1])
    assert [r["file"] for r in rows] == [f"{W8}.h5", f"{W4}.h5"]
    assert sorted(p.name for p in swept.folder.glob("*.h5")) == sorted(r["file"] for r in rows)
    assert not list((swept.folder / ".checkpoints").iterdir())
    for row in rows:
        record = load_run(swept.folder / row["file"])
        assert (row["base_top1"], row["refined_top1"]) == (record.metrics["base_top1"], record.metrics["refined_top1"])
        assert row["evaluations"] == 1 + 6 * 2 and record.history.loss.size == 1 + 6 * 2   # resumed run complete
        assert record.search["passes"] == 1 and record.calibration["n_samples"] == 50 and row["preset"] == "guided"


def test_existing_files_unreadable_are_redone_foreign_are_refused(swept, tmp_path):
    grid = SweepGrid(("minmax",), ("W8A8",), (0,))
    shutil.copy(swept.folder / f"{W8}.h5", tmp_path)
    assert plan_sweep(grid, BASE, TINY, tmp_path)[0].done
    with pytest.raises(ValueError, match=r"differs from this sweep: config.passes 1 \(this run: 2\)"):
        plan_sweep(grid, BASE, replace(TINY, passes=2), tmp_path)
    (tmp_path / f"{W8}.h5").write_bytes(b"truncated")
    assert not plan_sweep(grid, BASE, TINY, tmp_path)[0].done


def test_compare_reads_the_sweep_with_weights(swept, capsys):
    files = [str(swept.folder / f"{stem}.h5") for stem in (W8, W4)]
    assert main(["compare", *files, "--layer", "blocks.5.attn.qkv", "--channel", "7", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    sbs, layer = result["side_by_side"], result["layer"]
    assert sbs["blocks"] == [f"blocks.{i}" for i in range(6)] and "attn.qkv/weight" in sbs["layers"]
    assert [len(run["step_heldout"]) for run in sbs["runs"]] == [6, 6]
    assert [sum(run["counts"]) for run in layer["runs"]] == [96, 96]    # channel 7 of qkv: embed_dim weights
    assert [run["refined"]["bits"] for run in layer["runs"]] == [8, 4] and len(layer["edges"]) == 65


def test_one_identity_rule_names_the_first_differing_field(swept, tmp_path):
    """Calibration size, batch size and weights make another run: the sweep refuses the folder, naming
    the field with both values; identical settings skip."""
    grid = SweepGrid(("minmax",), ("W8A8",), (0,))
    shutil.copy(swept.folder / f"{W8}.h5", tmp_path)
    assert plan_sweep(grid, BASE, TINY, tmp_path)[0].done
    other = other_demo_weights(tmp_path / "other.safetensors")
    made_with, other_sha = load_run(tmp_path / f"{W8}.h5").weights_sha256, sha256(other.read_bytes()).hexdigest()
    for spec, message in ((replace(BASE, calib_size=60), r"spec.calib_size 50 \(this run: 60\)"),
                          (replace(BASE, batch_size=25), r"spec.batch_size 50 \(this run: 25\)"),
                          (replace(BASE, weights=str(other)),
                           rf"weights_sha256 {made_with[:12]}… \(this run: {other_sha[:12]}…\)")):
        with pytest.raises(ValueError, match=f"differs from this sweep: {message}"):
            plan_sweep(grid, spec, TINY, tmp_path)


def test_an_older_run_file_without_its_spec_is_compared_on_what_it_records(swept, tmp_path, caplog):
    grid = SweepGrid(("minmax",), ("W8A8",), (0,))
    path = Path(shutil.copy(swept.folder / f"{W8}.h5", tmp_path))
    with h5py.File(path, "r+") as f:
        del f["config"].attrs["run_spec"]
    assert load_run(path).spec is None
    with caplog.at_level(logging.INFO, logger="engine.runrecord"):
        assert plan_sweep(grid, replace(BASE, calib_size=60), TINY, tmp_path)[0].done   # unknown: not compared
    unknown = caplog.text.split("does not record ", 1)[1].splitlines()[0]
    assert all(f"spec.{field}" in unknown for field in ("data", "calib_size", "batch_size"))
    with pytest.raises(ValueError, match=r"config.passes 1 \(this run: 2\)"):
        plan_sweep(grid, BASE, replace(TINY, passes=2), tmp_path)


def test_a_checkpoint_of_other_settings_restarts_the_run(tmp_path, caplog):
    grid = SweepGrid(("minmax",), ("W8A8",), (0,))
    run = plan_sweep(grid, BASE, TINY, tmp_path)[0]
    state = SearchState(vectors=[np.ones(3)], rng_state={}, base_loss=1.0, heldout_fp_top1=99.0,
                        heldout_base_top1=98.0, current_loss=1.0)
    weights_sha = create_model()[1].weights_sha256
    for calib_size, resumable in ((60, False), (50, True)):
        identity = run_identity(spec_values(replace(run.spec, calib_size=calib_size)), TINY.to_dict(), weights_sha)
        save_checkpoint(run.checkpoint, state, {**identity, "base_sha256": "00" * 32})
        planned = plan_sweep(grid, BASE, TINY, tmp_path)[0]
        assert planned.identity["weights_sha256"] == weights_sha   # a checkpoint to compare: the weights are hashed
        with caplog.at_level(logging.WARNING, logger="engine.sweep.local"):
            assert _resumable(planned.checkpoint, planned.identity) is resumable
    assert "other settings (spec.calib_size 60 (this run: 50)); the run starts afresh" in caplog.text


def interrupted_after_first_step(spec, config, checkpoint=None, resume=None):
    """small_search, with Ctrl+C pressed right after its first block step."""
    for event in small_search(spec, config, checkpoint, resume):
        yield event
        if isinstance(event, BlockDone):
            raise KeyboardInterrupt


def test_ctrl_c_keeps_the_current_checkpoint_and_the_same_command_continues(tmp_path, monkeypatch):
    argv = ["sweep", "--quantizers", "minmax", "--bits", "W8A8", "--calib-size", "50", "--batch-size", "50",
            *TINY_FLAGS, "--out-dir", str(tmp_path)]
    checkpoint = tmp_path / ".checkpoints" / f"{W8}.ckpt"

    def sweep(search) -> tuple[int, str]:
        monkeypatch.setattr(search_run, "run_search", search)
        err = io.StringIO()
        with redirect_stdout(io.StringIO()), redirect_stderr(err):
            return main(argv), err.getvalue()

    code, err = sweep(interrupted_after_first_step)
    assert code == 130 and checkpoint.exists() and not (tmp_path / f"{W8}.h5").exists()
    assert f"interrupted; the current run's checkpoint {checkpoint} is kept" in err
    command = shlex.split(err.split("Continue the sweep with the same command:\n", 1)[1].splitlines()[0])
    assert command == [sys.executable, "-m", "engine", *argv]
    code, err = sweep(small_search)
    assert code == 0 and "[1/1] minmax W8A8 s0: resuming from its checkpoint" in err
    assert (tmp_path / f"{W8}.h5").exists() and not checkpoint.exists()
