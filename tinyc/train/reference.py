"""Training steps in numpy: the executable meaning of a training step, as the
reference interpreter is for inference.

``FloatTrainer`` trains the float graph (``--precision float``): float forward,
float backward, SGD on float parameters. ``Int8Trainer`` trains the deployed int8
graph: the forward is the int8 program (the numpy kernels, bit-exact with
``NAME_invoke``), the backward runs in float32 on the dequantized int8 activations
it saved, and updates land on the int8 parameters themselves: an int32 bias moves
in its own (fine) units, an int8 weight in units of its per-channel scale
(quantization-aware scaling: the float SGD step, lr x gradient, divided by the
scale), with the part that does not make a whole unit kept according to ``rounding``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..ir import Graph
from ..ops import get_op
from .autodiff import LABEL, LOSS, Param, TrainingGraph, training_graph
from .spec import LayerUpdate

# How an int8 weight takes an update that is not a whole number of its units
# (tinyc_sgd_update_s8; rounding is stochastic where said, from its counter generator):
#   nearest     round to nearest (most updates of fine-tuning vanish)
#   stochastic  round up with the probability of the fraction (unbiased)
#   residue     keep the fraction in a second byte per weight (1/256 units, the
#               step rounded stochastically onto that grid so that small steps
#               are kept on average); the weight is always the nearest integer to
#               weight + residue / 256 (residue in [-128, 127]): 16-bit precision
#               for the updated slice only
#   float       (a yardstick, no C kernel yet) keep a float32 copy of the updated
#               slice (4 bytes per weight); the int8 weight is its nearest integer
ROUNDING = ("nearest", "stochastic", "residue", "float")


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


class Int8Trainer:
    """SGD, batch 1, on the int8 graph (a quantized canonical graph)."""

    def __init__(self, graph: Graph, updates: list[LayerUpdate], rounding: str = "residue", seed: int = 0):
        from ..engines import compile_int8

        if rounding not in ROUNDING:
            raise ValueError(rounding)
        self.tg = training_graph(graph, updates)  # before lowering: the float view of the same parameters
        self.program = compile_int8(graph)
        self.input = graph.inputs[0]
        self.rounding = rounding
        self.rng_state = seed & 0xFFFFFFFF  # the update kernel's counter generator
        self.residue = {p.tensor: np.zeros(self.tg.graph.tensors[p.tensor].shape, np.int8)
                        for p in self.tg.params if p.kind == "weight"}
        self.master = {p.tensor: self.tg.graph.tensors[p.tensor].data.astype(np.float32)
                       for p in self.tg.params if p.kind == "weight" and rounding == "float"}
        self._backward = self.tg.graph.nodes[self.tg.backward_from:]

    @property
    def params(self) -> list[Param]:
        return self.tg.params

    def forward(self, x_q: np.ndarray) -> dict[str, np.ndarray]:
        from ..reference import run_int8

        return run_int8(self.program, {self.input: x_q}, keep_all=True)

    def logits_q(self, x_q: np.ndarray) -> np.ndarray:
        return self.forward(x_q)[self.tg.logits]

    def gradients(self, x_q: np.ndarray, label: int) -> StepResult:
        acts = self.forward(x_q)
        g = self.tg.graph
        values = {}
        for name, q in acts.items():
            t = self.program.graph.tensors[name]
            if name in g.tensors and t.quant is not None:
                values[name] = t.quant.dequantize(q).astype(np.float32)
        values[LABEL] = np.int32(label)
        values = _run_nodes(g, self._backward, values)
        return StepResult(float(values[LOSS]), {p.tensor: values[p.grad] for p in self.params},
                          values[self.tg.logits])

    def step(self, x_q: np.ndarray, label: int, lr: float) -> StepResult:
        r = self.gradients(x_q, label)
        for p in self.params:
            self._update(p, r.grads[p.tensor], lr)
        return r

    def _update(self, p: Param, grad: np.ndarray, lr: float) -> None:
        """Apply one SGD step to the int8 / int32 parameter with the update kernels'
        numpy specs (tinyc/kernels/train.py, bit-exact with the C), in the program
        and in the training graph's float view alike."""
        from ..kernels.train import sgd_update_s8, sgd_update_s32

        t8 = self.program.graph.tensors[p.tensor]
        k = p.channels
        scale = np.asarray(t8.quant.scale, np.float32).reshape(-1)
        per_channel = int(scale.size > 1)
        data = t8.data.copy()
        if p.kind == "bias":  # int32 in units of s_in x s_w: fine enough to round to nearest
            data[:k] = sgd_update_s32(k, lr, grad, scale, per_channel, data[:k])
        elif self.rounding == "float":
            s = (scale[:k] if per_channel else np.repeat(scale, k)).reshape((k,) + (1,) * (grad.ndim - 1))
            m = self.master[p.tensor]
            m[:k] -= (np.float32(lr) * grad) / s
            data[:k] = np.clip(np.rint(m[:k]), -127, 127).astype(np.int8)
        else:
            count = int(np.prod(data.shape[1:]))
            residue = self.residue[p.tensor][:k] if self.rounding == "residue" else None
            rng = self.rng_state if self.rounding != "nearest" else None
            w, res, rng = sgd_update_s8(k, count, lr, grad, scale, per_channel, data[:k], residue, rng)
            data[:k] = w.reshape(data[:k].shape)
            if res is not None:
                self.residue[p.tensor][:k] = res.reshape(data[:k].shape)
            if rng is not None:
                self.rng_state = rng
        t8.data = data
        self.tg.graph.tensors[p.tensor].data = data.copy()
