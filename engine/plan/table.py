"""A bit plan as a blocks × kinds table, from its point names alone (a plan file holds no model).

A point whose owner lies in ``…blocks.<i>`` (ViT's ``blocks.3``, Swin's ``layers.1.blocks.0``) is in a block,
numbered in the order the blocks first appear; its kind is the rest of its name, shortened as the docs'
tables write it (``attn.qkv/weight`` -> ``qkv w``). The other points (patch embedding, head, Swin's patch
merging) are listed beside the table.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..quant.bitplan import split_point

_IN_BLOCK = re.compile(r"^((?:.*\.)?blocks\.\d+)(?:\.(.*))?$")
_ROLES = {"weight": "w", "input": "in"}
_FORWARD = ("qkv w", "qkv in", "q", "k", "v", "probs", "proj w", "proj in", "fc1 w", "fc1 in", "fc2 w", "fc2 in")


def short_kind(relative_owner: str, role: str) -> str:
    """``attn.qkv`` + ``weight`` -> ``qkv w``; ``attn`` + ``probs`` -> ``probs``."""
    parts = [p for p in relative_owner.split(".") if p] if relative_owner else []
    if parts and parts[0] in ("attn", "mlp"):
        parts = parts[1:]
    return " ".join(parts + [_ROLES.get(role, role)])


@dataclass(frozen=True)
class PlanTable:
    kinds: tuple[str, ...]                   # the columns, in forward order where known
    bits: np.ndarray                         # (blocks, kinds) widths, NaN where a block has no such point
    names: tuple[tuple[str | None, ...], ...]   # the point of each cell (None: no such point)
    others: tuple[tuple[str, int], ...]      # the points outside the blocks, in module order

    @property
    def n_blocks(self) -> int:
        return self.bits.shape[0]


def plan_table(points: Sequence[tuple[str, int]]) -> PlanTable:
    """``points`` (``(name, bits)`` in module order) placed by block and kind."""
    blocks: dict[str, int] = {}
    cells: dict[tuple[int, str], tuple[str, int]] = {}
    others = []
    for name, bits in points:
        owner, role = split_point(name)
        match = _IN_BLOCK.match(owner)
        if match is None:
            others.append((name, bits))
            continue
        block = blocks.setdefault(match.group(1), len(blocks))
        cells[(block, short_kind(match.group(2) or "", role))] = (name, bits)
    seen = list(dict.fromkeys(kind for _, kind in cells))
    kinds = [k for k in _FORWARD if k in seen] + [k for k in seen if k not in _FORWARD]
    grid = np.full((len(blocks), len(kinds)), np.nan)
    names = [[None] * len(kinds) for _ in blocks]
    for (block, kind), (name, bits) in cells.items():
        grid[block, kinds.index(kind)] = bits
        names[block][kinds.index(kind)] = name
    return PlanTable(tuple(kinds), grid, tuple(tuple(row) for row in names), tuple(others))
