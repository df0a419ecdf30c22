"""AIMET encodings (format 1.0.0) next to the FP ONNX model they refer to.

Activation encodings are keyed by the name of the ONNX tensor the point quantizes, parameter encodings
by the weight initializer's name. AIMET's integer grid is always unsigned, ``x = (q + offset)·scale``
with q in [0, 2^bw − 1], so ``offset = qmin − zero_point`` (−zero_point for our unsigned points) and
``is_sym`` is true for signed points with zero-point 0, as AIMET writes them. AIMET validates
bit-widths 4 to 32 and quantizes activations per tensor, so a run with a narrower point or a
per-channel activation (FQ-ViT's PTF) is refused with that reason.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from ..quant import ScaleSet
from ..quant.params import integer_range
from .graph import drop_marker_opset, is_marker, marker_key, point_key
from .onnx_qdq import ExportError, OnnxPoint, onnx_point

ENCODING_VERSION = "1.0.0"
AIMET_MIN_BITS = 4


def _rewire(graph: onnx.GraphProto, old: str, new: str) -> None:
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = new


def _consumers(graph: onnx.GraphProto, tensor: str) -> list[onnx.NodeProto]:
    return [node for node in graph.node if tensor in node.input]


def _fold_weight_transpose(graph: onnx.GraphProto, weight: str) -> bool:
    """A Linear's ``Transpose(W) -> MatMul`` becomes ``Wᵀ -> MatMul`` (same initializer name), the
    (in, out) layout AIMET expects of MatMul weights, with channels on the last axis. True if folded."""
    users = _consumers(graph, weight)
    if len(users) != 1 or users[0].op_type != "Transpose":
        return False
    transpose = users[0]
    initializer = next(init for init in graph.initializer if init.name == weight)
    array = numpy_helper.to_array(initializer)
    if array.ndim != 2:
        return False
    initializer.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(array.T), weight))
    _rewire(graph, transpose.output[0], weight)
    graph.node.remove(transpose)
    return True


def fp_model(marked: onnx.ModelProto) -> tuple[onnx.ModelProto, dict[str, str]]:
    """``marked`` without its markers (the FP graph) and ``point key -> tensor name`` it quantizes."""
    model = onnx.ModelProto()
    model.CopyFrom(marked)
    graph = model.graph
    names: dict[str, str] = {}
    for node in [n for n in graph.node if is_marker(n)]:
        names[marker_key(node)] = node.input[0]
        graph.node.remove(node)
        _rewire(graph, node.output[0], node.input[0])
    initializers = {init.name for init in graph.initializer}
    for name in names.values():
        if name in initializers:
            _fold_weight_transpose(graph, name)
    drop_marker_opset(model)
    onnx.checker.check_model(model)
    return model, names


def encoding(name: str, point: OnnxPoint) -> dict:
    """One AIMET 1.0.0 encoding entry."""
    qmin, _ = integer_range(point.bits, point.signed)
    offset = qmin - point.zero_point
    return {"name": name, "dtype": "INT", "enc_type": "PER_TENSOR" if point.axis is None else "PER_CHANNEL",
            "bw": point.bits, "is_sym": bool(point.signed and not point.zero_point.any()),
            "scale": [float(s) for s in point.scale.flatten()], "offset": [int(o) for o in offset.flatten()]}


def encodings(scales: ScaleSet, names: dict[str, str], parameters: set[str]) -> dict:
    """The encodings document; ExportError for what AIMET cannot hold."""
    activations: dict[str, dict] = {}
    params: list[dict] = []
    for owner, role, quant in scales.points():
        key = point_key(owner, role)
        if quant.bits < AIMET_MIN_BITS:
            raise ExportError(f"{key} is {quant.bits}-bit: AIMET validates bit-widths {AIMET_MIN_BITS} to 32, so "
                              "its encodings cannot hold this run; export it with --format onnx-qdq instead")
        point = onnx_point(key, quant)
        entry = encoding(names[key], point)
        if names[key] in parameters:
            params.append(entry)
        elif point.axis is not None or point.channel_factor is not None:
            raise ExportError(f"{key} quantizes an activation per channel ({quant.scheme}); AIMET's activation "
                              "encodings are per tensor; export it with --format onnx-qdq instead")
        elif activations.setdefault(names[key], entry) != entry:
            raise ExportError(f"{key} and another point quantize the same tensor {names[key]!r} differently")
    return {"version": ENCODING_VERSION, "activation_encodings": list(activations.values()),
            "param_encodings": params, "excluded_layers": []}


def write_aimet(marked: onnx.ModelProto, scales: ScaleSet, out: Path) -> tuple[Path, Path]:
    """``out`` (the FP ONNX model) and ``out`` with suffix ``.encodings`` beside it."""
    model, names = fp_model(marked)
    document = encodings(scales, names, {init.name for init in model.graph.initializer})
    encodings_path = out.with_suffix(".encodings")
    onnx.save(model, out)
    encodings_path.write_text(json.dumps(document, indent=1))
    return out, encodings_path
