"""Elementwise ops: broadcasting arithmetic and activations."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

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


@register
class Add(_Binary):
    name = "Add"
    fn = np.add


@register
class Sub(_Binary):
    name = "Sub"
    fn = np.subtract


@register
class Mul(_Binary):
    name = "Mul"
    fn = np.multiply


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

    def fn(self, x, attrs):
        # exp of the negative magnitude never overflows
        e = np.exp(-np.abs(x))
        return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


@register
class Tanh(_Unary):
    name = "Tanh"

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
