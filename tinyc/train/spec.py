"""Which parameters a training step updates: the update specification.

Layers are the Conv / Gemm / MatMul nodes with a constant weight, counted in the
ONNX file's node order (what a user sees in Netron, and what
../shared/models/training/baselines.json counts): ``0`` is the first, ``-1`` the
last; a layer may also be named by its ONNX node name or its weight initializer's
name (in double quotes when the name holds ``,``, ``;``, ``@`` or spaces).

    full                         every weight and bias
    head                         the last layer's weight and bias
    bias=last6; weight=-4,-2@0.5,-1
        the biases of the last 6 layers; the weights of layers -4 and -1, and of
        layer -2 the first ceil(0.5 x C_out) output channels
    bias=all / bias=L,L,...      every layer's bias / the named layers' biases

Clauses are separated by ``;`` and may repeat; a layer named twice keeps the
larger channel count.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from ..errors import TinycError

LAYER_OPS = ("Conv", "Gemm", "MatMul")


@dataclass(frozen=True)
class Layer:
    index: int  # position among the file's Conv / Gemm / MatMul nodes
    position: int  # position among all the file's nodes (ir.Node.origin)
    node: str  # the ONNX node's name ("" when the file leaves it empty)
    op: str  # Conv | Gemm | MatMul
    weight: str  # the weight initializer (behind its DequantizeLinear in QDQ models)
    bias: str | None  # the bias initializer, if the layer has one
    out_channels: int
    weight_shape: tuple[int, ...] = ()  # as the file stores it
    trans_b: bool = False  # Gemm with transB: the weight is [out, in]

    @property
    def kernel_rank(self) -> int:
        """1 or 2 for a Conv (Conv1d / Conv2d), 0 otherwise."""
        return len(self.weight_shape) - 2 if self.op == "Conv" else 0

    @property
    def transposed_weight(self) -> bool:
        """Is the file's weight [out, in] (as tinyc keeps it), not [in, out]?"""
        return self.op == "Gemm" and self.trans_b

    def describe(self) -> str:
        return f"layer {self.index} ({self.op} {self.node or self.weight!r}, {self.out_channels} output channels)"


@dataclass(frozen=True)
class LayerUpdate:
    layer: Layer
    weight_channels: int  # the first this many output channels of the weight are updated (0: weight frozen)
    bias: bool  # the whole bias is updated

    @property
    def touches(self) -> bool:
        return self.weight_channels > 0 or self.bias


def model_layers(model) -> list[Layer]:
    """The layers of an ONNX model (a path or a ModelProto) in the file's node order."""
    import onnx
    from onnx import numpy_helper

    if not isinstance(model, onnx.ModelProto):
        from ..frontend.onnx import read_model_proto

        model = read_model_proto(model)  # checked (missing file, a folder, a damaged model), no external data
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    constants = {n.output[0]: n for n in graph.node if n.op_type == "Constant" and n.output}
    # what a DequantizeLinear or Transpose output is made from; Add nodes by the tensors they read
    moved_from = {n.output[0]: n.input[0] for n in graph.node
                  if n.op_type in ("DequantizeLinear", "Transpose") and n.input and n.output}
    adds: dict[str, list] = {}
    for n in graph.node:
        if n.op_type == "Add":
            for i in n.input:
                adds.setdefault(i, []).append(n)

    def source(name: str) -> str | None:
        """The initializer a tensor is, directly or through a DequantizeLinear (or a Transpose)."""
        for _ in range(4):
            if name in inits or name in constants:
                return name
            if name not in moved_from:
                return None
            name = moved_from[name]
        return name if name in inits or name in constants else None

    def dims(name: str) -> list[int]:
        if name in inits:
            return list(inits[name].dims)
        return list(numpy_helper.to_array(constants[name].attribute[0].t).shape)

    layers: list[Layer] = []
    for position, node in enumerate(graph.node):
        if node.op_type not in LAYER_OPS or len(node.input) < 2:
            continue
        weight = source(node.input[1])
        if weight is None:  # MatMul of two activations (attention): no parameter
            continue
        shape = dims(weight)
        trans_b = bool(next((a.i for a in node.attribute if a.name == "transB"), 0))
        if node.op_type == "Conv":
            out = shape[0] if shape else 0
        elif node.op_type == "Gemm":
            out = shape[0 if trans_b else -1] if shape else 0
        else:
            out = shape[-1] if shape else 0
        bias = source(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        if node.op_type == "MatMul":  # MatMul + Add(bias), as tf2onnx writes a dense layer
            bias = next((source(other) for n in adds.get(node.output[0], ())
                         for other in n.input if other != node.output[0] and source(other)), None)
        layers.append(Layer(len(layers), position, node.name, node.op_type, weight, bias, int(out), tuple(shape),
                            trans_b))
    return layers


def _split(text: str, sep: str) -> list[str]:
    """Split on ``sep`` outside double quotes."""
    parts, cur, quoted = [], [], False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        if ch == sep and not quoted:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    if quoted:
        raise TinycError(f"--update {text!r}: a double quote is not closed")
    parts.append("".join(cur))
    return parts


def _find(token: str, layers: list[Layer], spec: str) -> Layer:
    token = token.strip()
    if token.startswith('"'):
        name = token[1:-1].replace('\\"', '"')
    else:
        name = token
        if re.fullmatch(r"[+-]?\d+", token):
            k = int(token)
            if -len(layers) <= k < len(layers):
                return layers[k]
            raise TinycError(f"--update {spec!r}: layer {k} does not exist; the model has {len(layers)} Conv / Gemm / "
                             f"MatMul layers (0 to {len(layers) - 1}, or -1 to -{len(layers)} from the end)")
    for layer in layers:
        if name in (layer.node, layer.weight):
            return layer
    raise TinycError(f"--update {spec!r}: no Conv / Gemm / MatMul layer is named {name!r}; name a layer by its "
                     "index in the file's node order (negative from the end), its node name or its weight's name")


def _ratio(text: str, spec: str) -> float:
    try:
        r = float(text)
    except ValueError:
        r = math.nan
    if not 0.0 < r <= 1.0:
        raise TinycError(f"--update {spec!r}: ratio {text.strip()!r} must be a number in (0, 1], "
                         "the fraction of output channels updated")
    return r


def parse_update(spec: str, layers: list[Layer]) -> list[LayerUpdate]:
    """The layers a specification updates, in the file's order (only those it touches)."""
    if not layers:
        raise TinycError("the model has no Conv / Gemm / MatMul layer with a constant weight: nothing to train")
    text = " ".join(spec.split())
    weights: dict[int, int] = {}
    biases: set[int] = set()
    if text == "full":
        weights = {la.index: la.out_channels for la in layers}
        biases = {la.index for la in layers}
    elif text == "head":
        weights = {layers[-1].index: layers[-1].out_channels}
        biases = {layers[-1].index}
    else:
        for clause in _split(text, ";"):
            if not clause.strip():
                continue
            key, eq, value = clause.partition("=")
            key = key.strip()
            if not eq or key not in ("bias", "weight") or not value.strip():
                raise TinycError(f"--update {spec!r}: {clause.strip()!r} is not 'bias=...' or 'weight=...'; "
                                 "write e.g. 'bias=last6; weight=-4,-2@0.5,-1', 'full' or 'head'")
            value = value.strip()
            if key == "bias":
                m = re.fullmatch(r"last\s*(\d+)", value)
                if value == "all":
                    biases |= {la.index for la in layers}
                elif m:
                    k = int(m.group(1))
                    if not 0 < k <= len(layers):
                        raise TinycError(f"--update {spec!r}: bias=last{k}: the model has {len(layers)} layers")
                    biases |= {la.index for la in layers[-k:]}
                else:
                    for item in _split(value, ","):
                        if "@" in item.rsplit('"', 1)[-1]:
                            raise TinycError(f"--update {spec!r}: a ratio (@r) applies to weights, not biases")
                        biases.add(_find(item, layers, spec).index)
            else:
                for item in _split(value, ","):
                    name, at, ratio = item.rpartition("@") if "@" in item.rsplit('"', 1)[-1] else (item, "", "")
                    layer = _find(name, layers, spec)
                    r = _ratio(ratio, spec) if at else 1.0
                    k = max(1, math.ceil(r * layer.out_channels - 1e-9))
                    weights[layer.index] = max(weights.get(layer.index, 0), min(k, layer.out_channels))
    updates = [LayerUpdate(la, weights.get(la.index, 0), la.index in biases) for la in layers]
    updates = [u for u in updates if u.touches]
    if not updates:
        raise TinycError(f"--update {spec!r} updates no parameter; e.g. 'head', 'full' or 'bias=last2; weight=-1'")
    return updates


def describe(updates: list[LayerUpdate]) -> str:
    parts = []
    for u in updates:
        what = []
        if u.weight_channels:
            what.append("weight" if u.weight_channels == u.layer.out_channels
                        else f"weight ({u.weight_channels} of {u.layer.out_channels} channels)")
        if u.bias:
            what.append("bias")
        parts.append(f"layer {u.layer.index}: {' + '.join(what)}")
    return "; ".join(parts)
