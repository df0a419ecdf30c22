"""PTQ4ViT (Yuan et al., ECCV 2022): twin-uniform quantization and a Hessian-guided scale search.

As in the release:

- symmetric, signed, uniform quantization per tensor of weights and activations, except the qkv
  weight, which has one scale for each of q, k and v, and the patch-embedding conv weight, which
  has one per output channel; twin uniform for the softmax output (``twin_softmax``) and the
  post-GELU input of fc2 (``twin_gelu``);
- layer by layer, each scale is searched among the candidates (α + i(β-α)/n)·Δ0, i = 0..n
  (Δ0 = max|x| / (2^(b-1) - 0.5)), the softmax split among 2^0 … 2^-19, alternating the layer's two
  operands (weight then input; the left then the right operand of a matmul) for up to 3 rounds;
- the score is -(∂L/∂O · (O - Ô))² over the layer output O, L = KL(FP output ‖ quantized output),
  on the first 32 calibration images; ``ptq4vit-base`` is the paper's base PTQ: cosine similarity
  of O and Ô, α = 0.5, one round, no twin uniform, a per-tensor conv weight.

Where we differ, and why:

- the release takes ∂L/∂O on the FP model, where the KL divergence is at its minimum and the
  gradient is round-off; ours comes from the model being calibrated (earlier blocks at their found
  scales, the rest at Δ0, rounding passed straight through), so the weighting is not noise;
- inputs come from that partly quantized model, block by block (the release's sequential mode);
- q, k and v are quantized per tensor, not per head (DESIGN §3 fixes one scale per operand);
- twin_softmax quantizes each value on one grid, chosen by the split, as the paper does; the
  release's code sums both grids' outputs, which adds the split to every value above it;
- the qkv weight's three scales are stored per output channel, constant within each third, so the
  CPT-V search perturbs them as per-channel scales;
- each search scores at most ``max_rows`` rows (tokens, or query rows of a matmul) spread evenly
  over the calibration images, to keep CPU calibration within a minute; a search is skipped when
  the other operand has not moved since it last ran (it would return the same scale).
"""
from __future__ import annotations

import logging
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .layers import QuantConv2d, QuantLinear
from .model import QuantizedModel
from .observers import RangeObserver
from .params import PER_CHANNEL, QuantParams
from .peer_schemes import GELU_MIN, first_batch, twin_levels
from .ptq4vit_search import (BASE_PTQ, Layer, Operand, PTQ4ViTOptions, candidate_grid, search_layer,
                             symmetric_step)
from .quantizer import FakeQuantizer
from .registry import register_quantizer

log = logging.getLogger(__name__)

CAPTURE_BATCH = 8                 # images per forward/backward while capturing a block
SPLITS = [2.0**-i for i in range(20)]
INITIAL_SPLIT = 0.01


def weight_groups(owner: str, module: nn.Module, options: PTQ4ViTOptions) -> torch.Tensor:
    """Scale group of each output channel: one per channel (conv), per third (qkv), or one."""
    out = module.weight.shape[0]
    index = torch.arange(out, device=module.weight.device)
    if isinstance(module, QuantConv2d) and options.conv_per_channel:
        return index
    if owner.rpartition(".")[2] == "qkv" and out % 3 == 0:
        return index // (out // 3)
    return torch.zeros_like(index)


def group_delta0(weight: torch.Tensor, groups: torch.Tensor, bits: int) -> torch.Tensor:
    amax = weight.detach().abs().reshape(weight.shape[0], -1).amax(dim=1)
    n_groups = int(groups.max()) + 1
    return symmetric_step(torch.zeros(n_groups, device=amax.device).scatter_reduce(0, groups, amax, "amax"), bits)


def is_post_gelu(modules: dict[str, nn.Module], owner: str) -> bool:
    """The Linear directly after a GELU (timm Mlp: fc1 → act → norm (Identity) → fc2)."""
    parent, _, leaf = owner.rpartition(".")
    return (leaf == "fc2" and isinstance(modules.get(f"{parent}.act"), nn.GELU)
            and isinstance(modules.get(f"{parent}.norm", nn.Identity()), nn.Identity))


def initial_params(owner: str, role: str, quantizer: FakeQuantizer, modules: dict[str, nn.Module],
                   observer: RangeObserver | None, options: PTQ4ViTOptions) -> QuantParams:
    """Δ0 everywhere (split 0.01 for softmax): the model the first gradients are taken on."""
    bits, zero = quantizer.bits, np.float32(0)
    if role == "weight":
        module = modules[owner]
        groups = weight_groups(owner, module, options)
        scale = group_delta0(module.weight, groups, bits)[groups]
        if int(groups.max()) == 0:
            return QuantParams(scale[0].cpu().numpy(), zero, bits, True)
        return QuantParams(scale.cpu().numpy(), np.zeros(scale.shape, np.float32), bits, True, PER_CHANNEL, 0)
    if role == "probs" and options.twin:
        return QuantParams(np.float32(INITIAL_SPLIT / twin_levels(0, 2**bits - 1)), zero, bits, False,
                           scheme="twin_softmax")
    if role == "input" and options.twin and is_post_gelu(modules, owner):
        return QuantParams(symmetric_step(observer.hi, bits).cpu().numpy(), zero, bits, True, scheme="twin_gelu",
                           extra={"neg_step": np.float32(GELU_MIN / 2 ** (bits - 1))})
    amax = torch.maximum(-observer.lo, observer.hi)
    return QuantParams(symmetric_step(amax, bits).cpu().numpy(), zero, bits, True)


def initialise(qmodel: QuantizedModel, images: torch.Tensor, options: PTQ4ViTOptions):
    """One FP pass: every point at Δ0, the order points are first reached in, FP probabilities."""
    quantizers = qmodel.quantizers()
    order: dict[tuple[str, str], None] = {}
    observers = {key: RangeObserver("minmax") for key in quantizers if key[1] != "weight"}
    handles = [q.register_forward_pre_hook(lambda m, args, key=key: order.setdefault(key))
               for key, q in quantizers.items()]
    for key, observer in observers.items():
        quantizers[key].observer = observer
    try:
        with torch.no_grad(), qmodel.full_precision():
            fp_probs = qmodel(images).softmax(dim=-1)
    finally:
        for handle in handles:
            handle.remove()
        for key in observers:
            quantizers[key].observer = None
    modules = dict(qmodel.model.named_modules())
    for (owner, role), quantizer in quantizers.items():
        quantizer.set_params(initial_params(owner, role, quantizer, modules, observers.get((owner, role)), options))
    return list(order), fp_probs


class PTQ4ViTUnsupported(NotImplementedError, ValueError):
    """A layer PTQ4ViT's search cannot take (a grouped convolution, a normed or gated attention output): a user
    error (ValueError: the CLI's one ``error:`` line, exit 2) naming the layer and the quantizers that can."""


OTHER_QUANTIZERS = "minmax, percentile, omse, fqvit or repqvit quantize it"


@dataclass(frozen=True)
class Unit:
    kind: str      # "linear" (Linear or conv), "qk" (q·kᵀ) or "pv" (probs·v)
    owner: str

    def taps(self) -> list[tuple[str, str]]:
        """(module, "in"|"out") tensors the search needs, the first being the one to differentiate."""
        if self.kind == "linear":
            return [(self.owner, "out"), (self.owner, "in")]
        if self.kind == "qk":
            return [(f"{self.owner}.probs_quant", "in"), (f"{self.owner}.q_quant", "in"),
                    (f"{self.owner}.k_quant", "in")]
        return [(f"{self.owner}.proj", "in"), (f"{self.owner}.probs_quant", "in"), (f"{self.owner}.v_quant", "in")]


def units_in_order(qmodel: QuantizedModel, order: list[tuple[str, str]]) -> list[tuple[str, list[Unit]]]:
    """Search units in forward order, grouped by transformer block (one capture pass per group)."""
    modules = dict(qmodel.model.named_modules())
    blocks = [name for name, _ in qmodel.blocks()]
    groups: list[tuple[str, list[Unit]]] = []
    for owner, role in order:
        if isinstance(modules[owner], (QuantLinear, QuantConv2d)):
            unit = Unit("linear", owner)
        else:
            unit = Unit("qk" if role in ("q", "k") else "pv", owner)
        root = next((b for b in blocks if owner == b or owner.startswith(b + ".")), owner)
        if not groups or groups[-1][0] != root:
            groups.append((root, []))
        if unit not in groups[-1][1]:
            groups[-1][1].append(unit)
    return groups


@contextmanager
def frozen_parameters(module: nn.Module) -> Iterator[None]:
    """Gradients flow to activations only (and the graph starts where we detach)."""
    flags = [(p, p.requires_grad) for p in module.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def _straight_through(module, args, out):
    return args[0] + (out - args[0]).detach()


def _detached_input(module, args):
    return (args[0].detach().requires_grad_(True),) + tuple(args[1:])


class _GroupDone(Exception):
    """Raised after the group's root ran when no gradient is needed: the rest of the forward is moot."""


def _stop_forward(module, args, out):
    raise _GroupDone


def capture(qmodel: QuantizedModel, images: torch.Tensor, fp_probs: torch.Tensor, root: str,
            taps: list[tuple[str, str]], grad_taps: list[tuple[str, str]]):
    """Run the model as it stands, recording ``taps``; ∂KL/∂tensor for ``grad_taps``.

    Backward starts at the group's root (its input is detached) and passes rounding straight
    through every quantizer; without gradients the forward stops after the root. Images go
    through CAPTURE_BATCH at a time, which bounds the autograd graph and changes no gradient: each
    image's KL term depends on its own activations only.
    """
    modules = dict(qmodel.model.named_modules())
    current: dict[tuple[str, str], torch.Tensor] = {}

    def record(key):
        if key[1] == "in":
            return modules[key[0]].register_forward_pre_hook(lambda m, args: current.__setitem__(key, args[0]))
        return modules[key[0]].register_forward_hook(lambda m, args, out: current.__setitem__(key, out))

    handles = [record(key) for key in dict.fromkeys(taps)]
    if grad_taps:
        handles.append(modules[root].register_forward_pre_hook(_detached_input))
        handles += [q.register_forward_hook(_straight_through) for q in qmodel.quantizers().values()]
    else:
        handles.append(modules[root].register_forward_hook(_stop_forward))
    stored, grads = defaultdict(list), defaultdict(list)
    try:
        with torch.set_grad_enabled(bool(grad_taps)), frozen_parameters(qmodel):
            for part, target in zip(images.split(CAPTURE_BATCH), fp_probs.split(CAPTURE_BATCH)):
                try:
                    logits = qmodel(part)
                except _GroupDone:
                    pass
                if grad_taps:
                    loss = F.kl_div(F.log_softmax(logits, dim=-1), target, reduction="sum")
                    for key, grad in zip(grad_taps, torch.autograd.grad(loss, [current[k] for k in grad_taps])):
                        grads[key].append(grad)
                for key, value in current.items():
                    stored[key].append(value.detach())
    finally:
        for handle in handles:
            handle.remove()
    return {k: torch.cat(v) for k, v in stored.items()}, {k: torch.cat(v) for k, v in grads.items()}


def spread(n: int, limit: int, device: torch.device) -> torch.Tensor:
    """At most ``limit`` indices spread evenly over range(n)."""
    if n <= limit:
        return torch.arange(n, device=device)
    return torch.linspace(0, n - 1, limit, device=device).round().long()


def query_rows(slices: int, n: int, per_slice: int, device: torch.device) -> torch.Tensor:
    """(slices, per_slice) evenly spaced query rows of each (image, head), shifted by one row from
    slice to slice so that together they cover every token position."""
    if per_slice >= n:
        return torch.arange(n, device=device).expand(slices, n)
    base = torch.arange(per_slice, device=device) * n // per_slice
    return (base[None, :] + torch.arange(slices, device=device)[:, None]) % n


def linear_layer(unit: Unit, modules, store, grads, options: PTQ4ViTOptions) -> Layer:
    module = modules[unit.owner]
    x, grad = store[(unit.owner, "in")], grads.get((unit.owner, "out"))
    if isinstance(module, QuantConv2d):  # the conv as a Linear over unfolded patches
        if module.groups != 1:
            raise PTQ4ViTUnsupported(f"ptq4vit searches convolutions with groups=1 only ({unit.owner} has "
                                     f"groups={module.groups}); {OTHER_QUANTIZERS}")
        x, padding = module.pad(x)
        x = F.unfold(x, module.kernel_size, module.dilation, padding, module.stride).transpose(1, 2)
        grad = None if grad is None else grad.flatten(2).transpose(1, 2)
    weight = module.weight.detach().reshape(module.weight.shape[0], -1)
    rows = x.reshape(-1, x.shape[-1])
    keep = spread(len(rows), options.max_rows, rows.device)
    sample = rows[keep]
    grad = None if grad is None else grad.reshape(-1, weight.shape[0])[keep]
    bias = None if module.bias is None else module.bias.detach()
    groups = weight_groups(unit.owner, module, options)
    delta0 = group_delta0(weight, groups, module.weight_quant.bits)
    first = Operand(module.weight_quant, weight, candidate_grid(delta0, options), delta0[None], groups)
    second = None
    if module.input_quant is not None:   # every Linear; every conv but the one that sees the image
        q = module.input_quant
        amax = rows.max() if q.scheme == "twin_gelu" else rows.abs().max()
        delta = symmetric_step(amax, q.bits).reshape(1)
        second = Operand(q, sample, candidate_grid(delta, options), delta[None])

    def combine(w: torch.Tensor, x_hat: torch.Tensor | None) -> torch.Tensor:
        out = torch.matmul(sample if x_hat is None else x_hat, w.transpose(-1, -2))
        return out if bias is None else out + bias

    return Layer(first, second, combine, F.linear(sample, weight, bias), grad)


def _check_plain_output(attn: nn.Module) -> None:
    if not isinstance(getattr(attn, "norm", nn.Identity()), nn.Identity) or getattr(attn, "gate", None) is not None:
        raise PTQ4ViTUnsupported("ptq4vit needs attention whose output goes straight to proj (no norm or gate); "
                                 f"{OTHER_QUANTIZERS}")


def matmul_layer(unit: Unit, modules, store, grads, options: PTQ4ViTOptions) -> Layer:
    attn = modules[unit.owner]
    probs = store[(f"{unit.owner}.probs_quant", "in")]
    batch, heads, n = probs.shape[:3]
    slices = torch.arange(batch * heads, device=probs.device)[:, None]
    keep = query_rows(batch * heads, n, max(1, options.max_rows // (batch * heads)), probs.device)
    if unit.kind == "qk":
        left, right = store[(f"{unit.owner}.q_quant", "in")], store[(f"{unit.owner}.k_quant", "in")].transpose(-2, -1)
        left_q, right_q, pre = attn.q_quant, attn.k_quant, attn.scale
        grad = grads.get((f"{unit.owner}.probs_quant", "in"))
        if grad is not None:  # through the softmax: ∂L/∂scores = P ⊙ (∂L/∂P - Σ P ∂L/∂P)
            grad = probs * (grad - (grad * probs).sum(dim=-1, keepdim=True))
    else:
        _check_plain_output(attn)
        left, right = probs, store[(f"{unit.owner}.v_quant", "in")]
        left_q, right_q, pre = attn.probs_quant, attn.v_quant, 1.0
        grad = grads.get((f"{unit.owner}.proj", "in"))
        if grad is not None:
            grad = grad.reshape(batch, n, heads, -1).transpose(1, 2)
    left = left.flatten(0, 1)[slices, keep]
    right = right.flatten(0, 1)
    grad = None if grad is None else grad.flatten(0, 1)[slices, keep]
    operands = []
    for q, raw in ((left_q, left), (right_q, right)):
        if q.scheme == "twin_softmax":
            levels = twin_levels(q.qmin, q.qmax)
            candidates = torch.tensor(SPLITS, device=raw.device)[:, None] / levels
            operands.append(Operand(q, raw, candidates, q.scale.reshape(1, 1).clone()))
        else:
            delta = symmetric_step(raw.abs().max(), q.bits).reshape(1)
            operands.append(Operand(q, raw, candidate_grid(delta, options), delta[None]))

    def combine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.matmul(a * pre, b)

    return Layer(operands[0], operands[1], combine, torch.matmul(left * pre, right), grad)


class PTQ4ViT:
    """Registered as ``ptq4vit`` (twin uniform, Hessian-guided) and ``ptq4vit-base`` (base PTQ)."""

    def __init__(self, options: PTQ4ViTOptions = PTQ4ViTOptions()) -> None:
        self.options = options

    def calibrate(self, qmodel: QuantizedModel, batches: Sequence[torch.Tensor]) -> None:
        images = first_batch(batches, self.options.n_images)
        order, fp_probs = initialise(qmodel, images, self.options)
        modules = dict(qmodel.model.named_modules())
        hessian = self.options.metric == "hessian"
        for root, units in units_in_order(qmodel, order):
            taps = [tap for unit in units for tap in unit.taps()]
            grad_taps = [unit.taps()[0] for unit in units] if hessian else []
            store, grads = capture(qmodel, images, fp_probs, root, taps, grad_taps)
            for unit in units:
                build = linear_layer if unit.kind == "linear" else matmul_layer
                search_layer(build(unit, modules, store, grads, self.options), self.options)
            log.debug("ptq4vit: calibrated %s", root)


register_quantizer("ptq4vit")(PTQ4ViT)
register_quantizer("ptq4vit-base")(lambda: PTQ4ViT(BASE_PTQ))
