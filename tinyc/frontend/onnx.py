"""ONNX -> tinyc IR.

The importer reads the model defensively (every external-data path and every
declared size is checked before anything is loaded), fixes a symbolic batch
dimension to 1, and translates each ONNX node into IR nodes:

* spatial ops (Conv, pools, Resize) become NHWC IR ops wrapped in a pair of
  Transposes (NCHW -> NHWC -> NCHW); the layout pass later cancels the pairs;
* layout-free ops (elementwise, Concat, Softmax, Reshape ...) keep the ONNX axes;
* BatchNormalization becomes Mul + Add by per-channel constants, which the folding
  pass then merges into the producer's weights;
* QuantizeLinear / DequantizeLinear become Quantize / Dequantize nodes; a
  Dequantize of a constant becomes a quantized constant (integer data + scale).

Nodes whose inputs are all constant are evaluated on the spot (constant folding),
which also removes shape-computing subgraphs.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from ..errors import TinycError, UnsupportedError
from ..ir import Graph, Node, QuantParams, Tensor
from ..ops import NO_CLAMP, Clamp, get_op
from ..ops.conv import ConvAttrs, FCAttrs
from ..ops.elementwise import (
    AlphaAttrs,
    BinaryAttrs,
    ClampAttrs,
    ExponentAttrs,
    GeluAttrs,
    HardSigmoidAttrs,
    LeakyReluAttrs,
)
from ..ops.norm import LayerNormAttrs
from ..ops.pool import AxisAttrs, PoolAttrs, ReduceAttrs
from ..ops.shape import (
    CastAttrs,
    ConcatAttrs,
    ExpandAttrs,
    GatherAttrs,
    PadAttrs,
    QuantAttrs,
    ReshapeAttrs,
    ResizeAttrs,
    ResizeBilinearAttrs,
    SliceAttrs,
    TransposeAttrs,
)
from ..passes.fold import evaluate_constant
from .validate import check_node, onnx_attrs

# The importer handles every version of the ops it imports from opset 7 to 27
# (24 and 25 only added element types, which it refuses; 26 and 27 changed none).
MIN_OPSET, MAX_OPSET = 7, 27
# No tensor of a microcontroller model comes near this; a larger declared shape is
# a broken or hostile file, refused before anything is allocated.
MAX_TENSOR_BYTES = 256 * 1024 * 1024
MAX_MODEL_BYTES = 2 * 1024 * 1024 * 1024

NCHW_TO_NHWC = (0, 2, 3, 1)
NHWC_TO_NCHW = (0, 3, 1, 2)

_ONNX_DTYPES = {
    TensorProto.FLOAT: np.float32,
    TensorProto.INT8: np.int8,
    TensorProto.UINT8: np.uint8,
    TensorProto.INT16: np.int16,
    TensorProto.INT32: np.int32,
    TensorProto.INT64: np.int64,
    TensorProto.BOOL: np.bool_,
    TensorProto.DOUBLE: np.float64,
}


def _dtype_name(elem_type: int) -> str:
    return TensorProto.DataType.Name(elem_type).lower()


# --------------------------------------------------------------------- reading
def read_model_proto(path: str | os.PathLike) -> onnx.ModelProto:
    """Read and sanity-check an ONNX file without loading external data yet."""
    path = Path(path)
    if not path.exists():
        raise TinycError(f"{path}: no such file; give the path of an .onnx model")
    if path.is_dir():
        raise TinycError(f"{path}: is a directory; give the path of an .onnx model")
    try:
        if path.stat().st_size > MAX_MODEL_BYTES:
            raise TinycError(
                f"{path}: {path.stat().st_size:,} bytes is larger than any ONNX file can be (2 GB); "
                "give an .onnx model, with large weights as external data"
            )
        raw = path.read_bytes()
    except OSError as e:
        raise TinycError(f"{path}: cannot read ({e.strerror}); check its permissions") from None
    if not raw:
        raise TinycError(f"{path}: the file is empty; re-export the model")
    try:
        model = onnx.ModelProto.FromString(raw)
    except Exception:
        raise TinycError(f"{path}: not a valid ONNX file (truncated or another format); re-export the model") from None
    if model.ir_version <= 0 or not model.HasField("graph") or len(model.graph.node) == 0:
        raise TinycError(f"{path}: not an ONNX model (no graph found); re-export the model")
    # Only declared sizes and paths are looked at here: nothing is allocated or opened.
    _check_declared_sizes(model, path)
    _check_external_data(model, path)
    _check_inline_data(model, path)
    _check_graph_structure(model, path)
    return model


def _check_graph_structure(model: onnx.ModelProto, path: Path) -> None:
    """Nodes in order, every input defined before it is read, every tensor written once."""
    graph = model.graph
    texts = [(t.name, "an initializer's name") for t in graph.initializer]
    texts += [(vi.name, "a graph input's or output's name") for vi in (*graph.input, *graph.output)]
    for node in graph.node:
        texts += [(node.op_type, "an op type"), (node.name, "a node name"), (node.domain, "a domain")]
        texts += [(name, "a tensor name") for name in (*node.input, *node.output)]
        texts += [(a.name, "an attribute name") for a in node.attribute]
    for value, what in texts:
        if not isinstance(value, str):  # protobuf hands over invalid UTF-8 as bytes
            raise TinycError(f"{path}: {what} {value[:40]!r} is not valid UTF-8 text; the model is damaged, "
                             "re-export it")
    defined = {t.name for t in graph.initializer} | {vi.name for vi in graph.input}
    writer: dict[str, str] = {}
    for node in graph.node:
        where = f"node {node.name or '(unnamed)'!r} ({node.op_type})"
        for i in node.input:
            if i and i not in defined:
                if any(i in n.output for n in graph.node):
                    why = " before any node computes it (nodes out of order, or a cycle)"
                else:
                    why = ", which no node, graph input or initializer defines"
                raise TinycError(f"{path}: {where} reads {i!r}{why}; the model is damaged, re-export it")
        for o in node.output:
            if not o:
                continue
            if o in defined:
                first = writer.get(o, "a graph input or initializer")
                raise TinycError(
                    f"{path}: {where} writes {o!r}, which {first} already defines; the model is damaged, re-export it"
                )
            writer[o] = f"node {node.name or '(unnamed)'!r}"
            defined.add(o)


def _tensors_with_data(model: onnx.ModelProto):
    def walk(graph):
        yield from graph.initializer
        for node in graph.node:
            for attr in node.attribute:
                if attr.HasField("t"):
                    yield attr.t
                yield from attr.tensors
                if attr.HasField("g"):
                    yield from walk(attr.g)
                for g in attr.graphs:
                    yield from walk(g)

    yield from walk(model.graph)


def _check_external_data(model: onnx.ModelProto, path: Path) -> None:
    base = path.parent.resolve()
    for t in _tensors_with_data(model):
        if t.data_location != TensorProto.EXTERNAL:
            continue
        info = {e.key: e.value for e in t.external_data}
        loc = info.get("location", "")
        target = (base / loc).resolve()
        if os.path.isabs(loc) or (target != base and base not in target.parents):
            raise TinycError(
                f"{path}: initializer {t.name!r} points at external data {loc!r} outside the model's "
                "directory; refusing to read it (keep external data beside the model)"
            )
        if not target.is_file():
            raise TinycError(f"{path}: external data file {loc!r} for {t.name!r} is missing; copy it beside the model")
        need = _nbytes(t.dims, t.data_type)
        try:
            offset = int(info.get("offset") or 0)
            length = int(info["length"]) if info.get("length") else None
        except ValueError:
            raise TinycError(
                f"{path}: tensor {t.name!r} has an unreadable external data offset or length; re-export the model"
            ) from None
        if t.data_type in _ONNX_DTYPES and length is not None and length != need:
            raise TinycError(
                f"{path}: tensor {t.name!r} of shape {list(t.dims)} needs {need:,} bytes but its external data "
                f"in {loc!r} is {length:,} bytes long; re-export the model"
            )
        have = target.stat().st_size
        if t.data_type in _ONNX_DTYPES and offset + need > have:
            raise TinycError(
                f"{path}: external data file {loc!r} is too short for tensor {t.name!r} ({need:,} bytes at offset "
                f"{offset:,}, the file has {have:,}); copy the complete file beside the model"
            )


def _nbytes(dims, elem_type) -> int:
    item = np.dtype(_ONNX_DTYPES.get(elem_type, np.float32)).itemsize
    n = 1
    for d in dims:
        n *= max(int(d), 0)
    return n * item


# Where onnx stores the values of a tensor that has no raw_data.
_TYPED_FIELD = {
    TensorProto.FLOAT: "float_data",
    TensorProto.INT8: "int32_data",
    TensorProto.UINT8: "int32_data",
    TensorProto.INT16: "int32_data",
    TensorProto.INT32: "int32_data",
    TensorProto.BOOL: "int32_data",
    TensorProto.INT64: "int64_data",
    TensorProto.DOUBLE: "double_data",
}


def _check_inline_data(model: onnx.ModelProto, path: Path) -> None:
    """Every inline tensor holds exactly as many values as its shape declares."""
    for t in _tensors_with_data(model):
        if t.data_location == TensorProto.EXTERNAL or t.data_type not in _TYPED_FIELD:
            continue
        count = 1
        for d in t.dims:
            count *= int(d)
        if t.raw_data:
            have, need, unit = len(t.raw_data), _nbytes(t.dims, t.data_type), "bytes"
        else:
            have, need, unit = len(getattr(t, _TYPED_FIELD[t.data_type])), count, "values"
        if have != need:
            raise TinycError(
                f"{path}: tensor {t.name or '(unnamed)'!r} declares shape {list(t.dims)} ({need:,} {unit}) but "
                f"holds {have:,}; the file is damaged, re-export the model"
            )


def _check_declared_sizes(model: onnx.ModelProto, path: Path) -> None:
    total = 0
    for t in _tensors_with_data(model):
        size = _nbytes(t.dims, t.data_type)
        total += size
        if size > MAX_TENSOR_BYTES:
            raise TinycError(
                f"{path}: tensor {t.name or '(unnamed)'!r} declares shape {list(t.dims)} ({size:,} bytes), far beyond "
                "any microcontroller; check the model"
            )
    if total > MAX_MODEL_BYTES:
        raise TinycError(f"{path}: weights declare {total:,} bytes in all; this is not a microcontroller model")
    # Graph inputs are checked by _fix_input_shapes (after --input-shape), every other
    # tensor by _check_inferred_sizes (after shape inference).


# ------------------------------------------------------------------- importing
def load_onnx(path: str | os.PathLike, input_shapes: dict[str, tuple[int, ...]] | None = None) -> Graph:
    """Import an ONNX file into an IR Graph (not yet canonicalized)."""
    path = Path(path)
    model = read_model_proto(path)
    opset = _default_opset(model, path)
    _fix_input_shapes(model, path, input_shapes or {})
    try:
        onnx.external_data_helper.load_external_data_for_model(model, str(path.parent))
    except Exception as e:  # pragma: no cover - guarded by _check_external_data
        raise TinycError(f"{path}: cannot load external data ({e}); keep it beside the model") from None
    # Data propagation computes shape arithmetic's values (a constant Range of 10^9
    # numbers is 8 GB), so shapes inferred without it are checked first.
    for data_prop in (False, True):
        try:
            inferred = onnx.shape_inference.infer_shapes(model, data_prop=data_prop)
        except Exception as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise TinycError(f"{path}: ONNX shape inference failed: {first}; check the model with onnx.checker") from None
        _check_inferred_sizes(inferred, path)
    model = inferred
    return _Importer(model, path, opset).run()


def _default_opset(model, path) -> int:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            if not MIN_OPSET <= imp.version <= MAX_OPSET:
                raise UnsupportedError(
                    f"{path}: opset {imp.version} is outside what tinyc reads ({MIN_OPSET}-{MAX_OPSET}); "
                    "convert the model with onnx.version_converter"
                )
            return imp.version
    raise TinycError(f"{path}: the model imports no standard ONNX opset; re-export it")


def _fix_input_shapes(model, path, overrides) -> None:
    init_names = {t.name for t in model.graph.initializer}
    known = [i.name for i in model.graph.input if i.name not in init_names]
    for name in overrides:
        if name not in known:
            raise TinycError(f"{path}: --input-shape names {name!r}, but the model's inputs are {known}; use one of those names")
    # Shapes the exporter declared past the inputs are dropped and inferred afresh: they
    # no longer hold after --input-shape, and some exporters write -1 for "unknown".
    # (The importer computes its own shapes; inference only feeds the checks.)
    del model.graph.value_info[:]
    for vi in model.graph.output:
        vi.type.tensor_type.ClearField("shape")
    for vi in model.graph.input:
        if vi.name in init_names:
            continue
        if not vi.type.tensor_type.HasField("shape") and vi.name not in overrides:
            raise TinycError(
                f"{path}: input {vi.name!r} declares no shape; give one with --input-shape {vi.name}=D1,D2,..."
            )
        dims = vi.type.tensor_type.shape.dim
        if vi.name in overrides:
            shape = overrides[vi.name]
            if not vi.type.tensor_type.HasField("shape"):  # unknown rank: take the user's
                for _ in shape:
                    dims.add()
            if len(shape) != len(dims):
                raise TinycError(
                    f"{path}: --input-shape for {vi.name!r} has {len(shape)} dimensions, the model's input has {len(dims)}; "
                    f"give all {len(dims)}"
                )
            for d, v in zip(dims, shape):
                d.Clear()
                d.dim_value = int(v)
        for axis, d in enumerate(dims):
            if d.HasField("dim_value") and d.dim_value > 0:
                continue
            if axis == 0:  # symbolic batch: tinyc compiles one sample at a time
                d.Clear()
                d.dim_value = 1
                continue
            what = f"dynamic dimension {d.dim_param!r}" if d.dim_param else (
                f"size {d.dim_value}" if d.HasField("dim_value") else "no fixed size")
            raise TinycError(
                f"{path}: input {vi.name!r} has {what} at axis {axis}; "
                f"give a fixed shape with --input-shape {vi.name}=" + ",".join(
                    str(x.dim_value) if x.HasField("dim_value") and x.dim_value > 0 else "N" for x in dims)
            )
        shape = [d.dim_value for d in dims]
        size = _nbytes(shape, vi.type.tensor_type.elem_type)
        if size > MAX_TENSOR_BYTES:
            how = "the --input-shape you gave" if vi.name in overrides else "the model, or pass a smaller --input-shape"
            raise TinycError(
                f"{path}: input {vi.name!r} of shape {shape} needs {size:,} bytes, far beyond any microcontroller; "
                f"check {how}"
            )


def _check_inferred_sizes(model: onnx.ModelProto, path: Path) -> None:
    """After shape inference: refuse a tensor no microcontroller could hold before
    the importer computes or allocates anything (Resize by 1000, ConstantOfShape ...)."""
    producer = {o: n for n in model.graph.node for o in n.output if o}
    for vi in list(model.graph.value_info) + list(model.graph.output):
        tt = vi.type.tensor_type
        dims = [d.dim_value for d in tt.shape.dim if d.HasField("dim_value")]
        size = _nbytes(dims, tt.elem_type)
        n = producer.get(vi.name)
        where = f"node {n.name or '(unnamed)'!r} ({n.op_type})" if n is not None else "the graph"
        if any(d < 0 for d in dims):
            raise TinycError(
                f"{path}: {where} gives tensor {vi.name!r} the impossible shape {dims} (a kernel larger than "
                "its padded input?); check the node's attributes"
            )
        if size > MAX_TENSOR_BYTES:
            raise TinycError(
                f"{path}: {where} makes tensor {vi.name!r} of shape {dims} ({size:,} bytes), far beyond any "
                "microcontroller; check the model or --input-shape"
            )


# What a handler raises on a node the validation layer let through (frontend/validate.py)
_MALFORMED = (ValueError, IndexError, KeyError, TypeError, ZeroDivisionError, OverflowError)


def _s(v):
    return v.decode() if isinstance(v, bytes) else v


class _Importer:
    def __init__(self, model: onnx.ModelProto, path: Path, opset: int):
        self.model = model
        self.path = path
        self.opset = opset
        self.g = Graph(name=_c_friendly(path.stem))
        self.alias: dict[str, str] = {}
        self.node = None  # the ONNX node being imported, for messages
        self.position = None  # its position in the file's node list (Node.origin)

    # ------------------------------------------------------------- plumbing
    def fail(self, message: str, cls=UnsupportedError):
        n = self.node
        where = f"node {n.name or '(unnamed)'!r} ({n.op_type})" if n is not None else "graph"
        raise cls(f"{self.path}: {where}: {message}")

    def name(self, onnx_name: str) -> str:
        while onnx_name in self.alias:
            onnx_name = self.alias[onnx_name]
        return onnx_name

    def tensor(self, onnx_name: str) -> Tensor:
        name = self.name(onnx_name)
        if name not in self.g.tensors:
            self.fail(f"input {onnx_name!r} is not produced by any node", TinycError)
        return self.g.tensors[name]

    def shape(self, onnx_name: str) -> tuple[int, ...]:
        return self.tensor(onnx_name).shape

    def const(self, onnx_name: str, what: str = "this input") -> np.ndarray:
        t = self.tensor(onnx_name)
        if not t.is_const:
            self.fail(f"{what} ({onnx_name!r}) must be a constant for tinyc; fold it before export")
        return t.float_value()

    def opt_const(self, node, index: int):
        if len(node.input) > index and node.input[index]:
            return self.const(node.input[index], f"input {index}")
        return None

    def emit(self, op: str, inputs: list[str], attrs=None, out: str | None = None, base: str | None = None) -> str:
        """Add one IR node (or its folded constant) and return its output's name."""
        inputs = [self.name(i) if i else "" for i in inputs]
        base = base or (self.node.name if self.node is not None and self.node.name else op)
        out = out or self.g.unique_name(base)
        node = Node(op, self.g.unique_name(base), inputs, [out], attrs, origin=self.position)
        opdef = get_op(op)
        ins = [self.g.tensors[i] if i else None for i in inputs]
        if all(t is None or t.is_const for t in ins):
            self.g.add_tensor(evaluate_constant(self.g, node))
            return out
        try:
            ((shape, dtype),) = opdef.infer(node, self.g)
        except ValueError as e:  # the node's inputs do not fit together
            self.fail(f"{e}; the model is inconsistent, check it with onnx.checker.check_model(m, full_check=True)",
                      TinycError)
        self.g.add_tensor(Tensor(out, shape, dtype))
        self.g.add_node(node)
        return out

    def emit_const(self, base: str, data, quant=None) -> str:
        return self.g.add_const(base, np.asarray(data), quant)

    # ----------------------------------------------------------------- run
    def run(self) -> Graph:
        g = self.g
        graph = self.model.graph
        for init in graph.initializer:
            self._add_initializer(init)
        for vi in graph.input:
            if vi.name in g.tensors:
                continue
            tt = vi.type.tensor_type
            dtype = _ONNX_DTYPES.get(tt.elem_type)
            if dtype is None or dtype is np.float64:
                raise UnsupportedError(
                    f"{self.path}: input {vi.name!r} has type {_dtype_name(tt.elem_type)}; tinyc takes float32, int8 or uint8 inputs"
                )
            g.add_tensor(Tensor(vi.name, [d.dim_value for d in tt.shape.dim], dtype))
            g.inputs.append(vi.name)
        for position, node in enumerate(graph.node):
            self.position = position
            self._import_node(node)
        self.node = None
        for vi in graph.output:
            self._bind_output(vi.name)
        g.remove_unused()
        g.toposort()
        return g

    def _import_node(self, node) -> None:
        self.node = node
        handler = getattr(self, "op_" + node.op_type, None)
        if handler is None and node.op_type in _FOLDABLE and node.domain in ("", "ai.onnx") \
                and self._all_constant(node):
            handler = self._fold_with_onnx_reference  # shape arithmetic (Equal, Where, Range, ...)
        if node.domain not in ("", "ai.onnx") or handler is None:
            dom = f" from domain {node.domain!r}" if node.domain not in ("", "ai.onnx") else ""
            self.fail(f"op {node.op_type}{dom} is not supported by tinyc; replace it or open an issue")
        check_node(self, node, self.opset)
        try:
            handler(node, onnx_attrs(node))
        except _MALFORMED as e:  # a check the validation layer lacks: still one line naming the node
            self.fail(f"cannot be imported ({type(e).__name__}: {e}); the model is damaged or unusual, check it "
                      "with onnx.checker.check_model(m, full_check=True)", TinycError)

    def op_If(self, node, a):
        """An If whose condition is a constant (exporters leave some behind, e.g. for
        a shape check): the branch it takes is imported in its place."""
        cond = self.tensor(node.input[0])
        if not cond.is_const:
            self.fail("If with a condition computed from the inputs is not supported; tinyc compiles one static "
                      "graph (make the condition constant, or remove the branch, before export)")
        branch = a["then_branch"] if bool(np.asarray(cond.data).reshape(-1)[0]) else a["else_branch"]
        if len(branch.output) != len(node.output):
            self.fail(f"the taken branch has {len(branch.output)} outputs, the If {len(node.output)}", TinycError)
        for init in branch.initializer:
            self._add_initializer(init)
        for sub in branch.node:
            self._import_node(sub)
        self.node = node
        for out, branch_out in zip(node.output, branch.output):
            if out:
                self.alias[out] = self.name(branch_out.name)

    def _all_constant(self, node) -> bool:
        return all(not i or (self.name(i) in self.g.tensors and self.g.tensors[self.name(i)].is_const)
                   for i in node.input)

    def _fold_with_onnx_reference(self, node, a):
        """A node tinyc has no op for, whose inputs are all constants: evaluated once
        by onnx's own reference implementation (exporters spell shape arithmetic with
        Equal / Where / Range / ... on constants)."""
        from onnx.reference import ReferenceEvaluator

        def value(t):  # a quantized constant by its real value, any other by its data
            return np.asarray(t.float_value() if t.quant is not None else t.data)

        feeds = {i: value(self.g.tensors[self.name(i)]) for i in node.input if i}
        if node.op_type == "Range":  # the one op here whose output is not bounded by its inputs
            start, limit, delta = (float(v.reshape(-1)[0]) for v in feeds.values())
            count = math.ceil((limit - start) / delta) if delta else math.inf
            if not count < _MAX_FOLDED:
                self.fail(f"Range of {count} values; tinyc folds ranges of up to {_MAX_FOLDED:,}", TinycError)
        ins = [onnx.helper.make_tensor_value_info(i, onnx.helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
               for i, v in feeds.items()]
        outs = [onnx.helper.make_empty_tensor_value_info(o) for o in node.output if o]
        graph = onnx.helper.make_graph([node], "fold", ins, outs)
        model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", self.opset)])
        try:
            results = ReferenceEvaluator(model).run(None, feeds)
        except Exception as e:  # noqa: BLE001 - onnx's evaluator raises what its op code raises
            self.fail(f"cannot be evaluated on its constant inputs ({type(e).__name__}: {str(e)[:200]}); "
                      "the model is damaged or unusual", TinycError)
        for name, result in zip([o for o in node.output if o], results):
            result = np.asarray(result)
            if result.dtype == np.float64:
                result = result.astype(np.float32)
            if result.dtype == np.bool_:
                result = result.astype(np.int64)  # tinyc's IR has no bool; Where / Cast read it as 0 / 1
            self.emit_const_named(name, result)

    def _add_initializer(self, init):
        if init.data_type not in _ONNX_DTYPES:
            self.fail(f"initializer {init.name!r} has type {_dtype_name(init.data_type)}, which tinyc does not support")
        data = numpy_helper.to_array(init)
        if data.dtype == np.float64:
            data = data.astype(np.float32)
        self.g.add_tensor(Tensor(init.name, data.shape, data.dtype.type, data))

    def _bind_output(self, onnx_name: str):
        g = self.g
        actual = self.name(onnx_name)
        if actual not in g.tensors:
            raise TinycError(f"{self.path}: graph output {onnx_name!r} is never computed")
        t = g.tensors[actual]
        if t.is_const:
            raise UnsupportedError(f"{self.path}: graph output {onnx_name!r} is a constant; tinyc needs outputs that depend on the inputs")
        if actual != onnx_name and (actual in g.inputs or actual in g.outputs):
            # an output that is another interface tensor: copy it with a no-op view
            self.emit("Reshape", [actual], ReshapeAttrs(t.shape), out=onnx_name, base="output")
            actual = onnx_name
        elif actual != onnx_name:
            g.rename_tensor(actual, onnx_name)
            self.alias = {k: (onnx_name if v == actual else v) for k, v in self.alias.items()}
            actual = onnx_name
        g.outputs.append(actual)

    # ---------------------------------------------------- layout helpers
    def nhwc(self, x: str) -> str:
        return self.emit("Transpose", [x], TransposeAttrs(NCHW_TO_NHWC))

    def nchw(self, y: str, out: str) -> str:
        return self.emit("Transpose", [y], TransposeAttrs(NHWC_TO_NCHW), out=out)

    def spatial(self, x: str, build, out: str, name_hint="spatial") -> str:
        """Run ``build(x_nhwc) -> y_nhwc`` on an NCHW (or NCW) tensor."""
        shape = self.shape(x)
        if len(shape) == 3:  # 1-D op as 2-D with H = 1
            n, c, w = shape
            x4 = self.emit("Reshape", [x], ReshapeAttrs((n, c, 1, w)))
            y4 = self.nchw(build(self.nhwc(x4)), out=self.g.unique_name(name_hint))
            n2, c2, _, w2 = self.g.tensors[y4].shape
            return self.emit("Reshape", [y4], ReshapeAttrs((n2, c2, w2)), out=out)
        if len(shape) != 4:
            self.fail(f"input of rank {len(shape)} is not supported (tinyc handles 1-D and 2-D spatial ops)")
        return self.nchw(build(self.nhwc(x)), out=out)

    def _spatial_params(self, a, in_hw, kernel):
        rank = len(kernel)
        strides = list(a.get("strides", [1] * rank))
        dilations = list(a.get("dilations", [1] * rank))
        pads = list(a.get("pads", [0] * (2 * rank)))
        auto = _s(a.get("auto_pad", "NOTSET"))
        if auto in ("SAME_UPPER", "SAME_LOWER"):
            pads = [0] * (2 * rank)
            for i in range(rank):
                out = math.ceil(in_hw[i] / strides[i])
                total = max((out - 1) * strides[i] + (kernel[i] - 1) * dilations[i] + 1 - in_hw[i], 0)
                small, big = total // 2, total - total // 2
                pads[i], pads[i + rank] = (small, big) if auto == "SAME_UPPER" else (big, small)
        elif auto == "VALID":
            pads = [0] * (2 * rank)
        if rank == 1:
            kernel, strides, dilations = [1, kernel[0]], [1, strides[0]], [1, dilations[0]]
            pads = [0, pads[0], 0, pads[1]]
        elif rank != 2:
            self.fail(f"{rank}-D kernels are not supported (tinyc handles 1-D and 2-D)")
        if min(strides) < 1 or min(dilations) < 1 or min(pads) < 0:
            self.fail(f"strides {strides}, dilations {dilations}, pads {pads} are not valid", TinycError)
        return (tuple(kernel), tuple(strides), tuple(dilations), (pads[0], pads[1], pads[2], pads[3]))

    # ------------------------------------------------------------- ops
    def op_Conv(self, node, a):
        x = node.input[0]
        w_t = self.tensor(node.input[1])
        if not w_t.is_const:
            self.fail("weights must be constant for tinyc (dynamic convolution weights are not supported)")
        xs = self.shape(x)
        w = w_t.data
        quant = w_t.quant
        if w.ndim == 3:
            w = w[:, :, None, :]
        if w.ndim != 4:
            kind = f"{w_t.data.ndim - 2}-D convolution" if w_t.data.ndim > 4 else f"weights of rank {w_t.data.ndim}"
            self.fail(f"{kind} is not supported (tinyc handles 1-D and 2-D convolution)")
        kernel = tuple(a.get("kernel_shape", w_t.shape[2:]))
        k, strides, dil, pads = self._spatial_params(a, xs[2:], list(kernel))
        group = int(a.get("group", 1))
        w_ohwi = np.ascontiguousarray(w.transpose(0, 2, 3, 1))
        wq = quant.permuted((0, 2, 3, 1)) if quant is not None else None
        wname = self.emit_const(node.input[1] + "_ohwi", w_ohwi.astype(w_t.dtype), wq)
        inputs = [None, wname]
        if len(node.input) > 2 and node.input[2]:
            inputs.append(self.name(node.input[2]))
            if not self.g.tensors[inputs[2]].is_const:
                self.fail("bias must be constant")
        attrs = ConvAttrs(strides, dil, pads, group, NO_CLAMP)
        self.spatial(x, lambda xn: self.emit("Conv2D", [xn] + inputs[1:], attrs), out=node.output[0])

    def op_ConvTranspose(self, node, a):
        """A transposed convolution as the convolution it equals: the input with
        stride - 1 zeros between its rows and columns (two Pads of unit axes, so no
        kernel of its own) and kernel - 1 - pad around it, convolved with the
        weights flipped and their channel axes swapped. The sums are the ones
        TFLM's TRANSPOSE_CONV forms; the MACs on the inserted zeros are spent."""
        x = node.input[0]
        xs = self.shape(x)
        w_t = self.tensor(node.input[1])
        if not w_t.is_const:
            self.fail("weights must be constant for tinyc (dynamic convolution weights are not supported)")
        rank = len(xs) - 2
        if rank not in (1, 2) or w_t.data.ndim != rank + 2:
            self.fail(f"{rank}-D transposed convolution is not supported (tinyc handles 1-D and 2-D)")
        kernel = list(a.get("kernel_shape", w_t.shape[2:]))
        strides = list(a.get("strides", [1] * rank))
        dil = list(a.get("dilations", [1] * rank))
        out_pad = list(a.get("output_padding", [0] * rank))
        pads = list(a.get("pads", [0] * 2 * rank))
        group = int(a.get("group", 1))
        auto = _s(a.get("auto_pad", "NOTSET"))
        if "output_shape" in a or auto in ("SAME_UPPER", "SAME_LOWER"):
            target = list(a["output_shape"])[-rank:] if "output_shape" in a else [d * s for d, s in zip(xs[2:], strides)]
            for i in range(rank):
                total = strides[i] * (xs[2 + i] - 1) + out_pad[i] + (kernel[i] - 1) * dil[i] + 1 - target[i]
                if total < 0:
                    self.fail(f"output_shape {target} is larger than the transposed convolution makes", TinycError)
                small, big = total // 2, total - total // 2
                pads[i], pads[i + rank] = (small, big) if auto == "SAME_UPPER" else (big, small)
        if rank == 1:
            kernel, strides, dil, out_pad = [1] + kernel, [1] + strides, [1] + dil, [0] + out_pad
            pads = [0, pads[0], 0, pads[1]]
        c_in = xs[1]
        if c_in % group or w_t.shape[0] != c_in:
            self.fail(f"weights {list(w_t.shape)} do not fit {c_in} input channels in {group} groups", TinycError)
        # W[i, o, kh, kw] -> W'[o, kh, kw, i], spatially flipped, per group
        w = w_t.data.reshape((w_t.shape[0], w_t.shape[1], *kernel))
        c_out_g = w.shape[1]
        wg = w.reshape(group, c_in // group, c_out_g, *kernel)[:, :, :, ::-1, ::-1]
        w_ohwi = np.ascontiguousarray(wg.transpose(0, 2, 3, 4, 1).reshape(group * c_out_g, *kernel, c_in // group))
        quant = w_t.quant
        if quant is not None and quant.per_axis and (group > 1 or quant.axis != 1):
            self.fail("per-channel quantized ConvTranspose weights are supported for group 1 on axis 1 only")
        wq = quant.permuted((1, 2, 3, 0)) if quant is not None and quant.per_axis else quant
        wname = self.emit_const(node.input[1] + "_flipped", w_ohwi.astype(w_t.dtype), wq)
        bias = [self.name(node.input[2])] if len(node.input) > 2 and node.input[2] else []
        keff = [(k - 1) * d + 1 for k, d in zip(kernel, dil)]
        before = [keff[i] - 1 - pads[i] for i in range(2)]
        after = [keff[i] - 1 - pads[i + 2] + out_pad[i] - (strides[i] - 1) for i in range(2)]
        if min(before) < 0 or min(strides) < 1 or min(dil) < 1:
            self.fail(f"pads {pads} larger than the kernel {kernel} (dilations {dil}) are not supported")

        def build(xn):
            n, h, w_, c = self.g.tensors[xn].shape
            y = xn
            sh, sw = strides
            if sw > 1:  # a zero after each column: pad the unit axis of [N*H, W, 1, C]
                y = self.emit("Reshape", [y], ReshapeAttrs((n * h, w_, 1, c)))
                y = self.emit("Pad", [y], PadAttrs(((0, 0), (0, 0), (0, sw - 1), (0, 0))))
            if sh > 1:  # and a zero row after each row
                y = self.emit("Reshape", [y], ReshapeAttrs((n, h, 1, w_ * sw * c)))
                y = self.emit("Pad", [y], PadAttrs(((0, 0), (0, 0), (0, sh - 1), (0, 0))))
            y = self.emit("Reshape", [y], ReshapeAttrs((n, h * sh, w_ * sw, c)))
            grow = [max(v, 0) for v in after]
            if any(before) or any(grow):
                y = self.emit("Pad", [y], PadAttrs(((0, 0), (before[0], grow[0]), (before[1], grow[1]), (0, 0))))
            y = self.emit("Conv2D", [y, wname, *bias], ConvAttrs((1, 1), tuple(dil), (0, 0, 0, 0), group, NO_CLAMP))
            crop = [max(-v, 0) for v in after]  # rows the inserted zeros added beyond the output
            if any(crop):
                _, oh, ow, oc = self.g.tensors[y].shape
                y = self.emit("Slice", [y], SliceAttrs((0, 0, 0, 0), (n, oh - crop[0], ow - crop[1], oc), (1, 1, 1, 1)))
            return y

        self.spatial(x, build, out=node.output[0])

    def _pool(self, node, a, op):
        x = node.input[0]
        xs = self.shape(x)
        if len(node.output) > 1 and node.output[1]:
            self.fail("the Indices output of MaxPool is not supported")
        if int(a.get("storage_order", 0)) != 0:
            self.fail("storage_order=1 is not supported")
        kernel, strides, dil, pads = self._spatial_params(a, xs[2:], list(a["kernel_shape"]))
        pads = list(pads)
        if int(a.get("ceil_mode", 0)):
            in_hw = (1, xs[2]) if len(xs) == 3 else xs[2:]
            for i in range(2):
                span = (kernel[i] - 1) * dil[i] + 1
                total = in_hw[i] + pads[i] + pads[i + 2]
                out_floor = (total - span) // strides[i] + 1
                out_ceil = -(-(total - span) // strides[i]) + 1
                if (out_ceil - 1) * strides[i] >= in_hw[i] + pads[i]:
                    out_ceil -= 1  # the last window must start inside the input
                if out_ceil > out_floor:
                    if op == "AvgPool2D" and int(a.get("count_include_pad", 0)):
                        self.fail("ceil_mode with count_include_pad is not supported")
                    pads[i + 2] += (out_ceil - out_floor) * strides[i]
        attrs = PoolAttrs(kernel, strides, tuple(pads), dil, bool(a.get("count_include_pad", 0)), NO_CLAMP)
        self.spatial(x, lambda xn: self.emit(op, [xn], attrs), out=node.output[0])

    def op_MaxPool(self, node, a):
        self._pool(node, a, "MaxPool2D")

    def op_AveragePool(self, node, a):
        self._pool(node, a, "AvgPool2D")

    def op_GlobalAveragePool(self, node, a):
        rank = len(self.shape(node.input[0]))
        self.emit("ReduceMean", [node.input[0]], ReduceAttrs(tuple(range(2, rank)), True), out=node.output[0])

    def op_ReduceMean(self, node, a):
        x = node.input[0]
        rank = len(self.shape(x))
        axes = a.get("axes")
        if axes is None and len(node.input) > 1 and node.input[1]:
            axes = self.const(node.input[1], "axes").astype(np.int64).tolist()
        if not axes:
            if int(a.get("noop_with_empty_axes", 0)):
                self.alias[node.output[0]] = self.name(x)
                return
            axes = list(range(rank))
        axes = tuple(sorted(int(ax) % rank for ax in axes))
        self.emit("ReduceMean", [x], ReduceAttrs(axes, bool(a.get("keepdims", 1))), out=node.output[0])

    def op_Gemm(self, node, a):
        A, B = node.input[0], node.input[1]
        alpha, beta = float(a.get("alpha", 1.0)), float(a.get("beta", 1.0))
        if int(a.get("transA", 0)):
            A = self.emit("Transpose", [A], TransposeAttrs((1, 0)))
        b_t = self.tensor(B)
        c = node.input[2] if len(node.input) > 2 and node.input[2] else None
        n_out = self.shape(B)[0 if int(a.get("transB", 0)) else 1]
        if b_t.is_const:
            w = b_t.float_value()
            if not int(a.get("transB", 0)):
                w = w.T
            if alpha != 1.0:
                w = w * np.float32(alpha)
            inputs = [A]
            if b_t.quant is not None and alpha == 1.0:
                # keep the integer weights and their scale
                data = b_t.data if int(a.get("transB", 0)) else b_t.data.T
                q = b_t.quant if int(a.get("transB", 0)) else b_t.quant.permuted((1, 0))
                inputs.append(self.emit_const(B + "_w", np.ascontiguousarray(data), q))
            else:
                inputs.append(self.emit_const(B + "_w", np.ascontiguousarray(w, dtype=np.float32)))
            bias_full = None
            if c is not None:
                ct = self.tensor(c)
                if ct.is_const and ct.size == n_out and ct.shape[-1:] == (n_out,) and beta == 1.0:
                    inputs.append(self.name(c) if ct.shape == (n_out,) else self.emit("Reshape", [c], ReshapeAttrs((n_out,))))
                else:
                    bias_full = c
            out = node.output[0] if bias_full is None else None
            y = self.emit("FullyConnected", inputs, FCAttrs(NO_CLAMP), out=out)
            if bias_full is not None:
                cb = bias_full
                if beta != 1.0:
                    cb = self.emit("Mul", [cb, self.emit_const("beta", np.float32(beta))], BinaryAttrs())
                self.emit("Add", [y, cb], BinaryAttrs(), out=node.output[0])
            return
        if int(a.get("transB", 0)):
            B = self.emit("Transpose", [B], TransposeAttrs((1, 0)))
        y = self.emit("MatMul", [A, B])
        if alpha != 1.0:
            y = self.emit("Mul", [y, self.emit_const("alpha", np.float32(alpha))], BinaryAttrs())
        if c is None:
            self.alias[node.output[0]] = y
            return
        cb = c
        if beta != 1.0:
            cb = self.emit("Mul", [c, self.emit_const("beta", np.float32(beta))], BinaryAttrs())
        self.emit("Add", [y, cb], BinaryAttrs(), out=node.output[0])

    def op_MatMul(self, node, a):
        A, B = node.input
        b_t = self.tensor(B)
        if b_t.is_const and b_t.data.ndim == 2 and len(self.shape(A)) >= 2:
            if b_t.quant is not None:
                w = self.emit_const(B + "_w", np.ascontiguousarray(b_t.data.T), b_t.quant.permuted((1, 0)))
            else:
                w = self.emit_const(B + "_w", np.ascontiguousarray(b_t.float_value().T))
            self.emit("FullyConnected", [A, w], FCAttrs(NO_CLAMP), out=node.output[0])
            return
        self.emit("MatMul", [A, B], out=node.output[0])

    def _binary(self, node, op):
        self.emit(op, list(node.input), BinaryAttrs(), out=node.output[0])

    def op_Add(self, node, a):
        self._binary(node, "Add")

    def op_Sub(self, node, a):
        self._binary(node, "Sub")

    def op_Mul(self, node, a):
        self._binary(node, "Mul")

    def op_Div(self, node, a):
        self._binary(node, "Div")

    def op_Relu(self, node, a):
        self.emit("Clamp", [node.input[0]], ClampAttrs(Clamp(0.0, np.inf)), out=node.output[0])

    def op_Clip(self, node, a):
        if self.opset < 11:
            lo, hi = a.get("min", -np.inf), a.get("max", np.inf)
        else:
            lo_v, hi_v = self.opt_const(node, 1), self.opt_const(node, 2)
            lo = float(lo_v) if lo_v is not None else -np.inf
            hi = float(hi_v) if hi_v is not None else np.inf
        self.emit("Clamp", [node.input[0]], ClampAttrs(Clamp(float(lo), float(hi))), out=node.output[0])

    def op_LeakyRelu(self, node, a):
        self.emit("LeakyRelu", [node.input[0]], LeakyReluAttrs(float(a.get("alpha", 0.01))), out=node.output[0])

    def op_Sigmoid(self, node, a):
        self.emit("Sigmoid", [node.input[0]], out=node.output[0])

    def op_Tanh(self, node, a):
        self.emit("Tanh", [node.input[0]], out=node.output[0])

    def op_HardSigmoid(self, node, a):
        attrs = HardSigmoidAttrs(float(a.get("alpha", 0.2)), float(a.get("beta", 0.5)))
        self.emit("HardSigmoid", [node.input[0]], attrs, out=node.output[0])

    def _unary(self, node, op, attrs=None):
        self.emit(op, [node.input[0]], attrs, out=node.output[0])

    def op_Erf(self, node, a):
        self._unary(node, "Erf")

    def op_Sqrt(self, node, a):
        self._unary(node, "Sqrt")

    def op_Exp(self, node, a):
        self._unary(node, "Exp")

    def op_Log(self, node, a):
        self._unary(node, "Log")

    def op_Abs(self, node, a):
        self._unary(node, "Abs")

    def op_Neg(self, node, a):
        self._unary(node, "Neg")

    def op_Reciprocal(self, node, a):
        self._unary(node, "Reciprocal")

    def op_Softplus(self, node, a):
        self._unary(node, "Softplus")

    def op_Elu(self, node, a):
        self._unary(node, "Elu", AlphaAttrs(float(a.get("alpha", 1.0))))

    def op_Gelu(self, node, a):
        self._unary(node, "Gelu", GeluAttrs(_s(a.get("approximate", "none")) == "tanh"))

    def op_Pow(self, node, a):
        exponent = self.const(node.input[1], "the exponent")
        if exponent.size != 1:
            self.fail("Pow with more than one exponent is not supported; tinyc takes a scalar constant exponent")
        e = float(exponent.reshape(-1)[0])
        if e == 1.0:
            self.alias[node.output[0]] = self.name(node.input[0])
            return
        if e == 2.0:  # a square: one int8 Mul, exact in float
            self.emit("Mul", [node.input[0], node.input[0]], BinaryAttrs(), out=node.output[0])
            return
        self._unary(node, "PowConst", ExponentAttrs(e))

    def _variadic(self, node, op):
        """Max / Min / Sum of any number of inputs: a chain of binary nodes."""
        acc = node.input[0]
        for k, other in enumerate(node.input[1:]):
            out = node.output[0] if k == len(node.input) - 2 else None
            acc = self.emit(op, [acc, other], BinaryAttrs(), out=out)
        if len(node.input) == 1:
            self.alias[node.output[0]] = self.name(acc)

    def op_Max(self, node, a):
        self._variadic(node, "Max")

    def op_Min(self, node, a):
        self._variadic(node, "Min")

    def op_Sum(self, node, a):
        self._variadic(node, "Add")

    def op_Expand(self, node, a):
        src = self.shape(node.input[0])
        target = tuple(int(v) for v in self.const(node.input[1], "shape").astype(np.int64).reshape(-1))
        try:
            out = tuple(int(d) for d in np.broadcast_shapes(src, target))
        except ValueError:
            self.fail(f"cannot expand {src} to {target}", TinycError)
        if out == tuple(src):
            self.alias[node.output[0]] = self.name(node.input[0])
            return
        self.emit("Expand", [node.input[0]], ExpandAttrs(out), out=node.output[0])

    def op_Split(self, node, a):
        """Split becomes one Slice per output."""
        shape = self.shape(node.input[0])
        axis = int(a.get("axis", 0)) % len(shape)
        n = len(node.output)
        if "split" in a:
            sizes = [int(v) for v in a["split"]]
        elif len(node.input) > 1 and node.input[1]:
            sizes = [int(v) for v in self.const(node.input[1], "split").astype(np.int64).reshape(-1)]
        else:
            parts = int(a.get("num_outputs", n))
            chunk = -(-shape[axis] // parts)  # the last part may be smaller (opset 18)
            sizes = [min(chunk, shape[axis] - k * chunk) for k in range(parts)]
        if 0 in sizes:
            self.fail(f"split sizes {sizes} make an empty tensor, which tinyc does not support")
        if len(sizes) != n or sum(sizes) != shape[axis] or min(sizes) < 0:
            self.fail(f"split sizes {sizes} do not divide axis {axis} of size {shape[axis]} into {n} outputs",
                      TinycError)
        start = 0
        for size, out in zip(sizes, node.output):
            starts, ends, steps = [0] * len(shape), list(shape), [1] * len(shape)
            starts[axis], ends[axis] = start, start + size
            start += size
            if out:
                self.emit("Slice", [node.input[0]], SliceAttrs(tuple(starts), tuple(ends), tuple(steps)), out=out)

    def op_LayerNormalization(self, node, a):
        """Normalization over the axes from ``axis`` on: over the last axis of the
        input viewed with those axes merged into one."""
        shape = self.shape(node.input[0])
        axis = int(a.get("axis", -1)) % len(shape)
        if any(node.output[1:]):
            self.fail("LayerNormalization's mean / inverse std outputs are not supported; use only its first output")
        d = int(np.prod(shape[axis:]))
        gamma = np.broadcast_to(self.const(node.input[1], "scale").astype(np.float32), shape[axis:]).reshape(d)
        beta = self.opt_const(node, 2)
        beta = np.zeros(d, np.float32) if beta is None else np.broadcast_to(
            beta.astype(np.float32), shape[axis:]).reshape(d)
        x = node.input[0]
        flat = tuple(shape[:axis]) + (d,)
        if axis != len(shape) - 1:
            x = self.emit("Reshape", [x], ReshapeAttrs(flat))
        ins = [x, self.emit_const("ln_scale", gamma.copy()), self.emit_const("ln_bias", beta.copy())]
        eps = LayerNormAttrs(float(a.get("epsilon", 1e-5)))
        if axis == len(shape) - 1:
            self.emit("LayerNorm", ins, eps, out=node.output[0])
        else:
            self.emit("Reshape", [self.emit("LayerNorm", ins, eps)], ReshapeAttrs(tuple(shape)), out=node.output[0])

    def op_HardSwish(self, node, a):
        self.emit("HardSwish", [node.input[0]], out=node.output[0])

    def _softmax(self, node, a, op):
        x = node.input[0]
        shape = self.shape(x)
        rank = len(shape)
        default = -1 if self.opset >= 13 else 1
        axis = int(a.get("axis", default)) % rank
        if self.opset >= 13 or axis == rank - 1:
            self.emit(op, [x], AxisAttrs(axis), out=node.output[0])
            return
        # before opset 13 the op works on the input flattened to 2-D at ``axis``
        flat = (int(np.prod(shape[:axis])), int(np.prod(shape[axis:])))
        x2 = self.emit("Reshape", [x], ReshapeAttrs(flat))
        y2 = self.emit(op, [x2], AxisAttrs(1))
        self.emit("Reshape", [y2], ReshapeAttrs(shape), out=node.output[0])

    def op_Softmax(self, node, a):
        self._softmax(node, a, "Softmax")

    def op_LogSoftmax(self, node, a):
        self._softmax(node, a, "LogSoftmax")

    def op_Reshape(self, node, a):
        x = node.input[0]
        src = self.shape(x)
        target = self.const(node.input[1], "shape").astype(np.int64).tolist()
        allowzero = int(a.get("allowzero", 0))
        if allowzero and 0 in target:
            self.fail(f"Reshape to {target} with allowzero=1 makes an empty tensor, which tinyc does not support")
        out = [src[i] if (v == 0 and not allowzero) else v for i, v in enumerate(target)]
        if out.count(-1) > 1:
            self.fail("more than one -1 in the target shape", TinycError)
        if -1 in out:
            known = int(np.prod([v for v in out if v != -1]))
            out[out.index(-1)] = int(np.prod(src)) // max(known, 1)
        self.emit("Reshape", [x], ReshapeAttrs(tuple(out)), out=node.output[0])

    def op_Flatten(self, node, a):
        shape = self.shape(node.input[0])
        axis = int(a.get("axis", 1))
        if not -len(shape) <= axis <= len(shape):
            self.fail(f"axis {axis} is out of range for an input of rank {len(shape)}", TinycError)
        axis += len(shape) if axis < 0 else 0  # axis may equal the rank: flatten to (N, 1)
        out = (int(np.prod(shape[:axis])), int(np.prod(shape[axis:])))
        self.emit("Reshape", [node.input[0]], ReshapeAttrs(out), out=node.output[0])

    def _axes(self, node, a):
        if "axes" in a:
            return list(a["axes"])
        if len(node.input) > 1 and node.input[1]:
            return self.const(node.input[1], "axes").astype(np.int64).tolist()
        return None

    def op_Squeeze(self, node, a):
        shape = self.shape(node.input[0])
        axes = self._axes(node, a)
        axes = [ax % len(shape) for ax in axes] if axes is not None else [i for i, d in enumerate(shape) if d == 1]
        out = tuple(d for i, d in enumerate(shape) if i not in axes)
        self.emit("Reshape", [node.input[0]], ReshapeAttrs(out), out=node.output[0])

    def op_Unsqueeze(self, node, a):
        shape = list(self.shape(node.input[0]))
        axes = self._axes(node, a)
        rank = len(shape) + len(axes)
        for ax in sorted(ax % rank for ax in axes):
            shape.insert(ax, 1)
        self.emit("Reshape", [node.input[0]], ReshapeAttrs(tuple(shape)), out=node.output[0])

    def op_Transpose(self, node, a):
        rank = len(self.shape(node.input[0]))
        perm = tuple(int(p) for p in a.get("perm", range(rank - 1, -1, -1)))
        self.emit("Transpose", [node.input[0]], TransposeAttrs(perm), out=node.output[0])

    def op_Concat(self, node, a):
        rank = len(self.shape(node.input[0]))
        self.emit("Concat", list(node.input), ConcatAttrs(int(a["axis"]) % rank), out=node.output[0])

    def op_Pad(self, node, a):
        x = node.input[0]
        rank = len(self.shape(x))
        if self.opset < 11:
            pads = list(a["pads"])
            value = float(a.get("value", 0.0))
        else:
            pads = self.const(node.input[1], "pads").astype(np.int64).tolist()
            v = self.opt_const(node, 2)
            value = float(v) if v is not None else 0.0
        axes = list(range(rank))
        if len(node.input) > 3 and node.input[3]:
            axes = [int(ax) % rank for ax in self.const(node.input[3], "axes").astype(np.int64).tolist()]
        per_axis = [(0, 0)] * rank
        for k, ax in enumerate(axes):
            per_axis[ax] = (int(pads[k]), int(pads[k + len(axes)]))
        mode = _s(a.get("mode", "constant"))
        if mode not in ("constant", "reflect", "edge", "wrap"):
            self.fail(f"pad mode {mode!r} is not supported")
        self.emit("Pad", [x], PadAttrs(tuple(per_axis), mode, value), out=node.output[0])

    def op_Resize(self, node, a):
        x = node.input[0]
        shape = self.shape(x)
        rank = len(shape)
        mode = _s(a.get("mode", "nearest"))
        if mode not in ("nearest", "linear"):
            self.fail(f"Resize mode {mode!r} is not supported (nearest and linear only)")
        if rank not in (3, 4):
            self.fail(f"Resize of a rank-{rank} tensor is not supported (NCW or NCHW only)")
        if self.opset < 11:
            # Resize-10 takes (X, scales) and samples at floor(x / scale)
            scales, sizes = self.opt_const(node, 1), None
            ctm, nearest = "asymmetric", "floor"
        else:
            scales, sizes = self.opt_const(node, 2), self.opt_const(node, 3)
            ctm = _s(a.get("coordinate_transformation_mode", "half_pixel"))
            nearest = _s(a.get("nearest_mode", "round_prefer_floor"))
        if ctm not in _RESIZE_COORDINATES:
            self.fail(f"Resize with coordinate_transformation_mode={ctm!r} is not supported")
        if nearest not in _RESIZE_ROUNDING:
            self.fail(f"Resize with nearest_mode={nearest!r} is not supported", TinycError)
        axes = [int(ax) % rank for ax in a.get("axes", range(rank))]
        factors, out = [1.0] * rank, list(shape)
        if scales is not None and scales.size:
            for ax, f in zip(axes, scales.reshape(-1).tolist()):
                factors[ax] = float(f)
                out[ax] = int(math.floor(shape[ax] * factors[ax]))
        elif sizes is not None and sizes.size:
            wanted = [int(v) for v in sizes.reshape(-1)]
            policy = _s(a.get("keep_aspect_ratio_policy", "stretch"))
            if policy == "stretch":
                for ax, n in zip(axes, wanted):
                    factors[ax], out[ax] = n / shape[ax], n
            else:  # one scale for all axes, the largest that fits / the smallest that covers
                ratios = [n / shape[ax] for ax, n in zip(axes, wanted)]
                f = min(ratios) if policy == "not_larger" else max(ratios)
                for ax in axes:
                    factors[ax], out[ax] = f, int(shape[ax] * f + 0.5)
        else:
            self.fail("Resize without scales or sizes", TinycError)
        if mode == "linear":
            self._resize_linear(node, a, x, shape, out, factors, ctm)
            return
        # tinyc's ResizeNearest repeats every pixel an integer number of times, i.e.
        # output pixel i reads input pixel i // k. Accept exactly the resizes whose
        # ONNX source pixels (coordinate transformation + nearest rounding) are those.
        repeats = []
        for ax in range(rank):
            k = out[ax] // shape[ax]
            if k < 1 or out[ax] != k * shape[ax] or not np.array_equal(
                    _nearest_source(ctm, nearest, shape[ax], out[ax], factors[ax]), np.arange(out[ax]) // k):
                self.fail(
                    f"Resize from {list(shape)} to {out} with coordinate_transformation_mode={ctm!r}, "
                    f"nearest_mode={nearest!r} is not an integer nearest upscale (the only resize tinyc supports)"
                )
            repeats.append(k)
        if repeats[0] != 1 or repeats[1] != 1:
            self.fail(f"Resize from {list(shape)} to {out} resizes the batch or channel axis; tinyc resizes H and W only")
        attrs = ResizeAttrs((repeats[2], repeats[3]) if rank == 4 else (1, repeats[2]))
        self.spatial(x, lambda xn: self.emit("ResizeNearest", [xn], attrs), out=node.output[0])

    def _resize_linear(self, node, a, x, shape, out, factors, ctm):
        """Bilinear resize of H and W (of W for NCW)."""
        if int(a.get("antialias", 0)) and any(o < i for o, i in zip(out, shape)):
            self.fail("Resize with antialias on a downscale is not supported")
        if out[:2] != list(shape[:2]):
            self.fail(f"Resize from {list(shape)} to {out} resizes the batch or channel axis; tinyc resizes H and W only")
        mode = {"half_pixel": "half_pixel", "pytorch_half_pixel": "half_pixel", "align_corners": "align_corners",
                "asymmetric": "asymmetric"}.get(ctm)
        if mode is None:
            self.fail(f"linear Resize with coordinate_transformation_mode={ctm!r} is not supported (half_pixel, "
                      "pytorch_half_pixel, align_corners, asymmetric)")
        if ctm == "pytorch_half_pixel" and min(out[2:]) == 1 and max(shape[2:]) > 1:
            self.fail("linear Resize with pytorch_half_pixel to a size of 1 is not supported")
        size = (out[2], out[3]) if len(shape) == 4 else (1, out[2])
        scale = (factors[2], factors[3]) if len(shape) == 4 else (1.0, factors[2])
        attrs = ResizeBilinearAttrs(size, mode, scale)
        self.spatial(x, lambda xn: self.emit("ResizeBilinear", [xn], attrs), out=node.output[0])

    def op_BatchNormalization(self, node, a):
        if len([o for o in node.output if o]) > 1 or int(a.get("training_mode", 0)):
            self.fail("training-mode BatchNormalization is not supported; export the model in eval mode")
        x = node.input[0]
        scale, bias, mean, var = (self.const(i, "BatchNormalization parameter") for i in node.input[1:5])
        eps = float(a.get("epsilon", 1e-5))
        k = (scale.astype(np.float64) / np.sqrt(var.astype(np.float64) + eps))
        b = bias.astype(np.float64) - mean.astype(np.float64) * k
        shape = self.shape(x)
        # spatial=0 (opsets 7-8): one statistic per element of C x D1 x ... x Dn
        bshape = shape[1:] if not int(a.get("spatial", 1)) else (-1,) + (1,) * (len(shape) - 2)
        kc = self.emit_const("bn_scale", k.astype(np.float32).reshape(bshape))
        bc = self.emit_const("bn_shift", b.astype(np.float32).reshape(bshape))
        y = self.emit("Mul", [x, kc], BinaryAttrs())
        self.emit("Add", [y, bc], BinaryAttrs(), out=node.output[0])

    def op_Identity(self, node, a):
        self.alias[node.output[0]] = self.name(node.input[0])

    def op_Dropout(self, node, a):
        if len(node.input) > 2 and node.input[2]:
            t = self.tensor(node.input[2])
            if not t.is_const or bool(t.data):
                self.fail("Dropout in training mode is not supported; export the model in eval mode")
        self.alias[node.output[0]] = self.name(node.input[0])
        if len(node.output) > 1 and node.output[1]:
            shape = self.shape(node.input[0])
            self.emit_const_named(node.output[1], np.ones(shape, dtype=np.bool_))

    def emit_const_named(self, name: str, data: np.ndarray):
        self.g.add_tensor(Tensor(name, data.shape, data.dtype.type, data))

    def _qparams(self, node, a, quantize: bool):
        if a.get("block_size"):
            self.fail("blocked quantization is not supported")
        scale = self.const(node.input[1], "scale")
        zp_t = self.tensor(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        if zp_t is not None and not zp_t.is_const:
            self.fail("zero point must be a constant")
        if zp_t is not None:
            dtype = zp_t.dtype
            zp = zp_t.data
        elif quantize:
            out_type = int(a.get("output_dtype", 0))
            if out_type and out_type not in _ONNX_DTYPES:
                self.fail(f"quantization to {_dtype_name(out_type)} is not supported (int8, uint8 only)")
            dtype = _ONNX_DTYPES[out_type] if out_type else np.uint8
            zp = np.zeros_like(scale, dtype=np.int32)
        else:
            dtype = self.tensor(node.input[0]).dtype
            zp = np.zeros_like(scale, dtype=np.int32)
        if dtype not in (np.int8, np.uint8, np.int32):
            self.fail(f"{np.dtype(dtype).name} quantization is not supported (int8, uint8, int32 only)")
        if quantize and dtype is np.int32:
            self.fail("quantizing activations to int32 is not supported")
        # A one-element scale is per-tensor even when written as a 1-D array.
        if scale.size == 1:
            return QuantParams(scale.reshape(()), np.asarray(zp).reshape(()), None), dtype
        rank = len(self.shape(node.input[0]))
        axis = int(a.get("axis", 1)) % max(rank, 1)
        if scale.ndim != 1 or self.shape(node.input[0])[axis] != scale.size:
            self.fail(f"scale of shape {list(scale.shape)} does not match axis {axis}", TinycError)
        return QuantParams(scale, np.asarray(zp).reshape(-1), axis), dtype

    def op_QuantizeLinear(self, node, a):
        q, dtype = self._qparams(node, a, True)
        self.emit("Quantize", [node.input[0]], QuantAttrs(q, dtype), out=node.output[0])

    def op_DequantizeLinear(self, node, a):
        out_type = int(a.get("output_dtype", 0))
        if out_type not in (0, TensorProto.FLOAT):
            self.fail(f"dequantizing to {_dtype_name(out_type)} is not supported (float32 only)")
        q, dtype = self._qparams(node, a, False)
        self.emit("Dequantize", [node.input[0]], QuantAttrs(q, dtype), out=node.output[0])

    # shape plumbing, folded to constants because shapes are static
    def op_Shape(self, node, a):
        shape = np.array(self.shape(node.input[0]), dtype=np.int64)
        start, end = a.get("start", 0), a.get("end", None)
        self.emit_const_named(node.output[0], shape[start:end])

    def op_Size(self, node, a):
        self.emit_const_named(node.output[0], np.array(int(np.prod(self.shape(node.input[0]))), dtype=np.int64))

    def op_Constant(self, node, a):
        if "value" in a:
            data = numpy_helper.to_array(a["value"])
        elif "value_float" in a:
            data = np.array(a["value_float"], dtype=np.float32)
        elif "value_floats" in a:
            data = np.array(a["value_floats"], dtype=np.float32)
        elif "value_int" in a:
            data = np.array(a["value_int"], dtype=np.int64)
        elif "value_ints" in a:
            data = np.array(a["value_ints"], dtype=np.int64)
        else:
            self.fail("Constant without a dense value is not supported")
        if data.dtype == np.float64:
            data = data.astype(np.float32)
        self.emit_const_named(node.output[0], data)

    def op_ConstantOfShape(self, node, a):
        shape = self.const(node.input[0], "shape").astype(np.int64)
        value = numpy_helper.to_array(a["value"]) if "value" in a else np.zeros(1, dtype=np.float32)
        self.emit_const_named(node.output[0], np.full(tuple(shape), value.reshape(-1)[0], dtype=value.dtype))

    def op_Gather(self, node, a):
        shape = self.shape(node.input[0])
        axis = int(a.get("axis", 0)) % len(shape)
        idx = self.tensor(node.input[1])
        if not idx.is_const:
            self.fail("Gather indices must be constant")
        values = np.asarray(idx.data).astype(np.int64)
        if values.size and (values.min() < -shape[axis] or values.max() >= shape[axis]):
            self.fail(f"Gather index out of range for axis {axis} of size {shape[axis]}", TinycError)
        values = np.where(values < 0, values + shape[axis], values)
        if values.size == 0:
            self.fail("Gather of no indices makes an empty tensor, which tinyc does not support")
        attrs = GatherAttrs(axis, tuple(int(v) for v in values.reshape(-1)), tuple(values.shape))
        self.emit("Gather", [node.input[0]], attrs, out=node.output[0])

    def op_Cast(self, node, a):
        to = _ONNX_DTYPES.get(int(a["to"]))
        if to is None:
            self.fail(f"Cast to {_dtype_name(int(a['to']))} is not supported")
        if to is np.float64:
            to = np.float32
        self.emit("Cast", [node.input[0]], CastAttrs(to), out=node.output[0])

    def op_Slice(self, node, a):
        shape = self.shape(node.input[0])
        rank = len(shape)
        if self.opset < 10:
            starts, ends = list(a["starts"]), list(a["ends"])
            axes = list(a.get("axes", range(len(starts))))
            steps = [1] * len(starts)
        else:
            starts = self.const(node.input[1], "starts").astype(np.int64).tolist()
            ends = self.const(node.input[2], "ends").astype(np.int64).tolist()
            axes_v = self.opt_const(node, 3)
            axes = axes_v.astype(np.int64).tolist() if axes_v is not None else list(range(len(starts)))
            steps_v = self.opt_const(node, 4)
            steps = steps_v.astype(np.int64).tolist() if steps_v is not None else [1] * len(starts)
        full_s, full_e, full_st = [0] * rank, list(shape), [1] * rank
        for s, e, ax, st in zip(starts, ends, axes, steps):
            ax %= rank
            sl = slice(s, e, st).indices(shape[ax])
            full_s[ax], full_e[ax], full_st[ax] = sl
        self.emit("Slice", [node.input[0]], SliceAttrs(tuple(full_s), tuple(full_e), tuple(full_st)), out=node.output[0])


# Ops tinyc has no handler for that are evaluated by onnx's reference implementation
# when all their inputs are constants (exporters' shape arithmetic): each one's
# output is no larger than its inputs broadcast together, except Range, whose
# length is checked against _MAX_FOLDED first.
_FOLDABLE = {"Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "Not", "And", "Or", "Xor", "Where", "Mod",
             "Floor", "Ceil", "Round", "Sign", "Range", "ReduceProd", "ReduceSum", "ReduceMax", "ReduceMin"}
_MAX_FOLDED = 1 << 20

# What Resize (mode nearest) can be asked to do, by the ONNX spec; tf_crop_and_resize
# (a region of interest) is left out on purpose.
_RESIZE_COORDINATES = ("half_pixel", "pytorch_half_pixel", "half_pixel_symmetric", "align_corners", "asymmetric",
                       "tf_half_pixel_for_nn")
_RESIZE_ROUNDING = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")


def _nearest_source(ctm: str, nearest: str, n_in: int, n_out: int, scale: float) -> np.ndarray:
    """Input index that ONNX Resize (mode nearest) reads for each output index of one axis."""
    x = np.arange(n_out, dtype=np.float64)
    if ctm == "half_pixel":
        xo = (x + 0.5) / scale - 0.5
    elif ctm == "pytorch_half_pixel":
        xo = (x + 0.5) / scale - 0.5 if n_out > 1 else np.zeros_like(x)
    elif ctm == "half_pixel_symmetric":
        offset = n_in / 2 * (1 - n_out / (scale * n_in))
        xo = offset + (x + 0.5) / scale - 0.5
    elif ctm == "align_corners":
        xo = x * (n_in - 1) / (n_out - 1) if n_out > 1 else np.zeros_like(x)
    elif ctm == "asymmetric":
        xo = x / scale
    elif ctm == "tf_half_pixel_for_nn":
        xo = (x + 0.5) / scale
    else:
        raise ValueError(f"unknown coordinate_transformation_mode {ctm!r}")
    lo = np.floor(xo)
    frac = xo - lo
    up = {"round_prefer_floor": frac > 0.5, "round_prefer_ceil": frac >= 0.5, "floor": np.zeros_like(frac, bool),
          "ceil": frac > 0}[nearest]
    return np.clip(lo + up, 0, n_in - 1).astype(np.int64)


def _c_friendly(stem: str) -> str:
    out = "".join(ch if ch.isalnum() else "_" for ch in stem)
    if not out or out[0].isdigit():
        out = "m_" + out
    return out
