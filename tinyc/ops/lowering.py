"""Helpers the ops' ``lower`` methods share: int8 parameters as TFLite computes them.

Every number here follows TFLite Micro's Prepare functions (the float32 scales
widened to double, QuantizeMultiplier, CalculateActivationRangeQuantized), so
that the kernels' results are bit-exact with TFLM's.
"""

from __future__ import annotations

import numpy as np

from ..errors import TinycError
from ..ir import Graph, Node
from ..ir.program import KernelCall
from ..ir.tensor import QuantParams, Tensor
from ..kernels.params import RequantizeParams, StridedCopyParams
from ..quant import fixedpoint as fp
from .base import Clamp, shape_of

INT8_MIN, INT8_MAX = -128, 127


def activation(graph: Graph, name: str, node: Node) -> tuple[float, int]:
    """(scale, zero point) of an int8 activation tensor, per tensor."""
    t = graph.tensors[name]
    q = t.quant
    if q is None:
        raise TinycError(
            f"node {node.name!r} ({node.op}): tensor {name!r} has no int8 scale and zero point; "
            "give a QDQ model with a QuantizeLinear/DequantizeLinear pair on it, or a float model with --calib"
        )
    qdtype = np.dtype(t.attrs.get("qdtype", np.int8))
    if qdtype != np.int8:
        raise TinycError(
            f"node {node.name!r} ({node.op}): tensor {name!r} is quantized as {qdtype.name}; tinyc compiles "
            "int8 activations only (TFLite's int8 spec): quantize the model to int8 (QInt8 activations and weights)"
        )
    if q.per_axis and np.asarray(q.scale).size > 1:
        raise TinycError(
            f"node {node.name!r} ({node.op}): activation {name!r} is quantized per axis; "
            "tinyc (like TFLite) needs one scale and zero point per activation tensor"
        )
    zp = int(np.asarray(q.zero_point).reshape(-1)[0])
    if not INT8_MIN <= zp <= INT8_MAX:
        raise TinycError(f"node {node.name!r} ({node.op}): activation {name!r} has zero point {zp}, outside int8")
    return float(np.float32(np.asarray(q.scale).reshape(-1)[0])), zp


def require_int8_constants(graph: Graph, node: Node) -> None:
    """A constant operand of an arithmetic kernel must be int8 data with a scale
    (a QDQ model's, or one PTQ gave it)."""
    for name in node.inputs:
        t = graph.tensors[name] if name else None
        if t is not None and t.is_const and t.dtype is not np.int8:
            raise TinycError(
                f"node {node.name!r} ({node.op}): constant operand {name!r} is {np.dtype(t.dtype).name}, "
                "not int8; quantize it (QDQ) or give --calib"
            )


def same_params(a: tuple[float, int], b: tuple[float, int]) -> bool:
    return np.float32(a[0]) == np.float32(b[0]) and a[1] == b[1]


def act_range(clamp: Clamp, scale: float, zero_point: int) -> tuple[int, int]:
    """CalculateActivationRangeQuantized for a fused clamp [lo, hi] (float bounds)."""
    lo, hi = INT8_MIN, INT8_MAX
    if clamp.lo != -np.inf:
        lo = max(lo, fp.quantize_value(clamp.lo, scale, zero_point))
    if clamp.hi != np.inf:
        hi = min(hi, fp.quantize_value(clamp.hi, scale, zero_point))
    if lo > hi:  # a clamp that maps everything to one value still yields a valid range
        lo = hi = min(max(lo, INT8_MIN), INT8_MAX)
    return lo, hi


def weight_scales(graph: Graph, name: str, node: Node, channels: int) -> np.ndarray:
    """Per-output-channel float32 scales of an int8 weight (a per-tensor scale repeated)."""
    t = graph.tensors[name]
    if not t.is_const:
        raise TinycError(f"node {node.name!r} ({node.op}): weight {name!r} is not a constant; tinyc needs constant weights")
    if t.dtype is not np.int8 or t.quant is None:
        raise TinycError(
            f"node {node.name!r} ({node.op}): weight {name!r} is {np.dtype(t.dtype).name} without int8 quantization; "
            "quantize the model (QDQ with int8 weights) or give --calib"
        )
    q = t.quant
    if np.any(np.asarray(q.zero_point) != 0):
        raise TinycError(
            f"node {node.name!r} ({node.op}): weight {name!r} has a non-zero zero point; "
            "TFLite's int8 rules need symmetric weights (zero point 0)"
        )
    scales = np.asarray(q.scale, dtype=np.float32).reshape(-1)
    if scales.size == 1:
        return np.repeat(scales, channels)
    if q.axis != 0 or scales.size != channels:
        raise TinycError(
            f"node {node.name!r} ({node.op}): weight {name!r} is quantized along axis {q.axis} with "
            f"{scales.size} scales; tinyc needs per-output-channel (axis 0, {channels}) or per-tensor scales"
        )
    return scales


def bias(graph: Graph, node: Node, index: int = 2) -> str | None:
    if len(node.inputs) <= index or not node.inputs[index]:
        return None
    name = node.inputs[index]
    t = graph.tensors[name]
    if not t.is_const or t.dtype is not np.int32:
        raise TinycError(
            f"node {node.name!r} ({node.op}): bias {name!r} is not an int32 constant; "
            "TFLite's int8 rules need an int32 bias with scale input_scale * weight_scale"
        )
    return name


def const_array(graph: Graph, node: Node, what: str, values) -> str:
    """Add an int32 constant (multipliers, shifts) made by lowering; returns its name."""
    return graph.add_const(f"{node.name}:{what}", np.ascontiguousarray(values, dtype=np.int32))


def requantize_multiplier(s_in: float, s_out: float) -> tuple[int, int]:
    return fp.quantize_multiplier(float(np.float32(s_in)) / float(np.float32(s_out)))


def requantize_call(graph: Graph, node: Node, src: str, dst: str, act: Clamp | None = None) -> KernelCall:
    """dst = src in dst's parameters (TFLM's int8 -> int8 QUANTIZE), clamped by ``act``."""
    s_in, z_in = activation(graph, src, node)
    s_out, z_out = activation(graph, dst, node)
    lo, hi = act_range(act, s_out, z_out) if act is not None else (INT8_MIN, INT8_MAX)
    if same_params((s_in, z_in), (s_out, z_out)):
        return KernelCall("clamp_s8", None, [src], [dst], node.name, scalars=(graph.tensors[src].size, lo, hi))
    m, s = requantize_multiplier(s_in, s_out)
    p = RequantizeParams(graph.tensors[src].size, -z_in, z_out, m, s, lo, hi)
    return KernelCall("requantize_s8", p, [src], [dst], node.name)


def requantized_copy(graph: Graph, node: Node, src: str, quant: QuantParams) -> tuple[str, KernelCall]:
    """A new int8 tensor holding ``src`` in the parameters ``quant``, and the call that fills it."""
    tmp = graph.unique_name(f"{src}:requantized")
    graph.add_tensor(Tensor(tmp, graph.tensors[src].shape, np.int8, quant=quant))
    return tmp, requantize_call(graph, node, src, tmp)


def _written_in(graph: Graph, node: Node, quant: QuantParams, why: str) -> tuple[str, list[KernelCall]]:
    """The tensor a kernel whose output parameters are ``quant`` should write, and
    the requantize to the model's output when the model gave it other parameters."""
    out = node.outputs[0]
    scale, zp = float(np.float32(quant.scale)), int(quant.zero_point)
    if same_params(activation(graph, out, node), (scale, zp)):
        return out, []
    tmp = graph.unique_name(f"{out}:{why}")
    graph.add_tensor(Tensor(tmp, graph.tensors[out].shape, np.int8, quant=quant))
    return tmp, [requantize_call(graph, node, tmp, out)]


def output_in_input_params(graph: Graph, node: Node, src: str) -> tuple[str, list[KernelCall]]:
    """For kernels that keep their input's scale (pools, concat, pad, resize)."""
    activation(graph, src, node)  # the input must have int8 parameters
    return _written_in(graph, node, graph.tensors[src].quant, "in_params")


def strides4(shape: tuple[int, ...], out_shape: tuple[int, ...], node: Node) -> tuple[int, int, int, int]:
    """Element strides of ``shape`` broadcast to ``out_shape`` (right-aligned, 4-D)."""
    if len(out_shape) > 4:
        raise TinycError(f"node {node.name!r} ({node.op}): broadcasting over {len(out_shape)} dimensions; tinyc handles up to 4")
    shape = (1,) * (4 - len(shape)) + tuple(shape)
    out4 = (1,) * (4 - len(out_shape)) + tuple(out_shape)
    strides, step = [0] * 4, 1
    for d in range(3, -1, -1):
        if shape[d] != 1:
            strides[d] = step
        elif out4[d] != 1:
            strides[d] = 0
        step *= shape[d]
    return tuple(strides)


STRIDED_COPY_AXES = 6  # tinyc_strided_copy_params' arrays


def strided_copy(graph: Graph, node: Node, view) -> list[KernelCall]:
    """A data-movement node as one ``strided_copy_s8`` call: ``view`` maps the
    input's array of flat element indices to a numpy view of it (a transpose, a
    basic slice, broadcast_to, an integer index, ...), and the view's own shape,
    strides and first element are the kernel's parameters. Unit axes are dropped
    and axes that walk memory contiguously merged; the kernel takes up to
    ``STRIDED_COPY_AXES`` of what remains."""
    x = node.inputs[0]
    in_shape = shape_of(graph, x)
    index = np.arange(int(np.prod(in_shape)), dtype=np.int64).reshape(in_shape)
    v = view(index)
    if not np.shares_memory(v, index):  # pragma: no cover - the callers pass views
        raise AssertionError(f"node {node.name}: not a view")
    start = int(v[(0,) * v.ndim]) if v.size else 0
    axes: list[list[int]] = []
    for n, st in zip(v.shape, v.strides):
        if n == 1:
            continue
        st //= index.itemsize
        if axes and axes[-1][1] == st * n:
            axes[-1] = [axes[-1][0] * n, st]
        else:
            axes.append([n, st])
    if len(axes) > STRIDED_COPY_AXES:
        raise TinycError(f"node {node.name!r} ({node.op}): the int8 copy would need {len(axes)} axes after merging "
                         f"contiguous ones; tinyc handles up to {STRIDED_COPY_AXES}")
    axes = [[1, 0]] * (STRIDED_COPY_AXES - len(axes)) + axes
    p = StridedCopyParams(tuple(n for n, _ in axes), tuple(st for _, st in axes), start)
    out, extra = output_in_input_params(graph, node, x)
    return [KernelCall("strided_copy_s8", p, [x], [out], node.name)] + extra


def shape4(shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    return (1,) * (4 - len(shape)) + tuple(shape)


def fixed_output(graph: Graph, node: Node, scale: float, zero_point: int) -> tuple[str, list[KernelCall]]:
    """For kernels with a fixed output quantization (softmax, logistic: 1/256, -128)."""
    return _written_in(graph, node, QuantParams(np.float32(scale), np.int32(zero_point)), "fixed")
