"""Eliminate layout Transposes.

The importer wraps every NCHW spatial op in NCHW->NHWC / NHWC->NCHW Transposes, and
tf2onnx's NHWC models carry their own. This pass removes them by local rewrites,
repeated until nothing changes:

1. two Transposes in a row compose into one; an identity Transpose disappears;
2. a Transpose that only moves size-1 axes is a Reshape;
3. an op that commutes with permutations (elementwise, Concat, Softmax, ReduceMean,
   Pad ...) whose data inputs all come through the same Transpose runs before it
   instead, so the Transpose moves towards the outputs where it meets its inverse;
4. a Transpose feeding a flattening Reshape into FullyConnected is folded into the
   order of the weight columns;
5. Transposes right after a graph input or right before a graph output become part of
   the interface (``Graph.input_perm`` / ``output_perm``): the runner permutes the
   caller's data, the C code sees the internal layout;
6. a Transpose next to a Reshape that only drops or inserts size-1 axes trades places
   with it so that the Transpose permutes the tensor without those axes. The importer
   runs a 1-D op as 2-D with H = 1 (NCW -> Reshape NC1W -> Transpose N1WC -> op ->
   Transpose NC1W -> Reshape NCW); after the swap the Transposes are NWC <-> NCW on
   both sides of the elementwise ops between two convolutions, where rules 1 and 3
   cancel them as they do for 2-D models.
"""

from __future__ import annotations

import numpy as np

from ..ir import Graph, Node, Tensor
from ..ops import get_op
from ..ops.shape import ReshapeAttrs, TransposeAttrs


def _compose(first: tuple[int, ...], second: tuple[int, ...]) -> tuple[int, ...]:
    """perm of transpose(transpose(x, first), second)."""
    return tuple(first[i] for i in second)


def _inverse(perm) -> tuple[int, ...]:
    return tuple(int(i) for i in np.argsort(perm))


def _is_identity(perm) -> bool:
    return tuple(perm) == tuple(range(len(perm)))


def _only_moves_unit_axes(shape, perm) -> bool:
    kept = [p for p in perm if shape[p] != 1]
    return kept == sorted(kept)


def eliminate_transposes(g: Graph) -> None:
    while _rewrite_once(g):
        g.remove_unused()
        g.toposort()
    _absorb_interface_transposes(g)


def _rewrite_once(g: Graph) -> bool:
    prod = g.producers()
    cons = g.consumers()
    for node in list(g.nodes):
        if node.op == "Transpose":
            if _simplify_transpose(g, node, prod):
                return True
        elif len(node.outputs) == 1 and _sink_through(g, node, prod):
            return True
        elif node.op == "Reshape" and (_fold_into_fc(g, node, prod, cons) or _swap_with_transpose(g, node, prod, cons)
                                       or _swap_split_or_merge(g, node, prod, cons)):
            return True
    # Rule 2 only when nothing else applies: a Transpose turned into a Reshape early
    # can no longer cancel its inverse or let ops sink (e.g. one-channel Conv -> BN).
    for node in list(g.nodes):
        if node.op == "Transpose" and _simplify_transpose(g, node, prod, unit_axes=True):
            return True
    return False


def _inherit_quant(g: Graph, src: str, moved: str) -> None:
    """A Transpose moves values without changing them: when a rewrite reads ``src``
    instead of the Transpose's output ``moved``, ``src`` keeps its int8 parameters."""
    if g.tensors[src].quant is None and g.tensors[moved].quant is not None:
        g.tensors[src].quant = g.tensors[moved].quant


def _simplify_transpose(g: Graph, node: Node, prod, unit_axes: bool = False) -> bool:
    src = node.inputs[0]
    perm = tuple(node.attrs.perm)
    if _is_identity(perm):
        return g.bypass(node, src)
    up = prod.get(src)
    if up is not None and up.op == "Transpose":
        _inherit_quant(g, up.inputs[0], up.outputs[0])
        node.inputs[0] = up.inputs[0]
        node.attrs = TransposeAttrs(_compose(tuple(up.attrs.perm), perm))
        return True
    at_interface = src in g.inputs or node.outputs[0] in g.outputs  # rule 5 takes those
    if unit_axes and _only_moves_unit_axes(g.tensors[src].shape, perm) and not at_interface:
        node.op = "Reshape"
        node.attrs = ReshapeAttrs(g.tensors[node.outputs[0]].shape)
        return True
    return False


def _sink_through(g: Graph, node: Node, prod) -> bool:
    """Rule 3: run ``node`` before the Transposes that feed it."""
    data = [i for i in node.inputs if i and not g.tensors[i].is_const]
    if not data:
        return False
    feeders = [prod.get(i) for i in data]
    if any(f is None or f.op != "Transpose" for f in feeders):
        return False
    perm = tuple(feeders[0].attrs.perm)
    if any(tuple(f.attrs.perm) != perm for f in feeders):
        return False
    rank = len(perm)
    if any(len(g.tensors[i].shape) > rank for i in node.inputs if i):
        return False
    new_attrs = get_op(node.op).permuted(node, g, perm)
    if new_attrs is None:
        return False
    out_perm = tuple(get_op(node.op).permuted_output(node, g, perm))
    inv = _inverse(perm)
    new_inputs = []
    for i in node.inputs:
        if not i:
            new_inputs.append(i)
            continue
        t = g.tensors[i]
        if t.is_const:
            if t.quant is not None and t.quant.per_axis:
                return False
            data_full = t.data.reshape((1,) * (rank - t.data.ndim) + t.data.shape)
            new_inputs.append(g.add_const(i + "_perm", np.ascontiguousarray(data_full.transpose(inv)), t.quant))
        else:
            _inherit_quant(g, prod[i].inputs[0], i)
            new_inputs.append(prod[i].inputs[0])
    out = node.outputs[0]
    out_t = g.tensors[out]
    inner = g.unique_name(out + "_inner")
    g.add_tensor(Tensor(inner, tuple(out_t.shape[p] for p in _inverse(out_perm)), out_t.dtype, quant=out_t.quant))
    node.inputs = new_inputs
    node.attrs = new_attrs
    node.outputs = [inner]
    idx = g.nodes.index(node)
    g.add_node(Node("Transpose", g.unique_name(node.name + "_t"), [inner], [out], TransposeAttrs(out_perm)), idx + 1)
    return True


def _fold_into_fc(g: Graph, reshape: Node, prod, cons) -> bool:
    """Rule 4: Transpose -> flatten -> FullyConnected becomes flatten -> FC with permuted columns."""
    up = prod.get(reshape.inputs[0])
    if up is None or up.op != "Transpose" or len(cons.get(up.outputs[0], [])) != 1:
        return False
    perm = tuple(up.attrs.perm)
    out_shape = g.tensors[reshape.outputs[0]].shape
    t_shape = g.tensors[up.outputs[0]].shape
    if perm[0] != 0 or len(out_shape) != 2 or out_shape[0] != t_shape[0]:
        return False
    readers = cons.get(reshape.outputs[0], [])
    if not readers or reshape.outputs[0] in g.outputs:
        return False
    for r in readers:
        if r.op != "FullyConnected" or r.inputs[0] != reshape.outputs[0] or not g.tensors[r.inputs[1]].is_const:
            return False
        wq = g.tensors[r.inputs[1]].quant
        if wq is not None and wq.per_axis and wq.axis != 0:
            return False
    inv = _inverse(perm)
    for r in readers:
        w = g.tensors[r.inputs[1]]
        o = w.shape[0]
        wr = w.data.reshape((o,) + t_shape[1:])
        permuted = wr.transpose((0,) + tuple(inv[m] for m in range(1, len(perm))))
        r.inputs[1] = g.add_const(r.inputs[1] + "_cols", np.ascontiguousarray(permuted).reshape(o, -1), w.quant)
    _inherit_quant(g, up.inputs[0], up.outputs[0])
    reshape.inputs[0] = up.inputs[0]
    return True


def _dropped_unit_axes(long: tuple[int, ...], short: tuple[int, ...]) -> list[int] | None:
    """The axes of ``long`` to delete to get ``short`` when they are all of size 1 (a
    Reshape between the two shapes only drops unit axes), else None."""
    if len(short) >= len(long):
        return None
    dropped, j = [], 0
    for i, d in enumerate(long):
        if j < len(short) and d == short[j]:
            j += 1
        elif d == 1:
            dropped.append(i)
        else:
            return None
    return dropped if j == len(short) else None


def _without_axes(perm: tuple[int, ...], axes) -> tuple[int, ...]:
    """``perm`` on the tensor whose input ``axes`` (all of size 1) were removed."""
    kept = [a for a in range(len(perm)) if a not in axes]
    return tuple(kept.index(p) for p in perm if p not in axes)


def _swap_with_transpose(g: Graph, reshape: Node, prod, cons) -> bool:
    """Rule 6: Transpose -> (drop unit axes) becomes (drop unit axes) -> Transpose, and
    (insert unit axes) -> Transpose becomes Transpose -> (insert unit axes). Each swap
    lowers the rank of a Transpose, so the rewrites terminate. Transposes at the
    interface stay where rule 5 takes them."""
    src, out = reshape.inputs[0], reshape.outputs[0]
    up = prod.get(src)
    dropped = _dropped_unit_axes(g.tensors[src].shape, g.tensors[out].shape)
    if up is not None and up.op == "Transpose" and dropped is not None:
        if len(cons[src]) != 1 or src in g.outputs or up.inputs[0] in g.inputs:
            return False
        perm = tuple(up.attrs.perm)
        axes = {perm[d] for d in dropped}  # the same unit axes, numbered before the Transpose
        x = up.inputs[0]
        g.tensors[src].shape = tuple(d for a, d in enumerate(g.tensors[x].shape) if a not in axes)
        reshape.inputs, reshape.outputs = [x], [src]
        reshape.attrs = ReshapeAttrs(g.tensors[src].shape)
        up.inputs, up.outputs = [src], [out]
        up.attrs = TransposeAttrs(_without_axes(perm, axes))
        return True
    readers = cons.get(out, [])
    if len(readers) != 1 or readers[0].op != "Transpose" or out in g.outputs:
        return False
    down = readers[0]
    inserted = _dropped_unit_axes(g.tensors[out].shape, g.tensors[src].shape)
    if inserted is None or down.outputs[0] in g.outputs:
        return False
    perm = _without_axes(tuple(down.attrs.perm), inserted)
    y = down.outputs[0]
    g.tensors[out].shape = tuple(g.tensors[src].shape[p] for p in perm)
    down.inputs, down.outputs = [src], [out]
    down.attrs = TransposeAttrs(perm)
    reshape.inputs, reshape.outputs = [out], [y]
    reshape.attrs = ReshapeAttrs(g.tensors[y].shape)
    return True


def _axis_groups(long: tuple[int, ...], short: tuple[int, ...]) -> list[list[int]] | None:
    """For a Reshape between ``long`` and ``short`` in which each axis of ``short``
    is a run of consecutive axes of ``long`` (a split, read one way, or a merge, read
    the other): those runs, in order; None for any other Reshape."""
    groups, i = [], 0
    for target in short:
        group, size = [], 1
        while i < len(long) and (not group or size < target):
            group.append(i)
            size *= long[i]
            i += 1
        if size != target or not group:
            return None
        groups.append(group)
    while groups and i < len(long) and long[i] == 1:  # trailing unit axes join the last run
        groups[-1].append(i)
        i += 1
    return groups if i == len(long) else None


def _swap_split_or_merge(g: Graph, reshape: Node, prod, cons) -> bool:
    """Rule 7 (each swap leaves two Transposes next to each other, which rule 1
    composes, so the rewrites terminate)."""
    src, out = reshape.inputs[0], reshape.outputs[0]
    up = prod.get(src)
    readers = cons.get(out, [])
    src_shape, out_shape = g.tensors[src].shape, g.tensors[out].shape
    if src in g.outputs or out in g.outputs or len(cons.get(src, [])) != 1 or len(readers) != 1:
        return False
    down = readers[0]
    if up is None or up.op != "Transpose" or down.op != "Transpose" or up.inputs[0] in g.inputs:
        return False
    split = _axis_groups(out_shape, src_shape)
    if split is not None and len(out_shape) > len(src_shape):
        # Transpose(P) -> split: split the Transpose's input axes instead, then permute
        perm = tuple(up.attrs.perm)
        inv = _inverse(perm)
        x = up.inputs[0]
        sizes = [[out_shape[a] for a in split[inv[i]]] for i in range(len(perm))]
        offsets = np.cumsum([0] + [len(s) for s in sizes])
        new_perm = tuple(int(offsets[perm[j]]) + m for j in range(len(perm)) for m in range(len(split[j])))
        g.tensors[src].shape = tuple(d for s in sizes for d in s)
        reshape.inputs, reshape.outputs = [x], [src]
        reshape.attrs = ReshapeAttrs(g.tensors[src].shape)
        up.inputs, up.outputs = [src], [out]
        up.attrs = TransposeAttrs(new_perm)
        return True
    merge = _axis_groups(src_shape, out_shape)
    if merge is not None and len(src_shape) > len(out_shape):
        # merge -> Transpose(P): permute the runs before merging them
        perm = tuple(down.attrs.perm)
        new_perm = tuple(a for k in perm for a in merge[k])
        y = down.outputs[0]
        g.tensors[out].shape = tuple(src_shape[a] for a in new_perm)
        down.inputs, down.outputs = [src], [out]
        down.attrs = TransposeAttrs(new_perm)
        reshape.inputs, reshape.outputs = [out], [y]
        reshape.attrs = ReshapeAttrs(g.tensors[y].shape)
        return True
    return False


def _absorb_interface_transposes(g: Graph) -> None:
    """Rule 5: move Transposes at the graph's edges into its interface."""
    cons = g.consumers()
    for name in list(g.inputs):
        readers = cons.get(name, [])
        if not readers or name in g.outputs or any(r.op != "Transpose" for r in readers):
            continue
        if any(r.outputs[0] in g.outputs for r in readers):
            # input -> Transpose -> output: bypassing would merge two interface
            # tensors, so the Transpose stays (and so does the input's layout)
            continue
        perm = tuple(readers[0].attrs.perm)
        if any(tuple(r.attrs.perm) != perm for r in readers):
            continue
        t = g.tensors[name]
        t.shape = tuple(t.shape[p] for p in perm)
        g.input_perm[name] = _compose(g.input_perm.get(name, tuple(range(len(perm)))), perm)
        for r in readers:
            g.bypass(r, name)
    prod = g.producers()
    for name in list(g.outputs):
        node = prod.get(name)
        if node is None or node.op != "Transpose":
            continue
        src = node.inputs[0]
        if g.bypass(node, src):
            g.output_perm[name] = _compose(tuple(node.attrs.perm), g.output_perm.get(name, tuple(range(len(node.attrs.perm)))))
            prod = g.producers()
