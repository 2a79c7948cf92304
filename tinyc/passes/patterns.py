"""Pattern rewrites: one op where exporters spell it in many.

- ``fuse_layer_norm``: ReduceMean / Sub / Pow 2 (a Mul) / ReduceMean / Add eps /
  Sqrt / Div [/ Mul gamma / Add beta] over the last axis (PyTorch's LayerNorm
  below opset 17) becomes one LayerNorm.
- ``axis_permutations``: Reshape -> Transpose -> Reshape back to the input's
  shape that only reorders one axis (ShuffleNet's channel shuffle, exported in
  NCHW through a 5-D Transpose) becomes one Gather along that axis, which the
  layout pass moves like any per-axis op and lowering makes one strided copy.
- ``divide_by_constants``: Div by a float constant becomes Mul by its reciprocal
  (which the scale-shift folding then takes into a convolution's weights).
- ``fuse_elementwise_functions``: a float subgraph of elementwise ops with one
  activation input, scalar constants and one output (GELU's Div / Erf / Add / Mul
  / Mul, SiLU's x * Sigmoid(x), x * HardSigmoid(x)) becomes one ElementwiseFn
  node: in int8 one 256-entry table, with no rounding in between.
"""

from __future__ import annotations

import heapq

import numpy as np

from ..ir import Graph, Node
from ..ops import get_op
from ..ops.elementwise import BinaryAttrs, FnAttrs
from ..ops.norm import LayerNormAttrs
from ..ops.shape import GatherAttrs


def _scalar(g: Graph, name: str) -> float | None:
    t = g.tensors.get(name)
    if t is None or not t.is_const or t.size != 1 or not np.issubdtype(np.asarray(t.float_value()).dtype, np.floating):
        return None
    return float(t.float_value().reshape(-1)[0])


def _last_axis_mean(g: Graph, node: Node | None) -> bool:
    if node is None or node.op != "ReduceMean" or not node.attrs.keepdims:
        return False
    rank = len(g.tensors[node.inputs[0]].shape)
    return tuple(node.attrs.axes) == (rank - 1,)


def fuse_layer_norm(g: Graph) -> None:
    prod, cons = g.producers(), g.consumers()

    def only(name, *readers):  # ``name`` is read by exactly these nodes and is no output
        return name not in g.outputs and {id(r) for r in cons.get(name, [])} == {id(r) for r in readers}

    for div in [n for n in g.nodes if n.op == "Div"]:
        d, sd = div.inputs
        sub, sqrt = prod.get(d), prod.get(sd)
        if sub is None or sub.op != "Sub" or sqrt is None or sqrt.op != "Sqrt":
            continue
        x, mean = sub.inputs
        add_eps = prod.get(sqrt.inputs[0])
        if add_eps is None or add_eps.op != "Add" or not _last_axis_mean(g, prod.get(mean)) \
                or prod[mean].inputs[0] != x:
            continue
        scalars = [_scalar(g, i) for i in add_eps.inputs]
        var_name = next((i for i, v in zip(add_eps.inputs, scalars) if v is None), None)
        eps = next((v for v in scalars if v is not None), None)
        var = prod.get(var_name) if var_name else None
        if eps is None or not _last_axis_mean(g, var):
            continue
        square = prod.get(var.inputs[0])  # the importer makes Pow(d, 2) a Mul(d, d)
        if square is None or square.op != "Mul" or square.inputs != [d, d]:
            continue
        if not (only(mean, sub) and only(d, square, div) and only(square.outputs[0], var)
                and only(var.outputs[0], add_eps) and only(add_eps.outputs[0], sqrt) and only(sd, div)):
            continue
        depth = g.tensors[x].shape[-1]
        gamma, beta, last = np.ones(depth, np.float32), np.zeros(depth, np.float32), div
        for op, target in (("Mul", "gamma"), ("Add", "beta")):
            readers = cons.get(last.outputs[0], [])
            if len(readers) != 1 or readers[0].op != op or last.outputs[0] in g.outputs:
                break
            other = [i for i in readers[0].inputs if i != last.outputs[0]]
            t = g.tensors[other[0]] if len(other) == 1 else None
            if t is None or not t.is_const or t.size not in (1, depth) or t.shape[-1:] not in ((1,), (depth,), ()) \
                    or len(t.shape) > 1 and int(np.prod(t.shape[:-1])) != 1:
                break
            value = np.broadcast_to(t.float_value().astype(np.float32).reshape(-1), (depth,))
            if target == "gamma":
                gamma = value.copy()
            else:
                beta = value.copy()
            last = readers[0]
        out = last.outputs[0]
        ins = [x, g.add_const(div.name + "_gamma", gamma), g.add_const(div.name + "_beta", beta)]
        node = Node("LayerNorm", g.unique_name(div.name + "_layer_norm"), ins, [out], LayerNormAttrs(eps),
                    origin=div.origin)
        g.nodes.insert(g.nodes.index(last) + 1, node)
        g.nodes.remove(last)  # the old chain's other nodes lose their readers and go
        prod, cons = g.producers(), g.consumers()


def _single_axis_permutation(moved: np.ndarray) -> tuple[int, np.ndarray] | None:
    """(axis, order) when ``moved`` (a permutation of arange(size) in the input's
    shape) is ``take(arange, order, axis)``, else None."""
    index = np.arange(moved.size).reshape(moved.shape)
    for axis in range(moved.ndim):
        order = np.moveaxis(moved, axis, 0).reshape(moved.shape[axis], -1)[:, 0]
        order = np.unravel_index(order, moved.shape)[axis]
        if np.array_equal(np.take(index, order, axis=axis), moved):
            return axis, order
    return None


def axis_permutations(g: Graph) -> None:
    prod, cons = g.producers(), g.consumers()
    for last in [n for n in g.nodes if n.op == "Reshape"]:
        mid = prod.get(last.inputs[0])
        first = prod.get(mid.inputs[0]) if mid is not None and mid.op == "Transpose" else None
        if first is None or first.op != "Reshape":
            continue
        x, a, b = first.inputs[0], first.outputs[0], mid.outputs[0]
        shape = g.tensors[x].shape
        if g.tensors[last.outputs[0]].shape != shape or any(t in g.outputs or len(cons.get(t, [])) != 1
                                                            for t in (a, b)):
            continue
        moved = np.arange(int(np.prod(shape))).reshape(g.tensors[a].shape).transpose(mid.attrs.perm).reshape(shape)
        found = _single_axis_permutation(moved)
        if found is None:
            continue
        axis, order = found
        last.op, last.inputs = "Gather", [x]
        last.attrs = GatherAttrs(axis, tuple(int(v) for v in order), (len(order),))
        if g.tensors[last.outputs[0]].quant is None:
            g.tensors[last.outputs[0]].quant = g.tensors[x].quant
        prod, cons = g.producers(), g.consumers()


def divide_by_constants(g: Graph) -> None:
    for node in g.nodes:
        if node.op != "Div":
            continue
        x, c = node.inputs
        t, tx = g.tensors[c], g.tensors[x]
        if not t.is_const or tx.is_const or t.quant is not None or not np.issubdtype(t.dtype, np.floating) \
                or not np.issubdtype(tx.dtype, np.floating):
            continue
        value = t.float_value()
        if np.any(value == 0):
            continue
        node.op, node.attrs = "Mul", BinaryAttrs(node.attrs.act)
        node.inputs = [x, g.add_const(c + "_reciprocal", (np.float32(1) / value).astype(np.float32))]


_JOINABLE_BINARY = ("Add", "Sub", "Mul", "Div", "Max", "Min")


def _joinable(g: Graph, node: Node) -> bool:
    op = get_op(node.op)
    if not op.elementwise or len(node.outputs) != 1:
        return False
    if node.op in _JOINABLE_BINARY:
        return node.attrs.act.is_identity
    return len(node.inputs) == 1


MAX_FN_STEPS = 64  # a fused function's steps: bounds the work per start tensor on huge graphs


def _function_group(g: Graph, root: str, cons, position, taken) -> tuple[list[Node], list] | None:
    """The elementwise nodes that compute functions of ``root`` alone (its readers,
    their readers, ... in graph order), with each one's step."""
    t = g.tensors[root]
    available = {root: ("x",)}
    group, steps, seen = [], [], set()
    pending = [(position[id(r)], id(r), r) for r in cons.get(root, [])]
    heapq.heapify(pending)
    while pending and len(group) < MAX_FN_STEPS:
        _, key, node = heapq.heappop(pending)
        if key in seen or key in taken or not _joinable(g, node):
            continue
        seen.add(key)
        refs = []
        for i in node.inputs:
            value = None if i in available else _scalar(g, i)
            if i not in available and value is None:
                break
            refs.append(available[i] if i in available else ("c", value))
        else:
            out = g.tensors[node.outputs[0]]
            if out.shape != t.shape or out.quant is not None:
                continue
            available[node.outputs[0]] = ("t", len(steps))
            steps.append((node.op, tuple(refs), node.attrs))
            group.append(node)
            for r in cons.get(node.outputs[0], []):
                heapq.heappush(pending, (position[id(r)], id(r), r))
            continue
        seen.discard(key)  # an input is not ready yet: it may be once its producer joins
    return group, steps


def fuse_elementwise_functions(g: Graph) -> None:
    """Groups of two or more elementwise float nodes computing f(x) elementwise
    for one activation x; tensors that carry int8 parameters (a QDQ model's
    quantizer chose them) keep their nodes."""
    cons = g.consumers()
    taken: set[int] = set()
    position = {id(n): k for k, n in enumerate(g.nodes)}
    for root in list(g.tensors):
        t = g.tensors.get(root)
        if t is None or t.is_const or not np.issubdtype(t.dtype, np.floating) or not cons.get(root):
            continue
        group, steps = _function_group(g, root, cons, position, taken)
        if len(group) < 2:
            continue
        inside = {id(n) for n in group}
        external = [n.outputs[0] for n in group
                    if n.outputs[0] in g.outputs or any(id(r) not in inside for r in cons.get(n.outputs[0], []))]
        if len(external) != 1 or external[0] != group[-1].outputs[0]:
            continue
        last = group[-1]
        fused = Node("ElementwiseFn", g.unique_name(last.name + "_fn"), [root], [last.outputs[0]],
                     FnAttrs(tuple(steps)), origin=last.origin)
        g.nodes.insert(g.nodes.index(last) + 1, fused)
        removed = set(inside)
        g.nodes[:] = [n for n in g.nodes if id(n) not in removed]
        taken |= removed
        cons = g.consumers()
        position = {id(n): k for k, n in enumerate(g.nodes)}
