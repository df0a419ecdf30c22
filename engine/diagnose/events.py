"""Events the diagnosis yields besides ``Stage`` (``engine/events.py``): progress, then the result.

Like every job's, they are small and immutable, so a consumer (the CLI, the app's worker) may show
progress, pause or stop between any two of them.
"""
from __future__ import annotations

from dataclasses import dataclass

from .result import Diagnosis


@dataclass(frozen=True)
class Measured:
    done: int        # measurements finished, out of ``total``
    total: int
    what: str        # e.g. "refined: only blocks.3.attn.qkv/weight quantized"


@dataclass(frozen=True)
class Diagnosed:
    diagnosis: Diagnosis
