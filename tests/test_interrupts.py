"""Nothing is lost to an interrupt: Ctrl+C, kill -9 or a failed save of a CLI search leave a checkpoint
whose resume ends with the scales an uninterrupted run gets, bit for bit.

The subprocess tests run the real CLI on the demo with a tiny budget (6 block steps, 7 evaluations).
"""
from __future__ import annotations

import errno
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engine.cli import main
from engine.scalefile import load_run
from engine.search.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
FLAGS = ["--quantizer", "minmax", "--bits", "W4A8", "--passes", "1", "--cycles", "1", "--joint-steps", "0", "--children", "1",
         "--calib-size", "200", "--search-images", "100"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}   # the same arithmetic in every process
FIRST_STEP = "pass 1/1  block 6/6"             # the progress line of the first BlockDone (stderr not a tty)


def search_command(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "engine", "search", *FLAGS, "--out", str(out), *extra]


def _default_sigint() -> None:
    """A pytest-xdist worker ignores SIGINT and a child inherits that (Python then installs no
    KeyboardInterrupt handler), so the search would never see Ctrl+C: give the child the default."""
    signal.signal(signal.SIGINT, signal.default_int_handler)


def stopped_after_first_step(command: list[str], sig: signal.Signals) -> tuple[int, str]:
    """Run ``command``, send ``sig`` once the first block step is reported; (exit code, stderr)."""
    process = subprocess.Popen(command, cwd=ROOT, env=ENV, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                               text=True, preexec_fn=_default_sigint)
    lines = []
    for line in process.stderr:
        lines.append(line)
        if line.startswith(FIRST_STEP):
            process.send_signal(sig)
            break
    lines.extend(process.stderr)
    return process.wait(timeout=300), "".join(lines)


def finished(command: list[str]) -> str:
    done = subprocess.run(command, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stderr


def assert_same_scales(path: Path, reference: Path) -> None:
    got, want = load_run(path), load_run(reference)
    pairs = list(zip(got.scales.points(), want.scales.points()))
    assert len(pairs) == len(list(want.scales.points()))
    for (name, role, a), (_, _, b) in pairs:
        assert np.array_equal(a.scale, b.scale), f"{name}/{role} differs"
    np.testing.assert_array_equal(got.history.loss, want.history.loss)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("uninterrupted") / "run.h5"
    finished(search_command(out))
    assert not Path(f"{out}.ckpt").exists()          # the default checkpoint goes once the run file is saved
    return out


@pytest.mark.slow
def test_ctrl_c_prints_a_resume_command_that_ends_bit_identical(tmp_path, uninterrupted):
    out = tmp_path / "run.h5"
    code, err = stopped_after_first_step(search_command(out), signal.SIGINT)
    checkpoint = Path(f"{out}.ckpt")
    assert code == 130 and "interrupted" in err and "Traceback" not in err
    assert checkpoint.exists() and not out.exists()
    assert load_checkpoint(checkpoint).state.step >= 1
    command = err.split("Resume it with:\n", 1)[1].splitlines()[0].strip()
    assert shlex.split(command) == search_command(out, "--resume", str(checkpoint))
    log = finished(shlex.split(command))
    assert "resuming" in log
    assert_same_scales(out, uninterrupted)
    assert not checkpoint.exists()


@pytest.mark.slow
def test_kill_9_resumes_from_the_per_step_checkpoint(tmp_path, uninterrupted):
    out = tmp_path / "run.h5"
    code, _ = stopped_after_first_step(search_command(out), signal.SIGKILL)
    checkpoint = Path(f"{out}.ckpt")
    assert code == -signal.SIGKILL and checkpoint.exists() and not out.exists()
    finished(search_command(out, "--resume", str(checkpoint)))
    assert_same_scales(out, uninterrupted)


def test_failed_save_keeps_the_finished_search(tmp_path, capsys, monkeypatch):
    """Disk full at the save: one clear line, exit 2, and the checkpoint's resume goes straight to the
    final report and the save (no block step is searched again)."""
    import engine.commands.search as search_command_module
    from helpers import small_search

    monkeypatch.setattr(search_command_module.search_run, "run_search", small_search)
    out = tmp_path / "run.h5"
    argv = ["search", "--quantizer", "minmax", "--bits", "W8A8", "--calib-size", "50", "--batch-size", "50",
            "--passes", "1", "--cycles", "1", "--joint-steps", "0", "--children", "2", "--population", "4", "--tournament", "2",
            "--out", str(out)]

    def disk_full(path, record):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    with monkeypatch.context() as patch:
        patch.setattr(search_command_module, "save_run", disk_full)
        assert main(argv) == 2
    err = capsys.readouterr().err
    checkpoint = Path(f"{out}.ckpt")
    assert f"error: could not write the run file {out}: No space left on device" in err
    assert checkpoint.exists() and load_checkpoint(checkpoint).state.step == 6
    command = shlex.split(err.split("Resume it with:\n", 1)[1].splitlines()[0])
    assert command[:3] == [sys.executable, "-m", "engine"] and command[-2:] == ["--resume", str(checkpoint)]
    assert main(command[3:]) == 0
    err = capsys.readouterr().err
    assert "pass 1/1" not in err                      # no block step searched again
    record = load_run(out)
    assert record.metrics["evaluations"] == 1 + 6 * 2 and record.history.loss.size == 1 + 6 * 2
    assert not checkpoint.exists()
