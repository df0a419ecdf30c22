"""Shared fixtures. Keep them cheap; anything mutable (models get wrapped in place) is per test."""
from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # GUI tests run headless (CI has no display)
# The suite's two workers share two cores: an OpenMP thread that spins while its partner waits for a
# core makes a two-thread test many times slower. Sleeping waits change the speed, never a result.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from engine.threads import make_thread_invariant  # noqa: E402 - before torch computes anything

make_thread_invariant()   # as every entry point does (engine/threads.py)

from pathlib import Path

import pytest
import torch
from torch import nn

from engine.data import Splits, load_splits
from engine.models import ModelInfo, create_model
from helpers import make_image_folder

# The demo model is tiny: one intra-op thread beats two (OpenMP spin-waits dominate), and it keeps
# the suite's timing stable on a shared 2-core machine.
torch.set_num_threads(1)


# Files whose tests start a local Ray cluster: one worker runs them all, so two clusters never
# compete for the machine's two cores.
RAY_MODULES = {"test_sweep_ray", "test_app_sweep_ray"}


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Group tests for ``--dist loadgroup`` (pyproject's addopts): a file runs whole on one worker
    (its module fixtures are built once), and the Ray files share one. Before xdist's own hook,
    which reads the groups."""
    for item in items:
        module = item.module.__name__.rsplit(".", 1)[-1]
        item.add_marker(pytest.mark.xdist_group("ray" if module in RAY_MODULES else module))


@pytest.fixture
def demo_model() -> tuple[nn.Module, ModelInfo]:
    """A fresh digits-vit with its shipped weights (fresh because quantization edits models in place)."""
    return create_model()


@pytest.fixture(scope="session")
def digits_splits() -> Splits:
    """The built-in digits splits for digits-vit, calib_size=1000, seed=0. Treat as read-only."""
    _, info = create_model()
    return load_splits(None, info)


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """3 classes x 4 images in train/ and val/ (32x32), plus one corrupt file in each."""
    return make_image_folder(tmp_path / "images", corrupt=1)
