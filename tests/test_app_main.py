"""``python main.py --run-demo --passes 1 --screenshot PATH --quit-when-done``: the headless smoke path."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_run_demo_screenshot_quit_when_done(tmp_path):
    shot = tmp_path / "shot.png"
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", XDG_DATA_HOME=str(tmp_path / "data"),
               XDG_CONFIG_HOME=str(tmp_path / "config"))
    # The README's command, with a smaller search (same code path) to keep the suite fast.
    proc = subprocess.run([sys.executable, "main.py", "--run-demo", "--passes", "1", "--cycles", "2", "--joint-steps", "0", "--children", "2",
                           "--calib-size", "100", "--quantizer", "minmax", "--screenshot", str(shot), "--quit-when-done"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["outcome"] == "finished" and summary["refined_top1"] is not None
    assert shot.stat().st_size > 20_000                      # a real picture of the window
    from PySide6.QtGui import QImage
    image = QImage(str(shot))
    # the window's own size, or what a framed window can take of the (offscreen) screen
    assert image.width() >= 1000 and image.height() >= 700


def test_failure_exits_non_zero(tmp_path):
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", XDG_DATA_HOME=str(tmp_path / "data"),
               XDG_CONFIG_HOME=str(tmp_path / "config"))
    proc = subprocess.run([sys.executable, "main.py", "--run-demo", "--model", "vit_no_such_model", "--quit-when-done"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1])["outcome"] == "failed"
    assert "vit_no_such_model" in proc.stderr                # named in the log, no modal dialog
