"""Float training steps in numpy (``--precision float``): the float graph's
forward and backward (the ops' float references and gradient rules), SGD on
float parameters. It checks the gradient rules against PyTorch; the int8 step,
which the device runs, is lowered to kernels in lower.py and run in numpy by
``lower.run_step``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..ir import Graph
from ..ops import get_op
from .autodiff import LABEL, LOSS, Param, TrainingGraph, training_graph
from .spec import LayerUpdate


def _run_nodes(graph: Graph, nodes, values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    def value(name):
        if not name:
            return None
        if name not in values:
            values[name] = graph.tensors[name].float_value()
        return values[name]

    for node in nodes:
        for name, v in zip(node.outputs, get_op(node.op).ref(node, [value(i) for i in node.inputs])):
            values[name] = v
    return values


@dataclass
class StepResult:
    loss: float
    grads: dict[str, np.ndarray]  # param tensor -> gradient (tinyc's layout, updated channels)
    logits: np.ndarray


class FloatTrainer:
    """SGD, batch 1, on the float graph."""

    def __init__(self, graph: Graph, updates: list[LayerUpdate]):
        self.tg: TrainingGraph = training_graph(graph, updates)
        self.input = graph.inputs[0]

    @property
    def params(self) -> list[Param]:
        return self.tg.params

    def logits(self, x: np.ndarray) -> np.ndarray:
        g = self.tg.graph
        values = _run_nodes(g, g.nodes[:self.tg.backward_from], {self.input: x.astype(np.float32)})
        return values[self.tg.logits]

    def gradients(self, x: np.ndarray, label: int) -> StepResult:
        g = self.tg.graph
        values = _run_nodes(g, g.nodes, {self.input: x.astype(np.float32), LABEL: np.int32(label)})
        return StepResult(float(values[LOSS]), {p.tensor: values[p.grad] for p in self.params},
                          values[self.tg.logits])

    def step(self, x: np.ndarray, label: int, lr: float) -> StepResult:
        r = self.gradients(x, label)
        for p in self.params:
            t = self.tg.graph.tensors[p.tensor]
            t.data = t.data.copy()
            t.data[:p.channels] -= np.float32(lr) * r.grads[p.tensor]
        return r
