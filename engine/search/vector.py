"""The searched vector: the coordinates a strategy moves, and how they become a block's scales.

* ``channels`` searches every scale of the block's selected points directly (a weight point has one
  per output channel): the release's vector, 392 numbers per demo block with ``attn+act``.
* ``points`` searches one factor per quantization point, multiplying all of that point's scales:
  each channel keeps its calibrated share and only the point's range moves (12 numbers per block
  with ``all``, ViT-B's too), small enough for CMA-ES to learn its shape in ~30 evaluations.
* ``points+channels`` searches both: every scale, times its point's factor.

Coordinates start at the block's current scales (channels) or at 1 (point factors), so the
relative mutation s·exp(U(-r, r)) and CMA-ES's log-space steps mean the same for every kind.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .config import VECTORS
from .space import BlockSpace


@dataclass(frozen=True)
class SearchedVector:
    """One block step's coordinates over ``scales`` (the block's vector when the step starts)."""
    kind: str
    scales: np.ndarray
    point_of: np.ndarray     # coordinate index of every element (``points``)

    @property
    def n_points(self) -> int:
        return int(self.point_of.max()) + 1

    @property
    def size(self) -> int:
        return {"channels": self.scales.size, "points": self.n_points,
                "points+channels": self.scales.size + self.n_points}[self.kind]

    def start(self) -> np.ndarray:
        """The coordinates of ``scales`` itself."""
        ones = np.ones(self.n_points, np.float32)
        return {"channels": self.scales.copy(), "points": ones,
                "points+channels": np.concatenate([self.scales, ones])}[self.kind]

    def expand(self, coordinates: np.ndarray) -> np.ndarray:
        """``(K, size)`` coordinates -> ``(K, block vector size)`` scales."""
        coordinates = np.asarray(coordinates, np.float32)
        if self.kind == "channels":
            return coordinates
        if self.kind == "points":
            return (self.scales[None] * coordinates[:, self.point_of]).astype(np.float32)
        n = self.scales.size
        return (coordinates[:, :n] * coordinates[:, n:][:, self.point_of]).astype(np.float32)

    def log_gradient(self, element_log_gradient: np.ndarray) -> np.ndarray:
        """d loss / d log(element) -> d loss / d log(coordinate): a point factor multiplies all of
        its point's elements, so its log-gradient is their sum."""
        per_point = np.bincount(self.point_of, weights=element_log_gradient, minlength=self.n_points)
        return {"channels": element_log_gradient, "points": per_point,
                "points+channels": np.concatenate([element_log_gradient, per_point])}[self.kind]

    def groups(self) -> np.ndarray:
        """The quantization point of every coordinate, numbered 0..: a point's elements share its
        number, and each point factor is a group of its own."""
        factors = self.n_points + np.arange(self.n_points)
        return {"channels": self.point_of, "points": np.arange(self.n_points),
                "points+channels": np.concatenate([self.point_of, factors])}[self.kind]

    def ranges(self, element_ranges: np.ndarray) -> np.ndarray:
        """Mutation range per coordinate (a point's elements share one range)."""
        per_point = element_ranges[np.unique(self.point_of, return_index=True)[1]]
        return {"channels": element_ranges, "points": per_point,
                "points+channels": np.concatenate([element_ranges, per_point])}[self.kind]


def searched_vector(kind: str, space: BlockSpace, scales: np.ndarray) -> SearchedVector:
    if kind not in VECTORS:
        raise ValueError(f"vector {kind!r}: choose one of {', '.join(VECTORS)}")
    sizes = [max(1, int(np.prod(shape))) for shape in space.shapes]
    point_of = np.repeat(np.arange(len(sizes)), sizes)
    return SearchedVector(kind, np.asarray(scales, np.float32), point_of)
