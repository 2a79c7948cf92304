"""1-D convolution models as PyTorch exports them (issue #10).

A DS-CNN for keyword spotting on MFCC frames, NCW input [1, 10, 49]:
Conv1d -> BatchNorm1d -> ReLU, then depthwise-separable blocks (depthwise Conv1d
with group = C, pointwise Conv1d 1x1, each followed by BatchNorm1d and ReLU), global
average pooling, Flatten, Linear (Gemm), Softmax. The variants are the forms
PyTorch's exporter writes for the head and the batch norms:

* ``gap-flatten``: AdaptiveAvgPool1d(1) as GlobalAveragePool on the 3-D tensor,
  then Flatten (opset 13);
* ``mean-view``: ``x.mean(2, keepdim=True)`` as ReduceMean(axes=[2], keepdims=1),
  then ``x.view(x.size(0), -1)`` as Shape -> Gather -> Unsqueeze -> Concat ->
  Reshape (opset 17);
* ``mean-squeeze``: ``x.mean(-1)`` as ReduceMean with an axes input and
  keepdims=0, straight into the Gemm (opset 18);
* ``bn-folded``: eval-mode export with the batch norms already folded into the
  Conv weights and biases, Conv -> Relu (opset 17).

Every variant must canonicalize to channels-last Conv2D nodes (H = 1) with each
ReLU fused into its convolution and no Transpose anywhere (the C input is N, W, C),
lower to an int8 program without Transpose, clamp or requantize calls, match
onnxruntime in float, and give the same bytes in the generated C as in the int8
reference.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tinyc import api
from tinyc.ops import Clamp
from tinyc.passes.quantize import calibrate, quantize_graph

from .test_ptq import samples_of

ort = pytest.importorskip("onnxruntime")

IN_SHAPE = (1, 10, 49)  # N, MFCC channels, frames
CLASSES = 12
VARIANTS = ["gap-flatten", "mean-view", "mean-squeeze", "bn-folded"]
OPSET = {"gap-flatten": 13, "mean-view": 17, "mean-squeeze": 18, "bn-folded": 17}
# (kernel, stride, out channels) of the first conv; per block the depthwise conv's kernel and
# stride and the pointwise conv's out channels
FIRST = (5, 2, 24)
BLOCKS = [(3, 1, 24), (3, 2, 32), (3, 1, 32)]
N_CALIB, N_RUN = 8, 4


class _Builder:
    def __init__(self, seed: int, fold_bn: bool):
        self.rng = np.random.default_rng(seed)
        self.fold_bn = fold_bn
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.k = 0
        self.relus = 0

    def const(self, base: str, value) -> str:
        self.k += 1
        name = f"{base}_{self.k}"
        value = np.asarray(value)
        self.inits.append(numpy_helper.from_array(value.astype(np.float32) if value.dtype == np.float64 else value, name))
        return name

    def node(self, op: str, inputs: list[str], **attrs) -> str:
        self.k += 1
        out = f"{op.lower()}_{self.k}"
        self.nodes.append(helper.make_node(op, inputs, [out], name=f"/{op}_{self.k}", **attrs))
        return out

    def conv_bn_relu(self, x: str, cin: int, cout: int, k: int, stride: int, group: int) -> str:
        """Conv1d(bias=False) + BatchNorm1d + ReLU, or (bn-folded) Conv1d with the batch norm
        folded into weights and bias, as torch.onnx.export does in eval mode."""
        w = (self.rng.standard_normal((cout, cin // group, k)) / np.sqrt(cin // group * k)).astype(np.float32)
        scale = self.rng.uniform(0.5, 1.5, cout).astype(np.float32)
        shift = (0.2 * self.rng.standard_normal(cout)).astype(np.float32)
        mean = (0.2 * self.rng.standard_normal(cout)).astype(np.float32)
        var = self.rng.uniform(0.5, 1.5, cout).astype(np.float32)
        attrs = dict(dilations=[1], group=group, kernel_shape=[k], pads=[k // 2, k // 2], strides=[stride])
        if self.fold_bn:
            g = scale / np.sqrt(var + 1e-5)
            y = self.node("Conv", [x, self.const("w", w * g[:, None, None]), self.const("b", shift - mean * g)], **attrs)
        else:
            y = self.node("Conv", [x, self.const("w", w)], **attrs)
            y = self.node("BatchNormalization", [y] + [self.const(n, v) for n, v in
                                                       zip(("scale", "shift", "mean", "var"), (scale, shift, mean, var))],
                          epsilon=1e-5, momentum=0.9)
        self.relus += 1
        return self.node("Relu", [y])


def dscnn(variant: str, seed: int = 0) -> tuple[onnx.ModelProto, int]:
    """The DS-CNN of one variant and the number of ReLUs in it."""
    b = _Builder(seed, fold_bn=variant == "bn-folded")
    k, s, c = FIRST
    y = b.conv_bn_relu("input", IN_SHAPE[1], c, k, s, 1)
    for k, s, cout in BLOCKS:
        y = b.conv_bn_relu(y, c, c, k, s, group=c)  # depthwise
        y = b.conv_bn_relu(y, c, cout, 1, 1, 1)  # pointwise
        c = cout
    if variant == "mean-view":
        y = b.node("ReduceMean", [y], axes=[2], keepdims=1)
        n = b.node("Gather", [b.node("Shape", [y]), b.const("zero", np.array(0, np.int64))], axis=0)
        shape = b.node("Concat", [b.node("Unsqueeze", [n, b.const("axes", np.array([0], np.int64))]),
                                  b.const("minus1", np.array([-1], np.int64))], axis=0)
        y = b.node("Reshape", [y, shape])
    elif variant == "mean-squeeze":
        y = b.node("ReduceMean", [y, b.const("axes", np.array([-1], np.int64))], keepdims=0)
    else:
        y = b.node("Flatten", [b.node("GlobalAveragePool", [y])], axis=1)
    w = (b.rng.standard_normal((CLASSES, c)) / np.sqrt(c)).astype(np.float32)
    y = b.node("Gemm", [y, b.const("fc_w", w), b.const("fc_b", 0.1 * b.rng.standard_normal(CLASSES))],
               alpha=1.0, beta=1.0, transB=1)
    y = b.node("Softmax", [y], axis=1)
    graph = helper.make_graph(
        b.nodes, f"dscnn_{variant}",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, list(IN_SHAPE))],
        [helper.make_tensor_value_info(y, TensorProto.FLOAT, [1, CLASSES])],
        b.inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET[variant])])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model, b.relus


@pytest.fixture(params=VARIANTS)
def model(request, tmp_path):
    m, relus = dscnn(request.param)
    path = tmp_path / f"dscnn_{request.param.replace('-', '_')}.onnx"
    onnx.save(m, str(path))
    return path, relus


def _inputs(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, *IN_SHAPE)).astype(np.float32)


def test_canonical_graph_fuses_every_relu_and_has_no_transpose(model):
    path, relus = model
    graph = api.load(path)
    ops = [n.op for n in graph.nodes]
    assert "Transpose" not in ops, ops
    assert "Clamp" not in ops, ops
    assert not {"Mul", "Add", "Sub"} & set(ops), ops  # the batch norms are folded
    convs = [n for n in graph.nodes if n.op == "Conv2D"]
    assert len(convs) == relus
    assert all(n.attrs.act == Clamp(0.0, np.inf) for n in convs), [n.attrs.act for n in convs]
    # the C API takes channels-last data (N, W, C), like NHWC for 2-D models
    (name,) = graph.inputs
    assert graph.tensors[name].shape == (1, IN_SHAPE[2], IN_SHAPE[1])
    assert api.external_shape(graph, name) == IN_SHAPE


def test_float_reference_matches_onnxruntime(model):
    path, _ = model
    x = _inputs(N_RUN, 1)
    graph = api.load(path)
    got = api.run_reference(graph, api.to_batch(graph, {graph.inputs[0]: x}))[graph.outputs[0]]
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    want = np.stack([sess.run(None, {"input": xi})[0] for xi in x])
    np.testing.assert_allclose(got.reshape(want.shape), want, rtol=1e-4, atol=1e-5)


def test_int8_program_has_no_transpose_or_clamp_and_c_equals_reference(model):
    path, relus = model
    graph = api.load(path)
    quantize_graph(graph, calibrate(graph, samples_of(graph, _inputs(N_CALIB, 2)), "minmax"))
    build = api.compile_c(graph, path)
    kernels = [c.kernel for c in build.program.calls if not c.is_alias]
    assert not {"transpose_s8", "clamp_s8", "requantize_s8"} & set(kernels), kernels
    convs = [c for c in build.program.calls if c.kernel.startswith(("conv2d", "depthwise_conv2d"))]
    assert len(convs) == relus
    # a fused ReLU clamps at the output zero point
    assert all(c.params.act_min == max(-128, c.params.out_offset) for c in convs)
    assert kernels[len(convs):] == ["mean_s8", "fully_connected_s8", "softmax_s8"]
    batch = api.to_batch(graph, {graph.inputs[0]: _inputs(N_RUN, 3)})
    ref = api.run_program_ref(build.program, batch)
    c = api.run_program_c(build, batch)
    for name in graph.outputs:
        assert np.array_equal(ref[name], c[name]), name
