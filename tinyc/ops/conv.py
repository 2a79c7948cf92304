"""Convolution, fully connected and matrix multiplication.

Layouts (what TFLite and CMSIS-NN use): activations NHWC, Conv2D weights
[out_channels, kh, kw, in_channels / group], FullyConnected weights [out, in].
A depthwise convolution is a Conv2D whose group equals its input channels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .base import NO_CLAMP, Clamp, OpDef, register, shape_of


@dataclass
class ConvAttrs:
    strides: tuple[int, int] = (1, 1)
    dilations: tuple[int, int] = (1, 1)
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)  # top, left, bottom, right
    group: int = 1
    act: Clamp = NO_CLAMP


def conv_out_size(size: int, k: int, stride: int, dilation: int, pad_total: int) -> int:
    out = (size + pad_total - (k - 1) * dilation - 1) // stride + 1
    if out < 1:  # shape rules raise ValueError; the importer turns it into a user error naming the node
        raise ValueError(f"a window of {(k - 1) * dilation + 1} does not fit an input of {size} padded by {pad_total}")
    return out


def windows(x: np.ndarray, kh: int, kw: int, attrs, pad_value=0.0) -> np.ndarray:
    """Sliding windows of an NHWC tensor: (N, OH, OW, C, KH, KW) view."""
    t, l, b, r = attrs.pads
    xp = np.pad(x, ((0, 0), (t, b), (l, r), (0, 0)), constant_values=pad_value)
    dh, dw = attrs.dilations
    sh, sw = attrs.strides
    win = sliding_window_view(xp, ((kh - 1) * dh + 1, (kw - 1) * dw + 1), axis=(1, 2))
    return win[:, ::sh, ::sw, :, ::dh, ::dw]


@register
class Conv2D(OpDef):
    name = "Conv2D"
    attrs_type = ConvAttrs

    def infer(self, node, graph):
        n, h, w, c = shape_of(graph, node.inputs[0])
        o, kh, kw, cg = shape_of(graph, node.inputs[1])
        a = node.attrs
        if c != cg * a.group or o % a.group:
            raise ValueError(f"{node.name}: {c} input channels do not fit weights {o}x{kh}x{kw}x{cg} in {a.group} groups")
        oh = conv_out_size(h, kh, a.strides[0], a.dilations[0], a.pads[0] + a.pads[2])
        ow = conv_out_size(w, kw, a.strides[1], a.dilations[1], a.pads[1] + a.pads[3])
        return [((n, oh, ow, o), np.float32)]

    def ref(self, node, inputs):
        x, w = inputs[0], inputs[1]
        b = inputs[2] if len(inputs) > 2 else None
        a = node.attrs
        o, kh, kw, cg = w.shape
        g = a.group
        win = windows(x, kh, kw, a)  # N, OH, OW, C, KH, KW
        n, oh, ow = win.shape[:3]
        if g == 1:
            y = np.tensordot(win, w, axes=([3, 4, 5], [3, 1, 2]))
        elif cg == 1 and o == g:  # depthwise, multiplier 1
            y = np.einsum("nhwckl,ckl->nhwc", win, w[:, :, :, 0], optimize=True)
        else:
            og = o // g
            y = np.empty((n, oh, ow, o), dtype=np.float32)
            for gi in range(g):
                wg = w[gi * og:(gi + 1) * og]
                y[..., gi * og:(gi + 1) * og] = np.tensordot(
                    win[:, :, :, gi * cg:(gi + 1) * cg], wg, axes=([3, 4, 5], [3, 1, 2]))
        y = y.astype(np.float32)
        if b is not None:
            y = y + b
        return [a.act.apply(y.astype(np.float32))]

    def macs(self, node, graph):
        o, kh, kw, cg = shape_of(graph, node.inputs[1])
        n, oh, ow, _ = graph.tensors[node.outputs[0]].shape
        return n * oh * ow * o * kh * kw * cg


@dataclass
class FCAttrs:
    act: Clamp = NO_CLAMP


@register
class FullyConnected(OpDef):
    """y = x @ w.T + b over the last axis, w constant [out, in]."""

    name = "FullyConnected"
    attrs_type = FCAttrs

    def infer(self, node, graph):
        xs = shape_of(graph, node.inputs[0])
        o, k = shape_of(graph, node.inputs[1])
        if xs[-1] != k:
            raise ValueError(f"{node.name}: input {xs} does not match weights [{o}, {k}]")
        return [(xs[:-1] + (o,), np.float32)]

    def ref(self, node, inputs):
        x, w = inputs[0], inputs[1]
        y = np.matmul(x, w.T)
        if len(inputs) > 2 and inputs[2] is not None:
            y = y + inputs[2]
        return [node.attrs.act.apply(y.astype(np.float32))]

    def macs(self, node, graph):
        o, k = shape_of(graph, node.inputs[1])
        rows = int(np.prod(shape_of(graph, node.inputs[0])[:-1]))
        return rows * o * k


@register
class MatMul(OpDef):
    """numpy.matmul semantics, for products of two activations."""

    name = "MatMul"

    def infer(self, node, graph):
        return [(matmul_shape(shape_of(graph, node.inputs[0]), shape_of(graph, node.inputs[1])), np.float32)]

    def ref(self, node, inputs):
        # asarray: the product of two vectors is a numpy scalar, the IR wants a 0-d array
        return [np.asarray(np.matmul(inputs[0], inputs[1]), dtype=np.float32)]

    def macs(self, node, graph):
        a = shape_of(graph, node.inputs[0])
        out = graph.tensors[node.outputs[0]].shape
        return int(np.prod(out)) * a[-1]


def matmul_shape(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
    """numpy.matmul's result shape, without computing the product."""
    if not a or not b:
        raise ValueError("MatMul of a scalar")
    a2 = (1,) + a if len(a) == 1 else a  # a vector is a row on the left ...
    b2 = b + (1,) if len(b) == 1 else b  # ... and a column on the right
    if a2[-1] != b2[-2]:
        raise ValueError(f"MatMul of shapes {list(a)} and {list(b)}: inner dimensions differ")
    try:
        batch = np.broadcast_shapes(a2[:-2], b2[:-2])
    except ValueError:
        raise ValueError(f"MatMul of shapes {list(a)} and {list(b)}: batch dimensions do not broadcast") from None
    return tuple(batch) + (a2[-2],) * (len(a) > 1) + (b2[-1],) * (len(b) > 1)
