"""``torch.compile`` of candidate evaluation (every block, and the searched one batched over
candidates): the same losses as eager, bit for bit, and never an error.

Fake quantization is elementwise: eager, each point costs seven passes over its tensor (divide, round,
add, two clamps, subtract, multiply); inductor fuses them into one pass, or into the kernel next to it.
But inductor also rewrites LayerNorm, GELU and softmax into its own kernels, whose results differ from
eager's by an ulp in many elements, and at 3-4 bits some of those land across a rounding boundary and
move a block's output by a whole quantization step (docs/performance.md, "Compiled evaluation"). So those ops
keep their eager kernels (``EAGER_OPS``) and inductor fuses everything around them: compiled and
eager give bit-identical blocks, and a search's result does not depend on whether it compiled.

That is what compiling means on CUDA. On the CPU it means eager blocks whose fake quantization runs
as one fused kernel per point (``engine/quant/fused.py``): there the kept LayerNorm, GELU and softmax
bound what compiled blocks can fuse, and the fused kernel is the faster of the two (docs/performance.md,
"Compiled evaluation"); ``should_compile`` and ``should_fuse_fake_quant`` hold the rule.

Compilation is lazy (at a block's first call), so failures surface there: a missing C++ toolchain,
an op inductor cannot lower, a model dynamo cannot trace. The first one switches every compiled
block of the run back to eager with one log line. Inductor keeps its generated kernels on disk
(its FX graph cache), so a second run on the same model skips the C++ compilation.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Callable

import torch
from torch import nn

from ..quant import QuantizedModel
from ..quant.fused import OUT_OF_MEMORY, compile_failure, compile_settings
from .config import COMPILE_MODES
from .evaluator import Forwards, candidate_outputs
from .segments import Segments

log = logging.getLogger(__name__)

# ``auto`` compiles for blocks whose input holds at least this many values per image (tokens x
# width: deit_tiny's is 197 x 192 = 37,824, the digits demo's 17 x 96 = 1,632, too small for fusion
# to pay for compiling).
AUTO_MIN_BLOCK_ELEMENTS = 8192

_aten = torch.ops.aten
EAGER_OPS = frozenset({_aten.native_layer_norm, _aten.layer_norm, _aten.gelu, _aten._softmax, _aten.softmax})


def _register_eager_fallbacks() -> None:
    """Lower the kept ops to their eager kernels, registered here and not left to inductor's implicit
    fallback: that one raises when the ``CI`` environment variable is set ("a decomposition exists, we
    should switch to it"), a check meant for PyTorch's own CI. Plain inductor never reaches these
    lowerings, since its decompositions remove the ops first."""
    from torch._inductor import lowering
    from torch._library.utils import get_layout_constraint_tag

    for packet in EAGER_OPS:
        for name in packet.overloads():
            op = getattr(packet, name)
            if op not in lowering.lowerings:
                constraint = lowering.tag_to_layout_constraint(get_layout_constraint_tag(op, with_default=True))
                lowering.make_fallback(op, layout_constraint=constraint, warn=False, override_decomp=True)


def exact_inductor(graph: torch.fx.GraphModule, example_inputs: list) -> Callable:
    """Inductor without its own LayerNorm, GELU and softmax. AOTAutograd's cache is bypassed: it is
    keyed on the graph before decomposition, so it could hand back a plain-inductor build of the same
    graph; inductor's own cache, keyed on the decomposed graph, still skips repeated C++ builds."""
    from torch._inductor.compile_fx import compile_fx
    from torch._inductor.decomposition import select_decomp_table

    _register_eager_fallbacks()
    table = {op: fn for op, fn in select_decomp_table().items()
             if getattr(op, "overloadpacket", op) not in EAGER_OPS}
    with torch._functorch.config.patch(enable_autograd_cache=False):
        return compile_fx(graph, example_inputs, decompositions=table)


def _wanted(mode: str, block_elements: int) -> bool:
    if mode not in COMPILE_MODES:
        raise ValueError(f"compile mode must be one of {', '.join(COMPILE_MODES)}, got {mode!r}")
    return mode == "on" or (mode == "auto" and block_elements >= AUTO_MIN_BLOCK_ELEMENTS)


def should_compile(mode: str, device: torch.device, block_elements: int) -> bool:
    """Compiled blocks: what compiling means on CUDA. ``on``/``off`` as asked; ``auto``: for blocks of
    deit_tiny's size and up."""
    return _wanted(mode, block_elements) and device.type != "cpu"


def should_fuse_fake_quant(mode: str, device: torch.device, block_elements: int) -> bool:
    """Eager blocks with fused fake quantization: what compiling means on the CPU, by the same rule."""
    return _wanted(mode, block_elements) and device.type == "cpu"


class EagerFallback:
    """Shared by the compiled blocks of one run: after the first failure, all of them run eager."""

    def __init__(self) -> None:
        self.reason: str | None = None

    @property
    def active(self) -> bool:
        return self.reason is not None

    def trip(self, error: Exception) -> None:
        self.reason = compile_failure(error)
        log.warning("torch.compile failed, running eager from here on (%s)", self.reason)


@dataclass(frozen=True)
class Compiled:
    """A compiled callable with its eager original beside it for the fallback."""
    eager: Callable[..., torch.Tensor]
    compiled: Callable[..., torch.Tensor]
    fallback: EagerFallback

    def __call__(self, *args) -> torch.Tensor:
        if self.fallback.active:
            return self.eager(*args)
        try:
            with compile_settings():
                return self.compiled(*args)
        except OUT_OF_MEMORY:
            raise                       # eager would not fit either; the search reports it
        except Exception as error:      # noqa: BLE001 - any compiler failure means "run eager"
            self.fallback.trip(error)
            return self.eager(*args)


def _contiguous_candidates(block: nn.Module, buffers: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """The candidates' buffers are views into one vector, strided by the block's vector size; made
    contiguous, blocks with different vector sizes (Swin's stages) guard alike."""
    return candidate_outputs(block, {name: value.contiguous() for name, value in buffers.items()}, x)


def compiled_forwards(segments: Segments, backend: Callable | str = exact_inductor) -> Forwards:
    """Every block compiled (blocks of one class share one graph: parameters and buffers are graph
    inputs), and the candidate-batched searched block; stem, joins and head stay eager (a small share).
    One failure anywhere sends all of them back to eager."""
    fallback = EagerFallback()
    try:
        blocks = tuple(Compiled(block, torch.compile(block, backend=backend), fallback) for block in segments.blocks)
        candidates = Compiled(candidate_outputs, torch.compile(_contiguous_candidates, backend=backend), fallback)
    except Exception as error:          # noqa: BLE001 - torch.compile itself refused (an old torch, no dynamo)
        fallback.trip(error)
        return Forwards(segments)
    return Forwards(replace(segments, blocks=blocks), candidates)


def block_elements(segments: Segments, images: torch.Tensor) -> int:
    """Values per image entering the first block (tokens x width): the size ``auto`` decides on."""
    with torch.no_grad():
        return segments.block_input(images[:1], 0)[0].numel()


def evaluation_forwards(qmodel: QuantizedModel, segments: Segments, mode: str, images: torch.Tensor) -> Forwards:
    """The forwards candidate evaluation runs: compiled blocks where ``mode`` asks for them. Where it
    fuses fake quantization instead, that is set on ``qmodel``, so its other forwards (held-out and
    test top-1) use the fused kernels too; ``off`` turns them off."""
    elements = block_elements(segments, images)
    fuses = should_fuse_fake_quant(mode, images.device, elements)
    qmodel.fuse_fake_quant(fuses)
    if fuses:
        log.info("fake quantization runs as fused kernels (--compile %s)", mode)
    if not should_compile(mode, images.device, elements):
        return Forwards(segments)
    log.info("compiling the blocks for candidate evaluation (--compile %s)", mode)
    return compiled_forwards(segments)
