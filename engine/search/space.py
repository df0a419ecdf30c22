"""The searched vector of one transformer block, and how candidates are mutated.

A block's vector concatenates the scales of the quantization points the scope selects (weight
scales per output channel, activation scales per tensor). Zero-points and bit-widths stay fixed,
like in the release. Mutation is pure numpy on a seeded Generator, so a run is reproducible and
its RNG state can be checkpointed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from ..quant import QuantConfig, QuantizedModel
from .config import scope_parts

MIN_SCALE = 1e-8  # |s + u| can hit 0; a zero scale would divide by zero in the fake-quant


@dataclass(frozen=True)
class BlockSpace:
    """Where each element of a block's vector lives in the model."""
    block_name: str
    keys: tuple[tuple[str, str], ...]        # (owner module, role) as in QuantizedModel.quantizers()
    buffer_names: tuple[str, ...]            # scale buffers, relative to the block module
    shapes: tuple[tuple[int, ...], ...]
    is_weight: np.ndarray                    # bool per element

    @property
    def size(self) -> int:
        return int(self.is_weight.size)

    def read(self, qmodel: QuantizedModel) -> np.ndarray:
        quantizers = qmodel.quantizers()
        return np.concatenate([quantizers[key].scale.detach().cpu().numpy().reshape(-1) for key in self.keys]
                              ).astype(np.float32)

    def write(self, qmodel: QuantizedModel, vector: np.ndarray) -> None:
        quantizers = qmodel.quantizers()
        for key, part in zip(self.keys, self.split(vector)):
            quantizers[key].set_scale(torch.from_numpy(np.ascontiguousarray(part)))

    def split(self, vector: np.ndarray) -> list[np.ndarray]:
        sizes = [int(np.prod(shape)) for shape in self.shapes]
        parts = np.split(np.asarray(vector, dtype=np.float32), np.cumsum(sizes)[:-1])
        return [p.reshape(shape) for p, shape in zip(parts, self.shapes)]

    def stacked_buffers(self, vectors: torch.Tensor) -> dict[str, torch.Tensor]:
        """``(K, size)`` candidate vectors -> ``{buffer name: (K, *shape)}`` for a batched call."""
        out, start = {}, 0
        for name, shape in zip(self.buffer_names, self.shapes):
            n = int(np.prod(shape))
            out[name] = vectors[:, start:start + n].reshape((vectors.shape[0],) + shape)
            start += n
        return out

    def ranges(self, weight_range: float, act_range: float) -> np.ndarray:
        return np.where(self.is_weight, weight_range, act_range)


def planned_ranges(space: BlockSpace, quant: QuantConfig,
                   resolved: Callable[[int, int], tuple[float, float]]) -> np.ndarray:
    """Mutation range of every element of ``space``: ``resolved(w_bits, a_bits)`` (SearchConfig.resolved_ranges)
    gives a weight's and an activation's range at a width. Without a plan every weight takes the range of
    ``w_bits`` and every activation that of ``a_bits``, as before plans existed; a point a bit plan sets
    takes its own width's range, so a 3-bit point steps as a 3-bit one whatever the rest has."""
    w_range, a_range = resolved(quant.w_bits, quant.a_bits)
    if not quant.plan:
        return space.ranges(w_range, a_range)
    planned = dict(quant.plan)
    parts = []
    for (owner, role), shape in zip(space.keys, space.shapes):
        bits = planned.get(f"{owner}/{role}")
        weight = role == "weight"
        value = (w_range if weight else a_range) if bits is None else resolved(bits, bits)[0 if weight else 1]
        parts.append(np.full(max(1, int(np.prod(shape))), value))
    return np.concatenate(parts)


def _selected(relative_owner: str, role: str, parts: frozenset[str]) -> bool:
    if role != "weight":
        return "act" in parts
    branch = relative_owner.split(".", 1)[0]
    return branch in parts and branch in ("attn", "mlp")


def block_space(qmodel: QuantizedModel, block_name: str, scope: str) -> BlockSpace:
    """The scale points of ``block_name`` that ``scope`` selects, in module order."""
    parts = scope_parts(scope)
    prefix = block_name + "."
    keys, names, shapes, weight_flags = [], [], [], []
    for (owner, role), quantizer in qmodel.quantizers().items():
        if not owner.startswith(prefix) or not quantizer.calibrated:
            continue
        relative = owner[len(prefix):]
        if not _selected(relative, role, parts):
            continue
        keys.append((owner, role))
        names.append(f"{relative}.{role}_quant.scale")
        shapes.append(tuple(quantizer.scale.shape))
        weight_flags.append(np.full(max(1, quantizer.scale.numel()), role == "weight"))
    if not keys:
        raise ValueError(f"scope {scope!r} selects no scales in {block_name}")
    return BlockSpace(block_name, tuple(keys), tuple(names), tuple(shapes), np.concatenate(weight_flags))


def mutate(parent: np.ndarray, ranges: np.ndarray, mode: str, rng: np.random.Generator) -> np.ndarray:
    """One child: every element perturbed. ``absolute``: |s + U(-r, r)| (the release);
    ``relative``: s·exp(U(-r, r)), a step proportional to each scale, so weight scales (~1e-3)
    and activation clip scales (~1e-1) move by comparable fractions and never reach zero."""
    noise = rng.uniform(-1.0, 1.0, size=parent.shape) * ranges
    parent = parent.astype(np.float64)
    if mode == "absolute":
        child = np.maximum(np.abs(parent + noise), MIN_SCALE)
    elif mode == "relative":
        child = parent * np.exp(noise)
    else:
        raise ValueError(f"unknown mutation {mode!r}")
    return child.astype(np.float32)
