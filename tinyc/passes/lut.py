"""Chains of elementwise int8 calls -> one table lookup.

A call that maps each int8 element of one tensor to one int8 element on its
own (a requantize, a clamp, a table, the logistic / tanh / hard-swish / leaky
ReLU kernels, an Add / Sub / Mul whose other operand is one constant value)
is a function of 256 possible inputs, and so is a chain of them: MCUNet's
squeeze-excite blocks run ``Add(x, 3)`` then ``Mul(., 1/6)`` (a hard sigmoid)
on every block's channel vector.  ``fuse_unary_chains`` replaces each chain of
two or more such calls with one ``lut_s8`` whose table holds the chain's own
results for x = -128 .. 127, computed with the kernels' numpy specs, so the
values are the chain's bit for bit.  The firmware then keeps one 256-byte table
instead of the chain's parameter records (an Add's is 80 bytes, a Mul's 64),
calls and Add table (2 KB), and reads one byte per element instead of running
the requantizations.

The int8 reference (engines.compile_int8) runs the calls unfused; builds
(build.compile_c) fuse, before the board specialization and the memory plan.
"""

from __future__ import annotations

import numpy as np

from ..ir.program import KernelCall, Program
from ..kernels import run_kernel
from ..kernels.params import LutParams

# kernels whose output element i depends on element i of their first input only
UNARY = ("requantize_s8", "clamp_s8", "lut_s8", "logistic_s8", "tanh_s8", "hard_swish_s8", "leaky_relu_s8")


def _dense(shape) -> tuple[int, ...]:
    strides, step = [], 1
    for d in reversed(shape):
        strides.append(step)
        step *= int(d)
    return tuple(reversed(strides))


def _elementwise_input(call: KernelCall, graph) -> str | None:
    """The tensor ``call`` maps element by element (out[i] = f(x[i])), or None."""
    if call.kernel in UNARY:
        x = call.inputs[0]
        return None if graph.tensors[x].is_const else x
    if call.kernel not in ("add_s8", "mul_s8") or len(call.inputs) != 2:  # (an Add table comes later)
        return None
    tensors = [graph.tensors[i] for i in call.inputs]
    if sum(t.is_const for t in tensors) != 1:
        return None
    k = 0 if tensors[1].is_const else 1  # the variable operand
    x, c = tensors[k], tensors[1 - k]
    p = call.params
    shape, x_strides, c_strides = p.out_shape, (p.in1_strides, p.in2_strides)[k], (p.in1_strides, p.in2_strides)[1 - k]
    if c.size != 1 or x.size != graph.tensors[call.outputs[0]].size or int(np.prod(shape)) != x.size:
        return None
    # x read densely in the output's order, the constant the same value everywhere
    if any(n > 1 and (s != d or cs != 0) for n, s, d, cs in zip(shape, x_strides, _dense(shape), c_strides)):
        return None
    return call.inputs[k]


def _table(chain: list[KernelCall], graph) -> np.ndarray:
    """The chain's int8 outputs for inputs -128 .. 127: the tensor filled with
    every value in turn (as many passes as it takes)."""
    x0 = _elementwise_input(chain[0], graph)
    shape, n = graph.tensors[x0].shape, graph.tensors[x0].size
    table = np.zeros(256, np.int8)
    for start in range(0, 256, n):
        codes = (np.arange(n) + start) % 256
        value = (codes - 128).astype(np.int8).reshape(shape)
        for call in chain:
            x = _elementwise_input(call, graph)
            args = [value if i == x else graph.tensors[i].data for i in call.inputs]
            value = np.asarray(run_kernel(call.kernel, call.params, call.scalars, args), np.int8).reshape(shape)
        got = value.reshape(-1)
        if n > 256 and not np.array_equal(got, got[codes]):  # each value repeats: the same result everywhere
            raise AssertionError(f"call {chain[0].node!r}: not elementwise")  # the checks above are wrong
        table[codes] = got
    return table


def fuse_unary_chains(program: Program) -> int:
    """Replace every chain of two or more elementwise calls with one lut_s8;
    returns how many calls went away."""
    graph = program.graph
    readers: dict[str, int] = {}
    for call in program.calls:
        for i in call.inputs:
            if i:
                readers[i] = readers.get(i, 0) + 1
    keep = set(program.outputs)
    by_input = {}
    for call in program.calls:
        x = _elementwise_input(call, graph)
        if x is not None:
            by_input[x] = call
    calls, removed, done = [], 0, set()
    for call in program.calls:
        if id(call) in done:
            continue
        chain = [call] if _elementwise_input(call, graph) is not None else []
        while chain:
            y = chain[-1].outputs[0]
            nxt = by_input.get(y)
            if nxt is None or readers.get(y) != 1 or y in keep:
                break
            chain.append(nxt)
        if len(chain) < 2:
            calls.append(call)
            continue
        x0 = _elementwise_input(chain[0], graph)
        table = graph.add_const(chain[-1].node + "_lut", _table(chain, graph))
        calls.append(KernelCall("lut_s8", LutParams(graph.tensors[x0].size), [x0, table], [chain[-1].outputs[0]],
                                chain[-1].node))
        done.update(id(c) for c in chain)
        removed += len(chain) - 1
    program.calls = calls
    return removed
