"""RunRecord: everything a scale file holds (DESIGN §2 "Run", §5 layout)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .quant import QuantConfig, ScaleSet


@dataclass
class History:
    """Per evaluation: loss, and the (pass, block) it belonged to; per block step: held-out top-1."""
    loss: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float64))
    eval_pass: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    eval_block: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    heldout_top1: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float64))
    step_loss: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float64))
    block_index: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    pass_index: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))


@dataclass
class RunRecord:
    """A quantization (``base is None``) or a search run (``base`` = scales before the search).

    ``scales`` are the scales to use: the calibrated ones for a plain quantize, the refined
    (selected) ones after a search.
    """
    model_name: str
    model_source: str
    weights_sha256: str
    quant: QuantConfig
    calibration: dict[str, Any]      # dataset, n_samples, seed, input_size, mean, std
    scales: ScaleSet
    seed: int = 0
    base: ScaleSet | None = None
    search: dict[str, Any] | None = None   # search parameters (stored as JSON)
    history: History | None = None
    metrics: dict[str, Any] = field(default_factory=dict)  # fp_top1, base_top1, refined_top1, ...
