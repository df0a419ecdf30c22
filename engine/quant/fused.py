"""Uniform fake quantization as one fused kernel: ``torch.compile`` of the textbook formula.

Eager, ``uniform_affine`` makes six passes over its tensor (divide, round, add, clamp twice,
subtract, multiply); fused, it is one read and one write, which is most of what fake quantization
costs once its tensors no longer fit in cache (the CPU's forward of 32 images at 224 px). The
values are eager's, bit for bit: inductor's kernel divides (no reciprocal), rounds half to even and
clamps like ATen; checked on values a few ulps from rounding boundaries, NaN and ±inf included
(docs/performance.md, "Compiled evaluation"), and by the tests on whole models.

Only plain calls fuse. Eager runs when a gradient is wanted (the straight-through rounding is
eager's), inside ``vmap`` (the candidates' batched scales) and inside a graph being compiled
(inductor fuses the formula itself there). Shapes are dynamic, so one kernel serves every batch
size, layer width and bit-width; the kernel is built at its first call, and the first failure (no
C++ toolchain, ...) sends every later call to eager with one log line, never an error.
"""
from __future__ import annotations

import logging
from contextlib import AbstractContextManager, nullcontext
from typing import Callable

import torch

log = logging.getLogger(__name__)

# Graphs per compiled callable: per-tensor and per-channel scales, 2-D to 4-D tensors and batches of one
# (the fused kernel); Swin's stages, shifted and plain windows and the evaluator's batch shapes (blocks).
RECOMPILE_LIMIT = 64
# torch's own out-of-memory type (torch < 2.5 has only CUDA's); compiling cannot help it, so it is raised.
OUT_OF_MEMORY = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)


def compile_settings(limit: int = RECOMPILE_LIMIT) -> AbstractContextManager:
    """dynamo's recompile limit raised to ``limit`` for the duration of a compiled call: scoped, not
    set for the whole process, and under either of the names torch versions give it."""
    config = torch._dynamo.config
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(config, name):
            return config.patch(**{name: max(getattr(config, name), limit)})
    return nullcontext()


def _is_compiling() -> bool:
    compiler = getattr(torch, "compiler", None)
    return bool(compiler is not None and hasattr(compiler, "is_compiling") and compiler.is_compiling())


def _uniform_fake_quant(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, qmin: int,
                        qmax: int) -> torch.Tensor:
    return (torch.clamp(torch.round(x / scale) + zero_point, qmin, qmax) - zero_point) * scale


def compile_failure(error: BaseException) -> str:
    """The innermost exception, one line: dynamo wraps the compiler's own error (a missing g++, ...)."""
    while (inner := getattr(error, "inner_exception", None) or error.__cause__) is not None:
        error = inner
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}"


def _plain_call(x: torch.Tensor, scale: torch.Tensor) -> bool:
    """No gradient wanted, no functorch transform (vmap) active, no graph being traced."""
    wants_grad = torch.is_grad_enabled() and (x.requires_grad or scale.requires_grad)
    return not (wants_grad or torch._C._are_functorch_transforms_active() or _is_compiling())


class FusedUniform:
    """The fused kernel, built on first use; ``None`` from a call means "compute it eager"."""

    def __init__(self, backend: Callable | str = "inductor") -> None:
        self.backend = backend
        self.kernel: Callable[..., torch.Tensor] | None = None
        self.failure: str | None = None

    def __call__(self, x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, qmin: int,
                 qmax: int) -> torch.Tensor | None:
        if self.failure is not None or not _plain_call(x, scale):
            return None
        try:
            if self.kernel is None:
                self.kernel = torch.compile(_uniform_fake_quant, dynamic=True, backend=self.backend)
            with compile_settings():
                return self.kernel(x, scale, zero_point, qmin, qmax)
        except OUT_OF_MEMORY:
            raise                       # eager would not fit either; the caller reports it
        except Exception as error:      # noqa: BLE001 - any compiler failure means "run eager"
            self.failure = compile_failure(error)
            log.warning("the fused fake-quant kernel failed to compile, running eager from here on (%s)",
                        self.failure)
            return None


fused_uniform = FusedUniform()
