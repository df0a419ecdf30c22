"""The event every long job of the engine yields: the search, the sweep (inside each run's events),
the export and the diagnosis all say what they are doing with ``Stage`` before their own events.

Events are small, immutable and hold plain numbers, strings and numpy arrays (never live tensors), so
a consumer (the CLI's progress lines, the app's worker) may show progress, pause or stop between any
two of them. Each job's own events live with it (``search/events.py``, ``sweep/events.py``,
``export/run.py``, ``diagnose/events.py``); this module sits below them all, so a job that shows its
stages depends on no other job.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Stage:
    """A step of preparation or of a job's work before its own events (loading, calibrating, tracing…)."""
    message: str
