"""The diagnosis as plain numbers: what the CLI prints, the app shows and the HDF5 file keeps.

Nothing here computes a measurement; the views only sort, select and difference what was measured.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .points import Point


@dataclass(frozen=True, eq=False)
class PointTable:
    """Per point (in ``Diagnosis.points`` order), for one set of scales."""
    scales: str                  # "base", "refined" (a search run) or "calibrated"
    sqnr_db: np.ndarray          # +inf: the point changes nothing
    loss_only: np.ndarray        # fitness loss with only this point quantized
    top1_only: np.ndarray        # held-out top-1, same configuration
    loss_without: np.ndarray     # fitness loss with every point but this one quantized
    top1_without: np.ndarray
    loss_all: float              # every point quantized
    top1_all: float

    @property
    def sensitivity(self) -> np.ndarray:
        """The fitness loss of the point alone (only it quantized): the damage it does by itself. It
        ranks the points; the README's Diagnose section compares this ranking and ``recovery``'s with
        random points."""
        return self.loss_only

    @property
    def recovery(self) -> np.ndarray:
        """The fitness loss that goes away when only this point is left in FP, all others quantized.
        After a search it can be negative: the other scales were tuned around this point's error."""
        return self.loss_all - self.loss_without

    def ranking(self) -> np.ndarray:
        """Point indices, most sensitive first (ties keep module order)."""
        return np.argsort(-self.sensitivity, kind="stable")


@dataclass(frozen=True, eq=False)
class WhatIf:
    """Held-out top-1 with K points raised to ``to_bits``: the K most sensitive, and K drawn at random."""
    to_bits: int
    ranked_by: str                    # the PointTable whose ranking chose the points
    k: np.ndarray                     # (n_k,)
    top1_top: np.ndarray              # (n_k,)
    top1_random: np.ndarray           # (n_k, draws)
    mean_act_bits_top: np.ndarray     # (n_k,) mean bit-width of the activation points after raising
    mean_act_bits_random: np.ndarray  # (n_k,) the same, averaged over the draws
    ranking: np.ndarray               # point indices that could be raised, most sensitive first
    top1_none: float                  # nothing raised

    @property
    def top1_random_mean(self) -> np.ndarray:
        return self.top1_random.mean(axis=1)


def _plain(value: float) -> float | None:
    """JSON has no infinity: an infinite SQNR (an identity point) is written as null."""
    return float(value) if math.isfinite(value) else None


@dataclass(frozen=True, eq=False)
class Diagnosis:
    model_name: str
    quantizer: str
    bits: str                             # e.g. "W4A3"
    source: str                           # the run file diagnosed, or "calibrated"
    points: tuple[Point, ...]
    n_blocks: int
    fp_top1: float                        # held-out
    n_calibration: int                    # images the fitness loss compares
    n_heldout: int
    fitness: dict[str, Any]               # loss, temperature, features
    tables: dict[str, PointTable]         # by scales name, in order (base before refined)
    whatif: WhatIf | None = None
    seconds: float = 0.0

    @property
    def kinds(self) -> list[str]:
        """The point kinds found in blocks, in first-seen order: the columns of a blocks × kinds table."""
        return list(dict.fromkeys(p.kind for p in self.points if 0 <= p.block < self.n_blocks))

    def grid(self, values: np.ndarray) -> np.ndarray:
        """Per-point ``values`` as a (blocks, kinds) array, NaN where a block has no such point."""
        kinds = {kind: j for j, kind in enumerate(self.kinds)}
        out = np.full((self.n_blocks, len(kinds)), np.nan)
        for value, point in zip(values, self.points):
            if 0 <= point.block < self.n_blocks:
                out[point.block, kinds[point.kind]] = value
        return out

    def most_sensitive(self, n: int, scales: str | None = None) -> list[int]:
        """The ``n`` most sensitive point indices by ``scales``' table (default: the last one, the refined)."""
        table = self.tables[scales or list(self.tables)[-1]]
        return [int(i) for i in table.ranking()[:n]]

    def point_rows(self) -> list[dict[str, Any]]:
        rows = []
        for i, point in enumerate(self.points):
            row: dict[str, Any] = {"name": point.name, "owner": point.owner, "role": point.role, "kind": point.kind,
                                   "block": point.block, "where": point.where(self.n_blocks)}
            for name, table in self.tables.items():
                row[name] = {"sqnr_db": _plain(table.sqnr_db[i]), "sensitivity": float(table.sensitivity[i]),
                             "recovery": float(table.recovery[i]),
                             "loss_only": float(table.loss_only[i]), "top1_only": float(table.top1_only[i]),
                             "loss_without": float(table.loss_without[i]),
                             "top1_without": float(table.top1_without[i])}
            rows.append(row)
        return rows

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "model": self.model_name, "quantizer": self.quantizer, "bits": self.bits, "source": self.source,
            "n_blocks": self.n_blocks, "n_points": len(self.points), "heldout_fp_top1": self.fp_top1,
            "n_calibration": self.n_calibration, "n_heldout": self.n_heldout, "fitness": self.fitness,
            "seconds": self.seconds,
            "scales": {name: {"loss_all": t.loss_all, "heldout_top1_all": t.top1_all,
                              "most_sensitive": [self.points[i].name for i in self.most_sensitive(5, name)]}
                       for name, t in self.tables.items()},
            "points": self.point_rows(),
        }
        if self.whatif is not None:
            w = self.whatif
            out["whatif"] = {"to_bits": w.to_bits, "ranked_by": w.ranked_by, "heldout_top1_none": w.top1_none,
                             "k": w.k.tolist(), "heldout_top1_top": w.top1_top.tolist(),
                             "heldout_top1_random_mean": w.top1_random_mean.tolist(),
                             "heldout_top1_random": w.top1_random.tolist(),
                             "mean_act_bits_top": w.mean_act_bits_top.tolist(),
                             "mean_act_bits_random": w.mean_act_bits_random.tolist(),
                             "raised_first": [self.points[i].name for i in w.ranking[:int(w.k.max())]]}
        return out
