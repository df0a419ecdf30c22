"""Quantized drop-in replacements for nn.Linear and nn.Conv2d (and timm's same-padding and
weight-standardised convolutions)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import Conv2dSame, StdConv2d, StdConv2dSame, pad_same
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


def conv_same_padding(conv: nn.Conv2d) -> bool | None:
    """Whether ``conv`` pads "same" at run time (timm's Conv2dSame, StdConv2dSame), or None if its forward is
    one QuantConv2d does not reproduce (left in float: the coverage probe then names it)."""
    if type(conv) is Conv2dSame:
        return True
    if type(conv) in (StdConv2d, StdConv2dSame):
        return bool(getattr(conv, "same_pad", False))
    return False if type(conv).forward is nn.Conv2d.forward else None


def _standardized(conv: nn.Conv2d) -> torch.Tensor:
    """timm's weight standardisation, as StdConv2d's forward computes it."""
    return F.batch_norm(conv.weight.reshape(1, conv.out_channels, -1), None, None, training=True, momentum=0.0,
                        eps=conv.eps).reshape_as(conv.weight)


class QuantConv2d(nn.Module):
    """nn.Conv2d with its weight fake-quantized per output channel and its input per tensor.

    The convolution that sees the image (``a_bits=None``) keeps its input in float, like FQ-ViT and the
    CPT-V release. timm's variants keep their forward: "same" padding after the input quantizer (zeros
    are on every affine grid), and a weight-standardised conv (StdConv2d) holds its standardised weight,
    computed once here (in eval it is a fixed function of the weight), so calibrators that read
    ``.weight`` see the tensor the convolution multiplies by. Parameter names match nn.Conv2d.
    """

    def __init__(self, conv: nn.Conv2d, w_bits: int, a_bits: int | None) -> None:
        super().__init__()
        same = conv_same_padding(conv)
        if same is None:
            raise TypeError(f"{type(conv).__qualname__} has a forward QuantConv2d does not reproduce")
        self.same_pad = same
        self.weight, self.bias = conv.weight, conv.bias
        if isinstance(conv, (StdConv2d, StdConv2dSame)):
            with torch.no_grad():
                self.weight = nn.Parameter(_standardized(conv), requires_grad=conv.weight.requires_grad)
        self.stride, self.padding, self.dilation, self.groups = conv.stride, conv.padding, conv.dilation, conv.groups
        self.in_channels, self.out_channels, self.kernel_size = conv.in_channels, conv.out_channels, conv.kernel_size
        self.padding_mode, self._reversed_padding = conv.padding_mode, conv._reversed_padding_repeated_twice
        self.weight_quant = FakeQuantizer(w_bits, conv.weight.device, granularity=PER_CHANNEL, axis=0)
        self.input_quant = None if a_bits is None else FakeQuantizer(a_bits, conv.weight.device)

    def pad(self, x: torch.Tensor) -> tuple[torch.Tensor, int | tuple[int, ...]]:
        """``x`` padded as the convolution pads it, and the padding left for F.conv2d (or F.unfold) to add."""
        if self.same_pad:
            return pad_same(x, self.kernel_size, self.stride, self.dilation), 0
        if self.padding_mode != "zeros" or isinstance(self.padding, str):
            mode = "constant" if self.padding_mode == "zeros" else self.padding_mode
            return F.pad(x, self._reversed_padding, mode=mode), 0
        return x, self.padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_quant is not None:
            x = self.input_quant(x)
        x, padding = self.pad(x)
        return F.conv2d(x, self.weight_quant(self.weight), self.bias, self.stride, padding, self.dilation, self.groups)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"groups={self.groups}, input_quantized={self.input_quant is not None}")
