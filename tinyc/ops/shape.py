"""Ops that move data without arithmetic: reshape, transpose, concat, pad, slice,
gather, cast, nearest resize, and the quantize / dequantize boundary ops."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ..errors import TinycError
from ..ir import QuantParams
from ..ir.program import KernelCall
from ..kernels.params import PadParams, ResizeParams, TransposeParams
from ..quant import fixedpoint as fp
from . import lowering as lw
from .base import OpDef, dtype_of, register, shape_of


@dataclass
class ReshapeAttrs:
    shape: tuple[int, ...]


@register
class Reshape(OpDef):
    """A view: same bytes, new shape (Flatten, Squeeze, Unsqueeze import as this)."""

    name = "Reshape"
    int8_output = "input"
    attrs_type = ReshapeAttrs

    def infer(self, node, graph):
        src = shape_of(graph, node.inputs[0])
        if int(np.prod(src)) != int(np.prod(node.attrs.shape)):
            raise ValueError(f"{node.name}: cannot reshape {src} to {node.attrs.shape}")
        return [(tuple(node.attrs.shape), dtype_of(graph, node.inputs[0]))]

    def backward(self, node, graph, b):
        x = node.inputs[0]
        if b.needs(x):
            b.add(x, b.emit("Reshape", [b.grad(node.outputs[0])], ReshapeAttrs(shape_of(graph, x)), node))

    def ref(self, node, inputs):
        return [inputs[0].reshape(node.attrs.shape)]

    def lower(self, node, graph):
        """No code: the output is a view of the input's bytes.

        Like TFLite's RESHAPE, the bytes are not requantized even when the model
        gives the output other parameters (tf2onnx exports of TFLite models do,
        e.g. MCUNet's classifier; TFLM's results reinterpret the bytes)."""
        return [KernelCall("alias", None, [node.inputs[0]], [node.outputs[0]], node.name)]


@dataclass
class TransposeAttrs:
    perm: tuple[int, ...]


@register
class Transpose(OpDef):
    name = "Transpose"
    int8_output = "input"
    attrs_type = TransposeAttrs

    def infer(self, node, graph):
        src = shape_of(graph, node.inputs[0])
        return [(tuple(src[p] for p in node.attrs.perm), dtype_of(graph, node.inputs[0]))]

    def ref(self, node, inputs):
        return [np.ascontiguousarray(inputs[0].transpose(node.attrs.perm))]

    def lower(self, node, graph):
        x = node.inputs[0]
        shape, perm = shape_of(graph, x), tuple(node.attrs.perm)
        if len(shape) > 4:
            raise TinycError(f"node {node.name!r} (Transpose): tinyc's int8 Transpose handles up to 4 axes")
        extra = 4 - len(shape)
        p = TransposeParams(lw.shape4(shape), tuple(range(extra)) + tuple(a + extra for a in perm))
        out, requant = lw.output_in_input_params(graph, node, x)
        return [KernelCall("transpose_s8", p, [x], [out], node.name)] + requant


@dataclass
class ConcatAttrs:
    axis: int


@register
class Concat(OpDef):
    name = "Concat"
    int8_output = "input"
    attrs_type = ConcatAttrs

    def infer(self, node, graph):
        shapes = [shape_of(graph, i) for i in node.inputs]
        ax = node.attrs.axis
        out = list(shapes[0])
        out[ax] = sum(s[ax] for s in shapes)
        return [(tuple(out), dtype_of(graph, node.inputs[0]))]

    def ref(self, node, inputs):
        return [np.concatenate(inputs, axis=node.attrs.axis)]

    def lower(self, node, graph):
        """TFLite's int8 concatenation copies bytes: inputs in other parameters are
        requantized to the output's first."""
        out = node.outputs[0]
        calls, parts = [], []
        for name in node.inputs:
            if lw.same_params(lw.activation(graph, name, node), lw.activation(graph, out, node)):
                parts.append(name)
                continue
            tmp = graph.unique_name(f"{name}:requantized")
            graph.add_tensor(type(graph.tensors[out])(tmp, shape_of(graph, name), np.int8, quant=graph.tensors[out].quant))
            calls.append(lw.requantize_call(graph, node, name, tmp))
            parts.append(tmp)
        ax = node.attrs.axis % len(shape_of(graph, out))
        outer = int(np.prod(shape_of(graph, out)[:ax]))
        inner = tuple(int(np.prod(shape_of(graph, n)[ax:])) for n in parts)
        return calls + [KernelCall("concat_s8", None, parts, [out], node.name, scalars=(outer, len(parts)) + inner)]

    def backward(self, node, graph, b):
        dy = b.grad(node.outputs[0])
        shape = shape_of(graph, node.outputs[0])
        ax = node.attrs.axis % len(shape)
        at = 0
        for x in node.inputs:
            size = shape_of(graph, x)[ax]
            if b.needs(x):
                starts = tuple(at if i == ax else 0 for i in range(len(shape)))
                ends = tuple(at + size if i == ax else d for i, d in enumerate(shape))
                b.add(x, b.emit("Slice", [dy], SliceAttrs(starts, ends, (1,) * len(shape)), node))
            at += size

    def permuted(self, node, graph, perm):
        return ConcatAttrs(perm[node.attrs.axis])


@dataclass
class PadAttrs:
    pads: tuple[tuple[int, int], ...]  # (before, after) per axis
    mode: str = "constant"  # constant | reflect | edge | wrap
    value: float = 0.0


@register
class Pad(OpDef):
    name = "Pad"
    int8_output = "input"
    attrs_type = PadAttrs

    def infer(self, node, graph):
        src = shape_of(graph, node.inputs[0])
        return [(tuple(d + b + a for d, (b, a) in zip(src, node.attrs.pads)), dtype_of(graph, node.inputs[0]))]

    def ref(self, node, inputs):
        a = node.attrs
        x = inputs[0]
        # Negative pads crop.
        crop = tuple(slice(max(-b, 0), x.shape[i] - max(-e, 0)) for i, (b, e) in enumerate(a.pads))
        x = x[crop]
        pads = [(max(b, 0), max(e, 0)) for b, e in a.pads]
        if a.mode == "constant":
            return [np.pad(x, pads, constant_values=np.asarray(a.value, dtype=x.dtype))]
        return [np.pad(x, pads, mode={"reflect": "reflect", "edge": "edge", "wrap": "wrap"}[a.mode])]

    def lower(self, node, graph):
        a = node.attrs
        x = node.inputs[0]
        shape = shape_of(graph, x)
        if a.mode != "constant" or len(shape) > 4 or any(b < 0 or e < 0 for b, e in a.pads):
            raise TinycError(
                f"node {node.name!r} (Pad): tinyc's int8 Pad takes constant padding of up to 4 axes, "
                f"not mode {a.mode!r} with pads {list(a.pads)}"
            )
        s_in, z_in = lw.activation(graph, x, node)
        out, extra = lw.output_in_input_params(graph, node, x)
        value = fp.quantize_value(a.value, s_in, z_in) if a.value else z_in
        if not -128 <= value <= 127:
            raise TinycError(f"node {node.name!r} (Pad): the pad value {a.value} does not fit int8 in its scale")
        pads = [(0, 0)] * (4 - len(shape)) + list(a.pads)
        p = PadParams(lw.shape4(shape), tuple(b for b, _ in pads), tuple(e for _, e in pads), value)
        return [KernelCall("pad_s8", p, [x], [out], node.name)] + extra

    def backward(self, node, graph, b):
        x = node.inputs[0]
        a = node.attrs
        if not b.needs(x):
            return
        if a.mode != "constant" or any(lo < 0 or hi < 0 for lo, hi in a.pads):
            super().backward(node, graph, b)  # the default: no rule
        shape = shape_of(graph, x)
        starts = tuple(lo for lo, _ in a.pads)
        ends = tuple(lo + d for (lo, _), d in zip(a.pads, shape))
        b.add(x, b.emit("Slice", [b.grad(node.outputs[0])], SliceAttrs(starts, ends, (1,) * len(shape)), node))

    def permuted(self, node, graph, perm):
        inv = tuple(int(i) for i in np.argsort(perm))  # axis m of x' is axis inv[m] of x
        return replace(node.attrs, pads=tuple(node.attrs.pads[k] for k in inv))


@dataclass
class SliceAttrs:
    starts: tuple[int, ...]
    ends: tuple[int, ...]
    steps: tuple[int, ...]  # one per axis of the input, already normalized


@register
class Slice(OpDef):
    name = "Slice"
    int8_output = "input"
    attrs_type = SliceAttrs

    def _index(self, attrs):
        return tuple(slice(s, e if e >= 0 else None, st) for s, e, st in zip(attrs.starts, attrs.ends, attrs.steps))

    def infer(self, node, graph):
        dummy = np.empty(shape_of(graph, node.inputs[0]), dtype=np.bool_)
        return [(dummy[self._index(node.attrs)].shape, dtype_of(graph, node.inputs[0]))]

    def ref(self, node, inputs):
        return [np.ascontiguousarray(inputs[0][self._index(node.attrs)])]

    def permuted(self, node, graph, perm):
        a = node.attrs
        inv = tuple(int(i) for i in np.argsort(perm))
        return SliceAttrs(*(tuple(v[k] for k in inv) for v in (a.starts, a.ends, a.steps)))


@dataclass
class GatherAttrs:
    axis: int


@register
class Gather(OpDef):
    name = "Gather"
    int8_output = "input"
    attrs_type = GatherAttrs

    def infer(self, node, graph):
        data = shape_of(graph, node.inputs[0])
        idx = shape_of(graph, node.inputs[1])
        ax = node.attrs.axis
        return [(data[:ax] + idx + data[ax + 1:], dtype_of(graph, node.inputs[0]))]

    def ref(self, node, inputs):
        data, idx = inputs
        idx = np.where(idx < 0, idx + data.shape[node.attrs.axis], idx)
        return [np.take(data, idx, axis=node.attrs.axis)]


@dataclass
class CastAttrs:
    to: type


@register
class Cast(OpDef):
    name = "Cast"
    attrs_type = CastAttrs

    def infer(self, node, graph):
        return [(shape_of(graph, node.inputs[0]), node.attrs.to)]

    def ref(self, node, inputs):
        return [inputs[0].astype(node.attrs.to)]


@dataclass
class ResizeAttrs:
    scale: tuple[int, int]  # integer upscale factors for H and W (NHWC)


@register
class ResizeNearest(OpDef):
    """Nearest-neighbour upsampling by integer factors (what MCU detectors use)."""

    name = "ResizeNearest"
    int8_output = "input"
    attrs_type = ResizeAttrs

    def infer(self, node, graph):
        n, h, w, c = shape_of(graph, node.inputs[0])
        sh, sw = node.attrs.scale
        return [((n, h * sh, w * sw, c), dtype_of(graph, node.inputs[0]))]

    def ref(self, node, inputs):
        sh, sw = node.attrs.scale
        return [inputs[0].repeat(sh, axis=1).repeat(sw, axis=2)]

    def lower(self, node, graph):
        x = node.inputs[0]
        _, h, w, c = shape_of(graph, x)
        out, extra = lw.output_in_input_params(graph, node, x)
        _, oh, ow, _ = shape_of(graph, out)
        return [KernelCall("resize_nearest_s8", ResizeParams(h, w, c, oh, ow), [x], [out], node.name)] + extra


@dataclass
class QuantAttrs:
    quant: QuantParams
    dtype: type = np.int8


@register
class Quantize(OpDef):
    """float -> integer, round half to even and saturate (ONNX QuantizeLinear)."""

    name = "Quantize"
    attrs_type = QuantAttrs

    def infer(self, node, graph):
        return [(shape_of(graph, node.inputs[0]), node.attrs.dtype)]

    def ref(self, node, inputs):
        return [node.attrs.quant.quantize(inputs[0], node.attrs.dtype)]


@register
class Dequantize(OpDef):
    """integer -> float (ONNX DequantizeLinear)."""

    name = "Dequantize"
    attrs_type = QuantAttrs

    def infer(self, node, graph):
        return [(shape_of(graph, node.inputs[0]), np.float32)]

    def ref(self, node, inputs):
        return [node.attrs.quant.dequantize(inputs[0])]
