"""Elementwise ops: broadcasting arithmetic and activations."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import TinycError
from ..ir.program import KernelCall
from ..kernels.params import (
    AddParams,
    HardSwishParams,
    LeakyReluParams,
    LogisticParams,
    LutParams,
    MinMaxParams,
    MulParams,
)
from ..quant import fixedpoint as fp
from . import lowering as lw
from .base import NO_CLAMP, Clamp, OpDef, dtype_of, get_op, register, shape_of


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
        lw.require_int8_constants(graph, node)
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
        # (passes/widen.py gives it its table where the flash allows)
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


class _MinMax(_Binary):
    maximum = 1

    def lower(self, node, graph):
        """TFLM int8 MAXIMUM / MINIMUM compare raw values, so both inputs must have the
        output's parameters: an input that has others is requantized first (TFLite's
        converter gives them one set; exporters and PTQ may not)."""
        out = node.outputs[0]
        q_out = lw.activation(graph, out, node)
        calls, ins = [], []
        lw.require_int8_constants(graph, node)
        for name in node.inputs:
            if lw.same_params(lw.activation(graph, name, node), q_out):
                ins.append(name)
                continue
            moved, call = lw.requantized_copy(graph, node, name, graph.tensors[out].quant)
            calls.append(call)
            ins.append(moved)
        out4 = lw.shape4(shape_of(graph, out))
        strides = [lw.strides4(shape_of(graph, i), shape_of(graph, out), node) for i in ins]
        lo, hi = lw.act_range(node.attrs.act, *q_out)
        p = MinMaxParams(out4, strides[0], strides[1], self.maximum)
        calls.append(KernelCall("minmax_s8", p, ins, [out], node.name))
        if (lo, hi) != (lw.INT8_MIN, lw.INT8_MAX):
            calls.append(KernelCall("clamp_s8", None, [out], [out], node.name, scalars=(graph.tensors[out].size, lo, hi)))
        return calls


@register
class Max(_MinMax):
    name = "Max"
    fn = np.maximum


@register
class Min(_MinMax):
    name = "Min"
    fn = np.minimum
    maximum = 0


class _Unary(OpDef):
    elementwise = True

    def infer(self, node, graph):
        return [(shape_of(graph, node.inputs[0]), dtype_of(graph, node.inputs[0]))]

    def ref(self, node, inputs):
        x = inputs[0]
        return [self.fn(x, node.attrs).astype(x.dtype)]

    def fn(self, x, attrs):
        raise NotImplementedError

    def lower(self, node, graph):
        """An op TFLite has no int8 kernel for: a 256-entry table of the float
        function between the input's and the output's parameters (TFLite's own
        LUTPopulate rule), one lookup per element."""
        x, y = node.inputs[0], node.outputs[0]
        table = fp.lookup_table_int8(lambda v: self.fn(v, node.attrs), *lw.activation(graph, x, node),
                                     *lw.activation(graph, y, node))
        t = graph.add_const(node.name + "_table", table)
        return [KernelCall("lut_s8", LutParams(graph.tensors[x].size), [x, t], [y], node.name)]


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

    def lower(self, node, graph):
        """TFLM int8 LEAKY_RELU: an identity and an alpha multiplier."""
        x, y = node.inputs[0], node.outputs[0]
        s_in, z_in = lw.activation(graph, x, node)
        s_out, z_out = lw.activation(graph, y, node)
        try:
            lp = fp.leaky_relu_int8_params(s_in, node.attrs.alpha, s_out)
        except ValueError as e:
            raise TinycError(f"node {node.name!r} (LeakyRelu): {e}") from None
        p = LeakyReluParams(graph.tensors[x].size, z_in, z_out, *lp)
        return [KernelCall("leaky_relu_s8", p, [x], [y], node.name)]


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

    def lower(self, node, graph):
        """TFLM int8 TANH; its output is 1/128, 0."""
        x = node.inputs[0]
        lp = fp.tanh_int8_params(*lw.activation(graph, x, node))
        out, extra = lw.fixed_output(graph, node, 1.0 / 128, 0)
        p = LogisticParams(graph.tensors[x].size, lp.input_zero_point, lp.input_range_radius,
                           lp.input_multiplier, lp.input_left_shift)
        return [KernelCall("tanh_s8", p, [x], [out], node.name)] + extra


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


def _erf(x):
    """erf in float64 (Abramowitz and Stegun 7.1.26 refined: W. J. Cody's rational
    approximations are what libm uses; this one is within 1.2e-7, below float32's
    resolution of erf's values), returned in x's dtype."""
    x64 = np.asarray(x, dtype=np.float64)
    a = np.abs(x64)
    # Numerical Recipes' erfc Chebyshev fit (fractional error < 1.2e-7 everywhere)
    t = 1.0 / (1.0 + 0.5 * a)
    poly = (-1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (-0.18628806 + t * (
        0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))))
    erfc = t * np.exp(-a * a + poly)
    return np.where(x64 >= 0, 1.0 - erfc, erfc - 1.0)


@dataclass
class ExponentAttrs:
    exponent: float = 1.0


@dataclass
class AlphaAttrs:
    alpha: float = 1.0


@dataclass
class GeluAttrs:
    tanh: bool = False  # the tanh approximation (ONNX Gelu approximate="tanh")


def _unary_op(op_name: str, function, attrs=None, doc: str = ""):
    """Register a float elementwise function (int8: a lookup table)."""

    def fn(self, x, a):
        with np.errstate(all="ignore"):
            return np.asarray(function(x.astype(np.float64), a)).astype(np.float32)

    cls = type(op_name, (_Unary,), {"name": op_name, "attrs_type": attrs, "fn": fn, "__doc__": doc})
    register(cls)
    return cls


_unary_op("Erf", lambda x, a: _erf(x))
_unary_op("Sqrt", lambda x, a: np.sqrt(x))
_unary_op("Exp", lambda x, a: np.exp(x))
_unary_op("Log", lambda x, a: np.log(x))
_unary_op("Abs", lambda x, a: np.abs(x))
_unary_op("Neg", lambda x, a: -x)
_unary_op("Reciprocal", lambda x, a: 1.0 / x)
_unary_op("Softplus", lambda x, a: np.logaddexp(0.0, x))
_unary_op("Elu", lambda x, a: np.where(x > 0, x, a.alpha * np.expm1(np.minimum(x, 0))), AlphaAttrs)
_unary_op("PowConst", lambda x, a: np.power(x, a.exponent), ExponentAttrs, "x ** exponent (Pow by a constant)")
_unary_op("Gelu", lambda x, a: (0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))) if a.tanh
          else 0.5 * x * (1 + _erf(x / np.sqrt(2))), GeluAttrs)


@dataclass
class FnAttrs:
    """The steps of a fused elementwise function: (op, operands, attrs), each operand
    ("x",) the input, ("t", k) step k's result or ("c", value) a scalar."""

    steps: tuple = ()

    def __str__(self) -> str:
        return " -> ".join(op for op, _, _ in self.steps)


@register
class ElementwiseFn(_Unary):
    """f(x) for a chain of elementwise ops on one input (passes/patterns.py); int8:
    one lookup table of the whole function."""

    name = "ElementwiseFn"
    attrs_type = FnAttrs

    def fn(self, x, attrs):
        from ..ir import Node

        values = []
        for op, refs, step_attrs in attrs.steps:
            ins = [x if r[0] == "x" else values[r[1]] if r[0] == "t" else np.float32(r[1]) for r in refs]
            (y,) = get_op(op).ref(Node(op, "step", [], [], step_attrs), ins)
            values.append(np.asarray(y, dtype=np.float32))
        return values[-1]
