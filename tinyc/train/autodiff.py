"""The backward graph, derived at compile time and pruned to what the update set
needs (the Tiny Training Engine's idea): gradients flow back only as far as the
earliest updated layer, a frozen weight gets no weight-gradient computation, and a
layer updated on its first k output channels computes those k only.

``training_graph`` takes the canonical (float, NHWC) graph of a classifier and an
update set and returns a graph that computes, for one sample and its label, the
softmax cross-entropy loss on the logits that feed the final Softmax and the
gradient of every updated parameter. The forward ops' ``backward`` methods
(tinyc/ops) hold the gradient rules; this module walks the graph in reverse and
gives them a builder (``Backward``).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np

from ..errors import TinycError
from ..ir import Graph, Node, Tensor
from ..ops import get_op
from .spec import LayerUpdate

LABEL = "label"
LOSS = "loss"


@dataclass
class Param:
    """An updated parameter: an IR constant of a layer node."""

    tensor: str  # the IR constant (Conv2D weight [O, KH, KW, C/g], FullyConnected [O, I], bias [O])
    kind: str  # "weight" | "bias"
    node: str  # the IR node it belongs to
    update: LayerUpdate
    channels: int  # its first this many output channels are updated
    grad: str = ""  # the gradient tensor in the training graph ([channels, ...])


@dataclass
class TrainingGraph:
    graph: Graph  # forward (without the final Softmax) + loss + backward nodes
    params: list[Param]
    logits: str
    backward_from: int  # index in graph.nodes of the first backward node


def layer_nodes(graph: Graph) -> dict[int, Node]:
    """IR layer nodes (Conv2D / FullyConnected) by the position of the ONNX node they
    were imported from."""
    return {n.origin: n for n in graph.nodes if n.op in ("Conv2D", "FullyConnected") and n.origin is not None}


def find_params(graph: Graph, updates: list[LayerUpdate]) -> list[Param]:
    by_origin = layer_nodes(graph)
    params = []
    for u in updates:
        node = by_origin.get(u.layer.position)
        if node is None:
            raise TinycError(f"{u.layer.describe()} was merged away when tinyc simplified the model; "
                             "update another layer")
        if u.weight_channels:
            params.append(Param(node.inputs[1], "weight", node.name, u, u.weight_channels))
        if u.bias:
            if len(node.inputs) < 3 or not node.inputs[2]:
                out = graph.tensors[node.outputs[0]].shape[-1]
                node.inputs = node.inputs[:2] + [graph.add_const(f"{node.name}_bias", np.zeros(out, np.float32))]
            params.append(Param(node.inputs[2], "bias", node.name, u, graph.tensors[node.inputs[2]].shape[0]))
    return params


def _final_softmax(graph: Graph) -> Node:
    producers = {o: n for n in graph.nodes for o in n.outputs}
    if len(graph.outputs) != 1 or graph.outputs[0] not in producers:
        raise TinycError(f"{graph.name}: tinyc trains classifiers with one output, a Softmax over the classes; "
                         f"this model has outputs {graph.outputs}")
    node = producers[graph.outputs[0]]
    if node.op != "Softmax":
        raise TinycError(f"{graph.name}: the output comes from {node.op}, not a final Softmax; tinyc trains "
                         "classifiers with softmax cross-entropy on the logits that feed it")
    logits = graph.tensors[node.inputs[0]]
    if int(np.prod(logits.shape)) != logits.shape[-1] or logits.shape[-1] < 2:
        raise TinycError(f"{graph.name}: the final Softmax takes {list(logits.shape)}; training needs one row of "
                         "at least two class scores")
    return node


class Backward:
    """What a gradient rule sees: the forward graph, which tensors need a gradient,
    and where to put the nodes and gradients it makes."""

    def __init__(self, graph: Graph, params: list[Param], active: set[str]):
        self.graph = graph
        self.nodes: list[Node] = []
        self._channels = {p.tensor: p.channels for p in params}
        self._params = {p.tensor: p for p in params}
        self._active = active
        self._parts: dict[str, list[str]] = {}  # forward tensor -> gradient contributions
        self._grads: dict[str, str] = {}

    def needs(self, tensor: str) -> bool:
        """Does the update set need the gradient of this forward tensor?"""
        return tensor in self._active

    def update_channels(self, tensor: str) -> int:
        """How many leading output channels of this parameter are updated (0: frozen)."""
        return self._channels.get(tensor, 0)

    def emit(self, op: str, inputs: list[str], attrs, origin: Node | str) -> str:
        """Add a backward node (named after the forward node, or name, it serves)."""
        out = self.graph.unique_name(f"{origin if isinstance(origin, str) else origin.name}:{op}")
        node = Node(op, out, list(inputs), [out], attrs)
        ((shape, dtype),) = get_op(op).infer(node, self.graph)
        self.graph.add_tensor(Tensor(out, shape, dtype))
        self.nodes.append(node)
        return out

    def add(self, tensor: str, grad: str) -> None:
        """A contribution to the gradient of a forward tensor (fan-out sums them)."""
        self._parts.setdefault(tensor, []).append(grad)

    def reached(self, tensor: str) -> bool:
        """Has any gradient reached this forward tensor?"""
        return tensor in self._parts

    def grad(self, tensor: str) -> str:
        """The gradient of a forward tensor: the sum of its contributions."""
        if tensor not in self._grads:
            parts = self._parts.get(tensor)
            if not parts:
                raise AssertionError(f"no gradient reaches {tensor!r}")
            from ..ops.elementwise import BinaryAttrs

            total = parts[0]
            for other in parts[1:]:
                total = self.emit("Add", [total, other], BinaryAttrs(), f"{tensor}:sum")
            self._grads[tensor] = total
        return self._grads[tensor]

    def pre_activation(self, node: Node) -> str:
        """The gradient before the node's fused clamp (ReLU, ReLU6)."""
        from ..ops.grad import ClampGradAttrs

        dy = self.grad(node.outputs[0])
        act = node.attrs.act
        if act.is_identity:
            return dy
        return self.emit("ClampGrad", [dy, node.outputs[0]], ClampGradAttrs(act), node)

    def param_grad(self, tensor: str, grad: str) -> None:
        self._params[tensor].grad = grad


def training_graph(graph: Graph, updates: list[LayerUpdate]) -> TrainingGraph:
    """The loss and the updated parameters' gradients for one (sample, label), added to
    a copy of the canonical float graph."""
    g = copy.deepcopy(graph)
    softmax = _final_softmax(g)
    logits = softmax.inputs[0]
    g.nodes.remove(softmax)
    params = find_params(g, updates)
    updated = {p.tensor for p in params}
    forward = list(g.nodes)
    # the tensors whose gradient is needed: everything downstream of an updated layer
    active: set[str] = set()
    for node in forward:
        if any(i in updated or i in active for i in node.inputs if i):
            active.update(node.outputs)

    g.add_tensor(Tensor(LABEL, (), np.int32))
    g.inputs.append(LABEL)
    g.outputs = [LOSS]
    b = Backward(g, params, active)
    dlogits = g.unique_name("dlogits")
    g.add_tensor(Tensor(LOSS, (), np.float32))
    g.add_tensor(Tensor(dlogits, g.tensors[logits].shape, np.float32))
    b.nodes.append(Node("SoftmaxCrossEntropy", "loss", [logits, LABEL], [LOSS, dlogits]))
    b.add(logits, dlogits)
    for node in reversed(forward):
        if any(o in active and b.reached(o) for o in node.outputs):
            get_op(node.op).backward(node, g, b)
    missing = [p for p in params if not p.grad]
    if missing:
        raise AssertionError(f"no gradient for {[p.tensor for p in missing]}")
    start = len(g.nodes)
    g.nodes.extend(b.nodes)
    g.outputs += [p.grad for p in params]
    return TrainingGraph(g, params, logits, start)


def to_onnx_layout(param: Param, value: np.ndarray) -> np.ndarray:
    """A parameter's value or gradient (tinyc's layout, first ``channels`` output
    channels) in the layout of its ONNX initializer: Conv [O, C/g, KH, KW] (1-D:
    [O, C/g, KW]), Gemm with transB [O, I], MatMul and Gemm without it [I, O]."""
    layer = param.update.layer
    if param.kind == "bias":
        return value
    if value.ndim == 4:  # Conv2D [O, KH, KW, C/g]
        out = value.transpose(0, 3, 1, 2)
        return out[:, :, 0, :] if layer.kernel_rank == 1 else out
    return value if layer.transposed_weight else value.T
