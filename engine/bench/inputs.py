"""What every bench measures on: the calibrated model and its calibration batches."""
from __future__ import annotations

from dataclasses import replace

from ..data import SYNTHETIC
from ..models import BUILTIN_MODELS
from ..pipeline import Prepared, RunSpec, prepare


def bench_inputs(spec: RunSpec) -> Prepared:
    """The calibrated model and calibration batches through ``prepare``: a built-in model's digits or
    ``--data`` when given, else seeded random images at the model's input size (speed and memory
    do not depend on the pixels)."""
    data = spec.data if spec.data is not None or spec.model in BUILTIN_MODELS else SYNTHETIC
    return prepare(replace(spec, data=data))
