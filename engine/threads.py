"""Results that do not depend on the number of CPU threads.

MKL, torch's matrix-product library on x86, splits a product's inner dimension between threads
according to how many there are, so the last bits of a product change with the thread count, and
so did the ``guided`` search's gradients and, through them, its scales. MKL's strict conditional
numerical reproducibility (``MKL_CBWR=AUTO,STRICT``) fixes the order whatever the thread count;
the two other thread-split kernels on the search's path are replaced in ``quant/fixed_order.py``.

MKL reads the variable at its first call, and it is a setting of the whole process, so the entry
points set it (the CLI, the app, a Ray cell's environment, the tests) before any computation; a
library function only reports it (``thread_invariant``), and run files record it.
"""
from __future__ import annotations

import os

MKL_CBWR = "AUTO,STRICT"


def make_thread_invariant() -> None:
    """Ask MKL for thread-invariant products, unless the user chose an MKL_CBWR of their own."""
    os.environ.setdefault("MKL_CBWR", MKL_CBWR)


def thread_invariant() -> bool:
    """Whether this process asked MKL for thread-invariant products."""
    return os.environ.get("MKL_CBWR", "").replace(" ", "").upper() == MKL_CBWR


def environment() -> dict[str, str]:
    """The variables a worker process needs to compute as this one (Ray's ``runtime_env``)."""
    return {"MKL_CBWR": os.environ["MKL_CBWR"]} if "MKL_CBWR" in os.environ else {}
