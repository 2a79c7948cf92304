"""Lower a quantized graph to an int8 program (a list of kernel calls).

1. ``propagate_quant`` gives int8 parameters to tensors the QDQ model left
   without them where TFLite's rules fix them: ops that move bytes keep their
   input's parameters (Reshape, pools, Pad, Resize), and softmax / logistic
   outputs are 1/256, -128.
2. Float ops after the last quantized tensors (a LogSoftmax after TFLite's
   DEQUANTIZE, as in converted classifiers) form a float tail, run on the host
   after dequantizing.
3. Every other node becomes kernel calls through its OpDef's ``lower``.
"""

from __future__ import annotations

import numpy as np

from ..errors import TinycError
from ..ir import Graph, QuantParams, Tensor
from ..ir.program import KernelCall, Program
from ..ops import get_op


def is_quantized(graph: Graph) -> bool:
    """A model is compiled to int8 when its inputs carry int8 parameters (a QDQ
    model, or a float model after calibration)."""
    return all(graph.tensors[n].quant is not None for n in graph.inputs)


def propagate_quant(graph: Graph) -> None:
    """Fill parameters by the ops' int8 output rules (OpDef.int8_output), for ops
    with an int8 kernel: a one-input byte mover shares its input's parameters in
    both directions; a fixed-output op gets TFLite's fixed ones."""
    changed = True
    while changed:
        changed = False
        for node in graph.nodes:
            op = get_op(node.op)
            if not op.has_int8_kernel:
                continue
            if op.int8_output == "input" and len(node.inputs) == 1:
                x, y = graph.tensors[node.inputs[0]], graph.tensors[node.outputs[0]]
                if y.quant is None and x.quant is not None:
                    y.quant, changed = x.quant, True
                elif x.quant is None and y.quant is not None and not x.is_const:
                    x.quant, changed = y.quant, True
            elif isinstance(op.int8_output, tuple):
                y = graph.tensors[node.outputs[0]]
                if y.quant is None and graph.tensors[node.inputs[0]].quant is not None:
                    scale, zp = op.int8_output
                    y.quant, changed = QuantParams(np.float32(scale), np.int32(zp)), True


def _float_tail(graph: Graph) -> list:
    """Nodes at the end of the graph whose outputs have no int8 parameters."""
    consumers = graph.consumers()
    tail: list = []
    for node in reversed(graph.nodes):
        if any(graph.tensors[o].quant is not None for o in node.outputs):
            continue
        downstream = [c for o in node.outputs for c in consumers.get(o, [])]
        if all(c in tail for c in downstream):
            tail.append(node)
    return list(reversed(tail))


def lower_to_int8(graph: Graph) -> Program:
    """The int8 program for a quantized, canonical graph (the graph is modified)."""
    propagate_quant(graph)
    tail = _float_tail(graph)
    tail_ids = {id(n) for n in tail}
    calls = []
    for node in graph.nodes:
        if id(node) not in tail_ids:
            try:
                calls.extend(get_op(node.op).lower(node, graph))
            except ValueError as e:  # the fixed-point code refuses a scale the model gives
                raise TinycError(
                    f"node {node.name!r} ({node.op}): its quantization scales cannot be run in int8 fixed point "
                    f"({e}); check the model's scales and zero points"
                ) from None
    produced_in_tail = {o for n in tail for o in n.outputs}
    outputs = [n for n in graph.outputs if n not in produced_in_tail]
    for n in tail:
        for i in n.inputs:
            if i and i not in produced_in_tail and not graph.tensors[i].is_const and i not in outputs:
                outputs.append(i)
    _copy_shared_outputs(graph, calls, outputs)
    for name in (*graph.inputs, *graph.outputs):  # the interface keeps its original type
        graph.external_dtype.setdefault(name, graph.tensors[name].dtype)
    int8_tensors = {t for c in calls for t in (*c.inputs, *c.outputs) if t} | set(graph.inputs) | set(outputs)
    for name in int8_tensors:
        t = graph.tensors[name]
        if t.is_const:
            continue
        if t.quant is None:
            raise TinycError(
                f"tensor {name!r} has no int8 scale and zero point; give a QDQ model that quantizes it, "
                "or a float model with --calib"
            )
        t.dtype = np.int8
    return Program(graph, calls, list(graph.inputs), outputs, tail)


def _copy_shared_outputs(graph: Graph, calls: list[KernelCall], outputs: list[str]) -> None:
    """An output that is a view (Reshape) of a graph input, or of another output,
    cannot share its bytes: the view is retargeted to a temporary and copied."""
    root: dict[str, str] = {}
    for call in calls:
        if call.is_alias:
            root[call.outputs[0]] = root.get(call.inputs[0], call.inputs[0])
    taken = set(graph.inputs)
    for name in outputs:
        r = root.get(name, name)
        if r in taken and name in root:
            call = next(c for c in calls if c.outputs[0] == name)
            t = graph.tensors[name]
            tmp = graph.unique_name(f"{name}:view")
            graph.add_tensor(Tensor(tmp, t.shape, t.dtype, quant=t.quant))
            call.outputs[0] = tmp
            calls.append(KernelCall("copy_s8", None, [tmp], [name], call.node, scalars=(t.size,)))
        elif r in taken:  # a graph input that is itself an output
            raise TinycError(f"graph output {name!r} is a graph input; tinyc needs at least one op between them")
        else:
            taken.add(r)
