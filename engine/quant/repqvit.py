"""RepQ-ViT (Li et al., ICCV 2023): per-channel post-LayerNorm activations re-parameterised to per-tensor.

Calibration follows the release:

1. one forward of the first 32 calibration images in which every quantization point calibrates on
   the first tensor it sees, with the points before it already quantizing (the release's
   "initial quantization"): uniform affine, unsigned, clip range picked by L2 error among the
   (1-p, p) percentiles, p ∈ {0.999, 0.9999, 0.99999}; weights per output channel; the inputs of
   the Linears after a LayerNorm per channel; attention probabilities with log√2 (Δ by the same
   percentile search);
2. re-parameterisation of each (LayerNorm, Linear) pair: with per-channel steps s_c and zero
   points z_c, s̄ = mean(s), z̄ = round(mean(z)), r = s/s̄ and b = s̄·(z̄ - z); the LayerNorm
   becomes (γ/r, β/r - b), the Linear W·diag(r) with bias + (W·diag(r))·b, which leaves the FP
   model unchanged and makes the Linear's input quantizable per tensor with (s̄, z̄);
3. the weights of those Linears are recalibrated on W·diag(r).

The release averages z̄ without rounding; rounding it keeps zero points integral (ONNX) and makes
per-tensor quantization after the re-parameterisation exactly the per-channel one before it.

Loading: r and b are stored as extras ``reparam_r``/``reparam_b`` of the Linear's ``input``
point. :func:`sync_reparam`, registered as a load hook, recomputes the folded LayerNorm and Linear
weights from the original ones (kept aside on first use) after every ``load_scale_set``, and
restores the originals when the loaded points carry no re-parameterisation. Calibration ends with
the same call, so a scale file loaded into a fresh model of the same weights reproduces it bit for
bit, and loading repeatedly never compounds.
"""
from __future__ import annotations

from functools import partial
from typing import Sequence

import numpy as np
import torch
from torch import nn

from .model import QuantizedModel, ScaleMismatch, register_load_hook
from .observers import QUANTILE_LIMIT, _subsample
from .params import PER_CHANNEL, PER_TENSOR, QuantParams
from .peer_schemes import first_batch, log_sqrt2_quant, post_layernorm_pairs
from .quantizer import FakeQuantizer
from .registry import register_quantizer
from .schemes import uniform_affine

PERCENTILES = (0.999, 0.9999, 0.99999)
N_IMAGES = 32  # the release calibrates on one batch of 32 images
REPARAM_R, REPARAM_B = "reparam_r", "reparam_b"


def percentile_affine(rows: torch.Tensor, qmax: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row, the unsigned affine (scale, zero_point) of the percentile range with least L2 error."""
    rows = rows.float()
    if rows.numel() > QUANTILE_LIMIT:
        rows = rows[:, :: -(-rows.numel() // QUANTILE_LIMIT)]
    best_err = torch.full(rows.shape[:1], float("inf"), device=rows.device)
    best_scale, best_zp = torch.ones_like(best_err), torch.zeros_like(best_err)
    levels = torch.tensor([1 - p for p in PERCENTILES] + list(PERCENTILES), device=rows.device)
    bounds = torch.quantile(rows, levels, dim=1).reshape(2, len(PERCENTILES), -1)   # one sort for all
    for lo, hi in zip(bounds[0], bounds[1]):  # a tie keeps the earlier percentile, like the release's '<'
        scale = ((hi - lo) / qmax).clamp_min(1e-8)
        zero_point = torch.round(-lo / scale)
        err = (uniform_affine(rows, scale[:, None], zero_point[:, None], 0, qmax, {}) - rows).pow(2).mean(dim=1)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best_scale = torch.where(better, scale, best_scale)
        best_zp = torch.where(better, zero_point, best_zp)
    return best_scale, best_zp


def log_sqrt2_scale(x: torch.Tensor, qmax: int) -> torch.Tensor:
    """Δ of the log√2 quantizer: the percentile of ``x`` with the least L2 error."""
    flat = _subsample(x.detach().float().flatten(), QUANTILE_LIMIT)
    deltas = torch.quantile(flat, torch.tensor(PERCENTILES, device=flat.device))
    errors = torch.stack([(log_sqrt2_quant(flat, d, None, 0, qmax, {}) - flat).pow(2).mean() for d in deltas])
    return deltas[int(torch.argmin(errors))]


def _as_numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().float().cpu().numpy()


def initial_params(x: torch.Tensor, role: str, bits: int, channel_wise: bool) -> QuantParams:
    """The release's initial quantization of one point from the first tensor it sees."""
    qmax = 2**bits - 1
    x = x.detach()
    if role == "probs":
        return QuantParams(_as_numpy(log_sqrt2_scale(x, qmax)), np.float32(0), bits, False, scheme="log_sqrt2")
    if role == "weight":
        scale, zp = percentile_affine(x.reshape(x.shape[0], -1), qmax)
        return QuantParams(_as_numpy(scale), _as_numpy(zp), bits, False, PER_CHANNEL, 0)
    if channel_wise:
        scale, zp = percentile_affine(x.reshape(-1, x.shape[-1]).T, qmax)
        return QuantParams(_as_numpy(scale), _as_numpy(zp), bits, False, PER_CHANNEL, -1)
    scale, zp = percentile_affine(x.reshape(1, -1), qmax)
    return QuantParams(_as_numpy(scale[0]), _as_numpy(zp[0]), bits, False, PER_TENSOR)


def reparam_params(channel: QuantParams) -> QuantParams:
    """Per-channel input params -> per-tensor ones carrying the factor r and shift b as extras."""
    s, z = channel.scale.astype(np.float64), channel.zero_point.astype(np.float64)
    s_bar, z_bar = s.mean(), np.round(z.mean())
    r = s / s_bar
    b = s_bar * (z_bar - z)  # the release's act_min/r - target_min
    return QuantParams(np.float32(s_bar), np.float32(z_bar), channel.bits, channel.signed, PER_TENSOR,
                       extra={REPARAM_R: r.astype(np.float32), REPARAM_B: b.astype(np.float32)})


def _fold(norm: nn.LayerNorm, linear: nn.Module, r: torch.Tensor | None, b: torch.Tensor | None) -> None:
    """Set the pair's weights to the originals folded with (r, b), or back to the originals if r is None.

    Computed on CPU in float64 from the originals, so every call with the same (r, b) gives the same
    float32 weights, whatever happened to the model before.
    """
    if not hasattr(linear, "_repq_original"):
        if r is None:
            return
        linear._repq_original = tuple(None if t is None else t.detach().cpu().clone()
                                      for t in (norm.weight, norm.bias, linear.weight, linear.bias))
    gamma, beta, weight, bias = linear._repq_original
    if r is None:
        new = (gamma, beta, weight, bias)
    else:
        r64, b64, w64 = r.double().cpu(), b.double().cpu(), weight.double() * r.double().cpu()
        bias64 = (bias.double() if bias is not None else w64.new_zeros(w64.shape[0])) + w64 @ b64
        new = (gamma.double() / r64, beta.double() / r64 - b64, w64, bias64)
    with torch.no_grad():
        for module, attr, value in ((norm, "weight", new[0]), (norm, "bias", new[1]),
                                    (linear, "weight", new[2])):
            getattr(module, attr).copy_(value.float())
        if new[3] is None:
            linear.bias = None
        elif linear.bias is None:
            linear.bias = nn.Parameter(new[3].float().to(linear.weight.device))
        else:
            linear.bias.copy_(new[3].float())


@register_load_hook
def sync_reparam(qmodel: QuantizedModel) -> None:
    """Make every post-LayerNorm pair's weights match the re-parameterisation its input point holds."""
    modules = dict(qmodel.model.named_modules())
    for norm_name, linear_name in post_layernorm_pairs(qmodel.model):
        norm, linear = modules[norm_name], modules[linear_name]
        quantizer = linear.input_quant
        if REPARAM_R in quantizer.extra_names:
            r, b = getattr(quantizer, "extra_" + REPARAM_R), getattr(quantizer, "extra_" + REPARAM_B)
            if r.shape != (linear.in_features,) or b.shape != r.shape:
                raise ScaleMismatch(f"{linear_name}/input: re-parameterisation has shape {tuple(r.shape)}, "
                                    f"the model needs ({linear.in_features},)")
            _fold(norm, linear, r, b)
        else:
            _fold(norm, linear, None, None)


def _calibrate_on_first_call(quantizer: FakeQuantizer, args: tuple, *, role: str, channel_wise: bool,
                             seen: set) -> None:
    if id(quantizer) not in seen:
        seen.add(id(quantizer))
        quantizer.set_params(initial_params(args[0], role, quantizer.bits, channel_wise))


class RepQViT:
    """Registered as ``repqvit``."""

    def __init__(self, n_images: int = N_IMAGES) -> None:
        self.n_images = n_images

    def calibrate(self, qmodel: QuantizedModel, batches: Sequence[torch.Tensor]) -> None:
        pairs = post_layernorm_pairs(qmodel.model)
        reparam_inputs = {(linear, "input") for _, linear in pairs}
        quantizers = qmodel.quantizers()
        seen: set = set()
        handles = [q.register_forward_pre_hook(partial(_calibrate_on_first_call, role=role, seen=seen,
                                                       channel_wise=(owner, role) in reparam_inputs))
                   for (owner, role), q in quantizers.items()]
        try:
            with torch.no_grad():
                qmodel(first_batch(batches, self.n_images))
        finally:
            for handle in handles:
                handle.remove()
        missing = [f"{owner}/{role}" for (owner, role), q in quantizers.items() if id(q) not in seen]
        if missing:
            raise RuntimeError(f"the forward pass never reached {', '.join(missing)}")
        for key in reparam_inputs:
            quantizers[key].set_params(reparam_params(quantizers[key].params()))
        sync_reparam(qmodel)
        for _, linear_name in pairs:
            linear = qmodel.model.get_submodule(linear_name)
            linear.weight_quant.set_params(initial_params(linear.weight, "weight", linear.weight_quant.bits, False))


register_quantizer("repqvit")(RepQViT)
