"""FakeQuantizer: one quantization point inside a model (a weight, an input, an attention operand)."""
from __future__ import annotations

from typing import Protocol

import numpy as np
import torch
from torch import nn

from .fixed_order import broadcast_scale
from .fused import fused_uniform
from .params import PER_CHANNEL, PER_TENSOR, QuantParams, integer_range
from .schemes import get_scheme


class Observer(Protocol):
    def observe(self, x: torch.Tensor) -> None: ...


class FakeQuantizer(nn.Module):
    """Quantize-dequantize with parameters held as buffers.

    While an observer is attached the quantizer only records statistics and passes ``x`` through;
    before calibration, or while disabled (the FP reference), it is the identity.

    The buffers are born on ``device`` (the wrapped module's) and every later ``set_params`` keeps
    them there, so one rule holds whatever path sets them: they live where the module lives.

    With ``fused`` set, the ``uniform`` scheme runs as one fused kernel where it can (``fused.py``):
    the same values, fewer passes over memory.
    """

    def __init__(self, bits: int, device: torch.device, signed: bool = False, granularity: str = PER_TENSOR,
                 axis: int | None = None, scheme: str = "uniform") -> None:
        super().__init__()
        self.bits, self.signed, self.granularity, self.axis, self.scheme = bits, signed, granularity, axis, scheme
        self.register_buffer("scale", torch.empty(0, device=device))
        self.register_buffer("zero_point", torch.empty(0, device=device))
        self.extra_names: list[str] = []
        self.observer: Observer | None = None
        self.enabled = True
        self.fused = False

    @property
    def calibrated(self) -> bool:
        return self.scale.numel() > 0

    @property
    def qmin(self) -> int:
        return integer_range(self.bits, self.signed)[0]

    @property
    def qmax(self) -> int:
        return integer_range(self.bits, self.signed)[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.observer is not None:
            self.observer.observe(x.detach())
            return x
        if not self.enabled or not self.calibrated:
            return x
        scale, zero_point = broadcast_scale(self._broadcast(self.scale, x), x), self._broadcast(self.zero_point, x)
        if self.fused and self.scheme == "uniform":
            out = fused_uniform(x, scale, zero_point, self.qmin, self.qmax)
            if out is not None:
                return out
        extra = {name: getattr(self, "extra_" + name) for name in self.extra_names}
        return get_scheme(self.scheme)(x, scale, zero_point, self.qmin, self.qmax, extra)

    def _broadcast(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if self.granularity == PER_TENSOR or t.ndim == 0:
            return t
        shape = [1] * x.ndim
        shape[self.axis] = -1
        return t.reshape(shape)

    def params(self) -> QuantParams:
        if not self.calibrated:
            raise RuntimeError("quantizer is not calibrated")
        return QuantParams(
            scale=self.scale.detach().cpu().numpy().copy(),
            zero_point=self.zero_point.detach().cpu().numpy().copy(),
            bits=self.bits, signed=self.signed, granularity=self.granularity, axis=self.axis,
            scheme=self.scheme,
            extra={n: getattr(self, "extra_" + n).detach().cpu().numpy().copy() for n in self.extra_names},
        )

    def set_params(self, params: QuantParams) -> None:
        """Adopt ``params`` exactly (bit-identical reloads depend on no arithmetic here), on the
        quantizer's own device (its module's), whatever device torch would default to."""
        device = self.scale.device
        self.bits, self.signed, self.granularity, self.axis, self.scheme = (
            params.bits, params.signed, params.granularity, params.axis, params.scheme)
        self.scale = torch.from_numpy(np.array(params.scale, dtype=np.float32)).to(device)
        self.zero_point = torch.from_numpy(np.array(params.zero_point, dtype=np.float32)).to(device)
        for name in self.extra_names:
            delattr(self, "extra_" + name)
        self.extra_names = sorted(params.extra)
        for name in self.extra_names:
            self.register_buffer("extra_" + name, torch.from_numpy(np.array(params.extra[name])).to(device))

    def set_scale(self, scale: torch.Tensor) -> None:
        """Replace the scale in place (the search's hot path); shape must not change."""
        self.scale.copy_(scale.reshape(self.scale.shape))

    def extra_repr(self) -> str:
        gran = f"{self.granularity}(axis={self.axis})" if self.granularity == PER_CHANNEL else self.granularity
        return f"{self.scheme}, bits={self.bits}, signed={self.signed}, {gran}"
