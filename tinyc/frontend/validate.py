"""Every ONNX node checked against its op's definition before a handler reads it.

A model file is untrusted input: a broken exporter, a bad edit or an attacker
can give a node too many or too few inputs, attributes of the wrong type or out
of range, tensors of the wrong rank, or quantization parameters no fixed-point
arithmetic can hold. The importer's handlers index ``node.input``, shapes and
attributes freely; this layer makes that safe. Two parts:

* the op's ONNX schema for the model's opset (onnx.defs, the definition ONNX
  itself checks against): input and output counts, required inputs present,
  attribute names and types, required attributes;
* the ranges and ranks the schema cannot say (``RULES``): axes inside the rank,
  a permutation that is one, kernel shapes that agree with the weights, pads,
  strides and dilations that make sense, quantization scales that are finite,
  positive and normal, zero points that match their scales.

Each failure names the node and the field, and exits 2 like every user error.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import AttributeProto, defs

from ..errors import TinycError

_SINGLE = defs.OpSchema.FormalParameterOption.Single
_VARIADIC = defs.OpSchema.FormalParameterOption.Variadic
_ATTR_TYPE_NAMES = {v: k.lower() for k, v in AttributeProto.AttributeType.items()}
# the smallest normal float32: a smaller scale loses precision and its inverse overflows
MIN_SCALE = float(np.finfo(np.float32).tiny)


def check_node(imp, node, opset: int) -> None:
    """Fail (``imp.fail``) unless ``node`` fits its op's definition."""
    try:
        schema = defs.get_schema(node.op_type, opset, "")
    except defs.SchemaError:
        imp.fail(f"op {node.op_type} does not exist in opset {opset} (the model's); re-export the model with an "
                 "opset that has it", TinycError)
    _check_arity(imp, node, schema)
    _check_attributes(imp, node, schema)
    rule = RULES.get(node.op_type)
    if rule is not None:
        rule(imp, node, onnx_attrs(node), opset)


def onnx_attrs(node) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _check_arity(imp, node, schema) -> None:
    inputs = list(node.input)
    while inputs and not inputs[-1]:  # trailing empty names: optional inputs left out
        inputs.pop()
    n = len(inputs)
    if not schema.min_input <= n <= schema.max_input:
        want = (f"{schema.min_input}" if schema.min_input == schema.max_input
                else f"{schema.min_input} to {schema.max_input}" if schema.max_input < 2**31 - 1
                else f"at least {schema.min_input}")
        imp.fail(f"has {n} inputs where {node.op_type} takes {want}; the model is damaged, re-export it", TinycError)
    for k, name in enumerate(inputs):
        formal = schema.inputs[min(k, len(schema.inputs) - 1)]
        if not name and formal.option in (_SINGLE, _VARIADIC):
            imp.fail(f"input {k} ({formal.name}) is required but empty; the model is damaged, re-export it",
                     TinycError)
    outputs = list(node.output)
    if not schema.min_output <= len(outputs) <= schema.max_output or not outputs or not outputs[0]:
        imp.fail(f"has {len(outputs)} outputs ({', '.join(map(repr, outputs))}) where {node.op_type} gives "
                 f"{schema.min_output} to {schema.max_output} with the first named; the model is damaged, "
                 "re-export it", TinycError)


def _check_attributes(imp, node, schema) -> None:
    seen = set()
    for a in node.attribute:
        if a.name in seen:
            imp.fail(f"attribute {a.name!r} is given twice; the model is damaged, re-export it", TinycError)
        seen.add(a.name)
        formal = schema.attributes.get(a.name)
        if formal is None:
            imp.fail(f"attribute {a.name!r} is not an attribute of {node.op_type}; the model is damaged, re-export it",
                     TinycError)
        want = int(formal.type)
        if a.type != want:
            imp.fail(f"attribute {a.name!r} is of type {_ATTR_TYPE_NAMES.get(a.type, a.type)} where "
                     f"{node.op_type} takes {_ATTR_TYPE_NAMES.get(want, want)}; the model is damaged, re-export it",
                     TinycError)
    for name, formal in schema.attributes.items():
        if formal.required and name not in seen:
            imp.fail(f"required attribute {name!r} is missing; the model is damaged, re-export it", TinycError)


# ------------------------------------------------------------------ rules
def _bad(imp, what: str) -> None:
    imp.fail(f"{what}; the model is damaged, re-export it", TinycError)


def _rank(imp, node, k: int) -> int:
    return len(imp.shape(node.input[k]))


def _axis_in(imp, axis: int, rank: int, what: str = "axis", inclusive: bool = False) -> None:
    hi = rank + 1 if inclusive else rank
    if not -hi <= axis < hi:
        _bad(imp, f"{what} {axis} is outside [{-hi}, {hi - 1}] for an input of rank {rank}")


# No kernel, stride, dilation or pad of a microcontroller model comes near this;
# the C kernels multiply them by row sizes in int32.
MAX_WINDOW = 1 << 15


def _int_list(imp, a: dict, name: str, length: int | None, low: int) -> None:
    if name not in a:
        return
    values = list(a[name])
    if length is not None and len(values) != length:
        _bad(imp, f"{name} {values} has {len(values)} values where the input's {length} would be expected")
    if any(v < low for v in values):
        _bad(imp, f"{name} {values} has a value below {low}")
    if any(v > MAX_WINDOW for v in values):
        _bad(imp, f"{name} {values} has a value above {MAX_WINDOW}")


def _spatial(imp, node, a: dict, weights: bool) -> None:
    rank = _rank(imp, node, 0)
    if rank < 3:
        _bad(imp, f"input 0 has rank {rank}; {node.op_type} takes N x C x spatial dims")
    n_spatial = rank - 2
    if weights:
        w_shape = imp.shape(node.input[1])
        if len(w_shape) != rank:
            _bad(imp, f"weights of shape {list(w_shape)} have rank {len(w_shape)} where the input has {rank}")
        if "kernel_shape" in a and tuple(a["kernel_shape"]) != tuple(w_shape[2:]):
            _bad(imp, f"kernel_shape {list(a['kernel_shape'])} contradicts the weights' shape {list(w_shape)}")
        group = int(a.get("group", 1))
        if not 1 <= group <= MAX_WINDOW:
            _bad(imp, f"group {group} is outside [1, {MAX_WINDOW}]")
    elif "kernel_shape" not in a and node.op_type not in ("GlobalAveragePool", "GlobalMaxPool"):
        _bad(imp, "kernel_shape is missing")
    _int_list(imp, a, "kernel_shape", n_spatial, 1)
    _int_list(imp, a, "strides", n_spatial, 1)
    _int_list(imp, a, "dilations", n_spatial, 1)
    _int_list(imp, a, "pads", 2 * n_spatial, 0)


def _conv(imp, node, a, opset):
    _spatial(imp, node, a, weights=True)
    if len(node.input) > 2 and node.input[2]:
        b_shape = imp.shape(node.input[2])
        out_c = imp.shape(node.input[1])[0]
        if tuple(b_shape) != (out_c,):
            _bad(imp, f"bias of shape {list(b_shape)} does not match the {out_c} output channels")


def _pool(imp, node, a, opset):
    _spatial(imp, node, a, weights=False)


def _axis_rule(attr: str = "axis", inclusive: bool = False):
    def rule(imp, node, a, opset):
        if attr in a:
            _axis_in(imp, int(a[attr]), _rank(imp, node, 0), attr, inclusive)
    return rule


def _concat(imp, node, a, opset):
    ranks = {len(imp.shape(i)) for i in node.input if i}
    if len(ranks) != 1:
        _bad(imp, f"inputs of ranks {sorted(ranks)} cannot be concatenated")
    _axis_in(imp, int(a["axis"]), ranks.pop())


def _transpose(imp, node, a, opset):
    rank = _rank(imp, node, 0)
    if "perm" in a and sorted(a["perm"]) != list(range(rank)):
        _bad(imp, f"perm {list(a['perm'])} is not a permutation of the input's {rank} axes")


def _reshape(imp, node, a, opset):
    if len(node.input) < 2:
        return  # Reshape-1 (shape as an attribute) has no handler; the schema check refuses it first
    src = imp.shape(node.input[0])
    target = imp.tensor(node.input[1])
    if target.is_const:
        values = np.asarray(target.data).reshape(-1)
        if not int(a.get("allowzero", 0)):
            zeros = [k for k, v in enumerate(values.tolist()) if v == 0 and k >= len(src)]
            if zeros:
                _bad(imp, f"target shape {values.tolist()} copies dimension {zeros[0]} (a 0) that the "
                          f"rank-{len(src)} input does not have")
        if (values < -1).any():
            _bad(imp, f"target shape {values.tolist()} has a dimension below -1")


def _axes_attr(imp, node, a, opset):
    rank = _rank(imp, node, 0)
    if "axes" not in a:
        return
    out_rank = rank + len(a["axes"]) if node.op_type == "Unsqueeze" else rank
    norm = []
    for ax in a["axes"]:
        _axis_in(imp, int(ax), out_rank, "axes value")
        norm.append(int(ax) % out_rank)
    if len(set(norm)) != len(norm):
        _bad(imp, f"axes {list(a['axes'])} repeat an axis")


def _gemm(imp, node, a, opset):
    for k in (0, 1):
        if _rank(imp, node, k) != 2:
            _bad(imp, f"input {k} has rank {_rank(imp, node, k)}; Gemm takes matrices")


def _matmul(imp, node, a, opset):
    for k in (0, 1):
        if _rank(imp, node, k) < 1:
            _bad(imp, f"input {k} is a scalar; MatMul takes tensors of rank >= 1")


def _batchnorm(imp, node, a, opset):
    shape = imp.shape(node.input[0])
    if len(shape) < 2:
        _bad(imp, f"input 0 has rank {len(shape)}; BatchNormalization takes N x C x ...")
    for k in range(1, 5):
        if int(np.prod(imp.shape(node.input[k]))) not in (shape[1], int(np.prod(shape[1:]))):
            _bad(imp, f"input {k} of shape {list(imp.shape(node.input[k]))} does not match the {shape[1]} channels")


def _quant(imp, node, a, opset):
    """Scale and zero point of QuantizeLinear / DequantizeLinear."""
    scale_t = imp.tensor(node.input[1])
    if scale_t.is_const:
        scale = np.asarray(scale_t.float_value(), dtype=np.float64).reshape(-1)
        if scale.size == 0:
            _bad(imp, "the scale is empty")
        if not np.isfinite(scale).all():
            _bad(imp, f"scale {node.input[1]!r} is not finite ({scale[~np.isfinite(scale)][0]})")
        # A constant's scale may be negative (TFLite converters leave some: the weights' sign flips); an
        # activation's may not, and no scale may be zero or below a normal float32.
        weights = node.op_type == "DequantizeLinear" and imp.tensor(node.input[0]).is_const
        small = (np.abs(scale) if weights else scale) < MIN_SCALE
        if small.any():
            what = "nonzero" if weights else "positive"
            _bad(imp, f"scale {node.input[1]!r} holds {scale[small][0]:g}; a scale must be {what} and at least "
                      f"{MIN_SCALE:g} (a normal float32) in magnitude")
    else:
        scale = None
    if len(node.input) > 2 and node.input[2]:
        zp_t = imp.tensor(node.input[2])
        zp_size = int(np.prod(zp_t.shape))
        if scale is not None and zp_size != scale.size:
            _bad(imp, f"zero point {node.input[2]!r} has {zp_size} values for a scale of {scale.size}")
        if zp_t.dtype not in (np.int8, np.uint8, np.int32, np.int16, np.uint16):
            _bad(imp, f"zero point {node.input[2]!r} is {np.dtype(zp_t.dtype).name}; give an integer zero point")
        if node.op_type == "DequantizeLinear" and imp.tensor(node.input[0]).dtype != zp_t.dtype:
            _bad(imp, f"input {node.input[0]!r} is {np.dtype(imp.tensor(node.input[0]).dtype).name} but its zero "
                      f"point is {np.dtype(zp_t.dtype).name}; they must have one type")
    rank = _rank(imp, node, 0)
    if scale is not None and scale.size > 1:
        axis = int(a.get("axis", 1))
        _axis_in(imp, axis, rank)
        dim = imp.shape(node.input[0])[axis]
        if scale.size != dim:
            _bad(imp, f"{scale.size} scales for axis {axis}, which has {dim} elements")


def _pad(imp, node, a, opset):
    rank = _rank(imp, node, 0)
    if "pads" in a and len(a["pads"]) != 2 * rank:
        _bad(imp, f"pads {list(a['pads'])} has {len(a['pads'])} values for an input of rank {rank}")


RULES = {
    "Conv": _conv,
    "MaxPool": _pool,
    "AveragePool": _pool,
    "Concat": _concat,
    "Transpose": _transpose,
    "Reshape": _reshape,
    "Squeeze": _axes_attr,
    "ReduceMean": _axes_attr,
    "Unsqueeze": _axes_attr,
    "Gemm": _gemm,
    "MatMul": _matmul,
    "BatchNormalization": _batchnorm,
    "QuantizeLinear": _quant,
    "DequantizeLinear": _quant,
    "Pad": _pad,
    "Softmax": _axis_rule(),
    "LogSoftmax": _axis_rule(),
    "Flatten": _axis_rule(inclusive=True),
    "Gather": _axis_rule(),
}
