"""Where a quantized model loses accuracy, and what the search repaired: per quantization point SQNR
and one-at-a-time sensitivity (base and refined scales), and what-if bit-widths (``python -m engine
diagnose``)."""
from .events import Diagnosed, Measured
from .points import Point, quantization_points
from .result import Diagnosis, PointTable, WhatIf
from .run import DiagnoseConfig, diagnose_calibrated, diagnose_run
from .store import load_diagnosis, save_diagnosis, save_into_run

__all__ = [
    "DiagnoseConfig", "Diagnosed", "Diagnosis", "Measured", "Point", "PointTable", "WhatIf", "diagnose_calibrated",
    "diagnose_run", "load_diagnosis", "quantization_points", "save_diagnosis", "save_into_run",
]
