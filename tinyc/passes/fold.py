"""Canonicalizing folds: constants, reshape chains, padding, scale/shift (batch
norm) and activations merged into the op that produces their input."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..ir import Graph, Node, Tensor
from ..ops import get_op
from ..ops.base import with_clamp


def evaluate_constant(g: Graph, node: Node) -> Tensor:
    """The constant a node with only constant inputs produces.

    A Dequantize of integer data stays integer data with quantization parameters,
    so that exact int8 weights survive import.
    """
    (out,) = node.outputs
    ins = [g.tensors[i] if i else None for i in node.inputs]
    if node.op == "Dequantize":
        src = ins[0]
        return Tensor(out, src.shape, src.dtype, src.data, node.attrs.quant)
    (value,) = get_op(node.op).ref(node, [t.float_value() if t is not None else None for t in ins])
    value = np.asarray(value)
    return Tensor(out, value.shape, value.dtype.type, value)


def fold_constants(g: Graph) -> None:
    for node in list(g.nodes):
        if len(node.outputs) != 1 or node.outputs[0] in g.outputs:
            continue
        if all((not i) or g.tensors[i].is_const for i in node.inputs):
            g.tensors[node.outputs[0]] = evaluate_constant(g, node)
            g.nodes.remove(node)


def simplify_reshapes(g: Graph) -> None:
    """Reshape to the same shape disappears; Reshape of a Reshape reads the source;
    an elementwise op whose one data input comes through a Reshape moves before it
    (so a batch norm's Mul / Add and a Clamp can reach the Conv they belong to, e.g.
    a 1-D Conv run as 2-D with H = 1 and reshaped back)."""
    changed = True
    while changed:
        changed = False
        prod = g.producers()
        cons = g.consumers()
        for node in list(g.nodes):
            if get_op(node.op).elementwise and _hoist_above_reshape(g, node, prod, cons):
                changed = True
                break
            if node.op != "Reshape":
                continue
            src = node.inputs[0]
            up = prod.get(src)
            if up is not None and up.op == "Reshape":
                # the skipped tensor holds the same bytes: keep its int8 parameters
                mid, first = g.tensors[src], g.tensors[up.inputs[0]]
                if mid.quant is not None and not mid.quant.per_axis and first.quant is None:
                    first.quant = mid.quant
                node.inputs[0] = up.inputs[0]
                changed = True
            if g.tensors[node.inputs[0]].shape == g.tensors[node.outputs[0]].shape:
                if g.bypass(node, node.inputs[0]):
                    changed = True
            if changed:
                g.remove_unused()
                break


def _hoist_above_reshape(g: Graph, node: Node, prod, cons) -> bool:
    """x -> Reshape -> r -> op(r, constants) -> y   becomes   x -> op(x, constants') -> u -> Reshape -> y."""
    data = [i for i in node.inputs if i and not g.tensors[i].is_const]
    if len(data) != 1 or len(node.outputs) != 1:
        return False
    reshape = prod.get(data[0])
    if reshape is None or reshape.op != "Reshape" or _single_reader(g, cons, data[0]) is not node:
        return False
    x, r, y = reshape.inputs[0], reshape.outputs[0], node.outputs[0]
    if g.tensors[y].shape != g.tensors[r].shape:  # a constant broadcasts r to a larger shape
        return False
    consts = {i: _rebroadcast(g, i, g.tensors[r].shape, g.tensors[x].shape) for i in node.inputs if i and i != r}
    if None in consts.values():
        return False
    inputs = [x if i == r else consts.get(i, i) for i in node.inputs]
    u = g.unique_name(y + "_pre")
    g.add_tensor(Tensor(u, g.tensors[x].shape, g.tensors[y].dtype, quant=g.tensors[y].quant))
    node.inputs, node.outputs = inputs, [u]
    reshape.inputs, reshape.outputs = [u], [y]
    del g.tensors[r]
    g.nodes.remove(node)
    g.nodes.insert(g.nodes.index(reshape), node)
    return True


def _rebroadcast(g: Graph, name: str, r_shape, x_shape) -> str | None:
    """A constant that broadcasts against x as ``name`` does against r = x reshaped to
    ``r_shape``: its values spread over r, reshaped like x, kept to one entry along
    every axis where they do not vary, without leading unit axes (a per-channel
    vector stays a vector). None for per-axis quantized constants."""
    t = g.tensors[name]
    if t.quant is not None and t.quant.per_axis:
        return None
    # the reshape only regroups elements, so the constant's value at each element of x
    # is its value at the same (row-major) element of r
    v = np.broadcast_to(t.data, r_shape).reshape(x_shape)
    for ax in range(v.ndim):
        first = v.take([0], axis=ax)
        if (v == first).all():
            v = first
    lead = next((k for k, d in enumerate(v.shape) if d != 1), v.ndim)
    v = v.reshape(v.shape[lead:])
    if v.shape == t.data.shape and np.array_equal(v, t.data):
        return name
    return g.add_const(name + "_r", np.ascontiguousarray(v), t.quant)


def _single_reader(g: Graph, cons, name: str) -> Node | None:
    readers = cons.get(name, [])
    if len(readers) != 1 or name in g.outputs:
        return None
    return readers[0]


def fold_pad(g: Graph) -> None:
    """Zero Pad of H and W before a Conv2D (or AvgPool2D counting pads) becomes its padding."""
    cons = g.consumers()
    for pad in list(g.nodes):
        if pad.op != "Pad" or pad.attrs.mode != "constant" or pad.attrs.value != 0.0:
            continue
        p = pad.attrs.pads
        if len(p) != 4 or p[0] != (0, 0) or p[3] != (0, 0) or min(min(x) for x in p) < 0:
            continue
        reader = _single_reader(g, cons, pad.outputs[0])
        if reader is None or reader.inputs[0] != pad.outputs[0]:
            continue
        if reader.op == "AvgPool2D" and not (reader.attrs.count_include_pad or not any(reader.attrs.pads)):
            continue
        if reader.op not in ("Conv2D", "AvgPool2D"):
            continue
        t, l, b, r = reader.attrs.pads
        new = (t + p[1][0], l + p[2][0], b + p[1][1], r + p[2][1])
        if reader.op == "AvgPool2D":
            reader.attrs = replace(reader.attrs, pads=new, count_include_pad=True)
        else:
            reader.attrs = replace(reader.attrs, pads=new)
        reader.inputs[0] = pad.inputs[0]
        g.nodes.remove(pad)
        cons = g.consumers()


def _channel_vector(t: Tensor, out_shape: tuple[int, ...]) -> np.ndarray | None:
    """The per-output-channel vector a constant broadcasts as, or None."""
    if t.quant is not None and t.quant.per_axis:
        return None
    v = t.float_value()
    c = out_shape[-1]
    if v.ndim > len(out_shape) or any(d != 1 for d in v.shape[:-1]):
        return None
    if v.size == 1:
        return np.full(c, float(v.reshape(())), dtype=np.float32)
    if v.shape[-1] != c:
        return None
    return v.reshape(c).astype(np.float32)


def fold_scale_shift(g: Graph) -> None:
    """Per-channel Mul / Add (BatchNormalization, Keras BN exports) after a float
    Conv2D or FullyConnected become part of its weights and bias."""
    changed = True
    while changed:
        changed = False
        cons = g.consumers()
        prod = g.producers()
        for node in list(g.nodes):
            if node.op not in ("Mul", "Add", "Sub") or not node.attrs.act.is_identity:
                continue
            data = [i for i in node.inputs if not g.tensors[i].is_const]
            consts = [i for i in node.inputs if g.tensors[i].is_const]
            if len(data) != 1 or len(consts) != 1:
                continue
            if node.op == "Sub" and node.inputs[0] != data[0]:
                continue
            up = prod.get(data[0])
            if up is None or up.op not in ("Conv2D", "FullyConnected") or not up.attrs.act.is_identity:
                continue
            if _single_reader(g, cons, data[0]) is not node:
                continue
            w_t = g.tensors[up.inputs[1]]
            c_t = g.tensors[consts[0]]
            has_bias = len(up.inputs) > 2 and up.inputs[2]
            if g.tensors[data[0]].quant is not None:
                continue
            if w_t.quant is not None:
                # a QDQ model's separate bias Add: the int32 bias joins the op as it is
                if node.op == "Add" and not has_bias and c_t.quant is not None and c_t.shape == (w_t.shape[0],):
                    up.inputs = up.inputs[:2] + [consts[0]]
                    g.bypass(node, data[0])
                    changed = True
                    break
                continue  # quantized graphs keep their exact integers
            out_shape = g.tensors[node.outputs[0]].shape
            if out_shape != g.tensors[data[0]].shape:
                continue
            vec = _channel_vector(g.tensors[consts[0]], out_shape)
            if vec is None:
                continue
            o = w_t.shape[0]
            bias = g.tensors[up.inputs[2]].float_value() if len(up.inputs) > 2 and up.inputs[2] else np.zeros(o, np.float32)
            if node.op == "Mul":
                w = w_t.data * vec.reshape((o,) + (1,) * (w_t.data.ndim - 1))
                up.inputs[1] = g.add_const(up.inputs[1] + "_scaled", w.astype(np.float32))
                bias = bias * vec
            else:
                bias = bias + (vec if node.op == "Add" else -vec)
            b_name = g.add_const(up.name + "_bias", bias.astype(np.float32))
            if len(up.inputs) > 2:
                up.inputs[2] = b_name
            else:
                up.inputs.append(b_name)
            g.bypass(node, data[0])
            changed = True
            break


def fuse_activations(g: Graph) -> None:
    """A Clamp (ReLU, ReLU6, Clip) whose input has no other reader becomes the
    producer's output bounds. One walk in order, the reader and producer maps
    kept up to date (a chain of clamps fuses into its first op in linear time)."""
    cons = g.consumers()
    prod = g.producers()
    for node in list(g.nodes):
        if node.op != "Clamp":
            continue
        up = prod.get(node.inputs[0])
        if up is None or len(up.outputs) != 1 or not hasattr(up.attrs, "act"):
            continue
        if _single_reader(g, cons, node.inputs[0]) is not node:
            continue
        src, out = up.outputs[0], node.outputs[0]
        up.attrs = with_clamp(up.attrs, node.attrs.act)
        if g.tensors[out].quant is not None:
            g.tensors[src].quant = g.tensors[out].quant
        readers = cons.pop(out, [])
        g.bypass(node, src, readers)  # cannot refuse: src is made by a node and read only here
        name = up.outputs[0]  # src, or out when the producer took the graph output's name
        cons[name] = readers
        prod.pop(src, None)
        prod.pop(out, None)
        prod[name] = up
