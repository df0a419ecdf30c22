"""The Ray backend of a sweep against the worker's one local 2-CPU cluster (conftest's ``ray_cluster``).

The searches are the real engine search on the demo cut down (``helpers.small_search``), so a run
takes seconds; the local backend's files of the same grid are the reference every Ray file must
equal, scale for scale. Ray workers import ``helpers`` (the tests folder goes on their PYTHONPATH),
which is how the faults (``helpers.faulty_cells``) run inside the workers.
"""
import io
import os
import shutil
import signal
import sys
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import replace
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import ray
import torch

from engine.cli import main
from engine.scalefile import load_run
from engine.search import run as search_run
from engine.search.events import BlockDone
from engine.sweep import (RunDone, RunFailed, RunMovedAside, RunProgress, RunSkipped, RunStarted, SweepFinished,
                          SweepGrid, run_sweep)
from engine.sweep.ray_backend import CellResources, cell_device, search_cell
from helpers import (SWEEP_BASE as BASE, SWEEP_PLAN, SWEEP_TINY as TINY, SWEEP_TINY_FLAGS as TINY_FLAGS, W4, W8,
                     as_older_layout, faulty_cells, first_stop, small_search, with_schema_version)

GRID = SweepGrid(("minmax",), ("W8A8", "W4A8"), (0,))
TIMINGS = {"search_seconds", "calibration_seconds"}      # the only metrics that differ between two runs
ARGV = ["sweep", "--quantizers", "minmax", "--bits", "W8A8,W4A8", "--seeds", "0", "--calib-size", "50",
        "--batch-size", "50", *TINY_FLAGS]


@pytest.fixture(scope="module")
def local_files(tmp_path_factory):
    """The grid's run files made by the local backend, on two threads where every Ray cell runs one
    (what users run: the process's own thread count here, one per CPU asked for there): the reference."""
    folder = tmp_path_factory.mktemp("local")
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        events = list(run_sweep(GRID, BASE, TINY, folder, search_fn=small_search))
    finally:
        torch.set_num_threads(threads)
    assert isinstance(events[-1], SweepFinished) and all(row.ok for row in events[-1].rows)
    assert {load_run(folder / f"{stem}.h5").provenance["threads"] for stem in (W8, W4)} == {2}
    return folder


def assert_same_run(path: Path, reference: Path) -> None:
    """Every scale (refined and base) bit for bit, the history and the metrics but their timings."""
    run, ref = load_run(path), load_run(reference)
    for mine, theirs in ((run.scales, ref.scales), (run.base, ref.base)):
        points = [(name, role) for name, role, _ in mine.points()]
        assert points == [(name, role) for name, role, _ in theirs.points()]
        for (_, _, a), (_, _, b) in zip(mine.points(), theirs.points()):
            assert a.scale.tobytes() == b.scale.tobytes() and a.zero_point.tobytes() == b.zero_point.tobytes()
    for name in vars(ref.history):
        np.testing.assert_array_equal(getattr(run.history, name), getattr(ref.history, name))
    metrics = {k: v for k, v in run.metrics.items() if k not in TIMINGS}
    assert metrics == {k: v for k, v in ref.metrics.items() if k not in TIMINGS}
    assert (run.spec, run.search, run.weights_sha256) == (ref.spec, ref.search, ref.weights_sha256)


@pytest.fixture(scope="module")
def faulty_sweep(ray_cluster, tmp_path_factory):
    """A 3-run Ray sweep: W2A3 on a missing data folder (first, so its quick failure frees its CPU),
    W8A8's worker killed mid-run (by the pid its RunStarted reports), W4A8 untouched."""
    folder = tmp_path_factory.mktemp("ray")
    grid = SweepGrid(("minmax",), ("W2A3", "W8A8", "W4A8"), (0,))
    search_fn = partial(faulty_cells, folder / "stalled", folder / "missing")
    events, killed = [], None
    for event in run_sweep(grid, BASE, TINY, folder, search_fn=search_fn, backend="ray",
                           resources=CellResources(cpus=1, max_retries=1)):
        events.append(event)
        if (isinstance(event, RunProgress) and event.run.spec.quant.w_bits == 8 and isinstance(event.event, BlockDone)
                and killed is None):
            killed = next(e.worker.pid for e in events if isinstance(e, RunStarted) and e.run is event.run)
            os.kill(killed, signal.SIGKILL)
    return SimpleNamespace(folder=folder, events=events, killed=killed)


def test_missing_ray_is_an_error_naming_the_extra(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)       # what `import ray` does where it is not installed
    assert main([*ARGV, "--backend", "ray", "--out-dir", str(tmp_path)]) == 2
    assert "error: the ray backend needs ray: pip install 'cptv-studio[ray]' (or pip install -e '.[ray]'" in (
        capsys.readouterr().err)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("flags, message", [
    (["--address", "auto"], "an address and per-run resources are for the ray backend (--backend ray)"),
    (["--gpus-per-run", "1"], "an address and per-run resources are for the ray backend"),
    (["--backend", "ray", "--cpus-per-run", "0"], "cpus per run must be positive, got 0.0"),
    (["--backend", "ray", "--max-retries", "-1"], "max retries must be 0 or more, got -1"),
])
def test_bad_backend_options_are_refused_by_name(flags, message, tmp_path, capsys):
    assert main([*ARGV, *flags, "--out-dir", str(tmp_path)]) == 2
    assert f"error: {message}" in capsys.readouterr().err


def test_ray_run_files_equal_the_local_backends(faulty_sweep, local_files):
    done = {e.run.path.stem: e for e in faulty_sweep.events if isinstance(e, RunDone)}
    assert sorted(done) == sorted([W4, W8])
    for stem in (W8, W4):
        assert_same_run(faulty_sweep.folder / f"{stem}.h5", local_files / f"{stem}.h5")
        assert done[stem].row.ok and done[stem].row.file == f"{stem}.h5"
        assert load_run(faulty_sweep.folder / f"{stem}.h5").provenance["threads"] == 1


def test_a_killed_worker_is_retried_and_its_run_completes(faulty_sweep, local_files):
    assert faulty_sweep.killed is not None and faulty_sweep.killed != os.getpid()
    assert (faulty_sweep.folder / "stalled").read_text() == str(faulty_sweep.killed)
    w8 = [e for e in faulty_sweep.events if not isinstance(e, (SweepFinished,)) and getattr(e, "run", None)
          and e.run.path.stem == W8]
    assert [type(e) for e in w8 if not isinstance(e, RunProgress)] == [RunStarted, RunDone]   # one run, no failure
    steps = [e.event.step for e in w8 if isinstance(e, RunProgress) and isinstance(e.event, BlockDone)]
    assert steps == [1, 2, 3, 4, 5, 6]          # the retry's events continue where the killed worker's stopped
    assert_same_run(faulty_sweep.folder / f"{W8}.h5", local_files / f"{W8}.h5")


def test_a_user_error_fails_its_run_and_the_grid_goes_on(faulty_sweep):
    failed = [e for e in faulty_sweep.events if isinstance(e, RunFailed)]
    assert [e.run.label for e in failed] == ["minmax W2A3 s0"]
    assert failed[0].error.startswith("DataError: data folder not found: ") and "missing" in failed[0].error
    rows = faulty_sweep.events[-1].rows
    assert [(row.file, row.ok) for row in rows] == [("digits-vit_minmax_W2A3_s0.h5", False), (f"{W8}.h5", True),
                                                    (f"{W4}.h5", True)]
    assert rows[0].error == failed[0].error
    assert not (faulty_sweep.folder / "digits-vit_minmax_W2A3_s0.h5").exists()


def test_the_driver_stopped_and_restarted_skips_the_finished_runs(idle_ray_cluster, local_files, tmp_path, monkeypatch):
    """The driver stops after the first run file (the other task is cancelled); the same command
    skips what was saved, counted, and searches the rest, through the CLI. Both cells run at once, so
    the other one may also have saved its file (at its Finished) before the first RunDone arrives."""
    first = first_stop(run_sweep(GRID, BASE, TINY, tmp_path, search_fn=small_search, backend="ray"),
                       lambda e: isinstance(e, RunDone))
    written = sorted(p.stem for p in tmp_path.glob("*.h5"))
    assert first[-1].run.path.stem in written
    monkeypatch.setattr(search_run, "run_search", small_search)
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        assert main([*ARGV, "--backend", "ray", "--out-dir", str(tmp_path)]) == 0
    lines = err.getvalue().splitlines()
    assert sum("done already" in line for line in lines) == len(written)
    assert all(any(f"done already -> {stem}.h5" in line for line in lines) for stem in written)
    assert sum(": searching on " in line for line in lines) == 2 - len(written)
    for stem in (W8, W4):
        assert_same_run(tmp_path / f"{stem}.h5", local_files / f"{stem}.h5")


def test_a_ray_sweep_moves_aside_what_it_cannot_read_and_never_touches_a_newer_file(idle_ray_cluster, tmp_path):
    """As tests/test_sweep_files.py on the local backend: W8A8 an older layout of the same run
    (skipped), W4A8 truncated (moved aside, run again on Ray), W6A8 of a newer schema (failed, untouched)."""
    config = replace(TINY, strategy="evolution")
    made = list(run_sweep(SweepGrid(("minmax",), ("W8A8",), (0,)), BASE, config, tmp_path / "made",
                          search_fn=small_search))[-1]
    reference = tmp_path / "made" / made.rows[0].file
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    as_older_layout(shutil.copy(reference, workspace / f"{W8}.h5"), "no spec")
    (workspace / f"{W4}.h5").write_bytes(reference.read_bytes()[:3000])
    newer = with_schema_version(shutil.copy(reference, workspace / "digits-vit_minmax_W6A8_s0.h5"), 99)
    newer_bytes = newer.read_bytes()
    grid = SweepGrid(("minmax",), ("W8A8", "W4A8", "W6A8"), (0,))
    events = list(run_sweep(grid, BASE, config, workspace, search_fn=small_search, backend="ray"))
    kinds = {e.run.label: type(e).__name__ for e in events if isinstance(e, (RunSkipped, RunMovedAside, RunFailed))}
    assert kinds == {"minmax W8A8 s0": "RunSkipped", "minmax W4A8 s0": "RunMovedAside", "minmax W6A8 s0": "RunFailed"}
    assert [e.run.label for e in events if isinstance(e, RunDone)] == ["minmax W4A8 s0"]
    assert (workspace / f"{W4}.unreadable-1.h5").read_bytes() == reference.read_bytes()[:3000]
    assert load_run(workspace / f"{W4}.h5").base is not None and newer.read_bytes() == newer_bytes
    assert [row.ok for row in events[-1].rows] == [True, True, False]


def test_a_ray_sweep_searches_a_plan_at_its_widths(idle_ray_cluster, tmp_path):
    events = list(run_sweep(SweepGrid((), (), (0,), plans=(SWEEP_PLAN,)), BASE, TINY, tmp_path, search_fn=small_search,
                            backend="ray"))
    done = [e for e in events if isinstance(e, RunDone)]
    assert len(done) == 1 and done[0].row.ok and "+plan-" in done[0].run.label
    record = load_run(done[0].run.path)
    assert record.quant == SWEEP_PLAN.quant_config() and record.provenance["threads"] == 1
    assert record.scales.get_point("blocks.5.attn.qkv", "weight").bits == record.base.get_point(
        "blocks.5.attn.qkv", "weight").bits == 4


def test_a_ray_cell_computes_on_the_gpu_ray_assigned_it(monkeypatch):
    """Ray makes a cell's GPUs its only visible ones, so the driver's cuda:1 is the cell's cuda:0."""
    assert cell_device("cuda:1", ["1"]) == "cuda:0" and cell_device(None, [3]) == "cuda:0"
    assert cell_device("cpu", ["1"]) == "cpu" and cell_device("cuda:1", []) == "cuda:1" and cell_device(None, []) is None
    seen = []

    def search(spec, config, checkpoint=None, resume=None):
        seen.append(spec.device)
        yield from ()

    monkeypatch.setattr(ray, "get_gpu_ids", lambda: [1])
    threads = torch.get_num_threads()
    try:
        list(search_cell(search, replace(BASE, device="cuda:1"), TINY, threads))
    finally:
        torch.set_num_threads(threads)
    assert seen == ["cuda:0"]
