"""Elementwise ops: broadcasting arithmetic and activations."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import TinycError
from ..ir.program import KernelCall
from ..kernels.params import AddParams, HardSwishParams, LogisticParams, MulParams
from ..quant import fixedpoint as fp
from . import lowering as lw
from .base import NO_CLAMP, Clamp, OpDef, dtype_of, register, shape_of


@dataclass
class BinaryAttrs:
    act: Clamp = NO_CLAMP


class _Binary(OpDef):
    attrs_type = BinaryAttrs
    elementwise = True
    fn = None

    def infer(self, node, graph):
        shape = np.broadcast_shapes(*(shape_of(graph, i) for i in node.inputs))
        return [(shape, dtype_of(graph, node.inputs[0]))]

    def ref(self, node, inputs):
        y = type(self).fn(inputs[0], inputs[1])
        if np.issubdtype(y.dtype, np.floating):
            y = y.astype(np.float32)
        return [node.attrs.act.apply(y)]

    def _operands(self, node, graph):
        """((scale, zp) of input 1, input 2, output), the 4-D output shape and input strides."""
        for name in node.inputs:
            t = graph.tensors[name]
            if t.is_const and t.dtype is not np.int8:
                raise TinycError(
                    f"node {node.name!r} ({self.name}): constant operand {name!r} is {np.dtype(t.dtype).name}, "
                    "not int8; quantize it (QDQ) or give --calib"
                )
        q = [lw.activation(graph, name, node) for name in (*node.inputs, node.outputs[0])]
        out_shape = shape_of(graph, node.outputs[0])
        strides = [lw.strides4(shape_of(graph, name), out_shape, node) for name in node.inputs]
        return q, lw.shape4(out_shape), strides


class _AddSub(_Binary):
    subtract = 0

    def lower(self, node, graph):
        """TFLM int8 ADD / SUB: inputs rescaled with left shift 20 (CalculateOpDataAdd)."""
        ((s1, z1), (s2, z2), (so, zo)), out4, (st1, st2) = self._operands(node, graph)
        ap = fp.add_int8_params(s1, s2, so)
        lo, hi = lw.act_range(node.attrs.act, so, zo)
        p = AddParams(out4, st1, st2, -z1, -z2, zo, ap.left_shift, ap.input1_multiplier, ap.input1_shift,
                      ap.input2_multiplier, ap.input2_shift, ap.output_multiplier, ap.output_shift,
                      self.subtract, lo, hi)
        return [KernelCall("add_s8", p, list(node.inputs), list(node.outputs), node.name)]


@register
class Add(_AddSub):
    name = "Add"
    fn = np.add

    def backward(self, node, graph, b):
        from .grad import SumToAttrs

        dz = b.pre_activation(node)
        out_shape = shape_of(graph, node.outputs[0])
        for x in node.inputs:
            if b.needs(x):
                shape = shape_of(graph, x)
                b.add(x, dz if shape == out_shape else b.emit("SumTo", [dz], SumToAttrs(shape), node))


@register
class Sub(_AddSub):
    name = "Sub"
    fn = np.subtract
    subtract = 1


@register
class Mul(_Binary):
    name = "Mul"
    fn = np.multiply

    def lower(self, node, graph):
        """TFLM int8 MUL: one multiplier for s1 * s2 / s_out."""
        ((s1, z1), (s2, z2), (so, zo)), out4, (st1, st2) = self._operands(node, graph)
        mp = fp.mul_int8_params(s1, s2, so)
        lo, hi = lw.act_range(node.attrs.act, so, zo)
        p = MulParams(out4, st1, st2, -z1, -z2, zo, mp.output_multiplier, mp.output_shift, lo, hi)
        return [KernelCall("mul_s8", p, list(node.inputs), list(node.outputs), node.name)]


def _divide(a, b):
    """ONNX Div: true division of floats; integers (shape arithmetic folded at import)
    divide truncating toward zero, as C does, not flooring as numpy's // does."""
    if not np.issubdtype(np.result_type(a, b), np.integer):
        return np.divide(a, b)
    q = np.floor_divide(a, b)
    return q + ((np.remainder(a, b) != 0) & ((np.asarray(a) < 0) != (np.asarray(b) < 0)))


@register
class Div(_Binary):
    name = "Div"
    fn = _divide


class _Unary(OpDef):
    elementwise = True

    def infer(self, node, graph):
        return [(shape_of(graph, node.inputs[0]), dtype_of(graph, node.inputs[0]))]

    def ref(self, node, inputs):
        x = inputs[0]
        return [self.fn(x, node.attrs).astype(x.dtype)]

    def fn(self, x, attrs):
        raise NotImplementedError


@dataclass
class ClampAttrs:
    act: Clamp = NO_CLAMP


@register
class ClampOp(_Unary):
    """Relu, Relu6 and Clip: a standalone clamp (fused into its producer when possible)."""

    name = "Clamp"
    attrs_type = ClampAttrs

    def fn(self, x, attrs):
        return attrs.act.apply(x)

    def backward(self, node, graph, b):
        from .grad import ClampGradAttrs

        x = node.inputs[0]
        if b.needs(x):
            b.add(x, b.emit("ClampGrad", [b.grad(node.outputs[0]), node.outputs[0]], ClampGradAttrs(node.attrs.act),
                            node))

    def lower(self, node, graph):
        """A standalone ReLU-family clamp: TFLM requantizes when the scales differ."""
        return [lw.requantize_call(graph, node, node.inputs[0], node.outputs[0], node.attrs.act)]


@dataclass
class LeakyReluAttrs:
    alpha: float = 0.01


@register
class LeakyRelu(_Unary):
    name = "LeakyRelu"
    attrs_type = LeakyReluAttrs

    def fn(self, x, attrs):
        return np.where(x >= 0, x, x * np.float32(attrs.alpha))


@register
class Sigmoid(_Unary):
    name = "Sigmoid"
    int8_output = (1.0 / 256.0, -128)

    def fn(self, x, attrs):
        # exp of the negative magnitude never overflows
        e = np.exp(-np.abs(x))
        return np.where(x >= 0, 1 / (1 + e), e / (1 + e))

    def lower(self, node, graph):
        """TFLM int8 LOGISTIC; its output is 1/256, -128."""
        x = node.inputs[0]
        s_in, z_in = lw.activation(graph, x, node)
        lp = fp.logistic_int8_params(s_in, z_in)
        out, extra = lw.fixed_output(graph, node, 1.0 / 256, -128)
        p = LogisticParams(graph.tensors[x].size, lp.input_zero_point, lp.input_range_radius,
                           lp.input_multiplier, lp.input_left_shift)
        return [KernelCall("logistic_s8", p, [x], [out], node.name)] + extra


@register
class Tanh(_Unary):
    name = "Tanh"
    int8_output = (1.0 / 128.0, 0)

    def fn(self, x, attrs):
        return np.tanh(x)


@dataclass
class HardSigmoidAttrs:
    alpha: float = 0.2
    beta: float = 0.5


@register
class HardSigmoid(_Unary):
    name = "HardSigmoid"
    attrs_type = HardSigmoidAttrs

    def fn(self, x, attrs):
        return np.clip(x * np.float32(attrs.alpha) + np.float32(attrs.beta), 0, 1)


@register
class HardSwish(_Unary):
    name = "HardSwish"

    def fn(self, x, attrs):
        return x * np.clip(x / np.float32(6) + np.float32(0.5), 0, 1)

    def lower(self, node, graph):
        x, y = node.inputs[0], node.outputs[0]
        s_in, z_in = lw.activation(graph, x, node)
        s_out, z_out = lw.activation(graph, y, node)
        try:
            hp = fp.hard_swish_int8_params(s_in, z_in, s_out, z_out)
        except ValueError as e:
            raise TinycError(f"node {node.name!r} (HardSwish): {e}") from None
        p = HardSwishParams(graph.tensors[x].size, *hp)
        return [KernelCall("hard_swish_s8", p, [x], [y], node.name)]
