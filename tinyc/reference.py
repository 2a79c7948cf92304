"""Float reference interpreter: runs the IR with numpy, one op's ``ref`` at a time.

It is the executable meaning of a graph. Quantization parameters attached to
activations are ignored here (the float meaning of the model); explicit Quantize /
Dequantize nodes that remain in the graph are executed as written.
"""

from __future__ import annotations

import numpy as np

from .ir import Graph
from .ops import get_op


def run_float(graph: Graph, feeds: dict[str, np.ndarray], keep_all: bool = False) -> dict[str, np.ndarray]:
    """Run one sample. ``feeds`` are float arrays in the graph's internal layout.

    Returns the graph outputs, or with ``keep_all`` every activation (calibration).
    """
    values: dict[str, np.ndarray] = {}
    for name in graph.inputs:
        t = graph.tensors[name]
        x = np.asarray(feeds[name])
        if x.shape != t.shape:
            raise AssertionError(f"feed {name!r} has shape {x.shape}, graph wants {t.shape}")
        values[name] = x.astype(t.dtype) if t.dtype is not np.float32 else x.astype(np.float32)

    def value(name: str):
        if not name:
            return None
        if name in values:
            return values[name]
        t = graph.tensors[name]
        if t.is_const:
            values[name] = t.float_value()
            return values[name]
        raise AssertionError(f"tensor {name!r} read before it is computed")

    for node in graph.nodes:
        outs = get_op(node.op).ref(node, [value(i) for i in node.inputs])
        for name, v in zip(node.outputs, outs):
            values[name] = v
    if keep_all:
        return {name: v for name, v in values.items() if not graph.tensors[name].is_const}
    return {name: values[name] for name in graph.outputs}


def run_int8(program, feeds: dict[str, np.ndarray], keep_all: bool = False) -> dict[str, np.ndarray]:
    """Run one sample through an int8 program with the numpy kernels (the
    executable spec of the C code). ``feeds``: int8 arrays, internal layout.

    Returns the program's int8 outputs, or with ``keep_all`` every int8 tensor.
    """
    from .kernels import run_kernel

    graph = program.graph
    values: dict[str, np.ndarray] = {}
    for name in program.inputs:
        x = np.asarray(feeds[name])
        if x.dtype != np.int8 or x.shape != graph.tensors[name].shape:
            raise AssertionError(f"feed {name!r}: {x.dtype}{x.shape}, program wants int8{graph.tensors[name].shape}")
        values[name] = x

    def value(name):
        if name is None:
            return None
        if name in values:
            return values[name]
        t = graph.tensors[name]
        if t.is_const:
            return t.data
        raise AssertionError(f"tensor {name!r} read before it is computed")

    for call in program.calls:
        args = [value(i) for i in call.inputs]
        out = graph.tensors[call.outputs[0]]
        if call.kernel == "row_view":
            y = args[0][:, call.scalars[0]:call.scalars[0] + call.scalars[1]]
        elif call.kernel == "row_join":
            y = np.concatenate(args, axis=1)
        elif call.is_alias:
            y = args[0]
        else:
            y = run_kernel(call.kernel, call.params, call.scalars, args)
        values[call.outputs[0]] = np.ascontiguousarray(y, dtype=np.int8).reshape(out.shape)
    if keep_all:
        return values
    return {name: values[name] for name in program.outputs}
