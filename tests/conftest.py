"""Shared fixtures. Keep them cheap; anything mutable (models get wrapped in place) is per test."""
from __future__ import annotations

import os
import time

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


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory):
    """The one local Ray cluster of this worker process (2 CPUs), started by the first test that needs it and
    shut down at the end of the session: every Ray test file shares it (they run on one worker, grouped
    above). No auth token is written; workers import the tests folder (``helpers.small_search``, …)."""
    ray = pytest.importorskip("ray")
    tests = str(Path(__file__).parent)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RAY_AUTH_MODE", "disabled")
        patch.setenv("HOME", str(tmp_path_factory.mktemp("ray-home")))
        patch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [tests, os.environ.get("PYTHONPATH")])))
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            yield ray
        finally:
            ray.shutdown()


@pytest.fixture
def idle_ray_cluster(ray_cluster):
    """The worker's Ray cluster once every CPU of it is free again: a task an earlier test cancelled may
    still be finishing, and a test that counts on runs overlapping needs both CPUs."""
    def idle() -> bool:
        return ray_cluster.available_resources().get("CPU", 0) >= ray_cluster.cluster_resources()["CPU"]

    deadline = time.monotonic() + 120
    while not idle():
        assert time.monotonic() < deadline, f"the Ray cluster stayed busy: {ray_cluster.available_resources()}"
        time.sleep(0.1)
    return ray_cluster


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
