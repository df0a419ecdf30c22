"""The suite's scheduling: ``--dist loadgroup`` keeps a test file on one worker (its module fixtures
built once) only if pytest-xdist could tag each test's id with its group (tests/conftest.py)."""
from __future__ import annotations

import pytest


def test_each_test_id_carries_its_files_group(request):
    if not hasattr(request.config, "workerinput") or not request.config.getvalue("loadgroup"):
        pytest.skip("not run by an xdist worker under --dist loadgroup")
    assert request.node.nodeid.endswith("@test_xdist_groups"), request.node.nodeid
