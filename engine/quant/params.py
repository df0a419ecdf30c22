"""QuantParams and ScaleSet: the plain-numpy unit that is searched, saved, loaded and compared.

A ScaleSet never holds live tensors, so it can travel in events, be diffed, and be written to
HDF5 without touching a model. Vocabulary follows ONNX QuantizeLinear (scale, zero_point, axis).
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field, replace
from typing import Iterator, Mapping

import numpy as np

PER_TENSOR = "per_tensor"
PER_CHANNEL = "per_channel"


def integer_range(bits: int, signed: bool) -> tuple[int, int]:
    """(qmin, qmax) of a ``bits``-wide integer grid: two's complement when signed."""
    return (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)


@dataclass(frozen=True, eq=False)
class QuantParams:
    """Parameters of one quantization point.

    ``scheme`` names the fake-quant function (``engine.quant.schemes``); ``extra`` holds the
    scheme's additional arrays (e.g. a twin-uniform split), saved alongside scale/zero_point.
    """

    scale: np.ndarray
    zero_point: np.ndarray
    bits: int
    signed: bool
    granularity: str = PER_TENSOR
    axis: int | None = None
    scheme: str = "uniform"
    extra: Mapping[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "scale", np.asarray(self.scale, dtype=np.float32))
        object.__setattr__(self, "zero_point", np.asarray(self.zero_point, dtype=np.float32))
        object.__setattr__(self, "extra", {k: np.asarray(v) for k, v in self.extra.items()})
        if self.granularity not in (PER_TENSOR, PER_CHANNEL):
            raise ValueError(f"granularity must be {PER_TENSOR!r} or {PER_CHANNEL!r}, got {self.granularity!r}")
        if self.scale.shape != self.zero_point.shape:
            raise ValueError(f"scale shape {self.scale.shape} != zero_point shape {self.zero_point.shape}")

    @property
    def qmin(self) -> int:
        return integer_range(self.bits, self.signed)[0]

    @property
    def qmax(self) -> int:
        return integer_range(self.bits, self.signed)[1]

    def with_scale(self, scale: np.ndarray) -> "QuantParams":
        return replace(self, scale=np.asarray(scale, dtype=np.float32).reshape(self.scale.shape))

    def equals(self, other: "QuantParams") -> bool:
        return (
            self.bits == other.bits
            and self.signed == other.signed
            and self.granularity == other.granularity
            and self.axis == other.axis
            and self.scheme == other.scheme
            and np.array_equal(self.scale, other.scale)
            and np.array_equal(self.zero_point, other.zero_point)
            and self.extra.keys() == other.extra.keys()
            and all(np.array_equal(self.extra[k], other.extra[k]) for k in self.extra)
        )


class ScaleSet(OrderedDict):
    """Ordered ``module qualified name -> {role: QuantParams}``.

    Roles: ``weight`` and ``input`` for Linear/Conv layers; ``q``, ``k``, ``v`` and ``probs``
    (softmax output) for attention modules.
    """

    def points(self) -> Iterator[tuple[str, str, QuantParams]]:
        for name, roles in self.items():
            for role, params in roles.items():
                yield name, role, params

    def n_points(self) -> int:
        return sum(len(roles) for roles in self.values())

    def get_point(self, name: str, role: str) -> QuantParams:
        return self[name][role]

    def with_point(self, name: str, role: str, params: QuantParams) -> "ScaleSet":
        """A copy with one point replaced (ScaleSets are treated as values)."""
        out = ScaleSet((n, dict(r)) for n, r in self.items())
        out[name][role] = params
        return out

    def equals(self, other: "ScaleSet") -> bool:
        if list(self.keys()) != list(other.keys()):
            return False
        return all(
            self[n].keys() == other[n].keys() and all(self[n][r].equals(other[n][r]) for r in self[n])
            for n in self
        )
