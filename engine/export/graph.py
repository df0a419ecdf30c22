"""The quantized model traced to ONNX with one marker node per quantization point.

The marker (``cptv::QPoint``, attribute ``point = "owner/role"``) stands where the fake-quant model
quantizes, on exactly the tensor it quantizes; the formats then replace it (Q/DQ pairs) or drop it
(AIMET's FP model, whose encodings are keyed by the marked tensors' names). Tracing the quantized
model's own forward keeps the attention matmuls written out (its attention classes never call
timm's fused ``scaled_dot_product_attention``), so q, kᵀ, v and the softmax output exist as tensors.
"""
from __future__ import annotations

import inspect
import io
import warnings
from contextlib import contextmanager
from typing import Iterator

import onnx
import torch

from ..quant import QuantizedModel

MARKER_DOMAIN = "cptv"
MARKER_OP = "QPoint"
TRACE_OPSET = 17     # the TorchScript exporter's well-trodden opset; formats raise it where they need to


def point_key(owner: str, role: str) -> str:
    """How a quantization point is named in markers and reports: ``blocks.0.attn.qkv/input``."""
    return f"{owner}/{role}"


class _Marker(torch.autograd.Function):
    """Identity in torch; one ``cptv::QPoint`` node in the traced graph."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, key: str) -> torch.Tensor:  # noqa: ARG004
        return x.clone()

    @staticmethod
    def symbolic(g, x, key: str):
        return g.op(f"{MARKER_DOMAIN}::{MARKER_OP}", x, point_s=key).setTypeAs(x)


@contextmanager
def marking_points(qmodel: QuantizedModel) -> Iterator[None]:
    """Every FakeQuantizer of ``qmodel`` marks its tensor instead of fake-quantizing it."""
    quantizers = qmodel.quantizers()
    for (owner, role), quantizer in quantizers.items():
        quantizer.forward = lambda x, key=point_key(owner, role): _Marker.apply(x, key)
    try:
        yield
    finally:
        for quantizer in quantizers.values():
            del quantizer.forward


def _torchscript_exporter() -> dict:
    """Keyword that selects the TorchScript exporter where torch has two (2.5+; the default from 2.9 is
    torch.export's, which would need a translation for the marker op and onnxscript)."""
    return {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}


def trace_marked(qmodel: QuantizedModel, example: torch.Tensor) -> onnx.ModelProto:
    """``qmodel`` as ONNX (input ``images``, output ``logits``, dynamic batch) with marker nodes."""
    buffer = io.BytesIO()
    model = qmodel.model
    with marking_points(qmodel), warnings.catch_warnings():
        warnings.simplefilter("ignore")    # the TorchScript exporter's deprecation and custom-op shape notes
        torch.onnx.export(model, (example,), buffer, opset_version=TRACE_OPSET, **_torchscript_exporter(),
                          input_names=["images"], output_names=["logits"],
                          dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
                          custom_opsets={MARKER_DOMAIN: 1})
    return onnx.load_from_string(buffer.getvalue())


def is_marker(node: onnx.NodeProto) -> bool:
    return node.domain == MARKER_DOMAIN and node.op_type == MARKER_OP


def marker_key(node: onnx.NodeProto) -> str:
    return onnx.helper.get_attribute_value(node.attribute[0]).decode()


def drop_marker_opset(model: onnx.ModelProto) -> None:
    """Remove the markers' opset import once no marker is left."""
    kept = [o for o in model.opset_import if o.domain != MARKER_DOMAIN]
    del model.opset_import[:]
    model.opset_import.extend(kept)
