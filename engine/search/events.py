"""Events the search yields: small, immutable, plain numbers and numpy arrays (never live tensors).

Consumers (CLI progress line, the app's worker, tests) may pause or stop between any two events.
``Stage`` (a preparation step: loading, calibrating, caching FP outputs) is every job's, in
``engine/events.py``; it is imported here because it belongs to the search's ``Event`` too.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..events import Stage

__all__ = ["BlockDone", "Evaluated", "Event", "Finished", "PassDone", "Stage", "Started"]


@dataclass(frozen=True)
class Started:
    block_names: tuple[str, ...]     # in forward order; visited last to first
    passes: int
    total_evaluations: int
    heldout_fp_top1: float           # the run's quality (below): top-1 %, or feature cosine % (no classifier)
    heldout_base_top1: float
    base_loss: float
    device: str
    resumed_from_step: int = 0       # block steps already done (resume)
    evaluations_done: int = 1        # evaluations already done (the base; more after a resume)
    quality: str = "top1"            # what every held-out number measures: "top1", or "feature_cosine" for a
                                     # model without a classifier (evaluate.py); the fields keep top1 names


@dataclass(frozen=True)
class Evaluated:
    evaluation: int                  # 1-based running count over the whole run
    pass_index: int
    block_index: int                 # index into Started.block_names
    cycle: int
    loss: float
    best_loss: float                 # best in the current block's population
    population_losses: np.ndarray    # the population after this evaluation


@dataclass(frozen=True)
class BlockDone:
    step: int                        # 1-based block step over the whole run
    pass_index: int
    block_index: int
    best_loss: float
    heldout_top1: float              # in Started.quality's terms
    evaluations: int


@dataclass(frozen=True)
class PassDone:
    pass_index: int
    best_loss: float


@dataclass(frozen=True)
class Finished:
    run: Any                         # engine.runrecord.RunRecord with final metrics


Event = Stage | Started | Evaluated | BlockDone | PassDone | Finished
