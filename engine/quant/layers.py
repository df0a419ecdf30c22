"""Quantized drop-in replacements for nn.Linear and the patch-embedding nn.Conv2d."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .params import PER_CHANNEL
from .quantizer import FakeQuantizer


class QuantLinear(nn.Module):
    """nn.Linear with its weight (per output channel) and its input (per tensor) fake-quantized.

    Parameter names match nn.Linear, so timm state dicts load unchanged.
    """

    def __init__(self, linear: nn.Linear, w_bits: int, a_bits: int) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight = linear.weight
        self.bias = linear.bias
        self.weight_quant = FakeQuantizer(w_bits, linear.weight.device, granularity=PER_CHANNEL, axis=0)
        self.input_quant = FakeQuantizer(a_bits, linear.weight.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self.input_quant(x), self.weight_quant(self.weight), self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class QuantConv2d(nn.Module):
    """The patch-embedding convolution with its weight fake-quantized per output channel.

    Its input is the image itself, which stays in float like in FQ-ViT and the CPT-V release.
    """

    def __init__(self, conv: nn.Conv2d, w_bits: int) -> None:
        super().__init__()
        self.weight, self.bias = conv.weight, conv.bias
        self.stride, self.padding, self.dilation, self.groups = conv.stride, conv.padding, conv.dilation, conv.groups
        self.in_channels, self.out_channels, self.kernel_size = conv.in_channels, conv.out_channels, conv.kernel_size
        self.weight_quant = FakeQuantizer(w_bits, conv.weight.device, granularity=PER_CHANNEL, axis=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight_quant(self.weight), self.bias, self.stride, self.padding,
                        self.dilation, self.groups)

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
