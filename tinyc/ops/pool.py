"""Pooling (NHWC), reductions and softmax."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

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

    def infer(self, node, graph):
        n, h, w, c = shape_of(graph, node.inputs[0])
        a = node.attrs
        oh = conv_out_size(h, a.kernel[0], a.strides[0], a.dilations[0], a.pads[0] + a.pads[2])
        ow = conv_out_size(w, a.kernel[1], a.strides[1], a.dilations[1], a.pads[1] + a.pads[3])
        return [((n, oh, ow, c), dtype_of(graph, node.inputs[0]))]


@register
class MaxPool2D(_Pool):
    name = "MaxPool2D"

    def ref(self, node, inputs):
        a = node.attrs
        win = windows(inputs[0], a.kernel[0], a.kernel[1], a, pad_value=-np.inf)
        return [a.act.apply(win.max(axis=(-2, -1)).astype(np.float32))]


@register
class AvgPool2D(_Pool):
    name = "AvgPool2D"

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
    attrs_type = AxisAttrs

    def infer(self, node, graph):
        return [(shape_of(graph, node.inputs[0]), np.float32)]

    def ref(self, node, inputs):
        x = inputs[0].astype(np.float64)
        e = np.exp(x - x.max(axis=node.attrs.axis, keepdims=True))
        return [(e / e.sum(axis=node.attrs.axis, keepdims=True)).astype(np.float32)]

    def permuted(self, node, graph, perm):
        return AxisAttrs(perm[node.attrs.axis])


@register
class LogSoftmax(Softmax):
    name = "LogSoftmax"

    def ref(self, node, inputs):
        x = inputs[0].astype(np.float64)
        shifted = x - x.max(axis=node.attrs.axis, keepdims=True)
        lse = np.log(np.exp(shifted).sum(axis=node.attrs.axis, keepdims=True))
        return [(shifted - lse).astype(np.float32)]
