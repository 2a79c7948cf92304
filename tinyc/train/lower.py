"""Lowering a training step: the pruned backward graph (autodiff.py) of an int8
model -> one program of kernel calls, ``NAME_train_step``.

The step is the deployed int8 forward (the inference program's own calls up to
the logits, bit-exact with ``NAME_invoke``), the loss, and the backward in
float32 on the saved int8 activations (tinyc/train.h). Each parameter is
updated as soon as its last reader in the backward has run (operator
reordering: a layer's weight gradient never outlives that layer), with
quantization-aware scaling: an int8 weight moves in units of its per-channel
scale and keeps the fraction of a unit in a residue byte; an int32 bias moves in
its own units (input scale x weight scale).

The parameters a step updates become ``trainable`` tensors (SRAM in the
generated C, shared by ``NAME_invoke``); their residues are ``state`` tensors.
Everything else the step computes lives in the planned arena, its lifetimes from
the call order: a saved activation lives until the backward reads it.

``run_step`` executes a step with the kernels' numpy specs: the executable
meaning of the C, as ``reference.run_int8`` is for inference.
"""

from __future__ import annotations

import dataclasses
import zlib
from dataclasses import dataclass

import numpy as np

from ..errors import TinycError
from ..ir import Graph, Node, Tensor
from ..ir.program import KernelCall, Program, Ref, Runtime
from ..kernels import run_kernel
from ..kernels.params import ConvParams, PoolParams
from ..kernels.train import TRAIN_KERNELS, UPDATE_KERNELS
from ..ops.lowering import act_range
from .autodiff import LABEL, LOSS, Param, TrainingGraph, training_graph
from .spec import LayerUpdate

LABEL_ARG, LR_ARG = Runtime("label"), Runtime("lr")
ROUNDINGS = ("residue", "stochastic", "nearest")


@dataclass
class TrainedParam:
    """An updated parameter of the int8 program and what its update keeps."""

    param: Param  # the training graph's view (layer, kind, channels)
    tensor: str  # the int8 / int32 tensor of the program (trainable)
    residue: str | None  # int8 [channels, ...] state tensor (weights with rounding "residue")


@dataclass
class TrainProgram:
    inference: Program  # NAME_invoke
    step: Program  # NAME_train_step: forward, loss, backward and updates
    params: list[TrainedParam]
    logits: str
    rounding: str
    # saved activations computed again in the backward: (tensor, its copy, node, MACs)
    recomputed: list[tuple[str, str, str, int]] = dataclasses.field(default_factory=list)
    model_hash: int = 0  # CRC-32 of the model's parameters as compiled, before any training

    @property
    def layout_hash(self) -> int:
        """CRC-32 of what the persisted state holds (each state tensor's name, type and
        shape, and the rounding): a slot written under another layout is not loaded."""
        text = self.rounding + "".join(f";{n}:{np.dtype(self.graph.tensors[n].dtype).name}:"
                                       f"{'x'.join(map(str, self.graph.tensors[n].shape))}"
                                       for n in self.state_tensors())
        return zlib.crc32(text.encode())

    @property
    def recompute_macs(self) -> int:
        return sum(r[3] for r in self.recomputed)

    @property
    def graph(self) -> Graph:
        return self.step.graph

    def state_tensors(self) -> list[str]:
        """The persistent values of training, in the order NAME_train_state_save writes them."""
        names = [p.tensor for p in self.params]
        names += [p.residue for p in self.params if p.residue]
        return names

    def update_order(self) -> list[TrainedParam]:
        """The parameters in the order the step updates them (and a
        TINYC_TRAIN_OBSERVE build reports their gradients)."""
        by_tensor = {p.tensor: p for p in self.params}
        return [by_tensor[c.state[0]] for c in self.step.calls if c.state]

    def trainable_bytes(self) -> int:
        """SRAM the step keeps across calls: updated parameters, residues, generator."""
        return sum(self.graph.tensors[n].nbytes for n in self.state_tensors()) + 4


def _needed_calls(calls: list[KernelCall], target: str) -> list[KernelCall]:
    """The calls ``target`` depends on, in program order."""
    producer = {o: c for c in calls for o in c.outputs}
    need, stack = set(), [target]
    while stack:
        t = stack.pop()
        c = producer.get(t)
        if c is not None and id(c) not in need:
            need.add(id(c))
            stack.extend(i for i in c.inputs if i)
    return [c for c in calls if id(c) in need]


FLT_MAX = float(np.finfo(np.float32).max)  # a float clamp bound standing for "none"


def _bound(v: float) -> float:
    return float(np.clip(v, -FLT_MAX, FLT_MAX))


class _Lowering:
    """Backward nodes -> training kernel calls. ``precision`` "int8": the saved
    activations and the weights are the int8 program's, read with their scales;
    "float": the float graph's own float32 tensors (the *_ff32 kernels)."""

    def __init__(self, graph: Graph, tg: TrainingGraph, rounding: str, precision: str = "int8", max_step: int = 1):
        self.g = graph
        self.tg = tg
        self.rounding = rounding
        self.max_step = max_step
        self.float = precision == "float"
        self.calls: list[KernelCall] = []

    # ---------------------------------------------------------------- tensors
    def saved(self, name: str, node: Node) -> tuple[Ref, float, int]:
        """A forward activation the backward reads: its int8 tensor, scale and zero point."""
        if self.float:
            return Ref(name), 1.0, 0
        t = self.g.tensors.get(name)
        if t is None or t.is_const or t.quant is None or t.dtype is not np.int8:
            raise TinycError(f"node {node.name!r}: the backward reads {name!r}, which the int8 program does not "
                             "keep as an int8 activation; update only later layers")
        return Ref(name), float(np.float32(t.quant.scale)), int(t.quant.zero_point)

    def grad_tensor(self, name: str) -> str:
        """A float32 gradient of the training graph, added to the program's graph."""
        if name not in self.g.tensors:
            src = self.tg.graph.tensors[name]
            self.g.add_tensor(Tensor(name, src.shape, np.float32))
        return name

    def scales(self, name: str, node: Node) -> str:
        """A float32 constant: the per-output-channel scales of an int8 weight / int32 bias."""
        t = self.g.tensors[name]
        if t.quant is None:
            raise TinycError(f"node {node.name!r}: parameter {name!r} has no quantization scale")
        s = np.asarray(t.quant.scale, np.float32).reshape(-1)
        return self.g.add_const(f"{name}:scale", np.repeat(s, t.shape[0]) if s.size == 1 else s)

    # ------------------------------------------------------------------ calls
    def emit(self, kernel: str, node: Node, args: list, outputs: list[str], state: tuple[str, ...] = ()) -> None:
        self.calls.append(_call(kernel, node.name, tuple(args), outputs, state))

    def lower(self, node: Node) -> None:
        g, op = self.tg.graph, node.op
        ins = node.inputs
        outs = [self.grad_tensor(o) for o in node.outputs]
        shape = g.tensors[node.outputs[0]].shape
        size = int(np.prod(shape))
        if op == "SoftmaxCrossEntropy":
            logits, scale, zero = self.saved(ins[0], node)
            n = int(np.prod(g.tensors[ins[0]].shape))
            if self.float:
                self.emit("softmax_xent_ff32", node, [n, logits, LABEL_ARG], outs)
            else:
                self.emit("softmax_xent_f32", node, [n, logits, scale, zero, LABEL_ARG], outs)
        elif op == "ClampGrad":
            y, scale, zero = self.saved(ins[1], node)
            act = node.attrs.act
            if self.float:
                self.emit("clamp_grad_ff32", node, [size, Ref(ins[0]), y, _bound(act.lo), _bound(act.hi)], outs)
            else:
                lo, hi = act_range(act, scale, zero)
                lo = lo if act.lo != -np.inf else -129
                hi = hi if act.hi != np.inf else 128
                self.emit("clamp_grad_f32", node, [size, Ref(ins[0]), y, lo, hi], outs)
        elif op == "Add":
            self.emit("add_f32", node, [size, Ref(ins[0]), Ref(ins[1])], outs)
        elif op == "Slice":
            a = node.attrs
            src = g.tensors[ins[0]].shape
            if any(st != 1 for st in a.steps) or len(src) > 4:
                raise TinycError(f"node {node.name!r}: a strided or {len(src)}-D slice has no training kernel yet")
            lead = (1,) * (4 - len(src))
            dims = [self.g.add_const(f"{node.name}:{what}", np.array(lead + tuple(v), np.int32))
                    for what, v in (("in_shape", src), ("starts", a.starts),
                                    ("out_shape", tuple(e - s for s, e in zip(a.starts, a.ends))))]
            self.emit("slice_f32", node, [*map(Ref, dims), Ref(ins[0])], outs)
        elif op == "Reshape":
            self.calls.append(KernelCall("alias", None, [ins[0]], outs, node.name))
        elif op in ("Conv2DGradInput", "Conv2DGradWeight"):
            a = node.attrs.conv
            if op == "Conv2DGradInput":
                dz, w = ins
                x_shape = node.attrs.shape
            else:
                x, dz = ins
                x_shape = g.tensors[x].shape
                w = None
            _, oh, ow, oc = g.tensors[dz].shape
            kh, kw = (self.tg.graph.tensors[w].shape[1:3] if w else node.attrs.shape[1:3])
            p = ConvParams(x_shape[1], x_shape[2], x_shape[3], oh, ow, oc, kh, kw, *a.strides, *a.dilations,
                           a.pads[0], a.pads[1], a.group, oc // x_shape[3] if a.group == x_shape[3] else 1)
            if op == "Conv2DGradInput" and self.float:
                self.emit("conv2d_grad_input_ff32", node, [p, Ref(dz), Ref(w)], outs)
            elif op == "Conv2DGradInput":
                self.emit("conv2d_grad_input_f32", node, [p, Ref(dz), Ref(w), Ref(self.scales(w, node))], outs)
            elif self.float:
                self.emit("conv2d_grad_weight_ff32", node, [p, node.attrs.shape[0], Ref(x), Ref(dz)], outs)
            else:
                xq, scale, zero = self.saved(x, node)
                self.emit("conv2d_grad_weight_f32", node, [p, node.attrs.shape[0], xq, scale, zero, Ref(dz)], outs)
        elif op == "BiasGrad":
            dz = ins[0]
            dshape = g.tensors[dz].shape
            rows = int(np.prod(dshape[:-1]))
            self.emit("bias_grad_f32", node, [rows, dshape[-1], node.attrs.channels, Ref(dz)], outs)
        elif op == "FullyConnectedGradInput":
            dz, w = ins
            o, n_in = g.tensors[w].shape
            rows = int(np.prod(g.tensors[dz].shape[:-1]))
            if self.float:
                self.emit("fc_grad_input_ff32", node, [rows, n_in, o, Ref(dz), Ref(w)], outs)
            else:
                self.emit("fc_grad_input_f32", node, [rows, n_in, o, Ref(dz), Ref(w), Ref(self.scales(w, node)), 1],
                          outs)
        elif op == "FullyConnectedGradWeight":
            x, dz = ins
            xq, scale, zero = self.saved(x, node)
            n_in = g.tensors[x].shape[-1]
            o = g.tensors[dz].shape[-1]
            rows = int(np.prod(g.tensors[dz].shape[:-1]))
            if self.float:
                self.emit("fc_grad_weight_ff32", node, [rows, n_in, o, node.attrs.channels, xq, Ref(dz)], outs)
            else:
                self.emit("fc_grad_weight_f32", node, [rows, n_in, o, node.attrs.channels, xq, scale, zero, Ref(dz)],
                          outs)
        elif op in ("AvgPool2DGrad", "MaxPool2DGrad"):
            a = node.attrs.pool
            if tuple(a.dilations) != (1, 1):
                raise TinycError(f"node {node.name!r}: a dilated pool has no training kernel yet")
            x_shape = node.attrs.shape
            _, oh, ow, _ = g.tensors[ins[0]].shape
            p = PoolParams(x_shape[1], x_shape[2], x_shape[3], oh, ow, *a.kernel, *a.strides, a.pads[0], a.pads[1],
                           int(a.count_include_pad))
            if op == "AvgPool2DGrad":
                self.emit("avg_pool_grad_f32", node, [p, Ref(ins[0])], outs)
            else:
                kernel = "max_pool_grad_ff32" if self.float else "max_pool_grad_f32"
                self.emit(kernel, node, [p, Ref(ins[0]), self.saved(ins[1], node)[0]], outs)
        elif op == "ReduceMeanGrad":
            shape_in = node.attrs.shape
            axes = sorted(node.attrs.axes)
            if axes != list(range(axes[0], axes[-1] + 1)):
                raise TinycError(f"node {node.name!r}: a mean over non-adjacent axes has no training kernel yet")
            outer = int(np.prod(shape_in[:axes[0]]))
            reduce = int(np.prod(shape_in[axes[0]:axes[-1] + 1]))
            inner = int(np.prod(shape_in[axes[-1] + 1:]))
            self.emit("mean_grad_f32", node, [outer, reduce, inner, Ref(ins[0])], outs)
        else:
            raise TinycError(f"node {node.name!r}: the backward op {op} has no C training kernel yet; "
                             "update only layers after it, or train with --engine ref")

    def _pre_clamp(self, out: str, act) -> str:
        """Where an op with a fused clamp the kernel lacks writes: a temporary the
        clamp then overwrites in place (the op's own output when there is no clamp)."""
        if act is None or act.is_identity:
            return out
        t = self.g.tensors[out]
        return self.g.add_tensor(Tensor(self.g.unique_name(f"{out}:unclamped"), t.shape, np.float32)).name

    def _clamp(self, node: Node, out: str, act, lo: float, hi: float) -> None:
        if act is not None and not act.is_identity:
            src = self.calls[-1].outputs[0]
            self.emit("clamp_f32", node, [self.g.tensors[out].size, lo, hi, Ref(src)], [out])

    def forward(self, node: Node) -> None:
        """A forward node of the float graph -> float32 kernel calls."""
        g, op = self.g, node.op
        ins, out = node.inputs, node.outputs[0]
        shape = g.tensors[out].shape
        size = int(np.prod(shape))
        act = getattr(node.attrs, "act", None)
        lo, hi = (_bound(act.lo), _bound(act.hi)) if act is not None else (-FLT_MAX, FLT_MAX)
        bias = Ref(ins[2]) if len(ins) > 2 and ins[2] else None
        if op == "Conv2D":
            a = node.attrs
            x_shape = g.tensors[ins[0]].shape
            o, kh, kw, _ = g.tensors[ins[1]].shape
            p = ConvParams(x_shape[1], x_shape[2], x_shape[3], shape[1], shape[2], o, kh, kw, *a.strides,
                           *a.dilations, a.pads[0], a.pads[1], a.group, o // x_shape[3] if a.group == x_shape[3] else 1)
            self.emit("conv2d_f32", node, [p, Ref(ins[0]), Ref(ins[1]), bias, lo, hi], [out])
        elif op == "FullyConnected":
            o, n_in = g.tensors[ins[1]].shape
            rows = int(np.prod(g.tensors[ins[0]].shape[:-1]))
            self.emit("fc_f32", node, [rows, n_in, o, Ref(ins[0]), Ref(ins[1]), bias, lo, hi], [out])
        elif op == "Add" and g.tensors[ins[0]].shape == g.tensors[ins[1]].shape == shape:
            self.emit("add_f32", node, [size, Ref(ins[0]), Ref(ins[1])], [self._pre_clamp(out, act)])
            self._clamp(node, out, act, lo, hi)
        elif op == "Clamp":
            self.emit("clamp_f32", node, [size, lo, hi, Ref(ins[0])], [out])
        elif op in ("AvgPool2D", "MaxPool2D") and tuple(node.attrs.dilations) == (1, 1):
            a = node.attrs
            x_shape = g.tensors[ins[0]].shape
            p = PoolParams(x_shape[1], x_shape[2], x_shape[3], shape[1], shape[2], *a.kernel, *a.strides, a.pads[0],
                           a.pads[1], int(getattr(a, "count_include_pad", 0)))
            self.emit("avg_pool_f32" if op == "AvgPool2D" else "max_pool_f32", node, [p, Ref(ins[0])],
                      [self._pre_clamp(out, act)])
            self._clamp(node, out, act, lo, hi)
        elif op == "ReduceMean" and sorted(node.attrs.axes) == list(range(min(node.attrs.axes),
                                                                          max(node.attrs.axes) + 1)):
            x_shape = g.tensors[ins[0]].shape
            axes = sorted(node.attrs.axes)
            self.emit("mean_f32", node, [int(np.prod(x_shape[:axes[0]])), int(np.prod(x_shape[axes[0]:axes[-1] + 1])),
                                         int(np.prod(x_shape[axes[-1] + 1:])), Ref(ins[0])], [out])
        elif op == "Concat" and len(ins) == 2:
            axis = node.attrs.axis % len(shape)
            outer = int(np.prod(shape[:axis]))
            inner = [int(np.prod(g.tensors[i].shape[axis:])) for i in ins]
            self.emit("concat2_f32", node, [outer, *inner, Ref(ins[0]), Ref(ins[1])], [out])
        elif op == "Reshape":
            self.calls.append(KernelCall("alias", None, [ins[0]], [out], node.name))
        else:
            raise TinycError(f"node {node.name!r} ({op}): the float training step in C has no kernel for it; "
                             "train with --engine ref or --precision int8")

    def _generator(self) -> str:
        return "rng" if self.rounding in ("residue", "stochastic") else ""

    def fused_update(self, tp: TrainedParam, grad_call: KernelCall) -> None:
        """The weight-gradient call ``grad_call`` turned into its fused form, which
        applies each channel's gradient from one channel of scratch."""
        t = self.g.tensors[tp.tensor]
        count = int(np.prod(t.shape[1:]))
        node = Node("update", f"{tp.tensor}:update", [], [])
        scratch = self.g.add_tensor(Tensor(self.g.unique_name(f"{tp.tensor}:dw"), (count,), np.float32)).name
        scales = Ref(self.scales(tp.tensor, node))
        state = (tp.tensor, tp.residue or "", self._generator())
        if grad_call.kernel == "conv2d_grad_weight_f32":
            kernel = "conv2d_train_weight_s8"
        elif grad_call.kernel == "fc_grad_weight_f32":
            kernel = "fc_train_weight_s8"
        else:
            raise AssertionError(grad_call.kernel)
        self.emit(kernel, node, [*grad_call.args, LR_ARG, scales, self.max_step], [scratch], state)

    def update(self, tp: TrainedParam) -> None:
        p = tp.param
        t = self.g.tensors[tp.tensor]
        node = Node("update", f"{tp.tensor}:update", [], [])  # named after the parameter
        if self.float:
            count = p.channels * int(np.prod(t.shape[1:]))
            self.emit("sgd_update_f32", node, [count, LR_ARG, Ref(p.grad)], [], (tp.tensor,))
        elif p.kind == "bias":
            self.emit("sgd_update_s32", node, [p.channels, LR_ARG, Ref(p.grad), Ref(self.scales(tp.tensor, node)), 1],
                      [], (tp.tensor,))
        else:
            # state: the weight, its residue ("" for none), the generator ("" for none: round to nearest)
            count = int(np.prod(t.shape[1:]))
            self.emit("sgd_update_s8", node, [p.channels, count, LR_ARG, Ref(p.grad),
                                              Ref(self.scales(tp.tensor, node)), 1, self.max_step],
                      [], (tp.tensor, tp.residue or "", self._generator()))


def _call(kernel: str, node: str, args: tuple, outputs: list[str], state: tuple[str, ...] = ()) -> KernelCall:
    """A training kernel call by argument list (its inputs: the tensors it reads)."""
    return KernelCall(kernel, None, [a.name for a in args if isinstance(a, Ref)], list(outputs), node, args=tuple(args),
                      state=tuple(state))


def _parameters_hash(g: Graph) -> int:
    crc = 0
    for name in sorted(n for n, t in g.tensors.items() if t.is_const):
        crc = zlib.crc32(name.encode() + b"\0" + np.ascontiguousarray(g.tensors[name].data).tobytes(), crc)
    return crc


def _float_tensor(g: Graph, base: str, shape: tuple[int, ...]) -> str:
    return g.add_tensor(Tensor(g.unique_name(base), shape, np.float32)).name


def _sum_bias_tails(g: Graph, calls: list[KernelCall]) -> list[KernelCall]:
    """Where a gradient is read only to be summed per channel (the biases of the
    earliest updated layers, with nothing left to propagate), take the sums from
    the gradient-input calls that make it (conv2d_grad_input_sum_f32) and never
    store the [h, w, c] gradient. The clamp's mask and the sum distribute over
    a residual's Add: each term is summed on its own (a term some other call
    makes, a skip connection's, is masked and summed as it is) and the sums
    added. In ResNet-8's sparse step that gradient is 32 KB of float32, twice
    (main path and shortcut), at the peak."""
    producer = {o: c for c in calls for o in c.outputs}
    readers: dict[str, list[KernelCall]] = {}
    for c in calls:
        for i in c.inputs:
            if i:
                readers.setdefault(i, []).append(c)

    def terms(t: str, parent: KernelCall | None):
        """The terms whose sum is ``t``: (gradient-input calls nothing else reads,
        other (tensor, the add reading it), the adds in between)."""
        c = producer.get(t)
        if c is not None and len(readers.get(t, [])) == 1:
            if c.kernel == "conv2d_grad_input_f32":
                return [c], [], []
            if c.kernel == "add_f32" and c.inputs[0] != c.inputs[1]:
                a, b = terms(c.inputs[0], c), terms(c.inputs[1], c)
                return a[0] + b[0], a[1] + b[1], a[2] + b[2] + [c]
        return [], [(t, parent)], []

    replace: dict[int, list[KernelCall]] = {}
    drop: set[int] = set()
    for dz in dict.fromkeys(c.inputs[0] for c in calls if c.kernel == "bias_grad_f32"):
        sums = readers[dz]
        if any(c.kernel != "bias_grad_f32" for c in sums) or id(sums[0]) in replace:
            continue
        mask = producer.get(dz)
        if mask is not None and mask.kernel == "clamp_grad_f32":
            y, lo, hi = mask.args[2:5]
            inputs, others, adds = terms(mask.inputs[0], None)
            adds.append(mask)
        else:
            y, lo, hi = None, 0, 0
            inputs, others, adds = terms(dz, None)
        size, channels = g.tensors[dz].size, g.tensors[dz].shape[-1]
        if not inputs or any(c.args[0].in_c != channels for c in inputs):
            continue
        partial = []
        for c in inputs:
            partial.append(_float_tensor(g, f"{c.outputs[0]}:sum", (channels,)))
            replace[id(c)] = [_call("conv2d_grad_input_sum_f32", c.node, (*c.args, y, lo, hi), [partial[-1]])]
        for t, parent in others:
            src, here = t, replace.setdefault(id(parent), [])
            if y is not None:
                src = _float_tensor(g, f"{t}:masked", g.tensors[t].shape)
                here.append(_call("clamp_grad_f32", parent.node, (size, Ref(t), y, lo, hi), [src]))
            partial.append(_float_tensor(g, f"{t}:sum", (channels,)))
            here.append(_call("bias_grad_f32", parent.node, (size // channels, channels, channels, Ref(src)),
                              [partial[-1]]))
        total = partial[0]
        summing = []
        for more in partial[1:]:
            out = _float_tensor(g, f"{dz}:sum", (channels,))
            summing.append(_call("add_f32", sums[0].node, (channels, Ref(total), Ref(more)), [out]))
            total = out
        for c in sums:
            _, ch, k = c.args[:3]
            replace[id(c)] = [_call(c.kernel, c.node, (1, ch, k, Ref(total)), c.outputs)]
        replace[id(sums[0])] = summing + replace[id(sums[0])]
        drop.update(id(c) for c in adds)
    out: list[KernelCall] = []
    for c in calls:
        out += replace.get(id(c), [] if id(c) in drop else [c])
    return out


def _recompute(g: Graph, calls: list[KernelCall], backward_from: int,
               inputs: list[str]) -> tuple[list[KernelCall], list[tuple[str, str, str]]]:
    """Recompute instead of store, where it lowers the step's peak: a saved int8
    activation whose producer's inputs the backward keeps anyway is computed
    again right before its first backward reader (the same int8 kernel on the
    same bytes, so the same values), instead of living from the forward to the
    backward. Greedy over the saved activations, largest first, each kept only
    if the planned arena shrinks. Returns the calls and, per recomputed tensor,
    (the saved tensor, its recomputed copy, the node that computes it)."""
    from ..passes.memory import plan_memory

    def arena(cs: list[KernelCall]) -> int:
        return plan_memory(Program(g, cs, inputs, [LOSS]), reorder=False).arena_size

    forward = {o: c for c in calls[:backward_from] if not c.args and not c.is_alias for o in c.outputs}
    saved = sorted(dict.fromkeys(i for c in calls[backward_from:] for i in c.inputs if i in forward),
                   key=lambda t: -g.tensors[t].nbytes)  # a stable sort: the same choice on every run
    best, chosen = arena(calls), []
    for t in saved:
        producer = forward[t]
        at = next(k for k, c in enumerate(calls) if k >= backward_from and t in c.inputs)
        kept = all(g.tensors[i].is_const or any(i in c.inputs for c in calls[at:])
                   for i in producer.inputs if i)
        updated_before = any(c.state and c.state[0] in producer.inputs for c in calls[:at])
        if not kept or updated_before:
            continue
        again = g.unique_name(f"{t}:recomputed")
        copy = KernelCall(producer.kernel, producer.params, list(producer.inputs), [again], producer.node,
                          producer.scalars)
        trial = calls[:at] + [copy] + [_renamed(c, t, again) for c in calls[at:]]
        g.add_tensor(dataclasses.replace(g.tensors[t], name=again))
        size = arena(trial)
        if size < best:
            best, calls = size, trial
            chosen.append((t, again, producer.node))
        else:
            del g.tensors[again]
    return calls, chosen


def _macs(node: Node | None, graph: Graph) -> int:
    from ..ops import get_op

    return 0 if node is None else int(get_op(node.op).macs(node, graph))


def _renamed(c: KernelCall, old: str, new: str) -> KernelCall:
    if old not in c.inputs:
        return c
    args = tuple(Ref(new) if isinstance(a, Ref) and a.name == old else a for a in c.args)
    return KernelCall(c.kernel, c.params, [new if i == old else i for i in c.inputs], list(c.outputs), c.node,
                      c.scalars, args=args, state=c.state)


def lower_training(graph: Graph, updates: list[LayerUpdate], rounding: str = "residue",
                   fused: bool = True, precision: str = "int8", max_step: int = 1,
                   sum_bias_tails: bool = True, recompute: bool = True) -> TrainProgram:
    """The training step of a canonical graph. ``precision`` "int8": the graph is
    quantized and lowered in place (as compile_int8 does); the step trains the
    int8 program. "float": the float graph, float32 throughout (SGD on float
    parameters; ``rounding`` and ``fused`` do not apply). ``fused``: each int8
    weight's gradient is applied a channel at a time as it is computed (no whole
    weight gradient is kept); False keeps it whole before the update (to observe
    it: --dump-grads). ``max_step``: the most whole units of its scale one step
    may move an int8 weight (0: no limit; tinyc_sgd_update_s8's max_units).
    ``sum_bias_tails`` / ``recompute``: the two memory savings of the schedule
    (_sum_bias_tails, _recompute); off, every gradient and saved activation is
    stored (the tests compare the two)."""
    from ..engines import compile_int8

    if rounding not in ROUNDINGS:
        raise ValueError(rounding)
    tg = training_graph(graph, updates)  # before lowering changes the graph
    logits = tg.logits
    if precision == "float":
        g = tg.graph
        low = _Lowering(g, tg, rounding, "float")
        for node in g.nodes[:tg.backward_from]:
            low.forward(node)
        program = Program(g, low.calls, [graph.inputs[0]], [logits])
        low.calls = []
        fused = False
    else:
        program = compile_int8(graph)
        g = program.graph
        if logits not in g.tensors or g.tensors[logits].dtype is not np.int8:
            raise TinycError(f"{graph.name}: the logits {logits!r} are not an int8 tensor of the int8 program")
        low = _Lowering(g, tg, rounding, max_step=max_step)

    model_hash = _parameters_hash(g)
    params = []
    for p in tg.params:
        t = g.tensors[p.tensor]
        want = np.float32 if precision == "float" else (np.int32 if p.kind == "bias" else np.int8)
        if not t.is_const or t.dtype is not want:
            raise TinycError(f"{p.update.layer.describe()}: its {p.kind} is not a {np.dtype(want).name} constant "
                             f"of the {precision} program")
        t.kind = "trainable"
        residue = None
        if p.kind == "weight" and rounding == "residue" and precision == "int8":
            residue = g.add_const(f"{p.tensor}:residue", np.zeros((p.channels,) + t.shape[1:], np.int8))
            g.tensors[residue].kind = "state"
        params.append(TrainedParam(p, p.tensor, residue))

    for node in tg.graph.nodes[tg.backward_from:]:
        low.lower(node)
    calls = _sum_bias_tails(g, low.calls) if sum_bias_tails else low.calls
    for tp in params:
        # the update goes right after the last call that reads the parameter (the
        # input gradient needs the weights before the step) or makes its gradient
        made = next(k for k, c in enumerate(calls) if tp.param.grad in c.outputs)
        last = max([made] + [k for k, c in enumerate(calls) if tp.tensor in c.inputs])
        low.calls = []
        if fused and tp.param.kind == "weight":
            low.fused_update(tp, calls[made])
            calls.insert(last + 1, low.calls[0])
            del calls[made]
        else:
            low.update(tp)
            calls.insert(last + 1, low.calls[0])
    forward = _needed_calls(program.calls, logits)
    calls, recomputed = ((forward + calls, []) if not recompute else
                         _recompute(g, forward + calls, len(forward), list(program.inputs)))
    nodes = {n.name: n for n in tg.graph.nodes}
    recomputed = [(t, again, node, _macs(nodes.get(node), tg.graph)) for t, again, node in recomputed]
    step = Program(g, calls, list(program.inputs), [LOSS])
    return TrainProgram(program, step, params, logits, rounding if precision == "int8" else "float", recomputed,
                        model_hash)


# ----------------------------------------------------------------- numpy run
def _execute(tp: TrainProgram, calls: list[KernelCall], values: dict[str, np.ndarray], runtime: dict,
             rng: int, observe=None) -> int:
    """Run calls with the numpy specs of their kernels; returns the generator state."""
    g = tp.graph
    by_tensor = {p.tensor: p for p in tp.params}

    def value(name):
        if name in values:
            return values[name]
        t = g.tensors[name]
        if t.is_const:
            return t.data
        raise AssertionError(f"{name!r} read before it is computed")

    for call in calls:
        if call.is_alias:
            values[call.outputs[0]] = value(call.inputs[0]).reshape(g.tensors[call.outputs[0]].shape)
            continue
        if not call.args:  # an int8 inference kernel
            y = run_kernel(call.kernel, call.params, call.scalars, [value(i) if i else None for i in call.inputs])
            values[call.outputs[0]] = np.ascontiguousarray(y, np.int8).reshape(g.tensors[call.outputs[0]].shape)
            continue
        args = [value(a.name) if isinstance(a, Ref) else runtime[a.name] if isinstance(a, Runtime) else a
                for a in call.args]
        if call.kernel in UPDATE_KERNELS:
            name = call.state[0]
            t = g.tensors[name]
            k = by_tensor[name].param.channels
            if observe is not None and call.kernel.startswith("sgd_"):
                observe(by_tensor[name], value(call.inputs[0]))  # the gradient
            if call.kernel in ("sgd_update_s32", "sgd_update_f32"):
                new = TRAIN_KERNELS[call.kernel](*args, t.data[:k])
            else:
                res = g.tensors[call.state[1]].data if call.state[1] else None
                new, new_res, new_rng = TRAIN_KERNELS[call.kernel](*args, t.data[:k], res,
                                                                   rng if call.state[2] else None)
                if res is not None:
                    g.tensors[call.state[1]].data = new_res.reshape(res.shape)
                if new_rng is not None:
                    rng = new_rng
            data = t.data.copy()
            data[:k] = np.asarray(new).reshape(data[:k].shape)
            t.data = data
            continue
        out = TRAIN_KERNELS[call.kernel](*args)
        if call.kernel.startswith("softmax_xent"):
            values[LOSS] = np.asarray(out[0], np.float32)
            out = out[1]
        values[call.outputs[-1]] = np.asarray(out, np.float32).reshape(g.tensors[call.outputs[-1]].shape)
    return rng


def _input(tp: TrainProgram, x: np.ndarray) -> dict[str, np.ndarray]:
    t = tp.graph.tensors[tp.inference.inputs[0]]
    return {t.name: np.asarray(x, t.dtype).reshape(t.shape)}


def run_step(tp: TrainProgram, x: np.ndarray, label: int, lr: float, rng: int, observe=None) -> tuple[float, int]:
    """One training step with the kernels' numpy specs; updates the trainable and
    state tensors' data in place. Returns (loss, generator state). ``observe(param,
    grad)`` sees each parameter's gradient before its update."""
    values = _input(tp, x)
    rng = _execute(tp, tp.step.calls, values, {"label": int(label), "lr": float(lr)}, rng, observe)
    return float(values[LOSS]), rng


def predict(tp: TrainProgram, x: np.ndarray) -> np.ndarray:
    """NAME_invoke's outputs (back to back) for one sample, with the current
    parameters: the int8 program's, or the float program's logits."""
    values = _input(tp, x)
    if tp.rounding == "float":
        _execute(tp, tp.inference.calls, values, {}, 0)
    else:
        from ..reference import run_int8

        values = run_int8(tp.inference, values)
    return np.concatenate([values[o].reshape(-1) for o in tp.inference.outputs])


__all__ = ["LABEL", "TrainProgram", "TrainedParam", "lower_training", "run_step", "predict"]
