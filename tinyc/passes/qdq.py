"""Fold QuantizeLinear / DequantizeLinear pairs into tensor quantization parameters.

A pre-quantized (QDQ) model says "this activation is int8 with scale s and zero
point z" by a Quantize followed by a Dequantize. tinyc records that on the float
tensor itself (``Tensor.quant``) and drops the pair, so later passes see the plain
float graph and the int8 compiler finds every scale where it needs it. The model's
interface types are kept in ``Graph.external_dtype`` (int8 in / out, or float
around an int8 graph).
"""

from __future__ import annotations

import numpy as np

from ..ir import Graph, Node

# Pure data movement: Dequantize(M(q)) == M(Dequantize(q)) for per-tensor params.
_MOVERS = ("Transpose", "Reshape")


def _sink_dequantize_before_movers(g: Graph) -> bool:
    """Rewrite Dequantize(Transpose(q)) as Transpose(Dequantize(q)) so Q and DQ meet."""
    prod = g.producers()
    cons = g.consumers()
    changed = False
    for d in list(g.nodes):
        if d.op != "Dequantize" or d.attrs.quant.per_axis:
            continue
        mover = prod.get(d.inputs[0])
        if mover is None or mover.op not in _MOVERS or len(cons.get(mover.outputs[0], [])) != 1:
            continue
        q_src = mover.inputs[0]
        new_f = g.unique_name(q_src + "_dq")
        g.add_tensor(type(g.tensors[q_src])(new_f, g.tensors[q_src].shape, np.float32))
        g.add_node(Node("Dequantize", g.unique_name(d.name), [q_src], [new_f], d.attrs), g.nodes.index(mover))
        mover.inputs[0] = new_f
        g.tensors[mover.outputs[0]].dtype = np.float32
        g.nodes.remove(d)
        if d.outputs[0] in g.outputs:
            # the mover now computes the graph output: it takes the model's name
            del g.tensors[d.outputs[0]]
            g.rename_tensor(mover.outputs[0], d.outputs[0])
        else:
            g.replace_uses(d.outputs[0], mover.outputs[0])
        changed = True
        prod = g.producers()
        cons = g.consumers()
    return changed


def fold_qdq(g: Graph) -> None:
    while _sink_dequantize_before_movers(g):
        pass
    g.remove_unused()
    cons = g.consumers()

    # Integer graph inputs read through a Dequantize: the input becomes a float
    # tensor with those parameters; the caller's int8 data is its external form.
    for name in list(g.inputs):
        t = g.tensors[name]
        readers = cons.get(name, [])
        if t.dtype is np.float32 or not readers:
            continue
        if all(
            r.op == "Dequantize" and r.attrs.quant.same_as(readers[0].attrs.quant) and r.outputs[0] not in g.outputs
            for r in readers
        ):
            g.external_dtype[name] = t.dtype
            t.attrs["qdtype"] = t.dtype  # the integer type the model stores it in
            t.dtype = np.float32
            t.quant = readers[0].attrs.quant
            for r in readers:
                g.bypass(r, name)
    cons = g.consumers()

    for q in [n for n in g.nodes if n.op == "Quantize"]:
        params = q.attrs.quant
        xt = g.tensors[q.inputs[0]]
        if xt.is_const or params.per_axis or (xt.quant is not None and not xt.quant.same_as(params)):
            continue
        readers = cons.get(q.outputs[0], [])
        if not all(r.op == "Dequantize" and r.attrs.quant.same_as(params) for r in readers):
            continue
        xt.quant = params
        xt.attrs["qdtype"] = q.attrs.dtype
        for r in readers:
            g.bypass(r, q.inputs[0])
        if q.outputs[0] in g.outputs:
            if g.bypass(q, q.inputs[0]):
                # the model hands out the integer tensor: remember its type
                g.external_dtype[q.outputs[0]] = q.attrs.dtype
        elif not g.consumers().get(q.outputs[0]):
            g.nodes.remove(q)
        cons = g.consumers()
    g.remove_unused()
