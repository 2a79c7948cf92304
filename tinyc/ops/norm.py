"""Layer normalization over the last axis (transformers), float and int8."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import TinycError
from ..ir.program import KernelCall
from ..kernels.params import LayerNormParams
from . import lowering as lw
from .base import OpDef, dtype_of, register, shape_of

MAX_DEPTH = 4096  # keeps the kernel's int64 sums of squared, centred values exact


@dataclass
class LayerNormAttrs:
    epsilon: float = 1e-5


@register
class LayerNorm(OpDef):
    """``(x - mean) / sqrt(var + epsilon) * gamma + beta`` over the last axis;
    inputs x, gamma, beta (constants of the last axis' length)."""

    name = "LayerNorm"
    attrs_type = LayerNormAttrs

    def infer(self, node, graph):
        return [(shape_of(graph, node.inputs[0]), dtype_of(graph, node.inputs[0]))]

    def ref(self, node, inputs):
        x, gamma, beta = inputs
        x64 = x.astype(np.float64)
        mean = x64.mean(axis=-1, keepdims=True)
        var = ((x64 - mean) ** 2).mean(axis=-1, keepdims=True)
        y = (x64 - mean) / np.sqrt(var + node.attrs.epsilon) * gamma + beta
        return [y.astype(np.float32)]

    def macs(self, node, graph):
        return 3 * graph.tensors[node.inputs[0]].size

    def lower(self, node, graph):
        """tinyc's integer LayerNorm (kernels/norm.py): gamma and beta become int32
        vectors in the output's scale with a common shift."""
        x, y = node.inputs[0], node.outputs[0]
        shape = shape_of(graph, x)
        depth, rows = shape[-1], graph.tensors[x].size // shape[-1]
        if depth > MAX_DEPTH:
            raise TinycError(f"node {node.name!r} (LayerNorm): rows of {depth} values; tinyc's int8 LayerNorm "
                             f"takes up to {MAX_DEPTH}")
        s_in, z_in = lw.activation(graph, x, node)
        s_out, z_out = lw.activation(graph, y, node)
        gamma, beta = (graph.tensors[n].float_value().astype(np.float64).reshape(-1) for n in node.inputs[1:3])
        g_real = gamma * math.sqrt(depth) / s_out
        b_real = beta / s_out
        biggest = float(max(np.abs(g_real).max(), np.abs(b_real).max()))
        shift = 30 if biggest == 0 else min(30, 30 - math.floor(math.log2(biggest)))  # |value| * 2^shift < 2^31
        shift = max(shift, -29)
        gamma_q = np.clip(np.round(g_real * 2.0 ** shift), -(2**31) + 1, 2**31 - 1).astype(np.int32)
        beta_q = np.clip(np.round(b_real * 2.0 ** shift), -(2**31) + 1, 2**31 - 1).astype(np.int32)
        eps = min(round(node.attrs.epsilon * depth ** 3 / (s_in * s_in)), 1 << 60)
        p = LayerNormParams(rows, depth, z_in, z_out, eps >> 31, eps & 0x7FFFFFFF, 30 + shift)
        g = graph.add_const(node.name + "_gamma_q", gamma_q)
        b = graph.add_const(node.name + "_beta_q", beta_q)
        return [KernelCall("layer_norm_s8", p, [x, g, b], [y], node.name)]
