"""The ops of a backward pass (float32, NHWC): what the forward ops' ``backward``
rules emit. Each is an OpDef like any other: attributes, shape rule and float
reference, so the reference interpreter runs a training graph as it runs a model.

Naming: ``dz`` is the gradient of a layer's pre-activation output (after the fused
clamp's mask), ``dy`` of an op's output, ``dx`` of its input.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .base import NO_CLAMP, Clamp, OpDef, register, shape_of
from .conv import ConvAttrs, windows
from .pool import PoolAttrs


class _ToShape(OpDef):
    """A backward op whose attributes name its float32 result's shape (``shape``)."""

    def infer(self, node, graph):
        return [(tuple(node.attrs.shape), np.float32)]


@dataclass
class ClampGradAttrs:
    act: Clamp = NO_CLAMP


@register
class ClampGrad(OpDef):
    """dx = dy where lo < y < hi (y the clamped output), else 0: the gradient of a
    ReLU / ReLU6 / clip, computed from the output as PyTorch does (0 at the edges)."""

    name = "ClampGrad"
    attrs_type = ClampGradAttrs

    def infer(self, node, graph):
        return [(shape_of(graph, node.inputs[0]), np.float32)]

    def ref(self, node, inputs):
        dy, y = inputs
        a = node.attrs.act
        return [np.where((y > a.lo) & (y < a.hi), dy, np.float32(0)).astype(np.float32)]


@dataclass
class ConvGradAttrs:
    conv: ConvAttrs
    shape: tuple[int, ...]  # GradInput: the input's shape; GradWeight: the weight gradient's [k, KH, KW, C/group]


def _scatter_windows(shape, attrs: ConvAttrs, kh: int, kw: int, per_tap) -> np.ndarray:
    """Sum, over the kernel taps (i, j), of per_tap(i, j) (N, OH, OW, C) added at the
    input positions that tap reads; the inverse of windows()."""
    n, h, w, c = shape
    t, l, b, r = attrs.pads
    dh, dw = attrs.dilations
    sh, sw = attrs.strides
    out = np.zeros((n, h + t + b, w + l + r, c), np.float32)
    for i in range(kh):
        for j in range(kw):
            tap = per_tap(i, j)
            oh, ow = tap.shape[1:3]
            out[:, i * dh:i * dh + (oh - 1) * sh + 1:sh, j * dw:j * dw + (ow - 1) * sw + 1:sw, :] += tap
    return out[:, t:t + h, l:l + w, :]


@register
class Conv2DGradInput(_ToShape):
    """dx of a Conv2D from dz [N, OH, OW, O] and the weights [O, KH, KW, C/group]."""

    name = "Conv2DGradInput"
    attrs_type = ConvGradAttrs

    def ref(self, node, inputs):
        dz, w = inputs
        a = node.attrs.conv
        o, kh, kw, cg = w.shape
        g = a.group
        n, oh, ow, _ = dz.shape
        dzg = dz.reshape(n, oh, ow, g, o // g)
        wg = w.reshape(g, o // g, kh, kw, cg)

        def tap(i, j):
            return np.einsum("nhwgo,goc->nhwgc", dzg, wg[:, :, i, j, :], optimize=True).reshape(n, oh, ow, g * cg)

        return [_scatter_windows(node.attrs.shape, a, kh, kw, tap)]

    def macs(self, node, graph):
        o, kh, kw, cg = shape_of(graph, node.inputs[1])
        n, oh, ow, _ = shape_of(graph, node.inputs[0])
        return n * oh * ow * o * kh * kw * cg


@register
class Conv2DGradWeight(_ToShape):
    """dw of a Conv2D's first k output channels ([k, KH, KW, C/group]) from the input x
    and dz: sum over the batch and output positions of dz x window."""

    name = "Conv2DGradWeight"
    attrs_type = ConvGradAttrs

    def ref(self, node, inputs):
        x, dz = inputs
        a = node.attrs.conv
        k, kh, kw, cg = node.attrs.shape
        o = dz.shape[-1]
        og = o // a.group
        win = windows(x, kh, kw, a)  # N, OH, OW, C, KH, KW
        dw = np.empty((k, kh, kw, cg), np.float32)
        for gi in range(-(-k // og)):  # the groups the first k channels fall in
            lo, hi = gi * og, min((gi + 1) * og, k)
            part = np.einsum("nhwo,nhwckl->oklc", dz[..., lo:hi], win[:, :, :, gi * cg:(gi + 1) * cg], optimize=True)
            dw[lo:hi] = part
        return [dw]

    def macs(self, node, graph):
        k, kh, kw, cg = node.attrs.shape
        n, oh, ow, _ = shape_of(graph, node.inputs[1])
        return n * oh * ow * k * kh * kw * cg


@dataclass
class ChannelsAttrs:
    channels: int  # the first this many output channels


@register
class BiasGrad(OpDef):
    """db of the first k channels: dz summed over every axis but the last."""

    name = "BiasGrad"
    attrs_type = ChannelsAttrs

    def infer(self, node, graph):
        return [((node.attrs.channels,), np.float32)]

    def ref(self, node, inputs):
        dz = inputs[0]
        k = node.attrs.channels
        return [dz.reshape(-1, dz.shape[-1])[:, :k].sum(axis=0, dtype=np.float32)]


@register
class FullyConnectedGradInput(OpDef):
    """dx = dz @ w for y = x @ w.T + b."""

    name = "FullyConnectedGradInput"

    def infer(self, node, graph):
        dz, w = (shape_of(graph, i) for i in node.inputs)
        return [(dz[:-1] + (w[1],), np.float32)]

    def ref(self, node, inputs):
        dz, w = inputs
        return [np.matmul(dz, w).astype(np.float32)]

    def macs(self, node, graph):
        o, k = shape_of(graph, node.inputs[1])
        return int(np.prod(shape_of(graph, node.inputs[0])[:-1])) * o * k


@register
class FullyConnectedGradWeight(OpDef):
    """dw [k, in] of the first k outputs: dz[:, :k].T @ x over the rows."""

    name = "FullyConnectedGradWeight"
    attrs_type = ChannelsAttrs

    def infer(self, node, graph):
        return [((node.attrs.channels, shape_of(graph, node.inputs[0])[-1]), np.float32)]

    def ref(self, node, inputs):
        x, dz = inputs
        k = node.attrs.channels
        rows = x.reshape(-1, x.shape[-1])
        return [np.matmul(dz.reshape(-1, dz.shape[-1])[:, :k].T, rows).astype(np.float32)]


@dataclass
class PoolGradAttrs:
    pool: PoolAttrs
    shape: tuple[int, ...]  # the pooled input's shape


@register
class AvgPool2DGrad(_ToShape):
    """dx of an average pool: each output's gradient shared equally by the cells it
    averaged (the divisor as in the forward: with or without padded cells)."""

    name = "AvgPool2DGrad"
    attrs_type = PoolGradAttrs

    def ref(self, node, inputs):
        dy = inputs[0]
        p = node.attrs.pool
        kh, kw = p.kernel
        conv = ConvAttrs(p.strides, p.dilations, p.pads)
        if p.count_include_pad:
            count = np.float32(kh * kw)
        else:
            ones = np.ones((1,) + tuple(node.attrs.shape[1:3]) + (1,), np.float32)
            count = windows(ones, kh, kw, conv).sum(axis=(-2, -1))
        share = (dy / count).astype(np.float32)
        return [_scatter_windows(node.attrs.shape, conv, kh, kw, lambda i, j: share)]


@register
class MaxPool2DGrad(_ToShape):
    """dx of a max pool: each output's gradient goes to the cell that held its
    maximum (the first in the window, row by row, on ties, as PyTorch picks)."""

    name = "MaxPool2DGrad"
    attrs_type = PoolGradAttrs

    def ref(self, node, inputs):
        dy, x = inputs
        p = node.attrs.pool
        kh, kw = p.kernel
        conv = ConvAttrs(p.strides, p.dilations, p.pads)
        win = windows(x, kh, kw, conv, pad_value=-np.inf)  # N, OH, OW, C, KH, KW
        first = win.reshape(win.shape[:4] + (kh * kw,)).argmax(axis=-1)
        return [_scatter_windows(node.attrs.shape, conv, kh, kw,
                                 lambda i, j: np.where(first == i * kw + j, dy, np.float32(0)).astype(np.float32))]


@dataclass
class ReduceGradAttrs:
    axes: tuple[int, ...]
    shape: tuple[int, ...]  # the reduced input's shape


@register
class ReduceMeanGrad(_ToShape):
    """dx of a mean: dy / count, broadcast back over the reduced axes."""

    name = "ReduceMeanGrad"
    attrs_type = ReduceGradAttrs

    def ref(self, node, inputs):
        a = node.attrs
        kept = tuple(1 if i in a.axes else d for i, d in enumerate(a.shape))
        count = np.float32(np.prod([a.shape[i] for i in a.axes]))
        return [np.broadcast_to(inputs[0].reshape(kept) / count, a.shape).astype(np.float32)]


@dataclass
class SumToAttrs:
    shape: tuple[int, ...]


@register
class SumTo(_ToShape):
    """The gradient of a broadcast: dy summed down to the operand's shape."""

    name = "SumTo"
    attrs_type = SumToAttrs

    def ref(self, node, inputs):
        dy = inputs[0]
        shape = tuple(node.attrs.shape)
        lead = dy.ndim - len(shape)
        axes = tuple(range(lead)) + tuple(lead + i for i, d in enumerate(shape) if d == 1 and dy.shape[lead + i] != 1)
        return [dy.sum(axis=axes, dtype=np.float32).reshape(shape)]


@register
class SoftmaxCrossEntropy(OpDef):
    """Softmax cross-entropy on logits [1, classes] against an integer label:
    outputs the loss (a scalar) and its gradient softmax(z) - onehot(label)."""

    name = "SoftmaxCrossEntropy"

    def infer(self, node, graph):
        return [((), np.float32), (shape_of(graph, node.inputs[0]), np.float32)]

    def ref(self, node, inputs):
        z, label = inputs
        flat = z.reshape(-1).astype(np.float32)
        shifted = flat - flat.max()
        e = np.exp(shifted)
        total = e.sum(dtype=np.float32)
        k = int(np.asarray(label).reshape(-1)[0])
        loss = np.float32(np.log(total) - shifted[k])
        grad = (e / total).astype(np.float32)
        grad[k] -= np.float32(1)
        return [np.array(loss, np.float32), grad.reshape(z.shape)]
