"""ONNX QDQ: every quantization point of a run as one QuantizeLinear/DequantizeLinear pair with its exact
scale and zero-point (per-channel weights with ``axis``, per-tensor activations).

ONNX has 4-, 8- and 16-bit integer types (4 and 16 from opset 21) and nothing in between, so a b-bit
point is stored in a wider type (its *container*): weights in the narrowest of int4/int8/int16 that
holds b bits (4-bit weights are int4 in the file), activations in 8 bits at least (int8/uint8 are what
runtimes have integer kernels for; a 4-bit activation type would only be simulated, and onnxruntime
1.32 fails to load a Clip before a 4-bit QuantizeLinear). When b is narrower than the container
(3-bit activations in uint8, 3-bit weights in int4) a clamp to the b-bit range ``[s·(qmin−z),
s·(qmax−z)]`` runs before the QuantizeLinear: the codes it lets through are exactly the b-bit codes
the fake-quant model uses (round(x/s) of a clamped bound lands on qmin−z or qmax−z, never past it),
and the container's own saturation never acts. Per-tensor points use ``Clip``; per-channel ones
``Max``/``Min`` with broadcast bounds, since ``Clip`` takes scalar bounds only.

Weights keep their float initializer in front of their QuantizeLinear (the explicit-quantization form
TensorRT reads; onnxruntime folds the constant QuantizeLinear into an integer initializer), so the
number of QuantizeLinear nodes is the number of quantization points.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper, version_converter

from ..errors import ExportError
from ..quant import PER_CHANNEL, QuantParams, ScaleSet
from ..quant.params import integer_range
from .graph import drop_marker_opset, is_marker, marker_key, point_key

SUB_BYTE_OPSET = 21        # int4/uint4 and int16/uint16 QuantizeLinear
ACTIVATION_MIN_BITS = 8    # activations are never stored in a 4-bit type (see above)
EXPORTABLE_SCHEMES = ("uniform", "ptf")
# What a user can export instead, by the scheme that cannot be exported.
ALTERNATIVES = {
    "log2": "fqvit-nolis (FQ-ViT with a uniform softmax)",
    "twin_softmax": "minmax, percentile or omse (PTQ4ViT's twin-uniform ranges have no ONNX form)",
    "twin_gelu": "minmax, percentile or omse (PTQ4ViT's twin-uniform ranges have no ONNX form)",
    "log_sqrt2": "minmax, percentile or omse (RepQ-ViT's log√2 softmax has no ONNX form)",
}
_CONTAINERS = ((4, TensorProto.INT4, TensorProto.UINT4), (8, TensorProto.INT8, TensorProto.UINT8),
               (16, TensorProto.INT16, TensorProto.UINT16))
_CONTAINER_BITS = {elem_type: width for width, *types in _CONTAINERS for elem_type in types}


@dataclass(frozen=True)
class OnnxPoint:
    """One quantization point as ONNX QuantizeLinear inputs: what is written and read back."""
    scale: np.ndarray            # float32, () or (C,)
    zero_point: np.ndarray       # int64 values of the container type, same shape
    axis: int | None
    elem_type: int               # TensorProto integer type (the container)
    container_bits: int
    bits: int
    signed: bool
    channel_factor: np.ndarray | None = None   # PTF: per-channel (last axis) powers of two

    @property
    def clamped(self) -> bool:
        return self.bits < self.container_bits

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """The float range whose codes are exactly the b-bit ones: [s·(qmin−z), s·(qmax−z)]."""
        qmin, qmax = integer_range(self.bits, self.signed)
        zero = self.zero_point.astype(np.float32)
        return self.scale * (np.float32(qmin) - zero), self.scale * (np.float32(qmax) - zero)


def container(bits: int, signed: bool, weight: bool) -> tuple[int, int]:
    """(TensorProto type, its width) of the narrowest ONNX integer type holding ``bits``; 8 bits at
    least for activations."""
    for width, signed_type, unsigned_type in _CONTAINERS:
        if bits <= width and (weight or width >= ACTIVATION_MIN_BITS):
            return (signed_type if signed else unsigned_type), width
    raise ExportError(f"{bits}-bit quantization has no ONNX integer type (at most 16 bits)")


def check_exportable(scales: ScaleSet, quantizer: str) -> None:
    """ExportError naming the first point whose scheme one QuantizeLinear cannot express."""
    for owner, role, params in scales.points():
        if params.scheme not in EXPORTABLE_SCHEMES:
            alternative = ALTERNATIVES.get(params.scheme, "minmax, percentile or omse")
            raise ExportError(
                f"{point_key(owner, role)} of this {quantizer} run uses the {params.scheme!r} scheme, which one ONNX "
                f"QuantizeLinear cannot express; quantize with {alternative} to export")


def onnx_point(key: str, params: QuantParams) -> OnnxPoint:
    """``params`` as QuantizeLinear inputs, exactly. FQ-ViT's PTF (channel c steps s·f_c, f_c a power of
    two, one zero-point) keeps its per-tensor (s, z) and its factors for ``_qdq_nodes``."""
    factor = None
    if params.scheme == "ptf":
        factor = np.asarray(params.extra["factor"], np.float32)
        if not np.all(np.frexp(factor)[0] == 0.5):
            raise ExportError(f"{key}: PTF factors must be powers of two to export exactly")
    elem_type, width = container(params.bits, params.signed, weight=key.endswith("/weight"))
    zero_point = params.zero_point
    if not np.array_equal(zero_point, np.round(zero_point)):
        raise ExportError(f"{key}: zero-point is not an integer, which ONNX QuantizeLinear needs")
    if zero_point.min() < params.qmin or zero_point.max() > params.qmax:
        raise ExportError(f"{key}: zero-point outside the {params.bits}-bit range [{params.qmin}, {params.qmax}]")
    return OnnxPoint(params.scale, zero_point.astype(np.int64),
                     params.axis if params.granularity == PER_CHANNEL else None, elem_type, width, params.bits,
                     params.signed, factor)


def _initializer(graph: onnx.GraphProto, name: str, array: np.ndarray, elem_type: int = TensorProto.FLOAT) -> str:
    graph.initializer.append(helper.make_tensor(name, elem_type, array.shape, array.flatten().tolist()))
    return name


def _bound_shape(point: OnnxPoint, rank: int | None, key: str) -> tuple[int, ...]:
    """Shape that broadcasts per-channel bounds along the point's axis of a rank-``rank`` tensor."""
    if point.axis == -1:
        return point.scale.shape
    if rank is None:
        raise ExportError(f"{key}: a per-channel clamp on axis {point.axis} of an activation is not supported")
    return point.scale.shape + (1,) * (rank - 1 - point.axis % rank)


def _clamp_nodes(graph: onnx.GraphProto, key: str, point: OnnxPoint, source: str, rank: int | None) -> tuple[list, str]:
    lo, hi = point.bounds()
    if point.axis is None:
        node = helper.make_node("Clip", [source, _initializer(graph, f"{key}/clip_min", lo),
                                         _initializer(graph, f"{key}/clip_max", hi)], [f"{key}/clipped"],
                                name=f"{key}/Clip")
        return [node], f"{key}/clipped"
    shape = _bound_shape(point, rank, key)
    low = helper.make_node("Max", [source, _initializer(graph, f"{key}/clip_min", lo.reshape(shape))],
                           [f"{key}/clipped_low"], name=f"{key}/Max")
    high = helper.make_node("Min", [f"{key}/clipped_low", _initializer(graph, f"{key}/clip_max", hi.reshape(shape))],
                            [f"{key}/clipped"], name=f"{key}/Min")
    return [low, high], f"{key}/clipped"


def _qdq_nodes(graph: onnx.GraphProto, key: str, point: OnnxPoint, source: str, output: str,
               rank: int | None) -> list[onnx.NodeProto]:
    """[Mul 1/f →] [clamp →] QuantizeLinear → DequantizeLinear [→ Mul f], ending in ``output``.

    PTF's per-channel step s·f is one per-tensor QuantizeLinear between a division and a
    multiplication by f, bit for bit the fake-quant's round(x/(s·f)) and (q−z)·(s·f): scaling by a power
    of two is exact, so x/f/s and x/(s·f) round the same real number. (A per-channel activation
    QuantizeLinear would say the same, but onnxruntime 1.32 fuses it into a MatMul kernel that then
    refuses per-channel activations at run time.)"""
    nodes: list[onnx.NodeProto] = []
    if point.channel_factor is not None:
        inverse = _initializer(graph, f"{key}/inverse_factor", np.float32(1) / point.channel_factor)
        nodes.append(helper.make_node("Mul", [source, inverse], [f"{key}/scaled"], name=f"{key}/Mul_inverse"))
        source = f"{key}/scaled"
    if point.clamped:
        clamp, source = _clamp_nodes(graph, key, point, source, rank)
        nodes.extend(clamp)
    scale = _initializer(graph, f"{key}/scale", point.scale)
    zero = _initializer(graph, f"{key}/zero_point", point.zero_point, point.elem_type)
    axis = {} if point.axis is None else {"axis": point.axis}
    dequantized = output if point.channel_factor is None else f"{key}/dequantized"
    nodes.append(helper.make_node("QuantizeLinear", [source, scale, zero], [f"{key}/quantized"],
                                  name=f"{key}/QuantizeLinear", **axis))
    nodes.append(helper.make_node("DequantizeLinear", [f"{key}/quantized", scale, zero], [dequantized],
                                  name=f"{key}/DequantizeLinear", **axis))
    if point.channel_factor is not None:
        factor = _initializer(graph, f"{key}/factor", point.channel_factor)
        nodes.append(helper.make_node("Mul", [dequantized, factor], [output], name=f"{key}/Mul_factor"))
    return nodes


def qdq_model(marked: onnx.ModelProto, scales: ScaleSet) -> onnx.ModelProto:
    """``marked`` (graph.trace_marked) with each marker replaced by its point's Q/DQ pair."""
    model = onnx.ModelProto()
    model.CopyFrom(marked)
    graph = model.graph
    points = {point_key(owner, role): params for owner, role, params in scales.points()}
    ranks = {init.name: len(init.dims) for init in graph.initializer}
    onnx_points = {}
    nodes = []
    for node in graph.node:
        if not is_marker(node):
            nodes.append(node)
            continue
        key = marker_key(node)
        onnx_points[key] = point = onnx_point(key, points[key])
        nodes.extend(_qdq_nodes(graph, key, point, node.input[0], node.output[0], ranks.get(node.input[0])))
    del graph.node[:]
    graph.node.extend(nodes)
    missing = points.keys() - onnx_points.keys()
    if missing:
        raise ExportError(f"the traced graph has no tensor for {sorted(missing)[0]} (and {len(missing) - 1} more)")
    drop_marker_opset(model)
    if any(p.container_bits != 8 for p in onnx_points.values()):
        model = version_converter.convert_version(model, SUB_BYTE_OPSET)
    onnx.checker.check_model(model)
    return model


def read_points(model: onnx.ModelProto) -> dict[str, tuple[np.ndarray, np.ndarray, int | None]]:
    """``point key -> (scale, zero_point, axis)`` as the QuantizeLinear nodes of ``model`` hold them."""
    values = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    out = {}
    for node in model.graph.node:
        if node.op_type == "QuantizeLinear":
            axis = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "axis"), None)
            out[node.name.removesuffix("/QuantizeLinear")] = (values[node.input[1]], values[node.input[2]], axis)
    return out


def _clamp_bounds(nodes: dict[str, onnx.NodeProto], values: dict[str, np.ndarray], key: str):
    """The (low, high) bounds of the clamp ``_clamp_nodes`` wrote in front of ``key``'s QuantizeLinear, or None."""
    if f"{key}/Clip" in nodes:
        clip = nodes[f"{key}/Clip"]
        return values[clip.input[1]], values[clip.input[2]]
    if f"{key}/Max" in nodes:
        return values[nodes[f"{key}/Max"].input[1]], values[nodes[f"{key}/Min"].input[1]]
    return None


def read_widths(model: onnx.ModelProto) -> dict[str, int]:
    """``point key -> bits`` as ``model`` quantizes each point: its container type's width, or, behind a
    clamp, the b whose 2^b − 1 steps of the scale span the clamp's bounds (what a deployer reads back)."""
    values = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    types = {init.name: init.data_type for init in model.graph.initializer}
    nodes = {node.name: node for node in model.graph.node}
    widths = {}
    for node in model.graph.node:
        if node.op_type != "QuantizeLinear":
            continue
        key = node.name.removesuffix("/QuantizeLinear")
        widths[key] = _CONTAINER_BITS[types[node.input[2]]]
        bounds = _clamp_bounds(nodes, values, key)
        if bounds is not None:
            steps = np.unique(np.round((bounds[1] - bounds[0]).ravel() / values[node.input[1]].ravel()))
            bits = int(np.round(np.log2(steps[-1] + 1)))
            if len(steps) != 1 or 2**bits - 1 != steps[0]:
                raise ExportError(f"{key}: its clamp spans {steps} steps of its scale, not 2^b − 1 for one b")
            widths[key] = bits
    return widths
