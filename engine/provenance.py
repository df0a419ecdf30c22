"""How a run was computed: the software and the machine behind a run file or a checkpoint.

Recorded with every run, shown by ``inspect``, the library and the run panel, and never part of a
run's identity: the same run computed elsewhere is the same run. It says what to rerun with when two
files of the same run differ (another device kind, another torch) and whether the thread count could
matter (``thread_invariant``, threads.py).
"""
from __future__ import annotations

import functools
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch

from . import __version__
from .threads import thread_invariant

DISTRIBUTION = "cptv-studio"


def package_version() -> str:
    """The installed distribution's version, else the source tree's."""
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return __version__


@functools.lru_cache(maxsize=1)
def git_commit() -> str:
    """The source checkout's commit (``+dirty`` when tracked files changed), or "" outside a checkout."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                              text=True, timeout=5)
        if head.returncode != 0:
            return ""
        changed = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                 capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return ""
    return head.stdout.strip() + ("+dirty" if changed.stdout.strip() else "")


@functools.lru_cache(maxsize=1)
def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: torch.device) -> str:
    """``cuda: NVIDIA H100 80GB HBM3`` or ``cpu: <processor>``."""
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    return f"{device.type}: {_cpu_name()}"


def provenance(device: torch.device, compile_mode: str) -> dict[str, Any]:
    """What computed a run: versions, commit, device, threads, compile mode, and whether its results
    are the same on any thread count (on a GPU the host's threads compute nothing that matters)."""
    return {"version": package_version(), "git_commit": git_commit(), "python": platform.python_version(),
            "torch": str(torch.__version__), "timm": str(timm.__version__), "numpy": np.__version__,
            "device": device_name(device), "threads": torch.get_num_threads(), "compile": compile_mode,
            "thread_invariant": thread_invariant() or device.type != "cpu"}


def describe(values: dict[str, Any] | None) -> str:
    """One line for a person: ``cptv-studio 0.1.0 (abc123), torch 2.4, cpu: ..., 2 threads, compile auto``."""
    if not values:
        return "not recorded (a file written before provenance was)"
    commit = f" ({values['git_commit']})" if values.get("git_commit") else ""
    invariant = "" if values.get("thread_invariant", True) else ", thread-count dependent"
    threads = values.get("threads", "?")
    return (f"cptv-studio {values.get('version', '?')}{commit}, torch {values.get('torch', '?')}, "
            f"timm {values.get('timm', '?')}, {values.get('device', '?')}, "
            f"{threads} thread{'' if threads == 1 else 's'}, compile {values.get('compile', '?')}{invariant}")
