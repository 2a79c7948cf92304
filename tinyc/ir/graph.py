"""Nodes and graphs.

A Graph owns its tensors by name and keeps its nodes in a topological order.
Activations inside the IR are NHWC. ``input_perm`` / ``output_perm`` record how
the model's external layout maps onto the internal one when a layout pass moved a
Transpose out of the graph: internal = external.transpose(perm) for inputs,
external = internal.transpose(perm) for outputs.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass, field

import numpy as np

from .tensor import Tensor


class GraphError(AssertionError):
    """The IR broke one of its own invariants: a compiler bug, not a user error."""


@dataclass
class Node:
    op: str
    name: str
    inputs: list[str]
    outputs: list[str]
    attrs: object = None
    # position of the ONNX node this node was imported from, in the file's node
    # list (None for nodes a pass made): how training finds a layer's parameters
    origin: int | None = None

    def describe(self) -> str:
        attrs = ""
        if dataclasses.is_dataclass(self.attrs):
            parts = []
            for f in dataclasses.fields(self.attrs):
                v = getattr(self.attrs, f.name)
                parts.append(f"{f.name}={v}")
            attrs = " {" + ", ".join(parts) + "}"
        return f"{self.op}({', '.join(self.inputs)}) -> {', '.join(self.outputs)}{attrs}"


@dataclass
class Graph:
    name: str = "model"
    tensors: dict[str, Tensor] = field(default_factory=dict)
    nodes: list[Node] = field(default_factory=list)
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    input_perm: dict[str, tuple[int, ...]] = field(default_factory=dict)
    output_perm: dict[str, tuple[int, ...]] = field(default_factory=dict)
    # External element type of each graph input / output when it differs from the
    # internal one (a float model interface around an int8 graph).
    external_dtype: dict[str, type] = field(default_factory=dict)
    _names: itertools.count = field(default_factory=itertools.count, repr=False)
    _node_names: set = field(default_factory=set, repr=False)  # every name add_node or unique_name saw

    # ----------------------------------------------------------------- building
    def add_tensor(self, tensor: Tensor) -> Tensor:
        if tensor.name in self.tensors:
            raise GraphError(f"tensor {tensor.name!r} defined twice")
        self.tensors[tensor.name] = tensor
        return tensor

    def unique_name(self, base: str) -> str:
        """A name no tensor and no node has: ``base__K``, K from a counter. Node
        names are checked against the set add_node keeps (constant time, as a
        10,000-node import needs): nodes put in the list by other means get
        their names from here or from their output tensor."""
        while True:
            name = f"{base}__{next(self._names)}"
            if name not in self.tensors and name not in self._node_names:
                self._node_names.add(name)
                return name

    def add_const(self, base: str, data: np.ndarray, quant=None) -> str:
        data = np.asarray(data)
        name = self.unique_name(base)
        self.add_tensor(Tensor(name, data.shape, data.dtype.type, data, quant))
        return name

    def add_node(self, node: Node, index: int | None = None) -> Node:
        self._node_names.add(node.name)
        if index is None:
            self.nodes.append(node)
        else:
            self.nodes.insert(index, node)
        return node

    # --------------------------------------------------------------- querying
    def producers(self) -> dict[str, Node]:
        return {out: n for n in self.nodes for out in n.outputs}

    def consumers(self) -> dict[str, list[Node]]:
        result: dict[str, list[Node]] = {}
        for n in self.nodes:
            for i in n.inputs:
                if i:
                    result.setdefault(i, []).append(n)
        return result

    def const(self, name: str) -> Tensor | None:
        t = self.tensors.get(name)
        return t if t is not None and t.is_const else None

    def is_interface(self, name: str) -> bool:
        return name in self.inputs or name in self.outputs

    # -------------------------------------------------------------- rewriting
    def replace_uses(self, old: str, new: str, readers: list[Node] | None = None) -> None:
        """Point every consumer of ``old`` (and the graph outputs) at ``new``;
        ``readers``: those consumers, when the caller knows them (else all nodes
        are looked at)."""
        for n in self.nodes if readers is None else readers:
            n.inputs = [new if i == old else i for i in n.inputs]
        if old in self.outputs:
            self.outputs = [new if o == old else o for o in self.outputs]
            if old in self.output_perm:
                self.output_perm[new] = self.output_perm.pop(old)
            if old in self.external_dtype:
                self.external_dtype[new] = self.external_dtype.pop(old)

    def rename_tensor(self, old: str, new: str) -> None:
        """Rename a tensor everywhere (used to keep the model's output names)."""
        t = self.tensors.pop(old)
        t.name = new
        self.tensors[new] = t
        for n in self.nodes:
            n.inputs = [new if i == old else i for i in n.inputs]
            n.outputs = [new if o == old else o for o in n.outputs]
        for lst, perm in ((self.inputs, self.input_perm), (self.outputs, self.output_perm)):
            for k, v in enumerate(lst):
                if v == old:
                    lst[k] = new
            if old in perm:
                perm[new] = perm.pop(old)
        if old in self.external_dtype:
            self.external_dtype[new] = self.external_dtype.pop(old)

    def bypass(self, node: Node, src: str, readers: list[Node] | None = None) -> bool:
        """Remove single-output ``node`` whose output equals tensor ``src``.

        Readers of the output read ``src`` instead. When the output is a graph
        output, ``src`` takes over its name so the model keeps its interface names;
        that is impossible if ``src`` is itself an interface tensor or a constant, and
        then nothing changes and False is returned.
        """
        (out,) = node.outputs
        # equal values have equal quantization: keep what the removed tensor knew
        if self.tensors[out].quant is not None and self.tensors[src].quant is None:
            self.tensors[src].quant = self.tensors[out].quant
        if out in self.outputs:
            if self.is_interface(src) or self.tensors[src].is_const:
                return False
            self.nodes.remove(node)
            old = self.tensors.pop(out)
            self.rename_tensor(src, out)
            if old.quant is not None and self.tensors[out].quant is None:
                self.tensors[out].quant = old.quant
            return True
        self.nodes.remove(node)
        self.replace_uses(out, src, readers)
        return True

    def remove_unused(self) -> int:
        """Drop nodes whose outputs nobody reads, then orphan tensors. Returns nodes removed."""
        removed = 0
        while True:
            used = set(self.outputs)
            for n in self.nodes:
                used.update(i for i in n.inputs if i)
            keep = [n for n in self.nodes if any(o in used for o in n.outputs)]
            if len(keep) == len(self.nodes):
                break
            removed += len(self.nodes) - len(keep)
            self.nodes = keep
        referenced = set(self.inputs) | set(self.outputs)
        for n in self.nodes:
            referenced.update(n.inputs)
            referenced.update(n.outputs)
        for name in list(self.tensors):
            if name not in referenced:
                del self.tensors[name]
        return removed

    def toposort(self) -> None:
        """Reorder nodes so that every node comes after its producers (stable)."""
        ready = set(self.inputs) | {n for n, t in self.tensors.items() if t.is_const}
        pending = list(self.nodes)
        ordered: list[Node] = []
        while pending:
            progressed = False
            rest = []
            for n in pending:
                if all((not i) or i in ready for i in n.inputs):
                    ordered.append(n)
                    ready.update(n.outputs)
                    progressed = True
                else:
                    rest.append(n)
            if not progressed:
                raise GraphError(f"graph has a cycle or a missing input near node {rest[0].name!r}")
            pending = rest
        self.nodes = ordered

    # ------------------------------------------------------------- invariants
    def validate(self) -> None:
        """Check the invariants every pass must keep; raise GraphError if broken."""
        from ..ops import get_op  # local: ops import ir

        defined = set(self.inputs)
        for name in self.inputs:
            if name not in self.tensors:
                raise GraphError(f"graph input {name!r} has no tensor")
        for name, t in self.tensors.items():
            if t.name != name:
                raise GraphError(f"tensor key {name!r} holds tensor named {t.name!r}")
            if t.is_const:
                defined.add(name)
        seen_nodes = set()
        for n in self.nodes:
            if n.name in seen_nodes:
                raise GraphError(f"node name {n.name!r} used twice")
            seen_nodes.add(n.name)
            op = get_op(n.op)
            for i in n.inputs:
                if i and i not in defined:
                    raise GraphError(f"node {n.name!r} ({n.op}) reads {i!r} before it is defined")
            if op.attrs_type is not None and not isinstance(n.attrs, op.attrs_type):
                raise GraphError(f"node {n.name!r} ({n.op}) has attrs {type(n.attrs).__name__}")
            for o in n.outputs:
                if o in defined:
                    raise GraphError(f"tensor {o!r} is written twice (node {n.name!r})")
                if o not in self.tensors:
                    raise GraphError(f"node {n.name!r} writes unknown tensor {o!r}")
                defined.add(o)
            expected = op.infer(n, self)
            for o, (shape, _dtype) in zip(n.outputs, expected):
                t = self.tensors[o]
                if tuple(shape) != t.shape:
                    raise GraphError(
                        f"node {n.name!r} ({n.op}) output {o!r} has shape {t.shape}, "
                        f"op says {tuple(shape)}"
                    )
        for o in self.outputs:
            if o not in defined:
                raise GraphError(f"graph output {o!r} is never computed")

    # ----------------------------------------------------------------- display
    def dump(self) -> str:
        lines = [f"graph {self.name}"]
        for name in self.inputs:
            perm = f" (external perm {self.input_perm[name]})" if name in self.input_perm else ""
            lines.append(f"  input  {name}: {self.tensors[name].describe()}{perm}")
        for n in self.nodes:
            lines.append(f"  {n.name}: {n.op}")
            for i in n.inputs:
                if i:
                    lines.append(f"      <- {i}: {self.tensors[i].describe()}")
            for o in n.outputs:
                lines.append(f"      -> {o}: {self.tensors[o].describe()}")
            if dataclasses.is_dataclass(n.attrs):
                lines.append(f"      {n.attrs}")
        for name in self.outputs:
            perm = f" (external perm {self.output_perm[name]})" if name in self.output_perm else ""
            lines.append(f"  output {name}: {self.tensors[name].describe()}{perm}")
        return "\n".join(lines)
