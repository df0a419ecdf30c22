"""The quantization points of a model, each placed where a forward can restart just before it.

A point in block ``i`` (or in the join before it, Swin's patch merging) only changes what blocks
``i..`` compute, so measuring it needs only those blocks rerun from their cached input. Points
before the first block (the patch embedding) rerun the whole model; points after the last block
(the head) rerun only the head. ``kind`` names a point the same way in every block (``attn.qkv.weight``,
``mlp.fc1.input``, ``attn.probs``), so blocks × kinds is a table.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..quant import QuantizedModel

STEM = "stem"
HEAD = "head"


@dataclass(frozen=True)
class Point:
    owner: str       # module qualified name, as in ``QuantizedModel.quantizers()``
    role: str        # weight | input | q | k | v | probs
    block: int       # index of the block it lies in (or before: Swin's join); -1 stem; n_blocks head
    kind: str        # the point within its block (``attn.qkv.weight``), or its full name outside blocks

    @property
    def key(self) -> tuple[str, str]:
        return self.owner, self.role

    @property
    def name(self) -> str:
        return f"{self.owner}/{self.role}"

    @property
    def is_weight(self) -> bool:
        return self.role == "weight"

    def where(self, n_blocks: int) -> str:
        """``stem``, ``head`` or ``block 3``, for tables and labels."""
        if self.block < 0:
            return STEM
        return HEAD if self.block >= n_blocks else f"block {self.block}"


def _containers(qmodel: QuantizedModel) -> list[tuple[str, int]]:
    """``(module prefix, block index)``, longest prefix first: every block, and every stage that holds
    blocks (a Swin stage's downsample runs right before its first block)."""
    out: dict[str, int] = {}
    for index, (name, _) in enumerate(qmodel.blocks()):
        out[name] = index
        stage, _, position = name.rpartition(".blocks.")
        if stage and position == "0":
            out.setdefault(stage, index)
    return sorted(out.items(), key=lambda item: -len(item[0]))


def _kind(owner: str, role: str, container: str) -> str:
    relative = owner[len(container) + 1:] if container else owner
    return f"{relative}.{role}" if relative else role


def quantization_points(qmodel: QuantizedModel) -> list[Point]:
    """Every quantization point of ``qmodel`` in module order. Points outside the blocks are the stem
    when they come before the first block in module order and the head when they come after it."""
    containers = _containers(qmodel)
    n_blocks = len(qmodel.blocks())
    points: list[Point] = []
    seen_block = False
    for owner, role in qmodel.quantizers():
        container = next(((prefix, index) for prefix, index in containers if owner.startswith(prefix + ".")), None)
        if container is not None:
            seen_block = True
            points.append(Point(owner, role, container[1], _kind(owner, role, container[0])))
        else:
            points.append(Point(owner, role, n_blocks if seen_block else -1, _kind(owner, role, "")))
    return points
