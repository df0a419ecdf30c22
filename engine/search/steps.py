"""What every strategy's block step takes and gives: the types the evolution, guided and CMA-ES steps
share and the search loop (run.py) reads, below all of them.

A block step is one visit of one block in one pass: it starts from the block's current coordinates
and their loss, yields a ``Step`` per evaluated candidate and returns the ``BlockResult`` to write back.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

Evaluate = Callable[[np.ndarray], np.ndarray]   # (K, size) candidate vectors -> (K,) losses


@dataclass(frozen=True)
class EvolutionParams:
    """A block step's parameters, for every strategy; each reads the ones it uses."""
    population: int
    tournament: int
    cycles: int
    children: int
    strategy: str      # "evolution" | "random" | "cmaes" | a guided one (config.STRATEGIES)
    mutation: str      # "absolute" | "relative"
    ranges: np.ndarray  # mutation range per element
    direction: str = "scaled"   # guided only: how the gradient becomes a move (config.DIRECTIONS)


@dataclass(frozen=True)
class Step:
    """One evaluated candidate."""
    cycle: int
    loss: float
    population_losses: np.ndarray


@dataclass(frozen=True)
class BlockResult:
    """What a block step writes back: the chosen vector, its loss, and the final population's losses."""
    vector: np.ndarray
    loss: float
    population_losses: np.ndarray
