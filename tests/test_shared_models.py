"""tinyc on the real models in ../shared/models (nobody on this team wrote them).

* every .onnx imports and `tinyc inspect` prints it;
* the float reference interpreter agrees with onnxruntime on every float model, and
  on the dequantized meaning of every int8 (QDQ) model;
* after canonicalization no layout Transpose, BatchNormalization, Identity or
  standalone Pad is left, and Keras' batch norm (Mul / Add) is folded away.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from onnx import helper, numpy_helper

from tests.conftest import SHARED_MODELS, shared_models_index
from tinyc import api
from tinyc.cli import cli
from tinyc.reference import run_float

INDEX = shared_models_index()
ALL_ONNX = sorted(p.relative_to(SHARED_MODELS).as_posix() for p in SHARED_MODELS.rglob("*.onnx")) if INDEX else []
FLOAT_MODELS = sorted({v for e in INDEX.values() for k, v in e.items() if k.startswith("onnx_float")})
INT8_MODELS = sorted((name, e["onnx_int8"]) for name, e in INDEX.items())
# Float ONNX exported from Keras .h5 files, where BatchNormalization is Mul / Add.
KERAS_EXPORTS = sorted(e["onnx_float"] for e in INDEX.values() if "onnx_float" in e)

pytestmark = pytest.mark.skipif(not INDEX, reason="../shared/models is not beside this checkout (CI provides it)")

_graphs: dict[str, object] = {}


def graph_of(rel: str):
    if rel not in _graphs:
        _graphs[rel] = api.load(SHARED_MODELS / rel)
    return _graphs[rel]


def ort_session(model: onnx.ModelProto | str):
    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])


def assert_close(ours, theirs, what):
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5, err_msg=what)


@pytest.mark.parametrize("rel", ALL_ONNX)
def test_inspect_every_shared_model(rel):
    result = CliRunner().invoke(cli, ["inspect", str(SHARED_MODELS / rel)])
    assert result.exit_code == 0, result.output
    assert "MACs" in result.output
    as_json = CliRunner().invoke(cli, ["inspect", "--json", str(SHARED_MODELS / rel)])
    assert as_json.exit_code == 0
    import json

    info = json.loads(as_json.output)
    assert info["layers"] and info["totals"]["params"] > 0


def test_inspect_macs_match_published_counts():
    """MACs of Conv / Gemm / MatMul agree with models.json's count for each model."""
    for name, entry in INDEX.items():
        info = api.inspect(graph_of(entry["onnx_int8"]))
        assert info["totals"]["macs"] == entry["macs"], name


@pytest.mark.parametrize("rel", FLOAT_MODELS)
def test_float_model_matches_onnxruntime(rel):
    graph = graph_of(rel)
    sess = ort_session(str(SHARED_MODELS / rel))
    rng = np.random.default_rng(0)
    (inp,) = sess.get_inputs()
    shape = [d if isinstance(d, int) else 1 for d in inp.shape]
    for _ in range(2):
        x = rng.standard_normal(shape).astype(np.float32)
        expected = sess.run(None, {inp.name: x})
        ours = api.run_reference(graph, api.to_batch(graph, {graph.inputs[0]: x}))
        for name, want in zip(graph.outputs, expected):
            assert_close(ours[name][0], want, f"{rel} output {name}")


def strip_qdq(model: onnx.ModelProto) -> onnx.ModelProto:
    """The float meaning of a QDQ model, made without tinyc: weights dequantized,
    activation Quantize / Dequantize replaced by Identity, integer I/O made float."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    nodes = []
    for n in g.node:
        if n.op_type == "DequantizeLinear" and n.input[0] in inits:
            q = numpy_helper.to_array(inits[n.input[0]]).astype(np.float64)
            s = numpy_helper.to_array(inits[n.input[1]]).astype(np.float64)
            z = numpy_helper.to_array(inits[n.input[2]]).astype(np.float64) if len(n.input) > 2 else np.zeros_like(s)
            axis = next((a.i for a in n.attribute if a.name == "axis"), 1)
            if s.ndim == 1 and s.size > 1:
                shape = [1] * q.ndim
                shape[axis] = -1
                s, z = s.reshape(shape), z.reshape(shape)
            g.initializer.append(numpy_helper.from_array(((q - z) * s).astype(np.float32), n.output[0]))
        elif n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            nodes.append(helper.make_node("Identity", [n.input[0]], [n.output[0]]))
        else:
            nodes.append(n)
    del g.node[:]
    g.node.extend(nodes)
    del g.value_info[:]
    for vi in list(g.input) + list(g.output):
        vi.type.tensor_type.elem_type = onnx.TensorProto.FLOAT
        dims = vi.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].Clear()
            dims[0].dim_value = 1
    return model


@pytest.mark.parametrize("name,rel", INT8_MODELS)
def test_int8_model_dequantized_meaning_matches_onnxruntime(name, rel):
    graph = graph_of(rel)
    sess = ort_session(strip_qdq(onnx.load(str(SHARED_MODELS / rel))))
    goldens = np.load(SHARED_MODELS / "goldens" / f"{name}.npz")
    (inp,) = graph.inputs
    t = graph.tensors[inp]
    for sample in goldens["inputs"][:2]:
        # the float value the model's input means, external layout
        x = t.quant.dequantize(sample) if np.issubdtype(sample.dtype, np.integer) else sample.astype(np.float32)
        expected = sess.run(None, {sess.get_inputs()[0].name: x})
        perm = graph.input_perm.get(inp)
        out = run_float(graph, {inp: x.transpose(perm) if perm else x})
        for o, want in zip(graph.outputs, expected):
            got = out[o].transpose(graph.output_perm[o]) if o in graph.output_perm else out[o]
            assert_close(got, want, f"{name} output {o}")


@pytest.mark.parametrize("rel", ALL_ONNX)
def test_canonical_ir_has_no_layout_or_glue_ops(rel):
    ops = [n.op for n in graph_of(rel).nodes]
    for banned in ("Transpose", "BatchNormalization", "Identity", "Pad", "Quantize", "Dequantize"):
        assert banned not in ops, f"{rel}: {banned} left after canonicalization"


@pytest.mark.parametrize("rel", KERAS_EXPORTS)
def test_keras_batchnorm_folded(rel):
    g = graph_of(rel)
    for n in g.nodes:
        assert n.op != "Mul", f"{rel}: Mul {n.name} left"
        if n.op in ("Add", "Sub"):
            assert not any(g.tensors[i].is_const for i in n.inputs), f"{rel}: {n.op} {n.name} by a constant left"
