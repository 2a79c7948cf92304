"""Convolution, fully connected and matrix multiplication.

Layouts (what TFLite and CMSIS-NN use): activations NHWC, Conv2D weights
[out_channels, kh, kw, in_channels / group], FullyConnected weights [out, in].
A depthwise convolution is a Conv2D whose group equals its input channels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..errors import TinycError
from ..ir.program import KernelCall
from ..kernels.params import ConvParams, FCParams, MatMulParams
from ..quant import fixedpoint as fp
from . import lowering as lw
from .base import NO_CLAMP, Clamp, OpDef, register, shape_of


def layer_backward(node, b, weight_op: str, weight_attrs, input_op: str, input_attrs) -> None:
    """The gradient rule of a layer y = clamp(x (*) w + bias): through the clamp to
    dz; the weight gradient of the updated channels (``weight_op`` with
    ``weight_attrs(k)``), the bias gradient, and the input's (``input_op``), each
    only when the update set needs it."""
    from .grad import ChannelsAttrs

    x, w = node.inputs[0], node.inputs[1]
    bias = node.inputs[2] if len(node.inputs) > 2 and node.inputs[2] else None
    dz = b.pre_activation(node)
    k = b.update_channels(w)
    if k:
        b.param_grad(w, b.emit(weight_op, [x, dz], weight_attrs(k), node))
    if bias is not None and b.update_channels(bias):
        b.param_grad(bias, b.emit("BiasGrad", [dz], ChannelsAttrs(b.update_channels(bias)), node))
    if b.needs(x):
        b.add(x, b.emit(input_op, [dz, w], input_attrs, node))


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


    def lower(self, node, graph):
        x, w, y = node.inputs[0], node.inputs[1], node.outputs[0]
        a = node.attrs
        _, h, wd, c = shape_of(graph, x)
        o, kh, kw, cg = shape_of(graph, w)
        _, oh, ow, _ = shape_of(graph, y)
        s_in, z_in = lw.activation(graph, x, node)
        s_out, z_out = lw.activation(graph, y, node)
        # TFLM PopulateConvolutionQuantizationParams: double(s_in) * double(s_w[c]) / double(s_out)
        eff = np.float64(s_in) * lw.weight_scales(graph, w, node, o).astype(np.float64) / np.float64(s_out)
        mult, shift = fp.quantize_multiplier_array(eff)
        lo, hi = lw.act_range(a.act, s_out, z_out)
        depthwise = a.group == c and cg == 1 and a.group > 1
        p = ConvParams(
            in_h=h, in_w=wd, in_c=c, out_h=oh, out_w=ow, out_c=o, k_h=kh, k_w=kw,
            stride_h=a.strides[0], stride_w=a.strides[1], dil_h=a.dilations[0], dil_w=a.dilations[1],
            pad_t=a.pads[0], pad_l=a.pads[1],
            groups=1 if depthwise else a.group, depth_multiplier=o // c if depthwise else 1,
            in_offset=-z_in, out_offset=z_out, act_min=lo, act_max=hi,
        )
        if depthwise:
            kernel = "depthwise_conv2d_s8"
        elif kh == kw == 1 and a.group == 1 and not any(a.pads):
            kernel = "conv2d_1x1_s8"
        else:
            kernel = "conv2d_s8"
        args = [x, w, lw.bias(graph, node), lw.const_array(graph, node, "mult", mult), lw.const_array(graph, node, "shift", shift)]
        return [KernelCall(kernel, p, args, [y], node.name)]

    def macs(self, node, graph):
        o, kh, kw, cg = shape_of(graph, node.inputs[1])
        n, oh, ow, _ = graph.tensors[node.outputs[0]].shape
        return n * oh * ow * o * kh * kw * cg

    def backward(self, node, graph, b):
        from .grad import ConvGradAttrs

        w_shape, x_shape = shape_of(graph, node.inputs[1]), shape_of(graph, node.inputs[0])
        layer_backward(node, b, "Conv2DGradWeight", lambda k: ConvGradAttrs(node.attrs, (k,) + w_shape[1:]),
                       "Conv2DGradInput", ConvGradAttrs(node.attrs, x_shape))


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


    def lower(self, node, graph):
        x, w, y = node.inputs[0], node.inputs[1], node.outputs[0]
        o, k = shape_of(graph, w)
        s_in, z_in = lw.activation(graph, x, node)
        s_out, z_out = lw.activation(graph, y, node)
        scales = lw.weight_scales(graph, w, node, o)
        per_channel = graph.tensors[w].quant.per_axis and graph.tensors[w].quant.scale.size > 1
        if per_channel:
            eff = np.float64(s_in) * scales.astype(np.float64) / np.float64(s_out)
        else:
            # TFLM GetQuantizedConvolutionMultipler: double(s_in * s_w), the product in float32
            eff = np.array([np.float64(np.float32(s_in) * scales[0]) / np.float64(s_out)])
        mult, shift = fp.quantize_multiplier_array(eff)
        lo, hi = lw.act_range(node.attrs.act, s_out, z_out)
        rows = int(np.prod(shape_of(graph, x)[:-1]))
        p = FCParams(rows, k, o, -z_in, z_out, lo, hi, int(per_channel))
        args = [x, w, lw.bias(graph, node), lw.const_array(graph, node, "mult", mult), lw.const_array(graph, node, "shift", shift)]
        return [KernelCall("fully_connected_s8", p, args, [y], node.name)]

    def macs(self, node, graph):
        o, k = shape_of(graph, node.inputs[1])
        rows = int(np.prod(shape_of(graph, node.inputs[0])[:-1]))
        return rows * o * k

    def backward(self, node, graph, b):
        from .grad import ChannelsAttrs

        layer_backward(node, b, "FullyConnectedGradWeight", ChannelsAttrs, "FullyConnectedGradInput", None)


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

    def lower(self, node, graph):
        """TFLM int8 BATCH_MATMUL: one multiplier s_a * s_b / s_out (the product in
        float32, as GetQuantizedConvolutionMultipler takes it)."""
        a, b = node.inputs
        sa, sb, out = shape_of(graph, a), shape_of(graph, b), node.outputs[0]
        if len(sa) < 2 or len(sb) < 2:
            raise TinycError(f"node {node.name!r} (MatMul): int8 MatMul of a vector; reshape it to a matrix")
        out_batch = shape_of(graph, out)[:-2]
        strides = []
        for shape in (sa, sb):
            batch = (1,) * (len(out_batch) - len(shape[:-2])) + tuple(shape[:-2])
            if batch == tuple(out_batch):
                strides.append(shape[-2] * shape[-1])
            elif all(d == 1 for d in batch):
                strides.append(0)
            else:
                raise TinycError(f"node {node.name!r} (MatMul): batch dimensions {list(shape[:-2])} broadcast "
                                 f"partly to {list(out_batch)}; tinyc's int8 MatMul takes equal or unit batches")
        lw.require_int8_constants(graph, node)
        (s1, z1), (s2, z2), (so, zo) = (lw.activation(graph, n, node) for n in (a, b, out))
        mult, shift = fp.quantize_multiplier(float(np.float32(np.float32(s1) * np.float32(s2))) / float(np.float32(so)))
        p = MatMulParams(int(np.prod(out_batch)), sa[-2], sa[-1], sb[-1], strides[0], strides[1], -z1, -z2, zo,
                         mult, shift)
        return [KernelCall("matmul_s8", p, [a, b], [out], node.name)]


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
