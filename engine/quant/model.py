"""QuantizedModel: a timm ViT/DeiT/Swin with every quantization point of DESIGN §3 in place."""
from __future__ import annotations

import re
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import torch
from torch import nn

from .attention import quantize_attention
from .bitplan import Plan, PlanMismatch, canonical_plan, plan_digest, point_name, role_default
from .layers import QuantConv2d, QuantLinear, conv_same_padding
from .params import ScaleSet
from .quantizer import FakeQuantizer

_BITS = re.compile(r"^W(\d+)A(\d+)$", re.IGNORECASE)


class ScaleMismatch(ValueError):
    """A ScaleSet does not fit a model: names the first point that differs."""


LOAD_HOOKS: list[Callable[["QuantizedModel"], None]] = []


def register_load_hook(hook: Callable[["QuantizedModel"], None]) -> Callable[["QuantizedModel"], None]:
    """Run ``hook(qmodel)`` after every ``load_scale_set``, once the new parameters are in place.

    For schemes whose parameters also decide model weights (RepQ-ViT folds its re-parameterisation
    into LayerNorm and Linear weights), so a loaded ScaleSet reproduces the weights too.
    """
    LOAD_HOOKS.append(hook)
    return hook


def parse_bits(text: str) -> tuple[int, int]:
    """'W4A8' -> (4, 8)."""
    match = _BITS.match(text.strip())
    if not match:
        raise ValueError(f"bit-width must look like W4A8, got {text!r}")
    w, a = int(match.group(1)), int(match.group(2))
    if not (1 <= w <= 16 and 2 <= a <= 16):
        raise ValueError(f"bit-widths out of range in {text!r} (weights 1-16, activations 2-16)")
    return w, a


@dataclass(frozen=True)
class QuantConfig:
    quantizer: str = "minmax"
    w_bits: int = 8
    a_bits: int = 8
    attn_bits: int | None = None  # defaults to a_bits
    # fnmatch patterns of modules whose matmuls stay float on purpose (the coverage check lets them through)
    allow_float: tuple[str, ...] = ()
    # mixed precision (bitplan.py): ``(point name, bits)`` of the points whose width is not their role's
    # uniform one, sorted; () is the uniform plan. Any mapping or pairs given are made canonical here.
    plan: Plan = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "allow_float", tuple(self.allow_float))   # a list read back from JSON
        object.__setattr__(self, "plan", canonical_plan(self.plan, self.w_bits, self.a_bits, self.attention_bits))

    @classmethod
    def from_bits(cls, quantizer: str, bits: str, attn_bits: int | None = None,
                  allow_float: tuple[str, ...] = (), plan=None) -> "QuantConfig":
        w, a = parse_bits(bits)
        return cls(quantizer, w, a, attn_bits, tuple(allow_float), plan or ())

    @property
    def attention_bits(self) -> int:
        return self.attn_bits if self.attn_bits is not None else self.a_bits

    @property
    def mixed(self) -> bool:
        """Whether some point's width is not its role's uniform one."""
        return bool(self.plan)

    def bits_of(self, owner: str, role: str) -> int:
        """The width the config gives the point (the quantizer may fix some: FQ-ViT's 4-bit log2 softmax)."""
        return dict(self.plan).get(point_name(owner, role),
                                   role_default(role, self.w_bits, self.a_bits, self.attention_bits))

    @property
    def bits_label(self) -> str:
        suffix = f"/attn{self.attn_bits}" if self.attn_bits is not None else ""
        mixed = f"+plan-{plan_digest(self.plan)}" if self.plan else ""
        return f"W{self.w_bits}A{self.a_bits}{suffix}{mixed}"


def _replace_layers(module: nn.Module, config: QuantConfig, image_conv: nn.Module | None) -> None:
    """Every Linear and Conv2d whose forward the quantized layers reproduce, and every adapted attention;
    any other layer stays as it is (the coverage probe names it if it multiplies in float)."""
    for name, child in module.named_children():
        if isinstance(child, nn.Linear) and type(child).forward is nn.Linear.forward:
            setattr(module, name, QuantLinear(child, config.w_bits, config.a_bits))
        elif isinstance(child, nn.Conv2d) and conv_same_padding(child) is not None:
            a_bits = None if child is image_conv else config.a_bits
            setattr(module, name, QuantConv2d(child, config.w_bits, a_bits))
        else:
            quantize_attention(child, config.attention_bits)
            _replace_layers(child, config, image_conv)


def transformer_blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The model's transformer blocks in forward order, as ``engine/search/segments.py`` cuts it: ``blocks``
    (ViT/DeiT and the families built like it; Twins' per stage, ``blocks.2.0``) then the class-attention
    blocks (CaiT's ``blocks_token_only``, XCiT's ``cls_attn_blocks``), or PiT's ``transformers.*.blocks``, or
    Swin's ``layers.*.blocks``."""
    if hasattr(model, "blocks"):
        out = []
        for i, block in enumerate(model.blocks):
            if isinstance(block, nn.ModuleList):
                out += [(f"blocks.{i}.{j}", b) for j, b in enumerate(block)]
            else:
                out.append((f"blocks.{i}", block))
        for name in ("blocks_token_only", "cls_attn_blocks"):
            out += [(f"{name}.{i}", b) for i, b in enumerate(getattr(model, name, None) or ())]
        return out
    if hasattr(model, "transformers"):   # PiT
        return [(f"transformers.{i}.blocks.{j}", b)
                for i, stage in enumerate(model.transformers) for j, b in enumerate(stage.blocks)]
    if hasattr(model, "layers"):
        return [(f"layers.{i}.blocks.{j}", b) for i, layer in enumerate(model.layers) for j, b in enumerate(layer.blocks)]
    raise TypeError(f"{type(model).__name__} has no transformer blocks this tool knows")


class QuantizedModel(nn.Module):
    """Wraps (in place) a timm model; ScaleSet names are relative to the wrapped model."""

    def __init__(self, model: nn.Module, config: QuantConfig) -> None:
        super().__init__()
        # the first conv in module order is taken to see the image (its input stays float); the coverage
        # probe (``quantize``) checks that it does
        _replace_layers(model, config, next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None))
        model.requires_grad_(False)   # scales are searched, weights never: no autograd graph for them
        self.model = model.eval()
        self.config = config
        self._apply_plan()

    def _apply_plan(self) -> None:
        """Each planned point's quantizer at its width, before any calibration reads it; PlanMismatch for a
        point the model does not quantize."""
        quantizers = self.quantizers()
        for name, bits in self.config.plan:
            owner, _, role = name.rpartition("/")
            if (owner, role) not in quantizers:
                raise PlanMismatch(f"the bit plan gives {name} {bits} bits, but {type(self.model).__name__} has no "
                                   "such quantization point (a plan made for another model?)")
            quantizers[(owner, role)].bits = bits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def quantizers(self) -> "OrderedDict[tuple[str, str], FakeQuantizer]":
        """``(owner module name, role) -> FakeQuantizer`` in module order."""
        out = OrderedDict()
        for name, module in self.model.named_modules():
            if isinstance(module, FakeQuantizer):
                owner, _, attr = name.rpartition(".")
                out[(owner, attr.removesuffix("_quant"))] = module
        return out

    def blocks(self) -> list[tuple[str, nn.Module]]:
        return transformer_blocks(self.model)

    @contextmanager
    def full_precision(self) -> Iterator[None]:
        """Temporarily disable every quantizer (the FP reference uses the same forward)."""
        quantizers = list(self.quantizers().values())
        previous = [q.enabled for q in quantizers]
        for q in quantizers:
            q.enabled = False
        try:
            yield
        finally:
            for q, was in zip(quantizers, previous):
                q.enabled = was

    def fuse_fake_quant(self, enabled: bool) -> None:
        """Run uniform fake quantization as one fused kernel per point (``fused.py``), or eager.
        Results are the same either way; only the speed differs."""
        for quantizer in self.quantizers().values():
            quantizer.fused = enabled

    def scale_set(self) -> ScaleSet:
        scales = ScaleSet()
        for (owner, role), quantizer in self.quantizers().items():
            scales.setdefault(owner, {})[role] = quantizer.params()
        return scales

    def load_scale_set(self, scales: ScaleSet) -> None:
        """Adopt ``scales`` exactly; raise ScaleMismatch naming the first point that does not fit."""
        quantizers = self.quantizers()
        for owner, role in quantizers:
            if role not in scales.get(owner, {}):
                raise ScaleMismatch(f"scale set has no entry for {owner}/{role}")
        for owner, role, params in scales.points():
            if (owner, role) not in quantizers:
                raise ScaleMismatch(f"model has no quantization point {owner}/{role}")
            expected = expected_scale_shape(self.model.get_submodule(owner), role, params)
            if params.scale.shape != expected:
                raise ScaleMismatch(f"{owner}/{role}: scale has shape {params.scale.shape}, the model needs {expected}")
            if not (np.all(np.isfinite(params.scale)) and np.all(params.scale > 0)):
                raise ScaleMismatch(f"{owner}/{role}: scale has non-finite or non-positive values")
        for owner, role, params in scales.points():
            quantizers[(owner, role)].set_params(params)
        for hook in LOAD_HOOKS:
            hook(self)


def expected_scale_shape(owner: nn.Module, role: str, params) -> tuple[int, ...]:
    """The scale shape a point of ``owner`` must have for the granularity ``params`` declares."""
    if params.granularity == "per_tensor":
        return ()
    if role == "weight":
        return (owner.weight.shape[params.axis],)
    raise ScaleMismatch(f"{role} of {type(owner).__name__} cannot be quantized per channel")
