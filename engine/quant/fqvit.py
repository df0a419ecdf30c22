"""FQ-ViT (Lin et al., IJCAI 2022): Power-of-Two Factor and Log-Int-Softmax.

What the release does, at our quantization points:

- weights: int, symmetric, per output channel, min/max (scale = max|w| / ((qmax - qmin)/2));
- activations: uint, asymmetric, per tensor, with the run's observer (minmax by default,
  percentile or omse), statistics over every calibration batch with quantization off;
- PTF: the inputs that follow a LayerNorm (qkv, fc1, Swin's reduction) share one layer-wide
  scale and zero-point, set from the min/max over all channels at 8× the base step; each channel
  then keeps the factor in {1, 2, 4, 8} (base step × factor) with the least L2 error;
- LIS: attention probabilities as 4-bit log2 codes, dequantised as 2^-q (4 bits whatever the
  activation bits: the release fixes it, so W8A8 has 4-bit probabilities and an A3 setting still
  has 4-bit ones).

The release puts PTF on the LayerNorm *inputs* so that LayerNorm runs in integers; our points
are the Linear inputs (DESIGN §3), so PTF sits on the LayerNorm outputs, whose channels differ as
much (γ, β are per channel). Its Log-Int-Softmax also approximates exp with an integer polynomial,
which fake quantization does not simulate: we quantize the float softmax.

Registered as ``fqvit`` (PTF + LIS, minmax), ``fqvit-percentile`` and ``fqvit-omse`` (other
observers), ``fqvit-noptf`` and ``fqvit-nolis`` (the release's ``--ptf``/``--lis`` flags off).
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

from .model import QuantizedModel
from .observers import BoundedSample, RangeObserver, affine_from_range
from .params import PER_CHANNEL, PER_TENSOR, QuantParams
from .peer_schemes import PTF_FACTORS, post_layernorm_pairs
from .registry import register_quantizer, run_batches

LIS_BITS = 4
PTF_SAMPLE_ROWS = 1 << 14  # rows kept per PTF point to choose the factors
EPS = torch.finfo(torch.float32).eps


class ChannelRangeObserver:
    """Per-channel (last dim) min/max over all batches and a bounded, strided sample of rows.

    Given the ``width`` (channels) and ``device``, what it keeps is allocated here and updated in
    place, so the calibration forwards allocate nothing that outlives them (observers.BoundedSample).
    """

    def __init__(self, width: int | None = None, device: torch.device | str | None = None) -> None:
        self.lo: torch.Tensor | None = None
        self.hi: torch.Tensor | None = None
        if width is not None and device is not None:
            self.lo = torch.full((width,), math.inf, device=device)
            self.hi = torch.full((width,), -math.inf, device=device)
        self.sample = BoundedSample(PTF_SAMPLE_ROWS, None if width is None else (width,), device)

    def observe(self, x: torch.Tensor) -> None:
        rows = x.float().reshape(-1, x.shape[-1])
        lo, hi = rows.min(dim=0).values, rows.max(dim=0).values
        if self.lo is None or self.hi is None:
            self.lo, self.hi = lo, hi
        else:
            torch.minimum(self.lo, lo, out=self.lo)
            torch.maximum(self.hi, hi, out=self.hi)
        self.sample.add(rows[:: -(-len(rows) // PTF_SAMPLE_ROWS)])

    def rows(self) -> torch.Tensor:
        return self.sample.rows()


def ptf_params(lo: torch.Tensor, hi: torch.Tensor, rows: torch.Tensor, bits: int) -> QuantParams:
    """PTF: layer-wide step s = (max - min)/(qmax - qmin)/8 and zero-point; per channel the factor
    f ∈ {1,2,4,8} whose step s·f quantizes that channel of ``rows`` with the least L2 error."""
    qmin, qmax = 0, 2**bits - 1
    scale8 = ((hi.max() - lo.min()) / (qmax - qmin)).clamp_min(EPS)
    zero_point = torch.clamp(qmin - torch.round(lo.min() / scale8), qmin, qmax)
    base = scale8 / PTF_FACTORS[-1]
    errors = []
    for factor in PTF_FACTORS:
        step = base * factor
        fq = (torch.clamp(torch.round(rows / step) + zero_point, qmin, qmax) - zero_point) * step
        errors.append((fq - rows).pow(2).sum(dim=0))
    choice = torch.stack(errors).argmin(dim=0)  # ties keep the smaller factor, as the release does
    factors = torch.tensor(PTF_FACTORS, dtype=torch.float32, device=rows.device)[choice]
    return QuantParams(base.cpu().numpy(), zero_point.cpu().numpy(), bits, False, PER_TENSOR, scheme="ptf",
                       extra={"factor": factors.cpu().numpy()})


def symmetric_weight_params(weight: torch.Tensor, bits: int) -> QuantParams:
    """Signed, symmetric, per output channel: scale = max|w| / ((qmax - qmin)/2), zero-point 0."""
    rows = weight.detach().float().reshape(weight.shape[0], -1)
    amax = torch.maximum(-rows.min(dim=1).values, rows.max(dim=1).values)
    qmin, qmax = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    scale = (amax / ((qmax - qmin) / 2)).clamp_min(EPS)
    return QuantParams(scale.cpu().numpy(), np.zeros(scale.shape, np.float32), bits, True, PER_CHANNEL, 0)


def lis_params() -> QuantParams:
    return QuantParams(np.float32(1.0), np.float32(0.0), LIS_BITS, False, PER_TENSOR, scheme="log2")


class FQViT:
    """Observer for plain activations; PTF and LIS on or off, as the release's flags."""

    def __init__(self, observer: str = "minmax", ptf: bool = True, lis: bool = True) -> None:
        self.observer, self.ptf, self.lis = observer, ptf, lis

    def calibrate(self, qmodel: QuantizedModel, batches: Sequence[torch.Tensor]) -> None:
        quantizers = qmodel.quantizers()
        ptf_points = {(linear, "input") for _, linear in post_layernorm_pairs(qmodel.model)} if self.ptf else set()
        observed = {}
        for key, quantizer in quantizers.items():
            role = key[1]
            if role == "weight":
                owner = qmodel.model.get_submodule(key[0])
                quantizer.set_params(symmetric_weight_params(owner.weight, quantizer.bits))
            elif role == "probs" and self.lis:
                quantizer.set_params(lis_params())
            elif key in ptf_points:   # buffers reserved before the forwards (observers.BoundedSample)
                width = qmodel.model.get_submodule(key[0]).in_features
                observed[key] = ChannelRangeObserver(width, batches[0].device)
            else:
                observed[key] = RangeObserver(self.observer, batches[0].device)
        for key, observer in observed.items():
            quantizers[key].observer = observer
        try:
            run_batches(qmodel, batches)
        finally:
            for key in observed:
                quantizers[key].observer = None
        for key, observer in observed.items():
            quantizer = quantizers[key]
            if key in ptf_points:
                params = ptf_params(observer.lo, observer.hi, observer.rows(), quantizer.bits)
            else:
                lo, hi = observer.clip_range(quantizer.qmin, quantizer.qmax)
                scale, zp = affine_from_range(lo, hi, quantizer.qmin, quantizer.qmax)
                params = QuantParams(scale.cpu().numpy(), zp.cpu().numpy(), quantizer.bits, quantizer.signed)
            quantizer.set_params(params)


register_quantizer("fqvit")(FQViT)
register_quantizer("fqvit-percentile")(lambda: FQViT(observer="percentile"))
register_quantizer("fqvit-omse")(lambda: FQViT(observer="omse"))
register_quantizer("fqvit-noptf")(lambda: FQViT(ptf=False))
register_quantizer("fqvit-nolis")(lambda: FQViT(lis=False))
