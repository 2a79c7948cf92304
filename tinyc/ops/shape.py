"""Ops that move data without arithmetic: reshape, transpose, concat, pad, slice,
gather, cast, nearest resize, and the quantize / dequantize boundary ops."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ..ir import QuantParams
from .base import OpDef, dtype_of, register, shape_of


@dataclass
class ReshapeAttrs:
    shape: tuple[int, ...]


@register
class Reshape(OpDef):
    """A view: same bytes, new shape (Flatten, Squeeze, Unsqueeze import as this)."""

    name = "Reshape"
    attrs_type = ReshapeAttrs

    def infer(self, node, graph):
        src = shape_of(graph, node.inputs[0])
        if int(np.prod(src)) != int(np.prod(node.attrs.shape)):
            raise ValueError(f"{node.name}: cannot reshape {src} to {node.attrs.shape}")
        return [(tuple(node.attrs.shape), dtype_of(graph, node.inputs[0]))]

    def ref(self, node, inputs):
        return [inputs[0].reshape(node.attrs.shape)]


@dataclass
class TransposeAttrs:
    perm: tuple[int, ...]


@register
class Transpose(OpDef):
    name = "Transpose"
    attrs_type = TransposeAttrs

    def infer(self, node, graph):
        src = shape_of(graph, node.inputs[0])
        return [(tuple(src[p] for p in node.attrs.perm), dtype_of(graph, node.inputs[0]))]

    def ref(self, node, inputs):
        return [np.ascontiguousarray(inputs[0].transpose(node.attrs.perm))]


@dataclass
class ConcatAttrs:
    axis: int


@register
class Concat(OpDef):
    name = "Concat"
    attrs_type = ConcatAttrs

    def infer(self, node, graph):
        shapes = [shape_of(graph, i) for i in node.inputs]
        ax = node.attrs.axis
        out = list(shapes[0])
        out[ax] = sum(s[ax] for s in shapes)
        return [(tuple(out), dtype_of(graph, node.inputs[0]))]

    def ref(self, node, inputs):
        return [np.concatenate(inputs, axis=node.attrs.axis)]

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
    attrs_type = ResizeAttrs

    def infer(self, node, graph):
        n, h, w, c = shape_of(graph, node.inputs[0])
        sh, sw = node.attrs.scale
        return [((n, h * sh, w * sw, c), dtype_of(graph, node.inputs[0]))]

    def ref(self, node, inputs):
        sh, sw = node.attrs.scale
        return [inputs[0].repeat(sh, axis=1).repeat(sw, axis=2)]


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
