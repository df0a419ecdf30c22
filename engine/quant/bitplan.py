"""Bit plans: a bit-width per quantization point (mixed precision), as plain data.

A point is named ``owner/role`` as ``QuantizedModel.quantizers()`` keys it (``blocks.0.attn.qkv/weight``,
``blocks.0.attn/probs``). A plan is a mapping point name -> bits; the uniform ``--bits W4A3`` is the plan
where every weight has 4 bits and every activation (attention operands included, or ``--attn-bits``)
has 3. ``QuantConfig`` keeps a plan *canonical*: only the points whose width differs from the uniform
default of their role, sorted by name, as a tuple of ``(name, bits)`` pairs. So an explicit uniform
plan is no plan at all (the same config, the same run identity, the same results bit for bit), and
two plans that give every point the same width are equal whatever base widths they were written
against.
"""
from __future__ import annotations

import hashlib
from typing import Iterable, Mapping

WEIGHT_BITS = (1, 16)       # parse_bits' ranges: weights 1-16, activations 2-16
ACTIVATION_BITS = (2, 16)

Plan = tuple[tuple[str, int], ...]


class PlanMismatch(ValueError):
    """A bit plan that does not fit a model or a quantizer: names the first point at fault."""


def point_name(owner: str, role: str) -> str:
    return f"{owner}/{role}"


def split_point(name: str) -> tuple[str, str]:
    """``blocks.0.attn.qkv/weight`` -> (``blocks.0.attn.qkv``, ``weight``)."""
    owner, sep, role = name.rpartition("/")
    if not sep or not owner or not role:
        raise ValueError(f"bit plan point {name!r} is not a quantization point name like 'blocks.0.attn.qkv/weight'")
    return owner, role


def is_weight_point(name: str) -> bool:
    return split_point(name)[1] == "weight"


def role_default(role: str, w_bits: int, a_bits: int, attention_bits: int) -> int:
    """The uniform width of a point's role: weights ``w_bits``, a Linear's or conv's input ``a_bits``,
    every attention operand (q, k, v, probs, CaiT's mixed) ``attention_bits``, as QuantConfig builds them."""
    if role == "weight":
        return w_bits
    return a_bits if role == "input" else attention_bits


def check_bits(name: str, bits: object) -> int:
    """``bits`` as a width a point of that role may have; ValueError naming the point otherwise."""
    low, high = WEIGHT_BITS if is_weight_point(name) else ACTIVATION_BITS
    if isinstance(bits, bool) or not isinstance(bits, int) or not low <= bits <= high:
        kind = "weight" if low == WEIGHT_BITS[0] else "activation"
        raise ValueError(f"bit plan gives {name} {bits!r} bits; a {kind} takes an integer from {low} to {high}")
    return bits


def canonical_plan(plan: Mapping[str, int] | Iterable[tuple[str, int]] | None, w_bits: int, a_bits: int,
                   attention_bits: int) -> Plan:
    """``plan`` (a mapping or ``(name, bits)`` pairs, e.g. read back from JSON) checked, without the points
    at their role's uniform width, sorted by name."""
    if plan is None:
        return ()
    pairs = list(plan.items()) if isinstance(plan, Mapping) else [tuple(pair) for pair in plan]
    out: dict[str, int] = {}
    for pair in pairs:
        if len(pair) != 2 or not isinstance(pair[0], str):
            raise ValueError(f"bit plan entry {pair!r} is not a (point name, bits) pair")
        name, bits = pair
        _, role = split_point(name)
        if name in out:
            raise ValueError(f"bit plan names {name} twice")
        out[name] = check_bits(name, bits)
    return tuple(sorted((name, bits) for name, bits in out.items()
                        if bits != role_default(split_point(name)[1], w_bits, a_bits, attention_bits)))


def plan_digest(plan: Plan) -> str:
    """A short stable name of a canonical plan (labels, file names)."""
    return hashlib.sha256(repr(tuple(plan)).encode()).hexdigest()[:6]
