"""Clip-range estimation for the uniform affine quantizers: minmax, percentile, omse.

Weights are estimated per output channel from the full tensor; activations per tensor from
statistics gathered over the calibration batches by a RangeObserver.
"""
from __future__ import annotations

import math

import torch

from .schemes import uniform_affine

PERCENTILE = 0.99999
OMSE_STEPS = 90          # FQ-ViT shrinks the range in 1 % steps
OMSE_SAMPLE = 1 << 20    # values kept per activation for the OMSE error (a budget: at most this many)
QUANTILE_LIMIT = 1 << 24  # torch.quantile's input limit


def affine_from_range(lo: torch.Tensor, hi: torch.Tensor, qmin: int, qmax: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero-point covering [lo, hi] (widened to include 0, as affine quantizers must)."""
    lo = torch.minimum(lo, torch.zeros_like(lo))
    hi = torch.maximum(hi, torch.zeros_like(hi))
    scale = torch.clamp((hi - lo) / (qmax - qmin), min=1e-8)
    zero_point = torch.clamp(qmin - torch.round(lo / scale), qmin, qmax)
    return scale.float(), zero_point.float()


def _quant_error_rows(x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, qmin: int, qmax: int) -> torch.Tensor:
    """Per row, the mean squared error of fake-quantizing ``x`` to [lo, hi], in place on the
    scheme's one fresh buffer (temporaries made OMSE calibration most of a search's start-up)."""
    scale, zp = affine_from_range(lo, hi, qmin, qmax)
    error = uniform_affine(x, scale.unsqueeze(-1), zp.unsqueeze(-1), qmin, qmax, {}).sub_(x)
    return error.pow_(2).mean(dim=-1)


def omse_range(rows: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, qmin: int, qmax: int):
    """Per row, the shrunk [lo, hi] (1 % steps) with the least L2 quantization error on ``rows``."""
    best_err = torch.full_like(lo, float("inf"))
    best_lo, best_hi = lo.clone(), hi.clone()
    for step in range(OMSE_STEPS):
        shrink = 1.0 - 0.01 * step
        c_lo, c_hi = lo * shrink, hi * shrink
        err = _quant_error_rows(rows, c_lo, c_hi, qmin, qmax)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best_lo = torch.where(better, c_lo, best_lo)
        best_hi = torch.where(better, c_hi, best_hi)
    return best_lo, best_hi


def _subsample(flat: torch.Tensor, limit: int) -> torch.Tensor:
    """A deterministic strided subsample, as a view: for immediate use only (keep a BoundedSample)."""
    if flat.numel() <= limit:
        return flat
    return flat[:: -(-flat.numel() // limit)]


class BoundedSample:
    """At most ``budget`` rows (dim 0) of a stream of tensors, as compact copies, deterministically.

    Keeps the rows at every ``stride``-th position of the stream, the stride doubling whenever more
    than ``budget`` would be kept, so memory stays flat however long calibration runs (a view would
    pin the whole activation it came from). A stream of at most 2 × ``budget`` rows ends exactly as
    the concatenation thinned by ``[::ceil(n / budget)]``.

    Given ``row_shape`` and ``device``, the buffer is reserved whole and zero-filled here, before the
    calibration forwards, so its memory is the budget from the start and sits below the forwards'
    temporaries: placed at the first batch, it would land between that forward's freed activations
    and split the holes later batches reuse, and filled batch by batch, it would add its pages with
    the calibration size (docs/performance.md, "Calibration memory from run to run"). Without them,
    the first batch allocates it.
    """

    def __init__(self, budget: int, row_shape: tuple[int, ...] | None = None,
                 device: torch.device | str | None = None) -> None:
        self.budget = budget
        self.stride = 1
        self.seen = 0
        self.kept = 0
        self.buffer: torch.Tensor | None = None
        if row_shape is not None and device is not None:
            self.buffer = torch.zeros((budget, *row_shape), device=device)

    def add(self, rows: torch.Tensor) -> None:
        first = -self.seen % self.stride  # the first of these rows at a multiple of the stride
        new = rows[first::self.stride]
        self.seen += len(rows)
        if self.buffer is None:
            self.buffer = rows.new_zeros((self.budget, *rows.shape[1:]))
        if self.kept + len(new) <= self.budget:
            self.buffer[self.kept:self.kept + len(new)] = new
            self.kept += len(new)
            return
        combined = torch.cat([self.buffer[:self.kept], new])
        while len(combined) > self.budget:
            self.stride *= 2
            combined = combined[::2]
        self.buffer[:len(combined)] = combined
        self.kept = len(combined)

    def rows(self) -> torch.Tensor:
        if self.buffer is None:
            raise RuntimeError("no rows were sampled")
        return self.buffer[:self.kept]


def weight_range(method: str, weight: torch.Tensor, qmin: int, qmax: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-output-channel clip range of a weight (channels on dim 0)."""
    rows = weight.detach().float().reshape(weight.shape[0], -1)
    lo, hi = rows.min(dim=1).values, rows.max(dim=1).values
    if method == "minmax":
        return lo, hi
    if method == "percentile":
        q = torch.tensor([1 - PERCENTILE, PERCENTILE], device=rows.device)
        bounds = torch.quantile(rows, q, dim=1)
        return bounds[0], bounds[1]
    if method == "omse":
        return omse_range(rows, lo, hi, qmin, qmax)
    raise ValueError(f"unknown range method {method!r}")


class RangeObserver:
    """Accumulates a per-tensor clip range over calibration batches.

    Given the calibration ``device``, everything it keeps (the running range, omse's sample) is
    allocated here and later updated in place, so the forwards allocate nothing that outlives them:
    a kept tensor born mid-forward pins a hole among the freed activations (BoundedSample).
    """

    def __init__(self, method: str, device: torch.device | str | None = None) -> None:
        if method not in ("minmax", "percentile", "omse"):
            raise ValueError(f"unknown range method {method!r}")
        self.method = method
        self.lo: torch.Tensor | None = None
        self.hi: torch.Tensor | None = None
        if device is not None:
            self.lo = torch.full((), math.inf, device=device)
            self.hi = torch.full((), -math.inf, device=device)
        self.batches = 0
        self.quantiles: list[torch.Tensor] = []
        self.sample = BoundedSample(OMSE_SAMPLE, () if method == "omse" else None, device)

    def observe(self, x: torch.Tensor) -> None:
        flat = x.float().flatten()
        lo, hi = flat.min(), flat.max()
        if self.lo is None or self.hi is None:
            self.lo, self.hi = lo, hi
        else:
            torch.minimum(self.lo, lo, out=self.lo)
            torch.maximum(self.hi, hi, out=self.hi)
        self.batches += 1
        if self.method == "percentile":
            q = torch.tensor([1 - PERCENTILE, PERCENTILE], device=flat.device)
            self.quantiles.append(torch.quantile(_subsample(flat, QUANTILE_LIMIT), q))
        elif self.method == "omse":
            self.sample.add(_subsample(flat, OMSE_SAMPLE // 8))

    def clip_range(self, qmin: int, qmax: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.batches == 0:
            raise RuntimeError("observer saw no data: is the calibration set empty?")
        if self.method == "minmax":
            return self.lo, self.hi
        if self.method == "percentile":
            mean = torch.stack(self.quantiles).mean(dim=0)  # per-batch quantiles, averaged
            return mean[0], mean[1]
        lo, hi = omse_range(self.sample.rows().unsqueeze(0), self.lo.reshape(1), self.hi.reshape(1), qmin, qmax)
        return lo[0], hi[0]
