"""Fake quantization of timm Vision Transformers."""
from . import uniform  # noqa: F401  (registers minmax / percentile / omse)
from . import fqvit, ptq4vit, repqvit  # noqa: F401  (register the peer quantizers and their schemes)
from .bitplan import PlanMismatch
from .coverage import CoverageReport, UncoveredMatmul, coverage_report
from .model import QuantConfig, QuantizedModel, ScaleMismatch, parse_bits, transformer_blocks
from .params import PER_CHANNEL, PER_TENSOR, QuantParams, ScaleSet
from .registry import available_quantizers, quantize, register_quantizer

__all__ = [
    "PER_CHANNEL", "PER_TENSOR", "CoverageReport", "PlanMismatch", "QuantConfig", "QuantParams", "QuantizedModel", "ScaleMismatch",
    "ScaleSet", "UncoveredMatmul", "available_quantizers", "coverage_report", "parse_bits", "quantize",
    "register_quantizer", "transformer_blocks",
]
