"""Pooling (NHWC), reductions and softmax."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ..errors import TinycError
from ..ir.program import KernelCall
from ..kernels.params import MeanParams, PoolParams, SoftmaxParams
from ..quant import fixedpoint as fp
from . import lowering as lw
from .base import NO_CLAMP, Clamp, OpDef, dtype_of, register, shape_of
from .conv import conv_out_size, windows


@dataclass
class PoolAttrs:
    kernel: tuple[int, int] = (1, 1)
    strides: tuple[int, int] = (1, 1)
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)  # top, left, bottom, right
    dilations: tuple[int, int] = (1, 1)
    # AveragePool only: whether padded cells count in the divisor.
    count_include_pad: bool = False
    act: Clamp = NO_CLAMP


class _Pool(OpDef):
    attrs_type = PoolAttrs
    int8_output = "input"

    def infer(self, node, graph):
        n, h, w, c = shape_of(graph, node.inputs[0])
        a = node.attrs
        oh = conv_out_size(h, a.kernel[0], a.strides[0], a.dilations[0], a.pads[0] + a.pads[2])
        ow = conv_out_size(w, a.kernel[1], a.strides[1], a.dilations[1], a.pads[1] + a.pads[3])
        return [((n, oh, ow, c), dtype_of(graph, node.inputs[0]))]

    kernel = ""

    def lower(self, node, graph):
        """TFLite's int8 pools keep the input's scale and zero point."""
        x = node.inputs[0]
        a = node.attrs
        _, h, w, c = shape_of(graph, x)
        s_in, z_in = lw.activation(graph, x, node)
        out, extra = lw.output_in_input_params(graph, node, x)
        _, oh, ow, _ = shape_of(graph, out)
        lo, hi = lw.act_range(a.act, s_in, z_in)
        include_pad = int(a.count_include_pad and any(a.pads) and self.name == "AvgPool2D")
        p = PoolParams(h, w, c, oh, ow, a.kernel[0], a.kernel[1], a.strides[0], a.strides[1],
                       a.pads[0], a.pads[1], include_pad, z_in, lo, hi, *a.dilations)
        return [KernelCall(self.kernel, p, [x], [out], node.name)] + extra


@register
class MaxPool2D(_Pool):
    name = "MaxPool2D"
    kernel = "max_pool_s8"

    def ref(self, node, inputs):
        a = node.attrs
        win = windows(inputs[0], a.kernel[0], a.kernel[1], a, pad_value=-np.inf)
        return [a.act.apply(win.max(axis=(-2, -1)).astype(np.float32))]

    def backward(self, node, graph, b):
        from .grad import PoolGradAttrs

        x = node.inputs[0]
        if node.attrs.dilations != (1, 1):
            super().backward(node, graph, b)  # no rule for dilated pooling: the default error
        if b.needs(x):
            dz = b.pre_activation(node)
            b.add(x, b.emit("MaxPool2DGrad", [dz, x], PoolGradAttrs(node.attrs, shape_of(graph, x)), node))


@register
class AvgPool2D(_Pool):
    name = "AvgPool2D"
    kernel = "avg_pool_s8"

    def ref(self, node, inputs):
        a = node.attrs
        x = inputs[0]
        win = windows(x, a.kernel[0], a.kernel[1], a)
        total = win.sum(axis=(-2, -1), dtype=np.float64)
        if a.count_include_pad:
            count = a.kernel[0] * a.kernel[1]
        else:
            ones = np.ones((1,) + x.shape[1:3] + (1,), dtype=np.float32)
            count = windows(ones, a.kernel[0], a.kernel[1], a).sum(axis=(-2, -1))
        return [a.act.apply((total / count).astype(np.float32))]

    def backward(self, node, graph, b):
        from .grad import PoolGradAttrs

        x = node.inputs[0]
        if node.attrs.dilations != (1, 1):
            super().backward(node, graph, b)  # no rule for dilated pooling: the default error
        if b.needs(x):
            dz = b.pre_activation(node)
            b.add(x, b.emit("AvgPool2DGrad", [dz], PoolGradAttrs(node.attrs, shape_of(graph, x)), node))


def _permute_axes(axes, perm):
    return tuple(sorted(perm[a] for a in axes))


@dataclass
class ReduceAttrs:
    axes: tuple[int, ...]
    keepdims: bool = True


@register
class ReduceMean(OpDef):
    name = "ReduceMean"
    attrs_type = ReduceAttrs

    def infer(self, node, graph):
        shape = shape_of(graph, node.inputs[0])
        a = node.attrs
        if a.keepdims:
            out = tuple(1 if i in a.axes else d for i, d in enumerate(shape))
        else:
            out = tuple(d for i, d in enumerate(shape) if i not in a.axes)
        return [(out, dtype_of(graph, node.inputs[0]))]

    def ref(self, node, inputs):
        a = node.attrs
        y = inputs[0].mean(axis=a.axes, keepdims=a.keepdims, dtype=np.float64)
        return [np.asarray(y, dtype=np.float32)]

    def macs(self, node, graph):
        return 0

    def lower(self, node, graph):
        """TFLM int8 MEAN (QuantizedMeanOrSum) over axes that are contiguous in memory."""
        x, y = node.inputs[0], node.outputs[0]
        shape = shape_of(graph, x)
        axes = sorted(a for a in node.attrs.axes if shape[a] != 1) or sorted(node.attrs.axes)
        if any(shape[k] != 1 and k not in axes for k in range(axes[0], axes[-1] + 1)):
            raise TinycError(
                f"node {node.name!r} (ReduceMean): int8 mean over axes {list(node.attrs.axes)} of shape "
                f"{list(shape)} is not over adjacent axes; tinyc's kernel reduces one contiguous block"
            )
        outer = int(np.prod(shape[: axes[0]]))
        reduce = int(np.prod(shape[axes[0]: axes[-1] + 1]))
        inner = int(np.prod(shape[axes[-1] + 1:]))
        s_in, z_in = lw.activation(graph, x, node)
        s_out, z_out = lw.activation(graph, y, node)
        m, shift = lw.requantize_multiplier(s_in, s_out)
        m, shift = fp.mean_int8_multiplier(m, shift, reduce)
        p = MeanParams(outer, reduce, inner, z_in, z_out, m, shift)
        return [KernelCall("mean_s8", p, [x], [y], node.name)]

    def backward(self, node, graph, b):
        from .grad import ReduceGradAttrs

        x = node.inputs[0]
        if b.needs(x):
            attrs = ReduceGradAttrs(tuple(node.attrs.axes), shape_of(graph, x))
            b.add(x, b.emit("ReduceMeanGrad", [b.grad(node.outputs[0])], attrs, node))

    def permuted(self, node, graph, perm):
        return replace(node.attrs, axes=_permute_axes(node.attrs.axes, perm))

    def permuted_output(self, node, graph, perm):
        if node.attrs.keepdims:
            return perm
        # the surviving axes keep their relative order in x', renumbered
        kept = [perm[k] for k in range(len(perm)) if k not in node.attrs.axes]
        order = sorted(kept)
        return tuple(order.index(a) for a in kept)


@dataclass
class AxisAttrs:
    axis: int


@register
class Softmax(OpDef):
    name = "Softmax"
    int8_output = (1.0 / 256.0, -128)
    attrs_type = AxisAttrs

    def infer(self, node, graph):
        return [(shape_of(graph, node.inputs[0]), np.float32)]

    def ref(self, node, inputs):
        x = inputs[0].astype(np.float64)
        e = np.exp(x - x.max(axis=node.attrs.axis, keepdims=True))
        return [(e / e.sum(axis=node.attrs.axis, keepdims=True)).astype(np.float32)]

    def permuted(self, node, graph, perm):
        return AxisAttrs(perm[node.attrs.axis])

    def lower(self, node, graph):
        """TFLite's int8 softmax over the last axis; its output is 1/256, -128."""
        x = node.inputs[0]
        shape = shape_of(graph, x)
        if node.attrs.axis % len(shape) != len(shape) - 1:
            raise TinycError(f"node {node.name!r} (Softmax): int8 softmax works on the last axis, not axis {node.attrs.axis}")
        s_in, _ = lw.activation(graph, x, node)
        sp = fp.softmax_int8_params(s_in, 1.0)
        out, extra = lw.fixed_output(graph, node, 1.0 / 256, -128)
        p = SoftmaxParams(int(np.prod(shape[:-1])), shape[-1], sp.input_multiplier, sp.input_left_shift, sp.diff_min)
        return [KernelCall("softmax_s8", p, [x], [out], node.name)] + extra


@register
class LogSoftmax(Softmax):
    name = "LogSoftmax"
    int8_output = (16.0 / 256.0, 127)
    lower = OpDef.lower  # no int8 kernel: TFLite models run it in float after DEQUANTIZE

    def ref(self, node, inputs):
        """TFLite's float LOG_SOFTMAX step for step, so a float tail after an int8
        graph matches TFLM bit for bit: max; a sequential float32 sum of
        expf(x - max); out = (x - max) - logf(sum). (exp / log are evaluated in
        double and rounded to float32, as glibc's correctly rounded expf / logf.)"""
        ax = node.attrs.axis
        x = inputs[0].astype(np.float32)
        shifted = (x - x.max(axis=ax, keepdims=True)).astype(np.float32)
        e = np.exp(shifted.astype(np.float64)).astype(np.float32)
        total = np.take(np.cumsum(e, axis=ax, dtype=np.float32), [-1], axis=ax)  # cumsum adds in order
        log_sum = np.log(total.astype(np.float64)).astype(np.float32)
        return [(shifted - log_sum).astype(np.float32)]
