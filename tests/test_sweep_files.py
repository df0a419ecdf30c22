"""A sweep into a workspace that already holds files: nothing it cannot read is overwritten, older
layouts of the same run are skipped under one identity rule per strategy, and a failing cell is a
failed row while the grid goes on (the local backend; test_sweep_ray.py checks the same on Ray)."""
from __future__ import annotations

import io
import shutil
import subprocess
import sys
import textwrap
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import replace
from pathlib import Path

import pytest

from engine.cli import main
from engine.pipeline import RunSpec
from engine.quant import QuantConfig
from engine.scalefile import FileUnavailable, load_run, save_run
from engine.search import run as search_run
from engine.search.config import PRESETS
from engine.search.events import Finished
from engine.sweep import RunDone, RunFailed, SweepGrid, plan_sweep, run_file_name, run_sweep
from helpers import OLDER_LAYOUTS, as_older_layout, small_search, with_schema_version

BASE = RunSpec(calib_size=50, batch_size=50)
SHORT = dict(passes=1, cycles=1, children=2, population=4, tournament=2, joint_steps=0)
CONFIGS = {
    "evolution": replace(PRESETS["default"], strategy="evolution", **SHORT),
    "release": replace(PRESETS["release"], **SHORT),
    "guided": replace(PRESETS["default"], direction="sign", **SHORT),   # what guided searched before --direction
    "cmaes": replace(PRESETS["default"], strategy="cmaes", **SHORT),
}
FLAGS = {"evolution": ["--strategy", "evolution"]}
SHORT_FLAGS = ["--passes", "1", "--cycles", "1", "--children", "2", "--population", "4", "--tournament", "2",
               "--joint-steps", "0"]


def name(bits: str) -> str:
    return run_file_name("digits-vit", QuantConfig.from_bits("minmax", bits), 0)


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> dict[str, Path]:
    """One W8A8 run file per strategy, as today's build writes it."""
    folder = tmp_path_factory.mktemp("made")
    spec = replace(BASE, quant=QuantConfig.from_bits("minmax", "W8A8"))
    paths = {}
    for strategy, config in CONFIGS.items():
        run = next(e.run for e in small_search(spec, config) if isinstance(e, Finished))
        paths[strategy] = save_run(folder / f"{strategy}.h5", run)
    return paths


@pytest.mark.parametrize("layout", list(OLDER_LAYOUTS))
@pytest.mark.parametrize("strategy", list(CONFIGS))
def test_an_older_layout_of_the_same_run_is_skipped(made, strategy, layout, tmp_path):
    path = as_older_layout(shutil.copy(made[strategy], tmp_path / name("W8A8")), layout)
    grid, config = SweepGrid(("minmax",), ("W8A8",), (0,)), CONFIGS[strategy]
    assert plan_sweep(grid, BASE, config, tmp_path)[0].done
    if strategy == "guided":   # its direction is compared: an older file searched with the sign
        with pytest.raises(ValueError, match=r"config.direction 'sign' \(this run: 'scaled'\)"):
            plan_sweep(grid, BASE, replace(config, direction="scaled"), tmp_path)
    else:                      # a field this strategy does not use is not compared
        assert plan_sweep(grid, BASE, replace(config, direction="scaled"), tmp_path)[0].done
    unused = "population" if strategy in ("guided", "cmaes") else "direction"
    changed = replace(config, population=9) if unused == "population" else replace(config, direction="sign")
    assert plan_sweep(grid, BASE, changed, tmp_path)[0].done
    assert path.exists()


def test_a_sweep_moves_aside_what_it_cannot_read_and_never_touches_a_newer_file(made, tmp_path, monkeypatch):
    """W8A8: an older layout of the same run (skipped); W4A8: a truncated file (moved aside, run
    again); W6A8: a file of a newer schema (a failed row, untouched). The CLI exits 1 naming it."""
    as_older_layout(shutil.copy(made["evolution"], tmp_path / name("W8A8")), "no spec")
    truncated = (tmp_path / name("W4A8"))
    truncated.write_bytes(made["evolution"].read_bytes()[:3000])
    newer = with_schema_version(shutil.copy(made["evolution"], tmp_path / name("W6A8")), 99)
    newer_bytes, truncated_bytes = newer.read_bytes(), truncated.read_bytes()
    monkeypatch.setattr(search_run, "run_search", small_search)
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(["sweep", "--quantizers", "minmax", "--bits", "W8A8,W4A8,W6A8", "--seeds", "0", "--calib-size",
                     "50", "--batch-size", "50", *FLAGS["evolution"], *SHORT_FLAGS, "--out-dir", str(tmp_path)])
    err = err.getvalue()
    assert code == 1, err
    assert f"[1/3] minmax W8A8 s0: done already -> {name('W8A8')}" in err
    moved = tmp_path / name("W4A8").replace(".h5", ".unreadable-1.h5")
    assert f"moved aside to {moved.name}, searching again" in err and moved.read_bytes() == truncated_bytes
    assert load_run(truncated).base is not None                                     # the run made again
    assert "[3/3] minmax W6A8 s0: failed: " in err and "schema version 99" in err and "left as it is" in err
    assert newer.read_bytes() == newer_bytes
    assert f"1 failed: {name('W6A8')}" in err
    assert name("W6A8") in out.getvalue()                                      # its row in the summary table


LOCKER = textwrap.dedent("""
    import sys, h5py
    with h5py.File(sys.argv[1], "a"):
        print("locked", flush=True)
        sys.stdin.read()           # holds the file until the test closes this pipe
""")


def test_a_locked_file_fails_its_cell_and_stays(made, tmp_path):
    path = Path(shutil.copy(made["evolution"], tmp_path / name("W8A8")))
    locker = subprocess.Popen([sys.executable, "-c", LOCKER, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert locker.stdout.readline().strip() == "locked"
        before = path.read_bytes()   # as the writer holding it left it
        with pytest.raises(FileUnavailable, match="cannot be opened now"):
            load_run(path)
        grid = SweepGrid(("minmax",), ("W8A8",), (0,))
        events = list(run_sweep(grid, BASE, CONFIGS["evolution"], tmp_path, search_fn=small_search))
        assert path.read_bytes() == before
    finally:
        locker.stdin.close()
        try:
            locker.wait(30)
        except subprocess.TimeoutExpired:
            locker.kill()
            locker.wait()
    failed = [e for e in events if isinstance(e, RunFailed)]
    assert len(failed) == 1 and "cannot be opened now" in failed[0].error and not any(
        isinstance(e, RunDone) for e in events)
    assert [p.name for p in tmp_path.iterdir()] == [name("W8A8")]


def test_the_local_backend_fails_a_cell_and_goes_on(tmp_path):
    def failing_on_w4(spec, config, checkpoint=None, resume=None):
        if spec.quant.w_bits == 4:
            raise MemoryError("simulated: out of memory in this cell")
        yield from small_search(spec, config, checkpoint, resume)

    grid = SweepGrid(("minmax",), ("W4A8", "W8A8"), (0,))
    events = list(run_sweep(grid, BASE, CONFIGS["evolution"], tmp_path, search_fn=failing_on_w4))
    failed = [e for e in events if isinstance(e, RunFailed)]
    assert [e.run.label for e in failed] == ["minmax W4A8 s0"] and failed[0].error.startswith("MemoryError: simulated")
    assert [e.run.label for e in events if isinstance(e, RunDone)] == ["minmax W8A8 s0"]
    rows = events[-1].rows
    assert [(row.file, row.ok) for row in rows] == [(name("W4A8"), False), (name("W8A8"), True)]
