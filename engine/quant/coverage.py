"""Coverage, measured: which matmul-like ops of a wrapped model multiply fake-quantized operands.

One probe forward runs under a ``TorchDispatchMode``, which sees every aten kernel below timm's
Python: ``F.linear``, ``einsum``, ``@`` and fused attention all arrive as ``addmm``/``mm``/``bmm``/
``convolution``/``_scaled_dot_product_*`` calls, so no matmul can hide behind a class name. Each
operand is traced back, through value-preserving ops only (``PRESERVING``), to where it came from:

- ``quantized`` / ``weight quantized``: the output of an activation / weight ``FakeQuantizer``
  (calibrated or not: coverage is about where the quantizers sit, not their values);
- ``input image``: the model's input, which the first conv multiplies in float by design (FQ-ViT
  and the CPT-V release do the same);
- ``FLOAT weight`` / ``FLOAT constant`` / ``FLOAT``: an unquantized parameter or buffer / a value
  computed from those alone (a position-bias table) / any other value.

A matmul of constants only (``constant``) counts as covered: its result is the same for every image,
folded at export, and no activation passes through it; a constant that a matmul multiplies with an
activation is not.

A value stays "quantized" through shape and copy ops (views, reshapes, permutes, ``contiguous``,
``unbind``/``split``, slicing and indexing, ``cat`` of quantized parts, padding by zeros or copies,
dtype copies) and through multiplication or division by a Python number (``q * scale`` is on a scaled grid);
anything else (an add, a norm, a softmax, a per-channel product) makes a new float value, which a
matmul must not take without a quantizer in between. Each op is attributed to the innermost module
running it, named as in ScaleSets (relative to the wrapped model).
"""
from __future__ import annotations

import fnmatch
import logging
import re
from dataclasses import dataclass, replace
from typing import Any, Iterable, Iterator

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.weak import WeakIdKeyDictionary

from .quantizer import FakeQuantizer

log = logging.getLogger(__name__)

QUANTIZED, WEIGHT_QUANTIZED, IMAGE = "quantized", "weight quantized", "input image"
FLOAT, FLOAT_WEIGHT, CONSTANT = "FLOAT", "FLOAT weight", "FLOAT constant"
COVERED = frozenset({QUANTIZED, WEIGHT_QUANTIZED, IMAGE})
CONSTANTS = frozenset({FLOAT_WEIGHT, CONSTANT})   # the same for every image: a matmul of these folds away

# aten op (overload packet name) -> positions of its multiplied operands (addmm's first is the bias).
_OPERANDS: dict[str, tuple[int, ...]] = {
    "mm": (0, 1), "bmm": (0, 1), "matmul": (0, 1), "linear": (0, 1), "mv": (0, 1), "dot": (0, 1),
    "vdot": (0, 1), "addmm": (1, 2), "baddbmm": (1, 2), "addbmm": (1, 2), "addmv": (1, 2), "addr": (1, 2),
    "_addmm_activation": (1, 2), "einsum": (1,), "tensordot": (0, 1), "bilinear": (0, 1, 2),
}
_CONV = re.compile(r"(^|_)conv(olution|_|\d|$)")   # convolution, conv2d, mkldnn_convolution, slow_conv2d...
_ATTENTION = re.compile(r"attention|transformer_encoder_layer")
ALL_OPERANDS = ()   # an attention kernel not known by name: every tensor of 2 dims or more

# Ops whose output holds (a selection of) the values of their first input, unchanged.
PRESERVING = frozenset({
    "view", "_unsafe_view", "reshape", "_reshape_alias", "view_as", "as_strided", "t", "transpose", "permute",
    "expand", "expand_as", "unsqueeze", "squeeze", "flatten", "unflatten", "movedim", "unbind", "split",
    "split_with_sizes", "unsafe_split", "chunk", "select", "slice", "narrow", "index", "index_select", "gather",
    "alias", "detach", "clone", "contiguous", "lift_fresh", "lift_fresh_copy", "_to_copy", "to", "repeat",
    "roll", "flip",
})
_JOINING = frozenset({"cat", "stack"})            # quantized when every part is
_SCALING = frozenset({"mul", "div"})              # by a Python number only


def op_operands(name: str) -> tuple[int, ...] | None:
    """Positions of the multiplied operands if aten op ``name`` is matmul-like, else None."""
    if name in _OPERANDS:
        return _OPERANDS[name]
    if _CONV.search(name) or name.endswith("_mm"):
        return (0, 1)
    if "scaled_dot_product" in name:
        return (0, 1, 2)
    if _ATTENTION.search(name):
        return ALL_OPERANDS
    return None


def op_label(name: str) -> str:
    """The name a user knows: every scaled-dot-product kernel is ``scaled_dot_product_attention``."""
    return "scaled_dot_product_attention" if "scaled_dot_product" in name else name


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _sources(name: str, args: tuple, kwargs: dict) -> list | None:
    """The inputs whose values ``name``'s output holds unchanged (None: it computes new values)."""
    base = name.rstrip("_")   # an in-place variant keeps the rule of its op
    if base in PRESERVING:
        return [args[0]]
    if base in _JOINING:
        return list(args[0])
    if base == "copy":   # copy_(destination, source)
        return [args[1]]
    if base in _SCALING and len(args) >= 2:
        if isinstance(args[0], torch.Tensor) and _is_number(args[1]):
            return [args[0]]
        if isinstance(args[1], torch.Tensor) and _is_number(args[0]):
            return [args[1]]
    if base.startswith(("reflection_pad", "replication_pad")):
        return [args[0]]
    if base == "constant_pad_nd" and (args[2] if len(args) > 2 else kwargs.get("value", 0)) == 0:
        return [args[0]]   # zero padding: 0 is on every affine grid (integer zero point)
    return None


class _Probe(TorchDispatchMode):
    """Records every matmul-like op with its operands' origins; propagates origins through PRESERVING ops."""

    def __init__(self, marks: WeakIdKeyDictionary, stack: list[str]) -> None:
        super().__init__()
        self.marks, self.stack = marks, stack
        self.calls: list[tuple[str, str, tuple[str, ...]]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = func.overloadpacket.__name__
        inputs = [t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        constant = all(self.marks.get(t) in CONSTANTS for t in inputs)   # factories (arange) included
        positions, kind = op_operands(name), None
        if positions is not None:
            operands = ([t for t in inputs if t.ndim >= 2] if positions == ALL_OPERANDS else
                        [t for i in positions if i < len(args) for t in tree_leaves(args[i]) if isinstance(t, torch.Tensor)])
            self.calls.append((self.stack[-1], op_label(name), tuple(self.marks.get(t, FLOAT) for t in operands)))
        else:
            sources = _sources(name, args, kwargs)
            if sources and all(isinstance(t, torch.Tensor) and t in self.marks for t in sources):
                kind = self.marks[sources[0]]
        kind = kind or (CONSTANT if constant else None)
        for tensor in tree_leaves(out):
            if isinstance(tensor, torch.Tensor):
                if kind is not None:
                    self.marks[tensor] = kind
                elif name.endswith("_"):   # overwritten in place with new values
                    self.marks.pop(tensor, None)
        return out


@dataclass(frozen=True)
class CoverageRow:
    """One matmul-like op of one module (``count`` identical calls), with its operands' origins."""
    module: str
    module_type: str
    op: str
    operands: tuple[str, ...]
    count: int = 1
    allowed: bool = False     # not covered, and kept in float on purpose (``--allow-float``)

    @property
    def constant(self) -> bool:
        return all(origin in CONSTANTS for origin in self.operands)

    @property
    def covered(self) -> bool:
        return self.constant or all(origin in COVERED for origin in self.operands)

    @property
    def status(self) -> str:
        if self.covered:
            return "constant" if self.constant else "ok"
        return "allowed float" if self.allowed else "UNCOVERED"

    def to_dict(self) -> dict[str, Any]:
        return {"module": self.module, "type": self.module_type, "op": self.op, "count": self.count,
                "operands": list(self.operands), "status": self.status}


@dataclass(frozen=True)
class CoverageReport:
    rows: tuple[CoverageRow, ...]
    allow_float: tuple[str, ...] = ()
    unmatched_patterns: tuple[str, ...] = ()   # --allow-float patterns that no float op matched

    @property
    def uncovered(self) -> list[CoverageRow]:
        return [r for r in self.rows if not r.covered and not r.allowed]

    @property
    def allowed(self) -> list[CoverageRow]:
        return [r for r in self.rows if not r.covered and r.allowed]

    @property
    def n_ops(self) -> int:
        return sum(r.count for r in self.rows)

    @property
    def fully_quantized(self) -> bool:
        return not self.uncovered

    def summary(self) -> str:
        uncovered, allowed = self.uncovered, self.allowed
        if uncovered:
            text = (f"{sum(r.count for r in uncovered)} of {self.n_ops} matmul-like ops uncovered, in "
                    f"{modules(uncovered)}: {describe_modules(uncovered)}")
        else:
            text = f"fully quantized: {self.n_ops} matmul-like ops, every operand quantized (or the input image)"
            constant = sum(r.count for r in self.rows if r.constant)
            if constant:
                text += f", {constant} of them on weights alone (constant)"
        if allowed:
            text += f"; {sum(r.count for r in allowed)} kept in float in {modules(allowed)} by --allow-float"
        if self.unmatched_patterns:
            text += f"; --allow-float patterns matching no float op: {' '.join(self.unmatched_patterns)}"
        return text

    def table(self) -> str:
        ops = [r.op if r.count == 1 else f"{r.op} x{r.count}" for r in self.rows]
        widths = [max([len(title)] + [len(v) for v in values]) for title, values in
                  (("module", [r.module for r in self.rows]), ("type", [r.module_type for r in self.rows]), ("op", ops))]
        lines = [f"{'module':<{widths[0]}}  {'type':<{widths[1]}}  {'op':<{widths[2]}}  {'status':<13} operands"]
        for r, op in zip(self.rows, ops):
            lines.append(f"{r.module:<{widths[0]}}  {r.module_type:<{widths[1]}}  {op:<{widths[2]}}  {r.status:<13} "
                         f"{', '.join(r.operands)}")
        lines.append(f"summary: {self.summary()}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"fully_quantized": self.fully_quantized, "n_ops": self.n_ops, "allow_float": list(self.allow_float),
                "unmatched_patterns": list(self.unmatched_patterns), "summary": self.summary(),
                "rows": [r.to_dict() for r in self.rows]}


class UncoveredMatmul(ValueError):
    """A matmul of the wrapped model would multiply a float operand (no quantizer reaches it)."""

    def __init__(self, report: CoverageReport) -> None:
        self.report = report
        first = report.uncovered[0]
        super().__init__(
            f"{first.module} ({first.module_type}) runs {first.op} on {', '.join(first.operands)} operands: it would "
            f"stay unquantized ({report.summary()}); "
            "`python -m engine coverage MODEL` shows the table; --allow-float PATTERN keeps chosen modules "
            "in float on purpose")


def modules(rows: Iterable[CoverageRow]) -> str:
    """``1 module``, ``26 modules``: how many modules ``rows`` come from."""
    count = len({r.module for r in rows})
    return f"{count} module{'s' if count != 1 else ''}"


def module_groups(rows: Iterable[CoverageRow]) -> dict[tuple[str, str], set[str]]:
    """``(module name with indices as *, type) -> module names``: blocks.3.attn and blocks.7.attn are one group."""
    groups: dict[tuple[str, str], set[str]] = {}
    for r in rows:
        groups.setdefault((re.sub(r"(?<=\.)\d+(?=\.|$)|^\d+(?=\.|$)", "*", r.module), r.module_type), set()).add(r.module)
    return groups


def describe_modules(rows: Iterable[CoverageRow]) -> str:
    """``blocks.*.attn (TalkingHeadAttn) x24, ...``: the uncovered modules, grouped."""
    return ", ".join(f"{pattern} ({kind}) x{len(names)}" if len(names) > 1 else f"{next(iter(names))} ({kind})"
                     for (pattern, kind), names in module_groups(rows).items())


def type_name(module: nn.Module) -> str:
    """``beit.Attention``, ``levit.Attention``: short, and unambiguous where timm reuses class names."""
    cls = type(module)
    return f"{cls.__module__.rpartition('.')[2]}.{cls.__qualname__}"


def _hooks(model: nn.Module, marks: WeakIdKeyDictionary, stack: list[str]) -> Iterator[Any]:
    """Forward hooks: a stack of running modules' names, and every FakeQuantizer's output marked as its own."""
    for name, module in model.named_modules():
        if isinstance(module, FakeQuantizer):
            kind = WEIGHT_QUANTIZED if name.rpartition(".")[2] == "weight_quant" else QUANTIZED

            def mark(_module, _args, output, kind=kind):
                fresh = output.view_as(output)   # a tensor of its own: an identity quantizer returns its input
                marks[fresh] = kind
                return fresh

            yield module.register_forward_hook(mark)
        else:
            def enter(_module, _args, name=name) -> None:
                stack.append(name)

            def leave(*_) -> None:
                stack.pop()

            yield module.register_forward_pre_hook(enter)
            yield module.register_forward_hook(leave, always_call=True)


@torch.no_grad()
def coverage_report(qmodel: nn.Module, example: torch.Tensor, allow_float: Iterable[str] | None = None) -> CoverageReport:
    """One forward of ``example`` (a couple of images suffice) through ``qmodel`` (a QuantizedModel or the
    model it wraps), every matmul-like op recorded; ``allow_float`` defaults to the model's QuantConfig."""
    model = getattr(qmodel, "model", qmodel)
    if allow_float is None:
        allow_float = getattr(getattr(qmodel, "config", None), "allow_float", ())
    patterns = tuple(allow_float)
    marks = WeakIdKeyDictionary()
    for tensor in [*model.parameters(), *model.buffers()]:
        marks[tensor] = FLOAT_WEIGHT
    marks[example] = IMAGE
    stack = [""]
    handles = list(_hooks(model, marks, stack))
    types = {name: type_name(m) for name, m in model.named_modules()}
    try:
        with _Probe(marks, stack) as probe:
            model(example)
    finally:
        for handle in handles:
            handle.remove()
    counts: dict[tuple[str, str, tuple[str, ...]], int] = {}
    for call in probe.calls:
        counts[call] = counts.get(call, 0) + 1
    rows, used = [], set()
    for (module, op, operands), count in counts.items():
        row = CoverageRow(module or "(model)", types[module], op, operands, count)
        if not row.covered:
            matched = [p for p in patterns if fnmatch.fnmatchcase(module, p)]
            used.update(matched)
            row = replace(row, allowed=bool(matched))
        rows.append(row)
    return CoverageReport(tuple(rows), patterns, tuple(p for p in patterns if p not in used))


def check_coverage(qmodel: nn.Module, example: torch.Tensor) -> CoverageReport:
    """The coverage report, or UncoveredMatmul if an op would multiply float operands without the model's
    ``--allow-float`` patterns saying so."""
    report = coverage_report(qmodel, example)
    if report.uncovered:
        raise UncoveredMatmul(report)
    if report.allowed:
        log.warning("kept in float on purpose (--allow-float): %s", describe_modules(report.allowed))
    if report.unmatched_patterns:
        log.warning("--allow-float %s matches no float op of this model", " ".join(report.unmatched_patterns))
    return report
