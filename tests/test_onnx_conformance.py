"""ONNX's own operator conformance cases, run through tinyc's import pipeline and
float reference interpreter.

The onnx wheel ships its backend test suite in two forms, and this module reads both:
onnx <= 1.22 has every case on disk, a directory with ``model.onnx`` and
``test_data_set_*/{input,output}_*.pb``; from onnx 1.23 on the node cases are built in
memory when loaded (``TestCase.model``, a ModelProto, and ``TestCase.data_sets``, a list
of (inputs, outputs) with the inputs in graph-input order) and only the model cases
(``pytorch-converted`` ...) stay on disk. This module selects the cases whose graphs
use only ops tinyc imports (node tests, plus the PyTorch-exported Conv / pool / pad
cases), runs each through ``tinyc.api.load`` + ``run_reference`` and compares every
output with the expected one. The summary names the onnx version.

Outcomes per case:
  passed       every output matches (rtol 1e-4, atol 1e-5; integer outputs exactly);
  unsupported  tinyc refused the model with ``UnsupportedError`` (a deliberate,
               named limitation, e.g. 3-D convolution or linear Resize);
  failed       any other exception, or a wrong shape / type / value.

Two adaptations turn the suite's "everything is a graph input" style into what a
deployed model looks like, and are reported in the summary:
  * an input that only feeds parameter slots (Conv weights, Reshape shape, Pad pads,
    Clip bounds, BatchNormalization statistics, quantization scales ...) becomes an
    initializer holding the case's data: tinyc compiles weights and shapes into
    flash and requires them constant;
  * models exported below tinyc's minimum opset (the PyTorch cases use opset 6) are
    upgraded with ``onnx.version_converter``, as tinyc's error message tells users to.
Cases are not selected when they use types tinyc has no use for (float16, bfloat16,
double, 8-/4-/2-bit floats and ints, strings, sequences), or non-float32 data with
arithmetic ops (tinyc's float path is float32; integers reach it only through
Quantize/DequantizeLinear, whose int8 / uint8 cases are kept).
"""

from __future__ import annotations

import collections
import functools
import glob
import os
import re
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx
import pytest
from onnx import TensorProto, numpy_helper, version_converter
from onnx.backend.test.loader import load_model_tests

import tinyc.api
from tinyc.errors import UnsupportedError
from tinyc.frontend.onnx import MIN_OPSET

RTOL, ATOL = 1e-4, 1e-5
# Cases whose expected outputs onnx writes by hand, rounded to 4 decimals: they hold
# only to half a unit in the last written place.
ROUNDED_EXPECTATIONS = {"test_averagepool_2d_ceil_last_window_starts_on_pad": 5e-5}
# What passes today is a few cases above this; a regression that turns many cases into
# "unsupported" (or breaks them) drops below it and fails the summary. Each onnx release
# ships other cases, so the floor goes by version (onnx 1.16 .. 1.23 pass 221, 221, 223,
# 223, 227, 227, 230, 226; 1.23 builds 12 of its cases at opset 28, above what tinyc
# reads); a later onnx is held to the newest floor.
MIN_PASSED = {(1, 16): 216, (1, 18): 218, (1, 20): 222, (1, 22): 225, (1, 23): 335}


def min_passed(version: str = onnx.__version__) -> int:
    major_minor = tuple(int(p) for p in version.split(".")[:2])
    floors = [floor for since, floor in sorted(MIN_PASSED.items()) if since <= major_minor]
    return floors[-1] if floors else min(MIN_PASSED.values())

SUPPORTED_OPS = {
    "Conv", "Gemm", "MatMul", "Add", "Sub", "Mul", "Div", "Relu", "Clip", "LeakyRelu", "Sigmoid",
    "HardSigmoid", "HardSwish", "Tanh", "MaxPool", "AveragePool", "GlobalAveragePool", "ReduceMean",
    "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Concat", "Pad", "Resize",
    "BatchNormalization", "Softmax", "LogSoftmax", "Identity", "Dropout", "QuantizeLinear",
    "DequantizeLinear", "Erf", "Sqrt", "Exp", "Log", "Abs", "Neg", "Reciprocal", "Softplus", "Elu", "Gelu", "Pow",
    "Max", "Min", "Sum", "Expand", "Split", "LayerNormalization",
}
# Shape plumbing the importer folds to constants; allowed beside the ops above.
HELPER_OPS = {"Constant", "Shape", "Size", "ConstantOfShape", "Gather", "Cast", "Slice"}
QDQ_OPS = {"QuantizeLinear", "DequantizeLinear"}
# Ops that only move data: any integer type tinyc stores is fine through them.
# (Dropout included: its optional mask output is bool.)
MOVER_OPS = {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Concat", "Pad", "Identity", "Dropout"}

# Input slots that hold parameters (weights, shapes, bounds) rather than activations.
PARAM_SLOTS = {
    "Conv": {1, 2}, "Gemm": {1, 2}, "BatchNormalization": {1, 2, 3, 4}, "Clip": {1, 2},
    "Reshape": {1}, "Squeeze": {1}, "Unsqueeze": {1}, "ReduceMean": {1}, "Pad": {1, 2, 3},
    "Resize": {1, 2, 3}, "Dropout": {1, 2}, "QuantizeLinear": {1, 2}, "DequantizeLinear": {1, 2},
    "Slice": {1, 2, 3, 4}, "Gather": {1}, "ConstantOfShape": {0}, "Pow": {1}, "Expand": {1}, "Split": {1},
    "LayerNormalization": {1, 2},
}
SHAPE_READERS = {"Shape", "Size"}  # read only the (static) shape of their input

_EXOTIC = {
    TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.DOUBLE, TensorProto.STRING,
    TensorProto.COMPLEX64, TensorProto.COMPLEX128,
} | {
    getattr(TensorProto, n) for n in (
        "FLOAT8E4M3FN", "FLOAT8E4M3FNUZ", "FLOAT8E5M2", "FLOAT8E5M2FNUZ", "FLOAT8E8M0", "UINT4", "INT4",
        "FLOAT4E2M1", "UINT2", "INT2",
    ) if hasattr(TensorProto, n)
}
_QDQ_TYPES = {TensorProto.FLOAT, TensorProto.INT8, TensorProto.UINT8, TensorProto.INT32}
_MOVER_TYPES = {TensorProto.FLOAT, TensorProto.INT8, TensorProto.UINT8, TensorProto.INT16, TensorProto.INT32,
                TensorProto.INT64, TensorProto.BOOL}


# ------------------------------------------------------------------ selection
@dataclass
class Case:
    name: str
    kind: str
    model_dir: str | None  # onnx <= 1.22 (and model cases): model.onnx + test_data_set_*/ on disk
    model: onnx.ModelProto | None = field(default=None, repr=False)  # onnx >= 1.23 node cases: in memory
    data_sets: Sequence | None = field(default=None, repr=False)  # with `model`: [(inputs, outputs), ...]
    baked: list[str] = field(default_factory=list)  # inputs turned into initializers

    @property
    def in_memory(self) -> bool:
        return self.model is not None


def _load_model(tc) -> onnx.ModelProto | None:
    """A fresh copy of a case's model (a ``Case`` or onnx's ``TestCase``): the one held
    in memory (onnx >= 1.23), else ``model.onnx`` in its directory; None if it has neither."""
    if tc.model is not None:
        model = onnx.ModelProto()
        model.CopyFrom(tc.model)  # _prepare_model edits it; onnx's copy is shared
        return model
    if tc.model_dir is None:
        return None
    path = os.path.join(tc.model_dir, "model.onnx")
    return onnx.load(path) if os.path.exists(path) else None


def _all_nodes(graph):
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.HasField("g"):
                yield from _all_nodes(attr.g)
            for g in attr.graphs:
                yield from _all_nodes(g)


def _elem_types(model) -> set[int]:
    g = model.graph
    types = {t.data_type for t in g.initializer}
    for vi in list(g.input) + list(g.output):
        # sequences, optionals and maps have no tensor_type: UNDEFINED marks them
        types.add(vi.type.tensor_type.elem_type if vi.type.HasField("tensor_type") else TensorProto.UNDEFINED)
    for node in _all_nodes(g):
        for attr in node.attribute:
            if attr.HasField("t"):
                types.add(attr.t.data_type)
            if attr.name in ("to", "output_dtype") and attr.type == onnx.AttributeProto.INT and attr.i:
                types.add(attr.i)
    return types


def _bakeable_inputs(model) -> list[str]:
    """Graph inputs used only as parameters (see PARAM_SLOTS)."""
    g = model.graph
    inits = {t.name for t in g.initializer}
    uses = collections.defaultdict(list)
    for node in g.node:
        for k, name in enumerate(node.input):
            if name:
                uses[name].append((node.op_type, k))
    out_names = {o.name for o in g.output}
    result = []
    for vi in g.input:
        u = uses.get(vi.name)
        if vi.name in inits or not u or vi.name in out_names:
            continue
        if all(op in SHAPE_READERS or k in PARAM_SLOTS.get(op, ()) for op, k in u):
            if any(op not in SHAPE_READERS for op, _ in u):
                result.append(vi.name)
    return result


LEFT_OUT: collections.Counter = collections.Counter()  # cases with supported ops, not selected, by why


def _select(kind: str, tc) -> Case | None:
    model = _load_model(tc)
    if model is None:
        return None
    ops = {n.op_type for n in _all_nodes(model.graph)}
    if not ops & SUPPORTED_OPS or not ops <= SUPPORTED_OPS | HELPER_OPS:
        return None
    types = _elem_types(model)
    if types & _EXOTIC or TensorProto.UNDEFINED in types:
        LEFT_OUT["types tinyc has no use for"] += 1
        return None
    baked = _bakeable_inputs(model)
    inits = {t.name for t in model.graph.initializer}
    data = [vi for vi in list(model.graph.input) + list(model.graph.output)
            if vi.name not in inits and vi.name not in baked]
    data_types = {vi.type.tensor_type.elem_type for vi in data}
    if ops & QDQ_OPS:
        allowed = _QDQ_TYPES
    elif ops <= MOVER_OPS | HELPER_OPS:
        allowed = _MOVER_TYPES
    else:
        allowed = {TensorProto.FLOAT}
    if not data_types <= allowed or not types <= allowed | {TensorProto.INT64}:
        LEFT_OUT["integer data through arithmetic, or 16-bit quantization"] += 1
        return None
    held = tc.model is not None
    return Case(tc.name, kind, tc.model_dir, tc.model, tc.data_sets if held else None, baked)


@functools.lru_cache(maxsize=1)
def selected_cases() -> tuple[Case, ...]:
    cases = []
    for kind in ("node", "pytorch-converted"):
        for tc in load_model_tests(kind=kind):
            case = _select(kind, tc)
            if case is not None:
                cases.append(case)
    return tuple(sorted(cases, key=lambda c: (c.kind, c.name)))


# -------------------------------------------------------------------- running
@dataclass
class Outcome:
    status: str  # passed | unsupported | failed
    detail: str = ""


def _read_pb(path: str) -> tuple[str, np.ndarray]:
    t = TensorProto()
    with open(path, "rb") as f:
        t.ParseFromString(f.read())
    return t.name, numpy_helper.to_array(t)


def _as_array(value) -> np.ndarray:
    """An in-memory data set entry (onnx >= 1.23: an ndarray, a numpy scalar or a TensorProto)."""
    return numpy_helper.to_array(value) if isinstance(value, TensorProto) else np.asarray(value)


def _data_sets(case: Case, model) -> list[tuple[dict[str, np.ndarray], list[np.ndarray]]]:
    """(inputs by name, expected outputs in graph-output order) for each data set."""
    inits = {t.name for t in model.graph.initializer}
    feeds_order = [vi.name for vi in model.graph.input if vi.name not in inits]
    if case.in_memory:
        return [({name: _as_array(x) for name, x in zip(feeds_order, inputs, strict=True)},
                 [_as_array(y) for y in outputs])
                for inputs, outputs in case.data_sets or ()]
    sets = []
    for ds in sorted(glob.glob(os.path.join(case.model_dir, "test_data_set_*"))):
        n_in = len(glob.glob(os.path.join(ds, "input_*.pb")))
        n_out = len(glob.glob(os.path.join(ds, "output_*.pb")))
        inputs = {}
        for k in range(n_in):
            name, arr = _read_pb(os.path.join(ds, f"input_{k}.pb"))
            inputs[name or feeds_order[k]] = arr
        outputs = [_read_pb(os.path.join(ds, f"output_{k}.pb"))[1] for k in range(n_out)]
        sets.append((inputs, outputs))
    return sets


def _prepare_model(case: Case, model: onnx.ModelProto, first_inputs: dict[str, np.ndarray]) -> onnx.ModelProto:
    """The case's model as a deployed model: parameters baked in, opset >= tinyc's minimum."""
    if case.baked:
        keep = [vi for vi in model.graph.input if vi.name not in case.baked]
        del model.graph.input[:]
        model.graph.input.extend(keep)
        for name in case.baked:
            model.graph.initializer.append(numpy_helper.from_array(first_inputs[name], name))
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    if opset < MIN_OPSET:
        model = version_converter.convert_version(model, MIN_OPSET)
    return model


def _compare(name: str, got: np.ndarray, want: np.ndarray, atol: float = ATOL) -> str | None:
    if got.shape != want.shape:
        return f"output {name!r}: shape {list(got.shape)}, expected {list(want.shape)}"
    if np.issubdtype(want.dtype, np.floating):
        if not np.issubdtype(got.dtype, np.floating):
            return f"output {name!r}: type {got.dtype}, expected {want.dtype}"
        bad = ~np.isclose(got.astype(np.float64), want.astype(np.float64), rtol=RTOL, atol=atol, equal_nan=True)
        if bad.any():
            i = np.unravel_index(np.argmax(bad), bad.shape)
            return (f"output {name!r}: {int(bad.sum())}/{bad.size} values differ, "
                    f"e.g. at {tuple(int(v) for v in i)}: {got[i]!r} vs expected {want[i]!r}")
        return None
    if got.dtype != want.dtype:
        return f"output {name!r}: type {got.dtype}, expected {want.dtype}"
    if not np.array_equal(got, want):
        bad = got != want
        return f"output {name!r}: {int(bad.sum())}/{bad.size} integer values differ"
    return None


def _run(case: Case) -> Outcome:
    model = _load_model(case)
    sets = _data_sets(case, model)
    if not sets:
        return Outcome("failed", "no test data sets")
    try:
        model = _prepare_model(case, model, sets[0][0])
        with tempfile.TemporaryDirectory(prefix="tinyc-conf-") as tmp:
            path = os.path.join(tmp, "model.onnx")
            onnx.save(model, path)
            graph = tinyc.api.load(path)
        out_names = [o.name for o in model.graph.output]
        for inputs, expected in sets:
            feeds = {n: a for n, a in inputs.items() if n not in case.baked}
            batch = tinyc.api.to_batch(graph, feeds)
            results = tinyc.api.shape_like_input(tinyc.api.run_reference(graph, batch), batch.layout)
            for name, want in zip(out_names, expected):
                atol = ATOL + ROUNDED_EXPECTATIONS.get(case.name, 0.0)
                problem = _compare(name, np.asarray(results[name]), want, atol)
                if problem:
                    return Outcome("failed", problem)
    except UnsupportedError as e:
        return Outcome("unsupported", str(e))
    except Exception as e:  # any other exception is a bug in tinyc
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        return Outcome("failed", f"{type(e).__name__}: {first}")
    return Outcome("passed")


_OUTCOMES: dict[str, Outcome] = {}
_SECONDS = [0.0]  # time spent running cases, for the summary


def outcome(case: Case) -> Outcome:
    if case.name not in _OUTCOMES:
        start = time.perf_counter()
        _OUTCOMES[case.name] = _run(case)
        _SECONDS[0] += time.perf_counter() - start
    return _OUTCOMES[case.name]


def _reason(message: str) -> str:
    """An unsupported message without its file / node prefix."""
    tail = message.split(": ", 1)[1] if message.startswith(("/", tempfile.gettempdir())) else message
    if tail.startswith("node ") and "): " in tail:
        tail = tail.split("): ", 1)[1]
    return tail


def _reason_group(message: str) -> str:
    """The reason with its shapes left out, so that one limitation is one line."""
    return re.sub(r"\[[-\d, ]*\]", "[..]", _reason(message))


# ---------------------------------------------------------------------- tests
@pytest.mark.parametrize("case", selected_cases(), ids=lambda c: c.name)
def test_onnx_case(case: Case):
    result = outcome(case)
    if result.status == "unsupported":
        pytest.skip(f"unsupported: {_reason(result.detail)}")
    assert result.status == "passed", f"{case.name}: {result.detail}"


def test_onnx_conformance_summary(capsys):
    cases = selected_cases()
    results = {c.name: outcome(c) for c in cases}
    by_status = collections.Counter(r.status for r in results.values())
    reasons = collections.Counter(_reason_group(r.detail) for r in results.values() if r.status == "unsupported")
    ran = by_status["passed"] + by_status["failed"]
    held = sum(1 for c in cases if c.in_memory)
    lines = [
        f"ONNX conformance, onnx {onnx.__version__} ({held} cases held in memory, {len(cases) - held} read "
        f"from model.onnx files): {len(cases)} cases selected, {ran} ran, {by_status['passed']} passed, "
        f"{by_status['failed']} failed, {by_status['unsupported']} unsupported "
        f"({sum(1 for c in cases if c.baked)} with parameter inputs baked as initializers; "
        f"{_SECONDS[0]:.1f} s in tinyc)",
        "not selected although their ops are supported: "
        + (", ".join(f"{n} for {why}" for why, n in sorted(LEFT_OUT.items())) or "none"),
    ]
    if reasons:
        lines.append("unsupported, by reason:")
        lines += [f"  {n:3d} x {reason}" for reason, n in sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))]
    failed = sorted(n for n, r in results.items() if r.status == "failed")
    if failed:
        lines.append("failed:")
        lines += [f"  {n}: {results[n].detail}" for n in failed]
    text = "\n".join(lines)
    print(text)  # shown with -rA / on failure
    with capsys.disabled():  # and in CI logs, whatever the capture mode
        sys.__stderr__.write("\n" + text + "\n")
        sys.__stderr__.flush()
    assert not failed, f"{len(failed)} ONNX conformance cases failed: {', '.join(failed)}"
    assert by_status["passed"] >= min_passed(), (
        f"only {by_status['passed']} ONNX conformance cases passed with onnx {onnx.__version__} "
        f"(expected at least {min_passed()})")
