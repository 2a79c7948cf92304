"""The ops and rewrites of issue 15, on graphs built with onnx.helper in the shapes
PyTorch's exporters produce (no torch needed).

Every graph is checked three ways: tinyc's float reference against onnxruntime;
the int8 build (PTQ from calibration samples) as generated C against tinyc's
int8 reference, bit for bit; and the int8 outputs against the float ones (SQNR),
which shows each kernel computes the op it stands for. Structural checks say
which rewrite fired (the IR ops after canonicalization, the kernels called).
"""

from __future__ import annotations

import math

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from tinyc import api
from tinyc.engines import run_program_ref
from tinyc.errors import TinycError
from tinyc.reference import run_float

RNG = np.random.default_rng(15)


class Net:
    """A tiny onnx.helper builder: nodes, float initializers, one float input."""

    def __init__(self, x_shape, opset=13):
        self.nodes, self.inits, self.x_shape, self.opset, self.k = [], [], tuple(x_shape), opset, 0

    def const(self, value, dtype=np.float32) -> str:
        self.k += 1
        name = f"c{self.k}"
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def node(self, op, inputs, n_out=1, **attrs):
        self.k += 1
        outs = [f"t{self.k}_{i}" for i in range(n_out)]
        self.nodes.append(helper.make_node(op, inputs, outs, name=f"{op}_{self.k}", **attrs))
        return outs[0] if n_out == 1 else outs

    def conv(self, x, c_in, c_out, k=1, **attrs):
        w = self.const(RNG.normal(0, 1 / math.sqrt(c_in * k * k), (c_out, c_in // attrs.get("group", 1), k, k)))
        b = self.const(RNG.normal(0, 0.1, c_out))
        attrs.setdefault("pads", [k // 2] * 4)
        return self.node("Conv", [x, w, b], kernel_shape=[k, k], **attrs)

    def linear(self, x, c_in, c_out):
        y = self.node("MatMul", [x, self.const(RNG.normal(0, 1 / math.sqrt(c_in), (c_in, c_out)))])
        return self.node("Add", [y, self.const(RNG.normal(0, 0.1, c_out))])

    def model(self, y) -> onnx.ModelProto:
        g = helper.make_graph(self.nodes, "net", [helper.make_tensor_value_info("x", TensorProto.FLOAT, self.x_shape)],
                              [helper.make_tensor_value_info(y, TensorProto.FLOAT, None)], self.inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", self.opset)])
        m.ir_version = 8
        return onnx.shape_inference.infer_shapes(m)


def _inputs(shape, n, seed):
    x = np.random.default_rng(seed).standard_normal((n, *shape[1:])).astype(np.float32)
    for axis in range(2, x.ndim):
        x = (x + np.roll(x, 1, axis=axis) + np.roll(x, -1, axis=axis)) / np.float32(math.sqrt(3))
    return x


def check(tmp_path, model, *, ops=(), no_ops=(), kernels=(), min_sqnr=20.0, n=8) -> dict:
    """Float reference == onnxruntime, C == int8 reference, int8 close to float;
    returns what the structural checks may look at."""
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    shape = tuple(d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim)
    calib, x = _inputs(shape, 64, 1), _inputs(shape, n, 2)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    y_ort = np.concatenate([sess.run(None, {"x": x[i:i + 1]})[0] for i in range(n)])

    graph = api.load(path)
    ir_ops = {nd.op for nd in graph.nodes}
    assert set(ops) <= ir_ops, ir_ops
    assert not set(no_ops) & ir_ops, ir_ops
    y_ref = np.concatenate([run_float(graph, {graph.inputs[0]: np.moveaxis(x[i:i + 1], 1, -1) if graph.input_perm
                                              else x[i:i + 1]})[graph.outputs[0]] for i in range(n)])
    if graph.output_perm:
        y_ref = np.transpose(y_ref, graph.output_perm[graph.outputs[0]])
    np.testing.assert_allclose(y_ref.reshape(y_ort.shape), y_ort, rtol=1e-4, atol=1e-4)

    # the evaluation inputs are calibration samples too: what is measured is the
    # kernels' arithmetic, not how well 64 samples predict the range of 8 others
    np.save(tmp_path / "calib.npy", np.concatenate([calib, x]))
    api.quantize_with_calibration(graph, tmp_path / "calib.npy")
    build = api.compile_c(graph, path)
    batch = api.to_batch(graph, {graph.inputs[0]: x})
    y_c = api.run_program_c(build, batch)[graph.outputs[0]]
    y_int8 = run_program_ref(build.program, batch)[graph.outputs[0]]
    np.testing.assert_array_equal(y_c, y_int8)
    called = {c.kernel for c in build.program.calls}
    assert set(kernels) <= called, called
    noise = np.sum((y_ort.astype(np.float64) - np.asarray(y_c, np.float64).reshape(y_ort.shape)) ** 2)
    sqnr = 10 * np.log10(np.sum(y_ort.astype(np.float64) ** 2) / max(noise, 1e-30))
    assert sqnr >= min_sqnr, sqnr
    return {"graph": graph, "build": build, "kernels": [c.kernel for c in build.program.calls], "sqnr": sqnr}


def test_channel_shuffle_through_a_5d_transpose_is_one_copy(tmp_path):
    net = Net((1, 8, 6, 6))
    y = net.node("Relu", [net.conv("x", 8, 8)])
    y = net.node("Reshape", [y, net.const([1, 2, 4, 6, 6], np.int64)])
    y = net.node("Transpose", [y], perm=[0, 2, 1, 3, 4])
    y = net.node("Reshape", [y, net.const([1, 8, 6, 6], np.int64)])
    y = net.conv(y, 8, 8)
    r = check(tmp_path, net.model(y), ops=["Gather"], no_ops=["Transpose"])
    assert r["kernels"].count("strided_copy_s8") == 1


@pytest.mark.parametrize("form", ["num_outputs", "sizes"])
def test_split_into_slices(tmp_path, form):
    opset = 18 if form == "num_outputs" else 13
    net = Net((1, 8, 5, 5), opset)
    y = net.node("Relu", [net.conv("x", 8, 8)])
    if form == "num_outputs":
        a, b = net.node("Split", [y], n_out=2, axis=1, num_outputs=2)
        c_a, c_b = 4, 4
    else:
        a, b = net.node("Split", [y, net.const([3, 5], np.int64)], n_out=2, axis=1)
        c_a, c_b = 3, 5
    y = net.node("Concat", [a, net.node("Relu", [net.conv(b, c_b, c_b, 3)])], axis=1)
    r = check(tmp_path, net.model(net.conv(y, c_a + c_b, 4)), ops=["Slice"], no_ops=["Transpose"])
    assert "strided_copy_s8" in r["kernels"]


def test_squeeze_excite_with_hard_sigmoid(tmp_path):
    net = Net((1, 16, 8, 8))
    x = net.node("Relu", [net.conv("x", 16, 16, 3)])
    s = net.node("GlobalAveragePool", [x])
    s = net.node("Relu", [net.conv(s, 16, 4)])
    s = net.node("HardSigmoid", [net.conv(s, 4, 16)], alpha=1 / 6, beta=0.5)
    check(tmp_path, net.model(net.conv(net.node("Mul", [x, s]), 16, 8)), ops=["HardSigmoid"], kernels=["lut_s8"])


def test_gelu_erf_form_becomes_one_table(tmp_path):
    net = Net((1, 17, 32))
    h = net.linear("x", 32, 64)
    g = net.node("Div", [h, net.const(np.float32(math.sqrt(2)))])
    g = net.node("Add", [net.node("Erf", [g]), net.const(np.float32(1))])
    g = net.node("Mul", [net.node("Mul", [h, g]), net.const(np.float32(0.5))])
    r = check(tmp_path, net.model(net.linear(g, 64, 32)), ops=["ElementwiseFn"], no_ops=["Erf", "Div"])
    assert r["kernels"].count("lut_s8") == 1


def test_gelu_tanh_form_and_the_gelu_op(tmp_path):
    net = Net((1, 9, 16))
    h = net.linear("x", 16, 32)
    cube = net.node("Mul", [net.node("Pow", [h, net.const(np.float32(3))]), net.const(np.float32(0.044715))])
    inner = net.node("Mul", [net.node("Add", [h, cube]), net.const(np.float32(math.sqrt(2 / math.pi)))])
    g = net.node("Mul", [net.node("Mul", [h, net.const(np.float32(0.5))]),
                         net.node("Add", [net.node("Tanh", [inner]), net.const(np.float32(1))])])
    check(tmp_path, net.model(net.linear(g, 32, 8)), ops=["ElementwiseFn"], no_ops=["Tanh", "PowConst"],
          kernels=["lut_s8"])
    net = Net((1, 9, 16), opset=20)
    g = net.node("Gelu", [net.linear("x", 16, 32)], approximate="tanh")
    check(tmp_path, net.model(net.linear(g, 32, 8)), ops=["Gelu"], kernels=["lut_s8"])


def test_silu_is_one_table(tmp_path):
    net = Net((1, 8, 6, 6))
    h = net.conv("x", 8, 16, 3)
    y = net.node("Mul", [h, net.node("Sigmoid", [h])])
    check(tmp_path, net.model(net.conv(y, 16, 8)), ops=["ElementwiseFn"], no_ops=["Sigmoid"], kernels=["lut_s8"])


@pytest.mark.parametrize("form", ["decomposed", "op"])
def test_layer_norm(tmp_path, form):
    opset = 13 if form == "decomposed" else 17
    net = Net((1, 17, 64), opset)
    x = net.linear("x", 64, 64)
    gamma, beta = net.const(RNG.uniform(0.5, 1.5, 64)), net.const(RNG.normal(0, 0.2, 64))
    if form == "op":
        y = net.node("LayerNormalization", [x, gamma, beta], axis=-1, epsilon=1e-5)
    else:  # torch.onnx (TorchScript) below opset 17
        mean = net.node("ReduceMean", [x], axes=[-1])
        d = net.node("Sub", [x, mean])
        var = net.node("ReduceMean", [net.node("Pow", [d, net.const(np.float32(2))])], axes=[-1])
        sd = net.node("Sqrt", [net.node("Add", [var, net.const(np.float32(1e-5))])])
        y = net.node("Add", [net.node("Mul", [net.node("Div", [d, sd]), gamma]), beta])
    r = check(tmp_path, net.model(net.linear(y, 64, 10)), ops=["LayerNorm"], no_ops=["Sqrt", "ReduceMean"],
              kernels=["layer_norm_s8"])
    assert r["kernels"].count("layer_norm_s8") == 1


def test_attention_block(tmp_path):
    """One head-split self-attention as timm / torch export it: qkv, 5-D reshape and
    permute, q @ k^T / sqrt(d), softmax, @ v, merge heads, projection."""
    n, c, heads = 17, 32, 4
    net = Net((1, n, c))
    qkv = net.linear("x", c, 3 * c)
    qkv = net.node("Reshape", [qkv, net.const([1, n, 3, heads, c // heads], np.int64)])
    qkv = net.node("Transpose", [qkv], perm=[2, 0, 3, 1, 4])
    q, k, v = (net.node("Gather", [qkv, net.const(i, np.int64)], axis=0) for i in range(3))
    att = net.node("MatMul", [q, net.node("Transpose", [k], perm=[0, 1, 3, 2])])
    att = net.node("Softmax", [net.node("Div", [att, net.const(np.float32(math.sqrt(c // heads)))])], axis=-1)
    y = net.node("Transpose", [net.node("MatMul", [att, v])], perm=[0, 2, 1, 3])
    y = net.node("Reshape", [y, net.const([1, n, c], np.int64)])
    r = check(tmp_path, net.model(net.linear(y, c, c)), ops=["MatMul", "Softmax"], min_sqnr=20,
              kernels=["matmul_s8", "softmax_s8"])
    assert r["kernels"].count("matmul_s8") == 2


def test_max_min_requantize_inputs_with_other_scales(tmp_path):
    net = Net((1, 4, 6, 6))
    a = net.conv("x", 4, 4, 3)
    b = net.node("Mul", [net.conv("x", 4, 4), net.const(np.float32(3.0))])  # another range, another scale
    m = net.node("Max", [a, net.node("ReduceMean", [b], axes=[2, 3])])  # broadcast over H, W
    y = net.node("Min", [m, net.const(np.float32(0.5))])
    check(tmp_path, net.model(net.conv(y, 4, 4)), ops=["Max", "Min"], kernels=["minmax_s8", "requantize_s8"])


def test_leaky_relu_and_tanh(tmp_path):
    net = Net((1, 4, 6, 6))
    y = net.node("LeakyRelu", [net.conv("x", 4, 8, 3)], alpha=0.1)
    y = net.node("Tanh", [net.conv(y, 8, 8)])
    check(tmp_path, net.model(net.conv(y, 8, 4)), kernels=["leaky_relu_s8", "tanh_s8"])


def test_class_token_expand_slice_and_gather(tmp_path):
    """TorchScript's class token (Shape / Equal / Where / Expand folded on constants),
    an activation broadcast with Expand, strided slices, and x[:, 0]."""
    n, c = 16, 24
    net = Net((1, n, c))
    x = net.linear("x", c, c)
    shape = net.node("Shape", [x])
    batch = net.node("Gather", [shape, net.const(0, np.int64)], axis=0)
    target = net.node("Concat", [net.node("Unsqueeze", [batch, net.const([0], np.int64)]),
                                 net.const([-1, -1], np.int64)], axis=0)
    target = net.node("Where", [net.node("Equal", [target, net.const([-1, -1, -1], np.int64)]),
                                net.node("Shape", [net.const(np.zeros((1, 1, c)))]), target])
    cls = net.node("Expand", [net.const(RNG.normal(0, 0.5, (1, 1, c))), target])
    t = net.node("Concat", [cls, x], axis=1)  # [1, n + 1, c]
    mean = net.node("ReduceMean", [t], axes=[1])  # [1, 1, c]
    t = net.node("Add", [t, net.node("Expand", [mean, net.const([1, n + 1, c], np.int64)])])
    evens = net.node("Slice", [t, net.const([1], np.int64), net.const([n + 1], np.int64), net.const([1], np.int64),
                               net.const([2], np.int64)])
    rev = net.node("Slice", [evens, net.const([-1], np.int64), net.const([-100], np.int64),
                             net.const([1], np.int64), net.const([-3], np.int64)])
    first = net.node("Gather", [t, net.const(0, np.int64)], axis=1)  # [1, c]
    y = net.node("Add", [net.node("ReduceMean", [rev], axes=[1], keepdims=0), first])
    r = check(tmp_path, net.model(net.linear(y, c, 5)), ops=["Expand", "Slice", "Gather"],
              no_ops=["Where", "Equal", "Shape"])
    assert r["kernels"].count("strided_copy_s8") >= 4


def test_gather_of_irregular_indices_has_one_clear_error(tmp_path):
    net = Net((1, 6, 8))
    y = net.node("Gather", [net.linear("x", 8, 8), net.const([0, 1, 3], np.int64)], axis=1)
    path = tmp_path / "m.onnx"
    onnx.save(net.model(y), path)
    graph = api.load(path)
    np.save(tmp_path / "c.npy", _inputs((1, 6, 8), 4, 0))
    api.quantize_with_calibration(graph, tmp_path / "c.npy")
    with pytest.raises(TinycError, match=r"Gather.*not a regular progression"):
        api.compile_c(graph, path)


def test_division_by_a_constant_folds_into_the_convolution(tmp_path):
    net = Net((1, 3, 6, 6))
    y = net.node("Div", [net.conv("x", 3, 8, 3), net.const(RNG.uniform(1, 4, (1, 8, 1, 1)))])
    check(tmp_path, net.model(y), no_ops=["Div", "Mul"])


@pytest.mark.parametrize("op,attrs", [("Sqrt", {}), ("Exp", {}), ("Softplus", {}), ("Elu", {"alpha": 0.5}),
                                      ("Abs", {}), ("Neg", {}), ("Pow", {"exponent": 3.0})])
def test_unary_functions_are_tables(tmp_path, op, attrs):
    net = Net((1, 4, 5, 5))
    y = net.conv("x", 4, 8, 3)
    if op == "Sqrt":
        y = net.node("Relu", [y])
    if op == "Pow":
        y = net.node("Pow", [y, net.const(np.float32(attrs["exponent"]))])
    else:
        y = net.node(op, [y], **attrs)
    check(tmp_path, net.model(net.conv(y, 8, 4)), kernels=["lut_s8"], min_sqnr=15)  # x^3 triples the input error


def test_constant_folding_by_the_onnx_reference_reports_nothing_to_the_user(tmp_path):
    """Ops tinyc has no handler for are evaluated once when all their inputs are
    constants (Range, Equal, Where, ...); on activations they stay one clear error."""
    net = Net((1, 6))
    r = net.node("Range", [net.const(0, np.int64), net.const(6, np.int64), net.const(1, np.int64)])
    idx = net.node("Cast", [r], to=TensorProto.FLOAT)
    y = net.node("Add", [net.linear("x", 6, 6), idx])
    check(tmp_path, net.model(y))
    net = Net((1, 6))
    limit = net.node("Reshape", [net.node("Slice", ["x", net.const([0], np.int64), net.const([1], np.int64),
                                                    net.const([1], np.int64)]), net.const([], np.int64)])
    y = net.node("Range", [net.const(0, np.float32), limit, net.const(1.0)])
    onnx.save(net.model(y), tmp_path / "bad.onnx")
    with pytest.raises(TinycError, match=r"op Range is not supported"):
        api.load(tmp_path / "bad.onnx")
    # a constant Range of a billion values is refused before onnx's shape inference
    # computes it (8 GB), one of two million before tinyc evaluates it
    for count, message in ((10**9, r"makes tensor .* of shape \[1000000000\]"),
                           (2 * 10**6, r"Range of 2000000 values; tinyc folds ranges of up to 1,048,576")):
        net = Net((1, 6))
        r = net.node("Range", [net.const(0, np.int64), net.const(count, np.int64), net.const(1, np.int64)])
        y = net.node("ReduceSum", [net.node("Cast", [r], to=TensorProto.FLOAT)], keepdims=0)
        onnx.save(net.model(net.node("Add", [net.linear("x", 6, 6), y])), tmp_path / "huge.onnx")
        with pytest.raises(TinycError, match=message):
            api.load(tmp_path / "huge.onnx")


def _if_net(cond_from_input: bool):
    net = Net((1, 8))
    h = net.linear("x", 8, 8)
    branch = {}
    for key, op in (("then_branch", "Relu"), ("else_branch", "Sigmoid")):
        out = f"{key}_out"
        branch[key] = helper.make_graph([helper.make_node(op, [h], [out])], key, [],
                                        [helper.make_tensor_value_info(out, TensorProto.FLOAT, [1, 8])])
    if cond_from_input:  # an activation (the type does not matter: the import stops at the If)
        cond = net.node("Reshape", [net.node("Slice", ["x", net.const([0], np.int64), net.const([1], np.int64),
                                                       net.const([1], np.int64)]), net.const([], np.int64)])
    else:
        cond = net.const(np.array(True), np.bool_)
    y = net.node("If", [cond], **branch)
    return net.model(net.linear(y, 8, 3))


def test_if_with_a_constant_condition_takes_its_branch(tmp_path):
    r = check(tmp_path, _if_net(False))
    assert "Clamp" not in {n.op for n in r["graph"].nodes}  # the ReLU went into the linear layer before it
    assert "Sigmoid" not in {n.op for n in r["graph"].nodes}


def test_if_on_the_inputs_has_one_clear_error(tmp_path):
    model = _if_net(True)
    onnx.save(model, tmp_path / "m.onnx")
    with pytest.raises(TinycError, match=r"If with a condition computed from the inputs"):
        api.load(tmp_path / "m.onnx")


def test_patch_embedding_flatten_and_transpose_need_no_copy(tmp_path):
    """ViT's x = conv(x).flatten(2).transpose(1, 2): the NCHW Transpose after the
    convolution, the flattening Reshape and the token Transpose compose away
    (layout rule 7), so the tokens are the convolution's NHWC output as it is."""
    net = Net((1, 3, 16, 16))
    y = net.conv("x", 3, 16, 4, strides=[4, 4], pads=[0, 0, 0, 0])
    y = net.node("Reshape", [y, net.const([1, 16, 16], np.int64)])
    y = net.node("Transpose", [y], perm=[0, 2, 1])
    r = check(tmp_path, net.model(net.linear(y, 16, 8)))
    assert "strided_copy_s8" not in r["kernels"], r["kernels"]


@pytest.mark.parametrize("case", [
    dict(k=3, strides=[2, 2], pads=[1, 1, 1, 1], output_padding=[1, 1]),  # the usual 2x upsampling
    dict(k=4, strides=[2, 2], pads=[1, 1, 1, 1]),
    dict(k=2, strides=[2, 2], pads=[0, 0, 0, 0]),
    dict(k=3, strides=[1, 1], pads=[0, 0, 0, 0], dilations=[2, 2]),
    dict(k=3, strides=[3, 2], pads=[0, 1, 2, 0], group=2),
    dict(k=3, strides=[2, 2], output_shape=[10, 11], auto_pad="SAME_UPPER"),
])
def test_conv_transpose(tmp_path, case):
    case = dict(case)
    k, group = case.pop("k"), case.get("group", 1)
    net = Net((1, 4, 5, 5))
    x = net.node("Relu", [net.conv("x", 4, 4)])
    w = net.const(RNG.normal(0, 0.3, (4, 6 // group, k, k)))
    y = net.node("ConvTranspose", [x, w, net.const(RNG.normal(0, 0.1, 6))], kernel_shape=[k, k], **case)
    r = check(tmp_path, net.model(net.conv(y, 6, 4)))
    assert "Conv2D" in {n.op for n in r["graph"].nodes}


def test_conv_transpose_1d(tmp_path):
    net = Net((1, 4, 9))
    w1 = net.const(RNG.normal(0, 0.5, (4, 4, 3)))
    x = net.node("Relu", [net.node("Conv", ["x", w1], kernel_shape=[3], pads=[1, 1])])
    w = net.const(RNG.normal(0, 0.3, (4, 3, 4)))
    y = net.node("ConvTranspose", [x, w], kernel_shape=[4], strides=[2], pads=[1, 1])
    check(tmp_path, net.model(y))


@pytest.mark.parametrize("ctm,scales,sizes", [
    ("half_pixel", [1, 1, 2, 2], None),  # F.interpolate(scale_factor=2, mode="bilinear")
    ("pytorch_half_pixel", None, [1, 8, 9, 13]),
    ("align_corners", None, [1, 8, 11, 11]),
    ("asymmetric", [1, 1, 0.5, 0.5], None),
])
def test_bilinear_resize(tmp_path, ctm, scales, sizes):
    net = Net((1, 4, 6, 6))
    x = net.node("Relu", [net.conv("x", 4, 8, 3)])
    ins = [x, "", net.const(scales) if scales else ""] + ([net.const(sizes, np.int64)] if sizes else [])
    y = net.node("Resize", ins, mode="linear", coordinate_transformation_mode=ctm)
    r = check(tmp_path, net.model(net.conv(y, 8, 4)))
    assert "resize_bilinear_s8" in r["kernels"]


def test_dilated_max_pool(tmp_path):
    net = Net((1, 4, 11, 11))
    x = net.conv("x", 4, 8, 3)
    y = net.node("MaxPool", [x], kernel_shape=[3, 3], dilations=[2, 2], pads=[2, 2, 2, 2], strides=[1, 1])
    r = check(tmp_path, net.model(net.conv(y, 8, 4)))
    assert "max_pool_s8" in r["kernels"]


@st.composite
def _layout_chains(draw):
    """A convolution's NCHW output through random Transposes and Reshapes that
    split or merge axes (the rewrites' territory: layout rule 7, axis
    permutations, strided copies of up to 4 merged axes), then flattened into a
    linear layer."""
    c, h, w = draw(st.sampled_from([(4, 3, 2), (6, 2, 2), (8, 3, 3), (4, 4, 2)]))
    shape = [1, c, h, w]
    steps = []
    for _ in range(draw(st.integers(1, 4))):
        if draw(st.booleans()) and len(shape) < 6:  # split an axis of size > 1 into two factors
            axes = [i for i, d in enumerate(shape) if d > 1 and any(d % f == 0 for f in range(2, d))]
            if not axes:
                continue
            ax = draw(st.sampled_from(axes))
            f = draw(st.sampled_from([f for f in range(2, shape[ax]) if shape[ax] % f == 0]))
            shape = shape[:ax] + [f, shape[ax] // f] + shape[ax + 1:]
            steps.append(("Reshape", tuple(shape)))
        elif len(shape) > 2 and draw(st.booleans()):  # merge two neighbouring axes
            ax = draw(st.integers(0, len(shape) - 2))
            shape = shape[:ax] + [shape[ax] * shape[ax + 1]] + shape[ax + 2:]
            steps.append(("Reshape", tuple(shape)))
        perm = draw(st.permutations(range(len(shape))))
        shape = [shape[p] for p in perm]
        steps.append(("Transpose", tuple(perm)))
    return (c, h, w), steps


@given(_layout_chains(), st.integers(0, 2**16))
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
def test_random_layout_chains_keep_their_values(tmp_path_factory, chain, seed):
    (c, h, w), steps = chain
    global RNG
    RNG = np.random.default_rng(seed)
    net = Net((1, c, h, w))
    y = net.node("Relu", [net.conv("x", c, c, 3)])
    for op, arg in steps:
        if op == "Reshape":
            y = net.node("Reshape", [y, net.const(list(arg), np.int64)])
        else:
            y = net.node("Transpose", [y], perm=list(arg))
    y = net.node("Reshape", [y, net.const([1, c * h * w], np.int64)])
    check(tmp_path_factory.mktemp("chain"), net.model(net.linear(y, c * h * w, 5)), min_sqnr=15)
