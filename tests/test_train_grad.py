"""The compile-time backward graph (tinyc.train): update specifications, gradients
against PyTorch's (float64 autograd, ../shared/models/training), pruning to what
the update set needs, and the gradient rules against finite differences on random
small nets."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tinyc import api
from tinyc.errors import TinycError
from tinyc.reference import run_float
from tinyc.train.autodiff import LABEL, LOSS, to_onnx_layout, training_graph
from tinyc.train.spec import model_layers, parse_update

from .conftest import SHARED_MODELS, needs_shared

TRAINING = SHARED_MODELS / "training"
FLOAT_MODELS = {"mlperf_ic_resnet8": "mlperf_tiny/ic_resnet8_float_nchw.onnx",
                "mlperf_vww_mbv1": "mlperf_tiny/vww_mbv1_float_nchw.onnx"}


def _grads(path, spec: str, samples, labels):
    """Per sample: (loss, {ONNX initializer name: gradient in the file's layout}) from
    the float reference running the training graph."""
    graph = api.load(path)
    layers = model_layers(path)
    tg = training_graph(graph, parse_update(spec, layers))
    out = []
    for x, y in zip(samples, labels):
        feeds = {graph.inputs[0]: x.transpose(1, 2, 0)[None], LABEL: np.int32(y)}
        res = run_float(tg.graph, feeds)
        grads = {}
        for p in tg.params:
            layer = p.update.layer
            grads[layer.weight if p.kind == "weight" else layer.bias] = to_onnx_layout(p, res[p.grad])
        out.append((float(res[LOSS]), grads))
    return tg, out


# ------------------------------------------------------------------ gradients
@needs_shared
@pytest.mark.parametrize("name", sorted(FLOAT_MODELS))
def test_float_gradients_match_pytorch(name):
    """Every Conv / Gemm weight and bias, 4 samples: within 1e-4 of the largest
    gradient of each tensor; the loss within 1e-5 relative."""
    gold = np.load(TRAINING / f"grads_{name}.npz")
    path = SHARED_MODELS / FLOAT_MODELS[name]
    _, results = _grads(path, "full", gold["inputs"], gold["labels"])
    keys = [k for k in gold.files if k.startswith("grad/")]
    worst_loss = worst_grad = 0.0
    for s, (loss, grads) in enumerate(results):
        worst_loss = max(worst_loss, abs(loss - gold["loss"][s]) / abs(gold["loss"][s]))
        assert sorted("grad/" + k for k in grads) == sorted(keys)
        for key in keys:
            want = gold[key][s]
            got = grads[key[5:]].reshape(want.shape)
            worst_grad = max(worst_grad, float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-30)))
    print(f"{name}: {len(keys)} parameters x 4 samples: loss within {worst_loss:.1e} relative, "
          f"gradients within {worst_grad:.1e} of each tensor's largest")
    assert worst_loss <= 1e-5 and worst_grad <= 1e-4


@needs_shared
def test_sparse_update_is_pruned_and_equals_the_full_gradients():
    """ResNet-8, baselines.json's sparse scheme: gradients stop at the earliest updated
    layer, frozen weights get no weight gradient, a half-updated layer computes half
    its channels; every gradient equals the same slice of the full backward pass."""
    gold = np.load(TRAINING / "grads_mlperf_ic_resnet8.npz")
    path = SHARED_MODELS / FLOAT_MODELS["mlperf_ic_resnet8"]
    spec = "bias=last6; weight=-4,-2@0.5,-1"
    tg, sparse = _grads(path, spec, gold["inputs"][:2], gold["labels"][:2])
    _, full = _grads(path, "full", gold["inputs"][:2], gold["labels"][:2])
    for (loss_s, g_s), (loss_f, g_f) in zip(sparse, full):
        assert loss_s == loss_f
        for key, value in g_s.items():
            want = g_f[key]
            if value.shape != want.shape:  # the updated output channels: leading rows, or columns of an [in, out]
                want = want[:value.shape[0]] if value.shape[1:] == want.shape[1:] else want[:, :value.shape[1]]
            np.testing.assert_allclose(value, want, rtol=1e-5, atol=1e-6 * np.abs(want).max())
    layers = model_layers(path)
    half = g_s[layers[-2].weight]
    assert half.shape == (32, 32, 1, 1)  # the first ceil(0.5 x 64) output channels
    backward = [n.op for n in tg.graph.nodes[tg.backward_from:]]
    full_tg = training_graph(api.load(path), parse_update("full", layers))
    full_backward = [n.op for n in full_tg.graph.nodes[full_tg.backward_from:]]
    assert backward.count("Conv2DGradWeight") == 2 and full_backward.count("Conv2DGradWeight") == 9
    # gradients flow back to the input of layer -6 (the earliest updated bias), no further
    assert backward.count("Conv2DGradInput") < full_backward.count("Conv2DGradInput")
    print(f"sparse backward: {len(backward)} nodes ({backward.count('Conv2DGradInput')} input gradients); "
          f"full: {len(full_backward)} ({full_backward.count('Conv2DGradInput')})")


# ------------------------------------------------------- random nets vs finite differences
def _random_net(rng) -> onnx.ModelProto:
    """NCHW input -> Conv (random stride, pad, dilation, groups) + Relu -> maybe a 1x1 or
    3x3 Conv joined by a residual Add or a Concat -> AveragePool, MaxPool or GlobalAveragePool -> Flatten
    -> Gemm -> Softmax."""
    c = int(rng.integers(1, 4)) * 2
    h, w = int(rng.integers(5, 9)), int(rng.integers(5, 9))
    inits, nodes = [], []

    def const(name, a):
        inits.append(numpy_helper.from_array(np.asarray(a, np.float32), name))
        return name

    o = int(rng.integers(1, 3)) * 2
    group = int(rng.choice([1, 2])) if c % 2 == 0 and o % 2 == 0 else 1
    if rng.random() < 0.3:  # depthwise
        group, o = c, c
    k = int(rng.integers(1, 4))
    stride, dil, pad = int(rng.integers(1, 3)), int(rng.integers(1, 3)), int(rng.integers(0, 2))
    nodes.append(helper.make_node("Conv", ["x", const("w1", rng.standard_normal((o, c // group, k, k)) * 0.5),
                                           const("b1", rng.standard_normal(o) * 0.1)], ["c1"],
                                  strides=[stride, stride], dilations=[dil, dil], pads=[pad] * 4, group=group))
    nodes.append(helper.make_node("Relu", ["c1"], ["r1"]))
    y = "r1"
    if rng.random() < 0.5:
        k2 = int(rng.choice([1, 3]))  # a 3x3 here exercises Conv2DGradInput (the input gradient of c2)
        nodes.append(helper.make_node("Conv", ["r1", const("w2", rng.standard_normal((o, o, k2, k2)) * 0.3),
                                               const("b2", rng.standard_normal(o) * 0.1)], ["c2"],
                                      pads=[k2 // 2] * 4))
        if rng.random() < 0.5:
            nodes.append(helper.make_node("Add", ["c2", "r1"], ["a2"]))
        else:
            nodes.append(helper.make_node("Concat", ["c2", "r1"], ["a2"], axis=1))
        y = "a2"
    out_hw = [(d + 2 * pad - dil * (k - 1) - 1) // stride + 1 for d in (h, w)]
    pool = rng.random() if min(out_hw) >= 2 else 1.0  # a 2x2 window needs 2x2 cells
    if pool < 0.35:
        nodes.append(helper.make_node("AveragePool", [y], ["p"], kernel_shape=[2, 2], strides=[1, 1]))
    elif pool < 0.7:
        nodes.append(helper.make_node("MaxPool", [y], ["p"], kernel_shape=[2, 2], strides=[1, 1]))
    else:
        nodes.append(helper.make_node("GlobalAveragePool", [y], ["p"]))
    nodes.append(helper.make_node("Flatten", ["p"], ["f"]))
    graph = helper.make_graph(nodes, "net", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, h, w])],
                              [helper.make_tensor_value_info("probs", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    features = onnx.shape_inference.infer_shapes(model).graph.value_info
    size = next(int(np.prod([d.dim_value for d in v.type.tensor_type.shape.dim])) for v in features if v.name == "f")
    nodes.append(helper.make_node("Gemm", ["f", const("wf", rng.standard_normal((3, size)) * 0.5),
                                           const("bf", rng.standard_normal(3) * 0.1)], ["logits"], transB=1))
    nodes.append(helper.make_node("Softmax", ["logits"], ["probs"], axis=1))
    model = helper.make_model(helper.make_graph(nodes, "net", graph.input, graph.output, inits),
                              opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize("seed", range(20))
def test_gradients_match_finite_differences_on_random_nets(tmp_path, seed):
    """Central differences of the loss along each parameter's own gradient
    direction measure that gradient's norm; along a random direction over all
    parameters, <gradient, direction>. (The forward runs in float32: tolerances are
    a few percent of the gradient's norm, well below what a wrong rule gives.)"""
    rng = np.random.default_rng(seed)
    model = _random_net(rng)
    path = tmp_path / "net.onnx"
    onnx.save(model, str(path))
    graph = api.load(path)
    tg = training_graph(graph, parse_update("full", model_layers(path)))
    x = rng.standard_normal(graph.tensors[graph.inputs[0]].shape).astype(np.float32)
    label = np.int32(rng.integers(0, 3))
    res = run_float(tg.graph, {graph.inputs[0]: x, LABEL: label})
    grads = {p.tensor: res[p.grad].astype(np.float64) for p in tg.params}

    def slope(direction: dict, eps: float = 1e-3) -> float:
        def loss_at(step):
            saved = {}
            for name, v in direction.items():
                t = tg.graph.tensors[name]
                saved[name] = t.data
                t.data = (t.data.astype(np.float64) + step * v).astype(np.float32)
            try:
                return float(run_float(tg.graph, {graph.inputs[0]: x, LABEL: label})[LOSS])
            finally:
                for name, data in saved.items():
                    tg.graph.tensors[name].data = data
        return (loss_at(eps) - loss_at(-eps)) / (2 * eps)

    for name, g in grads.items():
        norm = float(np.linalg.norm(g))
        if norm > 1e-3:
            measured = slope({name: g / norm})
            assert abs(measured - norm) <= 3e-2 * norm + 2e-3, (name, measured, norm)
    direction = {name: rng.standard_normal(g.shape) for name, g in grads.items()}
    scale = np.sqrt(sum(float(np.sum(v * v)) for v in direction.values()))
    direction = {k: v / scale for k, v in direction.items()}
    predicted = sum(float(np.sum(grads[k] * v)) for k, v in direction.items())
    total = np.sqrt(sum(float(np.sum(g * g)) for g in grads.values()))
    assert abs(slope(direction) - predicted) <= 3e-2 * total + 2e-3


# ------------------------------------------------------------------ specifications
@pytest.fixture(scope="module")
def layers(tmp_path_factory):
    path = tmp_path_factory.mktemp("spec") / "net.onnx"
    onnx.save(_random_net(np.random.default_rng(1)), str(path))
    return model_layers(path)


def test_update_specs(layers):
    assert [(u.layer.index, u.weight_channels, u.bias) for u in parse_update("head", layers)] == \
        [(len(layers) - 1, 3, True)]
    full = parse_update("full", layers)
    assert all(u.weight_channels == u.layer.out_channels and u.bias for u in full) and len(full) == len(layers)
    first = layers[0]
    u = parse_update(f"bias=last1; weight=0@0.5, \"{layers[-1].node or layers[-1].weight}\"", layers)
    assert u[0].layer == first and u[0].weight_channels == -(-first.out_channels // 2) and not u[0].bias
    assert u[-1].weight_channels == 3 and u[-1].bias


@pytest.mark.parametrize("spec, words", [
    ("weight=7", "layer 7 does not exist"),
    ("weight=-9", "does not exist"),
    ("weight=nope", "no Conv / Gemm / MatMul layer is named 'nope'"),
    ("weight=-1@0", "(0, 1]"),
    ("weight=-1@1.5", "(0, 1]"),
    ("weight=-1@x", "(0, 1]"),
    ("bias=-1@0.5", "ratio"),
    ("bias=last0", "bias=last0"),
    ("", "updates no parameter"),
    ("lr=3", "is not 'bias=...' or 'weight=...'"),
    ('weight="open', "not closed"),
])
def test_bad_update_specs(layers, spec, words):
    with pytest.raises(TinycError) as e:
        parse_update(spec, layers)
    assert words in str(e.value), str(e.value)


def test_a_model_without_a_final_softmax_is_refused(tmp_path):
    model = _random_net(np.random.default_rng(3))
    del model.graph.node[-1]
    model.graph.output[0].name = "logits"
    onnx.save(model, str(tmp_path / "m.onnx"))
    with pytest.raises(TinycError, match="final Softmax"):
        training_graph(api.load(tmp_path / "m.onnx"), parse_update("head", model_layers(tmp_path / "m.onnx")))


# ------------------------------------------------------------------ reference training steps
def test_float_step_lowers_the_loss_as_the_gradient_predicts(tmp_path):
    from tinyc.train.reference import FloatTrainer

    rng = np.random.default_rng(5)
    onnx.save(_random_net(rng), str(tmp_path / "net.onnx"))
    graph = api.load(tmp_path / "net.onnx")
    trainer = FloatTrainer(graph, parse_update("full", model_layers(tmp_path / "net.onnx")))
    x = rng.standard_normal(graph.tensors[graph.inputs[0]].shape).astype(np.float32)
    lr = 1e-3
    first = trainer.step(x, 1, lr)
    predicted = first.loss - lr * sum(float(np.sum(g.astype(np.float64) ** 2)) for g in first.grads.values())
    after = trainer.gradients(x, 1).loss
    assert after < first.loss and abs(after - predicted) <= 0.1 * (first.loss - predicted)


@needs_shared
def test_int8_training_learns_digits_with_the_residue_byte():
    """ResNet-8 (the shared int8 model, CIFAR-10 weights), one epoch of digits32
    through the generated C, the sparse scheme named by layer: int8 forward, float
    backward, int8 weights with a residue byte. Test accuracy on 300 held-out
    digits rises far above where it starts (benchmarks/training.py has the full
    runs)."""
    from tinyc.train.engine import CTrainer, build_training
    from tinyc.train.run import Dataset, to_program_input

    path = SHARED_MODELS / "mlperf_tiny" / "ic_resnet8_int8.onnx"
    spec = ("bias=model/conv2d_4/Conv2D,model/conv2d_5/Conv2D,model/conv2d_6/Conv2D,model/conv2d_7/Conv2D,"
            "model/conv2d_8/Conv2D,model/dense/MatMul; "
            "weight=model/conv2d_6/Conv2D,model/conv2d_8/Conv2D@0.5,model/dense/MatMul")
    b = build_training(api.load(path), parse_update(spec, model_layers(path)), "r8")
    data = np.load(TRAINING / "digits32.npz")
    x = to_program_input(b.tp, Dataset(data["train_x"].astype(np.float32), data["train_y"]))
    test = to_program_input(b.tp, Dataset(data["test_x"][:300].astype(np.float32), data["test_y"][:300]))
    trainer = CTrainer(b)
    try:
        def accuracy():
            return np.mean(np.argmax(trainer.predict(test), axis=1) == data["test_y"][:300])

        before = accuracy()
        order = np.random.default_rng(0).permutation(len(x))
        losses = trainer.steps(x[order], data["train_y"][order], 0.01)
        after = accuracy()
    finally:
        trainer.close()
    print(f"int8 ResNet-8 on digits32: accuracy {before:.3f} -> {after:.3f} after one epoch; "
          f"loss {np.mean(losses[:100]):.2f} -> {np.mean(losses[-100:]):.2f}")
    assert before < 0.2 and after >= 0.6 and np.mean(losses[-100:]) < 0.3 * np.mean(losses[:100])


@pytest.mark.parametrize("rounding", ["nearest", "stochastic", "residue"])
def test_int8_steps_fit_one_sample_in_every_rounding(rounding):
    """The example digits CNN, quantized from its samples, trained on one digit with
    a wrong label: the int8 loss falls in every rounding mode (numpy specs of the
    lowered step); in "residue" the int8 weights are the nearest integers of
    weight + residue / 256."""
    from tinyc.train.engine import RefTrainer, build_training
    from tinyc.train.run import Dataset, to_program_input

    from .conftest import EXAMPLES

    model = EXAMPLES / "digits_cnn.onnx"
    graph = api.load(model)
    api.quantize_with_calibration(graph, EXAMPLES / "digits_samples.npz")
    b = build_training(graph, parse_update("weight=-2,-1; bias=last2", model_layers(model)), "d", rounding)
    trainer = RefTrainer(b, seed=3)
    data = np.load(EXAMPLES / "digits_samples.npz")
    label = (int(data["labels"][0]) + 1) % 10  # a wrong label: there is something to learn
    x = to_program_input(b.tp, Dataset(data["inputs"][:1], np.array([label])))
    losses = [float(trainer.steps(x, [label], 0.05)[0]) for _ in range(30)]
    assert losses[-1] < 0.5 * losses[0], losses
    for p in b.tp.params:
        if p.residue:
            w = b.tp.graph.tensors[p.tensor].data[:p.param.channels].astype(np.float64)
            true = w + b.tp.graph.tensors[p.residue].data / 256.0
            assert np.all(np.abs(true - w) <= 0.5) and np.any(b.tp.graph.tensors[p.residue].data)
