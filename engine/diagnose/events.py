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


class MeasureCounter:
    """Numbers the measurements as they finish, out of the total announced up front."""

    def __init__(self, total: int) -> None:
        self.done, self.total = 0, total

    def step(self, what: str) -> Measured:
        self.done += 1
        return Measured(self.done, self.total, what)


@dataclass(frozen=True)
class Diagnosed:
    diagnosis: Diagnosis
