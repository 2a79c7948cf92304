"""Ops that move data without arithmetic: reshape, transpose, concat, pad, slice,
gather, cast, nearest resize, and the quantize / dequantize boundary ops."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ..errors import TinycError
from ..ir import QuantParams
from ..ir.program import KernelCall
from ..kernels.params import PadParams, ResizeBilinearParams, ResizeParams
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
        return lw.strided_copy(graph, node, lambda index: index.transpose(node.attrs.perm))


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

    def lower(self, node, graph):
        return lw.strided_copy(graph, node, lambda index: index[self._index(node.attrs)])


@dataclass
class GatherAttrs:
    axis: int
    indices: tuple[int, ...]  # constant indices, flat, already in [0, axis size)
    shape: tuple[int, ...] = ()  # the indices' shape (() for one index)


def _progression(flat: np.ndarray) -> tuple[int, list[tuple[int, int]]] | None:
    """``flat`` as ``start + k1 * s1 (+ k2 * s2)``: (start, [(n1, s1), (n2, s2)]) with one
    or two levels, e.g. one token, every other channel, a reversed axis, or a channel
    shuffle's (i % c) * g + i // c; None for other index lists."""
    n = flat.size
    start = int(flat[0])
    for n2 in [n] + [d for d in range(2, n) if n % d == 0]:
        m = flat.reshape(n // n2, n2)
        s2 = int(m[0, 1] - m[0, 0]) if n2 > 1 else 1
        s1 = int(m[1, 0] - m[0, 0]) if n // n2 > 1 else 1
        expect = start + s1 * np.arange(n // n2)[:, None] + s2 * np.arange(n2)[None, :]
        if np.array_equal(m, expect):
            return start, ([(n2, s2)] if n2 == n else [(n // n2, s1), (n2, s2)])
    return None


@register
class Gather(OpDef):
    """ONNX Gather with constant indices (the importer requires them)."""

    name = "Gather"
    int8_output = "input"
    attrs_type = GatherAttrs

    def _indices(self, attrs) -> np.ndarray:
        return np.asarray(attrs.indices, dtype=np.int64).reshape(attrs.shape)

    def infer(self, node, graph):
        data = shape_of(graph, node.inputs[0])
        ax = node.attrs.axis
        return [(data[:ax] + tuple(node.attrs.shape) + data[ax + 1:], dtype_of(graph, node.inputs[0]))]

    def ref(self, node, inputs):
        return [np.array(np.take(inputs[0], self._indices(node.attrs), axis=node.attrs.axis))]  # 0-d stays 0-d

    def permuted(self, node, graph, perm):
        # a 1-D index list keeps the rank and the axis' place: gather along the moved axis
        return replace(node.attrs, axis=perm[node.attrs.axis]) if len(node.attrs.shape) == 1 else None

    def lower(self, node, graph):
        """Indices that form a progression of one or two levels are a strided copy:
        the axis becomes one or two axes with the progression's steps."""
        axis = node.attrs.axis
        flat = np.asarray(node.attrs.indices, dtype=np.int64)
        found = _progression(flat)
        if found is None:
            raise TinycError(f"node {node.name!r} (Gather): its indices are not a regular progression; tinyc's int8 "
                             "Gather copies strided ranges (gather in float, or reorder the weights before export)")
        start, levels = found

        def view(index):
            base = index[(slice(None),) * axis + (start,)]  # its data pointer is the first element read
            step = index.strides[axis]
            shape = index.shape[:axis] + tuple(n for n, _ in levels) + index.shape[axis + 1:]
            strides = index.strides[:axis] + tuple(s * step for _, s in levels) + index.strides[axis + 1:]
            return np.lib.stride_tricks.as_strided(base, shape, strides, writeable=False)

        return lw.strided_copy(graph, node, view)


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


@dataclass
class ExpandAttrs:
    shape: tuple[int, ...]  # the output shape (the input broadcast to it)


@register
class Expand(OpDef):
    name = "Expand"
    int8_output = "input"
    attrs_type = ExpandAttrs

    def infer(self, node, graph):
        return [(tuple(node.attrs.shape), dtype_of(graph, node.inputs[0]))]

    def ref(self, node, inputs):
        return [np.ascontiguousarray(np.broadcast_to(inputs[0], node.attrs.shape))]

    def permuted(self, node, graph, perm):
        return ExpandAttrs(tuple(node.attrs.shape[p] for p in perm))

    def lower(self, node, graph):
        return lw.strided_copy(graph, node, lambda index: np.broadcast_to(index, node.attrs.shape))


@dataclass
class ResizeBilinearAttrs:
    size: tuple[int, int]  # output H, W (NHWC)
    mode: str  # ONNX coordinate transformation: half_pixel | align_corners | asymmetric
    scale: tuple[float, float]  # ONNX's scale factors (output / input), for the float reference


def _linear_sources(mode: str, n_in: int, n_out: int, scale: float):
    """ONNX Resize (mode linear) along one axis: the two source indices and the
    weight of the second, the source coordinate clamped to the input."""
    x = np.arange(n_out, dtype=np.float64)
    if mode == "half_pixel":
        src = (x + 0.5) / scale - 0.5
    elif mode == "align_corners":  # ONNX divides by the unrounded output length, n_in * scale - 1
        src = x * (n_in - 1) / (n_in * scale - 1) if n_in * scale > 1 else np.zeros_like(x)
    else:  # asymmetric
        src = x / scale
    src = np.clip(src, 0, n_in - 1)
    lo = np.floor(src).astype(np.int64)
    return lo, np.minimum(lo + 1, n_in - 1), src - lo


@register
class ResizeBilinear(OpDef):
    """Bilinear resize of H and W (ONNX Resize, mode linear)."""

    name = "ResizeBilinear"
    int8_output = "input"
    attrs_type = ResizeBilinearAttrs

    def infer(self, node, graph):
        n, _, _, c = shape_of(graph, node.inputs[0])
        return [((n, *node.attrs.size, c), dtype_of(graph, node.inputs[0]))]

    def ref(self, node, inputs):
        x = inputs[0].astype(np.float64)
        a = node.attrs
        y0, y1, fy = _linear_sources(a.mode, x.shape[1], a.size[0], a.scale[0])
        x0, x1, fx = _linear_sources(a.mode, x.shape[2], a.size[1], a.scale[1])
        fy, fx = fy[None, :, None, None], fx[None, None, :, None]
        top = x[:, y0][:, :, x0] * (1 - fx) + x[:, y0][:, :, x1] * fx
        bottom = x[:, y1][:, :, x0] * (1 - fx) + x[:, y1][:, :, x1] * fx
        return [(top * (1 - fy) + bottom * fy).astype(np.float32)]

    def lower(self, node, graph):
        """TFLite's integer RESIZE_BILINEAR: its Q10 size ratio stands for ONNX's
        scale, so sizes that are not a whole ratio sample a little differently from
        the float model (the ratio rounded to 1/1024)."""
        x = node.inputs[0]
        _, h, w, c = shape_of(graph, x)
        oh, ow = node.attrs.size
        corners = node.attrs.mode == "align_corners"
        p = ResizeBilinearParams(h, w, c, oh, ow, fp.resize_bilinear_scale_10(h, oh, corners),
                                 fp.resize_bilinear_scale_10(w, ow, corners), int(node.attrs.mode == "half_pixel"))
        out, extra = lw.output_in_input_params(graph, node, x)
        return [KernelCall("resize_bilinear_s8", p, [x], [out], node.name)] + extra
