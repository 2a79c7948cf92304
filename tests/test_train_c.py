"""The generated training step (NAME_train_step) against the numpy specs, and
``tinyc train`` end to end: gradients, updates, the shared parameters of
NAME_invoke, poison / sanitizer builds, the fine-tuned ONNX's round trip, and
every bad input."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import numpy as np
import onnx
import pytest

from tinyc import api
from tinyc.errors import TinycError
from tinyc.kernels.train import sgd_update_s8, sgd_update_s32
from tinyc.passes.memory import validate_plan
from tinyc.train.autodiff import to_onnx_layout
from tinyc.train.engine import CTrainer, RefTrainer, build_training, memory_of
from tinyc.train.lower import lower_training, run_step
from tinyc.train.reference import FloatTrainer
from tinyc.train.run import Dataset, dump_gradients, to_program_input
from tinyc.train.spec import model_layers, parse_update

from .conftest import EXAMPLES, SHARED_MODELS, needs_shared
from .test_train_grad import _random_net

TRAINING = SHARED_MODELS / "training"
RESNET8 = SHARED_MODELS / "mlperf_tiny" / "ic_resnet8_int8.onnx"
VWW = SHARED_MODELS / "mlperf_tiny" / "vww_mbv1_int8.onnx"
# baselines.json's sparse schemes, in the int8 files' layers (ResNet-8's int8 file lists its
# residual blocks' layers in another order than the float file, so they are named)
RESNET8_SPARSE = ("bias=model/conv2d_4/Conv2D,model/conv2d_5/Conv2D,model/conv2d_6/Conv2D,model/conv2d_7/Conv2D,"
                  "model/conv2d_8/Conv2D,model/dense/MatMul; "
                  "weight=model/conv2d_6/Conv2D,model/conv2d_8/Conv2D@0.5,model/dense/MatMul")
VWW_SPARSE = "bias=last14; weight=-14,-10,-6@0.5,-4@0.25,-2@0.125,-1"


def _tinyc(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "tinyc.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd)


def _quantized_random_net(tmp_path, seed):
    rng = np.random.default_rng(seed)
    model = _random_net(rng)
    path = tmp_path / f"net{seed}.onnx"
    onnx.save(model, str(path))
    graph = api.load(path)
    shape = tuple(d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim)
    np.save(tmp_path / "calib.npy", rng.standard_normal((8, *shape)).astype(np.float32))
    api.quantize_with_calibration(graph, tmp_path / "calib.npy")
    return path, graph, shape, rng


def _close(got, want, rel=1e-5):
    scale = max(float(np.max(np.abs(want))), 1e-30)
    return float(np.max(np.abs(np.asarray(got, np.float64) - want))) <= rel * scale


SPECS = ["full", "head", "bias=all", "weight=0@0.5; bias=last1", "weight=-1@0.34", "bias=last2; weight=-2"]


@pytest.mark.parametrize("seed", range(12))
def test_random_nets_c_gradients_and_updates_equal_the_specs(tmp_path, seed):
    """Random small conv nets (depthwise, grouped, strided, dilated, residual Add,
    Concat, pools) with random update sets: the C's per-sample loss and gradients
    (TINYC_TRAIN_OBSERVE) equal the numpy specs' within float32 rounding; the
    parameters after a step are, bit for bit, the update kernels' specs applied
    to the C's own gradients; and the fused build (a channel of gradient at a
    time) ends bit-exact with the unfused one after three steps."""
    path, graph, shape, rng = _quantized_random_net(tmp_path, seed)
    layers = model_layers(path)
    spec = SPECS[seed % len(SPECS)]
    updates = parse_update(spec, layers)
    try:
        unfused = build_training(copy.deepcopy(graph), updates, "net", fused=False)
    except TinycError as e:
        assert "no C training kernel" in str(e)  # Concat's gradient (a slice) has none yet
        pytest.skip(str(e))
    for plan, prog in ((unfused.plan, unfused.tp.inference), (unfused.train_plan, unfused.tp.step)):
        validate_plan(plan, prog)
    x = rng.standard_normal((3, *shape[1:])).astype(np.float32)
    labels = rng.integers(0, 3, 3)
    data = Dataset(x, labels)
    x_q = to_program_input(unfused.tp, data)
    before = {p.tensor: unfused.tp.graph.tensors[p.tensor].data.copy() for p in unfused.tp.params}

    c_dump = dump_gradients(copy.deepcopy(graph), updates, "net", "residue", data, "c")
    ref_dump = dump_gradients(copy.deepcopy(graph), updates, "net", "residue", data, "ref")
    assert c_dump.keys() == ref_dump.keys()
    assert np.allclose(c_dump["loss"], ref_dump["loss"], rtol=1e-5, atol=1e-6)
    for key in c_dump:
        assert _close(c_dump[key], ref_dump[key]), key
    # the float graph: C and numpy specs agree, and equal the float reference's gradient rules
    float_graph = api.load(path)
    c_float = dump_gradients(copy.deepcopy(float_graph), updates, "net", "residue", data, "c", "float")
    ref_float = dump_gradients(copy.deepcopy(float_graph), updates, "net", "residue", data, "ref", "float")
    trainer = FloatTrainer(copy.deepcopy(float_graph), updates)
    for s, (xs, ys) in enumerate(zip(x, labels)):
        r = trainer.gradients(xs.transpose(1, 2, 0)[None], int(ys))
        assert abs(c_float["loss"][s] - r.loss) <= 1e-5 * max(1.0, abs(r.loss))
        for p in trainer.params:
            key = "grad/" + (p.update.layer.weight if p.kind == "weight" else p.update.layer.bias)
            rule = to_onnx_layout(p, r.grads[p.tensor])
            assert _close(c_float[key][s], rule) and _close(ref_float[key][s], rule), key

    # one step in C: the updates are the specs applied to the C's gradients
    grads = {}
    trainer = CTrainer(unfused, seed=seed, cflags=["-DTINYC_TRAIN_OBSERVE=tinyc_train_observe"])
    try:
        raw = np.frombuffer(trainer.replay([(int(labels[0]), 0.05, x_q[0])], update_state=True), np.float32)
        at = 0  # the gradients as the step makes them, then its loss
        for p in unfused.tp.update_order():
            n = unfused.tp.graph.tensors[p.param.grad].size
            grads[p.tensor] = raw[at:at + n]
            at += n
        after = trainer.params()
    finally:
        trainer.close()
    rng_state = seed
    for p in unfused.tp.update_order():  # as the generator's draws go
        t = unfused.tp.graph.tensors[p.tensor]
        k = p.param.channels
        scale = np.asarray(t.quant.scale, np.float32).reshape(-1)
        scale = np.repeat(scale, t.shape[0]) if scale.size == 1 else scale
        if p.param.kind == "bias":
            want = sgd_update_s32(k, 0.05, grads[p.tensor], scale, 1, before[p.tensor][:k])
        else:
            count = int(np.prod(t.shape[1:]))
            want, _, rng_state = sgd_update_s8(k, count, 0.05, grads[p.tensor], scale, 1, 1, before[p.tensor][:k],
                                               np.zeros(k * count, np.int8), rng_state)
        assert np.array_equal(after[p.tensor].reshape(-1)[:want.size], want.reshape(-1)), p.tensor
        assert np.array_equal(after[p.tensor][k:], before[p.tensor][k:])  # frozen channels stay

    fused = build_training(copy.deepcopy(graph), updates, "net")
    results = []
    for b in (unfused, fused):
        trainer = CTrainer(b, seed=seed)
        try:
            losses = trainer.steps(x_q, labels, 0.05)
            results.append((losses, trainer.params(), trainer.predict(x_q)))
        finally:
            trainer.close()
    assert np.array_equal(results[0][0], results[1][0])
    for key in results[0][1]:
        assert np.array_equal(results[0][1][key], results[1][1][key]), key
    assert np.array_equal(results[0][2], results[1][2])


def test_train_step_forward_is_invoke_and_shares_its_parameters(tmp_path):
    """The example digits CNN trained on its samples in C and in numpy: the same
    losses (the C's float within 1e-5) and after training NAME_invoke (C) gives
    exactly the numpy int8 reference's outputs with the C's trained parameters."""
    model = EXAMPLES / "digits_cnn.onnx"
    graph = api.load(model)
    api.quantize_with_calibration(graph, EXAMPLES / "digits_samples.npz")
    d = np.load(EXAMPLES / "digits_samples.npz")
    updates = parse_update("bias=all; weight=-1,-2@0.5", model_layers(model))
    b_c = build_training(copy.deepcopy(graph), updates, "digits")
    b_ref = build_training(copy.deepcopy(graph), updates, "digits")
    x_q = to_program_input(b_c.tp, Dataset(d["inputs"], d["labels"]))
    c, ref = CTrainer(b_c, seed=5), RefTrainer(b_ref, seed=5)
    try:
        for _ in range(3):
            assert np.allclose(c.steps(x_q, d["labels"], 0.05), ref.steps(x_q, d["labels"], 0.05), rtol=1e-5)
        for name, value in c.params().items():  # the C's parameters into the numpy program
            b_ref.tp.graph.tensors[name].data = value.reshape(b_ref.tp.graph.tensors[name].shape)
        assert np.array_equal(c.predict(x_q), ref.predict(x_q))
    finally:
        c.close()


@needs_shared
@pytest.mark.parametrize("model, spec", [(RESNET8, RESNET8_SPARSE), (VWW, VWW_SPARSE)], ids=["resnet8", "vww"])
def test_shared_models_poison_and_sanitizers(model, spec):
    """The sparse schemes of both models: a poisoned build (dead arena bytes
    overwritten after every step of NAME_invoke and NAME_train_step) under ASan
    and UBSan trains bit-exact with the plain build, and both plans pass the
    validator."""
    data = np.load(TRAINING / ("digits32.npz" if model == RESNET8 else "lfw96.npz"))
    x = (data["train_x"][:3].astype(np.int16) - 128).astype(np.int8)
    y = data["train_y"][:3]
    updates = parse_update(spec, model_layers(model))
    results = []
    for poison, flags in ((False, []), (True, ["-fsanitize=address,undefined", "-fno-sanitize-recover=all"])):
        b = build_training(api.load(model), updates, "m", poison=poison)
        validate_plan(b.train_plan, b.tp.step)
        trainer = CTrainer(b, seed=1, cflags=flags)
        try:
            losses = trainer.steps(x.reshape((3,) + b.tp.graph.tensors[b.tp.step.inputs[0]].shape), y, 0.01)
            results.append((losses, trainer.params()))
        finally:
            trainer.close()
    assert np.array_equal(results[0][0], results[1][0])
    for key in results[0][1]:
        assert np.array_equal(results[0][1][key], results[1][1][key])


@needs_shared
def test_resnet8_c_training_follows_the_numpy_specs():
    """Eight steps of the sparse scheme: C and numpy losses agree within 1e-5 and
    the parameters end equal (float sums in another order may move a rounding:
    at most one unit on a few values)."""
    data = np.load(TRAINING / "digits32.npz")
    x = (data["train_x"][:8].astype(np.int16) - 128).astype(np.int8)[:, None]
    y = data["train_y"][:8]
    updates = parse_update(RESNET8_SPARSE, model_layers(RESNET8))
    b_c = build_training(api.load(RESNET8), updates, "r8")
    b_ref = build_training(api.load(RESNET8), updates, "r8")
    c, ref = CTrainer(b_c, seed=3), RefTrainer(b_ref, seed=3)
    try:
        assert np.allclose(c.steps(x, y, 0.01), ref.steps(x, y, 0.01), rtol=1e-5)
        got, want = c.params(), ref.params()
    finally:
        c.close()
    for key, w in want.items():
        diff = np.abs(got[key].astype(np.int64) - w.astype(np.int64))
        assert diff.max() <= 1 and np.count_nonzero(diff) <= max(1, diff.size // 200), key


@needs_shared
def test_resnet8_sparse_step_fits_96_kb_without_its_bias_gradients():
    """ResNet-8's sparse step keeps no [16, 16, 32] float gradient that only feeds
    the sums of block 2's biases (main path and shortcut, 32 KB each): its arena
    is no larger than NAME_invoke's, the training SRAM is within 96 KB, and the
    bias gradients equal those of the stored schedule within float32 rounding."""
    updates = parse_update(RESNET8_SPARSE, model_layers(RESNET8))
    summed = memory_of(api.load(RESNET8), updates)
    stored = memory_of(api.load(RESNET8), updates, sum_bias_tails=False)
    assert summed["total_bytes"] <= 96 * 1024 < stored["total_bytes"]
    assert stored["arena_bytes"] - summed["arena_bytes"] >= 32 * 1024
    data = np.load(TRAINING / "digits32.npz")
    x = (data["train_x"][:2].astype(np.int16) - 128).astype(np.int8)
    seen = []
    for flag in (True, False):
        tp = lower_training(api.load(RESNET8), updates, sum_bias_tails=flag)
        assert flag == ("conv2d_grad_input_sum_f32" in {c.kernel for c in tp.step.calls})
        assert flag or max(tp.graph.tensors[o].nbytes for c in tp.step.calls for o in c.outputs) >= 32 * 1024
        grads, losses = {}, []
        for k in range(2):

            def observe(p, g, k=k, grads=grads):
                grads[p.tensor, k] = g.copy()

            loss, _ = run_step(tp, x[k].reshape(tp.graph.tensors[tp.step.inputs[0]].shape), int(data["train_y"][k]),
                               0.01, 1, observe)
            losses.append(loss)
        seen.append((losses, grads, {p.tensor: tp.graph.tensors[p.tensor].data for p in tp.params}))
    assert seen[0][0][0] == seen[1][0][0]  # the first forward and loss are the same program
    assert abs(seen[0][0][1] - seen[1][0][1]) <= 1e-5 * abs(seen[1][0][1])
    for key, g in seen[1][1].items():
        assert _close(seen[0][1][key], g), key


@needs_shared
def test_recompute_lowers_the_peak_and_changes_no_value(tmp_path):
    """VWW with the biases of its last 14 layers and the classifier: saved
    activations recomputed in the backward lower the arena, and the C trains
    bit for bit as with them stored (the same int8 kernel on the same bytes);
    the report lists what is recomputed and its MACs."""
    spec = "bias=last14; weight=-1"
    updates = parse_update(spec, model_layers(VWW))
    data = np.load(TRAINING / "lfw96.npz")
    x = (data["train_x"][:4].astype(np.int16) - 128).astype(np.int8)
    y = data["train_y"][:4]
    results, arenas = [], []
    for flag in (True, False):
        b = build_training(api.load(VWW), updates, "m", recompute=flag)
        validate_plan(b.train_plan, b.tp.step)
        assert bool(b.tp.recomputed) == flag and (b.summary["recompute_macs"] > 0) == flag
        arenas.append(b.train_plan.arena_size)
        trainer = CTrainer(b, seed=2)
        try:
            losses = trainer.steps(x.reshape((4,) + b.tp.graph.tensors[b.tp.step.inputs[0]].shape), y, 0.03)
            results.append((losses, trainer.params()))
        finally:
            trainer.close()
    assert arenas[0] < arenas[1]
    assert np.array_equal(results[0][0], results[1][0])
    for key in results[1][1]:
        assert np.array_equal(results[0][1][key], results[1][1][key]), key
    r = _tinyc("report", VWW, "--board", "host", "--format", "json", "--update", spec)
    assert r.returncode == 0, r.stderr
    t = json.loads(r.stdout)["training"]
    assert t["recomputed"] and all(x["macs"] > 0 for x in t["recomputed"])
    assert t["train_arena_bytes"] == max(arenas[0], t["inference_arena_bytes"])


@needs_shared
def test_tinyc_train_round_trip_and_json(tmp_path):
    """tinyc train on the shared int8 ResNet-8 (a few samples of digits32): the
    JSON's memory keys, and the fine-tuned ONNX run by tinyc run --engine c gives
    exactly what the trained project's C gives."""
    d = np.load(TRAINING / "digits32.npz")
    np.savez(tmp_path / "small.npz", train_x=d["train_x"][:40], train_y=d["train_y"][:40], test_x=d["test_x"][:30],
             test_y=d["test_y"][:30])
    out = tmp_path / "proj"
    r = _tinyc("train", RESNET8, "--data", tmp_path / "small.npz", "--eval", tmp_path / "small.npz", "--update",
               RESNET8_SPARSE, "--lr", "0.01", "--pixel-range", "0,255", "-o", out, "--json",
               "--dump-grads", tmp_path / "g.npz")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    for key in ("train_arena_bytes", "trainable_bytes", "train_total_bytes", "full_backprop_total_bytes",
                "test_accuracy"):
        assert key in s, key
    assert s["train_total_bytes"] == s["train_arena_bytes"] + s["trainable_bytes"]
    assert s["full_backprop_total_bytes"] > s["train_total_bytes"]
    g = np.load(tmp_path / "g.npz")
    assert g["loss"].shape == (4,) and g["grad/model/dense/MatMul"].shape == (4, 64, 10)
    x = (d["test_x"][:10].astype(np.int16) - 128).astype(np.int8)[:, None]
    np.save(tmp_path / "x.npy", x)
    onnx_out, project_out = tmp_path / "a.npy", tmp_path / "b.npy"
    assert _tinyc("run", out / "ic_resnet8_int8.onnx", "--input", tmp_path / "x.npy", "--engine", "c",
                  "-o", onnx_out).returncode == 0
    assert _tinyc("run", out, "--input", tmp_path / "x.npy", "-o", project_out).returncode == 0
    assert np.array_equal(np.load(onnx_out), np.load(project_out))
    before = tmp_path / "c.npy"
    assert _tinyc("run", RESNET8, "--input", tmp_path / "x.npy", "-o", before).returncode == 0
    assert not np.array_equal(np.load(before), np.load(onnx_out))  # training changed the model


def test_tinyc_train_float_and_int8_on_the_example(tmp_path):
    """The example (a float model): --calib int8 training through the C, and
    --precision float with --dump-grads; both write their ONNX, which loads."""
    d = np.load(EXAMPLES / "digits_samples.npz")
    np.savez(tmp_path / "d.npz", train_x=d["inputs"], train_y=d["labels"], test_x=d["inputs"], test_y=d["labels"])
    r = _tinyc("train", EXAMPLES / "digits_cnn.onnx", "--data", tmp_path / "d.npz", "--eval", tmp_path / "d.npz",
               "--calib", EXAMPLES / "digits_samples.npz", "--update", "head", "--lr", "0.05", "--epochs", "2",
               "-o", tmp_path / "i8", "--json")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert len(s["history"]) == 2 and 0 <= s["test_accuracy"] <= 1
    assert (tmp_path / "i8" / "digits_cnn.c").is_file() and "digits_cnn_train_step" in (
        tmp_path / "i8" / "digits_cnn.h").read_text()
    r = _tinyc("train", EXAMPLES / "digits_cnn.onnx", "--data", tmp_path / "d.npz", "--update", "weight=-1; bias=last2",
               "--lr", "0.05", "--precision", "float", "-o", tmp_path / "f", "--dump-grads", tmp_path / "g.npz")
    assert r.returncode == 0, r.stderr
    g = np.load(tmp_path / "g.npz")
    assert g["loss"].shape == (4,) and all(np.isfinite(v).all() for v in g.values())
    onnx.checker.check_model(onnx.load(str(tmp_path / "f" / "digits_cnn.onnx")))


@pytest.fixture(scope="module")
def example_data(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bad")
    d = np.load(EXAMPLES / "digits_samples.npz")
    x, y = d["inputs"], d["labels"]
    files = {
        "good": dict(train_x=x, train_y=y),
        "label": dict(train_x=x, train_y=np.where(np.arange(len(y)) == 3, 10, y)),
        "negative": dict(train_x=x, train_y=-np.ones_like(y)),
        "shape": dict(train_x=x[:, :, :4], train_y=y),
        "dtype": dict(train_x=x.astype(np.int16), train_y=y),
        "count": dict(train_x=x, train_y=y[:5]),
        "nan": dict(train_x=np.where(np.arange(x.size).reshape(x.shape) == 7, np.nan, x).astype(np.float32),
                    train_y=y),
        "float_labels": dict(train_x=x, train_y=y.astype(np.float32)),
        "nokeys": dict(inputs=x, labels=y),
    }
    paths = {}
    for k, arrays in files.items():
        paths[k] = tmp / f"{k}.npz"
        np.savez(paths[k], **arrays)
    no_softmax = onnx.load(str(EXAMPLES / "digits_cnn.onnx"))
    last = no_softmax.graph.node[-1]
    assert last.op_type == "Softmax"
    no_softmax.graph.output[0].name = last.input[0]
    del no_softmax.graph.node[-1]
    onnx.save(no_softmax, str(tmp / "nosoftmax.onnx"))
    paths["nosoftmax"] = tmp / "nosoftmax.onnx"
    return paths


@pytest.mark.parametrize("case, words", [
    (dict(data="label"), "train_y[3] = 10 is not a class"),
    (dict(data="negative"), "is not a class"),
    (dict(data="shape"), "the model takes"),
    (dict(data="dtype"), "give uint8 images or float32"),
    (dict(data="count"), "give the same number"),
    (dict(data="nan"), "NaN"),
    (dict(data="float_labels"), "integer class labels"),
    (dict(data="nokeys"), "not ['train_x', 'train_y']"),
    (dict(update="weight=7"), "layer"),
    (dict(update="weight=-1@1.5"), "(0, 1]"),
    (dict(lr="-0.1"), "--lr"),
    (dict(lr="abc"), "--lr"),
    (dict(lr="nan"), "--lr"),
    (dict(model="nosoftmax"), "Softmax"),
    (dict(update="bias=0"), "BatchNormalization"),
    (dict(calib=False), "--calib"),
])  # fmt: skip
def test_bad_training_input_is_one_line_and_writes_nothing(tmp_path, example_data, case, words):
    model = example_data["nosoftmax"] if case.get("model") == "nosoftmax" else EXAMPLES / "digits_cnn.onnx"
    out = tmp_path / "out"
    args = ["train", model, "--data", example_data[case.get("data", "good")], "--update", case.get("update", "head"),
            "--lr", case.get("lr", "0.01"), "-o", out, "--dump-grads", tmp_path / "g.npz"]
    if case.get("calib", True):
        args += ["--calib", EXAMPLES / "digits_samples.npz"]
    r = _tinyc(*args)
    assert r.returncode == 2, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr, r.stderr
    assert words in r.stderr, r.stderr
    assert not out.exists() and not (tmp_path / "g.npz").exists()


@needs_shared
@pytest.mark.parametrize("engine", ["c", "ref"])
@pytest.mark.parametrize("name, model", [("mlperf_ic_resnet8", "ic_resnet8_float_nchw.onnx"),
                                         ("mlperf_vww_mbv1", "vww_mbv1_float_nchw.onnx")])
def test_dump_grads_float_matches_pytorch(tmp_path, name, model, engine):
    """tinyc train --precision float --update full --dump-grads on the goldens' four
    samples, through the generated C and through the numpy specs: every
    parameter's gradient within 1e-4 of its tensor's largest, the loss within
    1e-5 relative, keyed by the ONNX initializers."""
    gold = np.load(TRAINING / f"grads_{name}.npz")
    np.savez(tmp_path / "d.npz", train_x=gold["inputs"], train_y=gold["labels"])
    r = _tinyc("train", SHARED_MODELS / "mlperf_tiny" / model, "--data", tmp_path / "d.npz", "--update", "full",
               "--lr", "1e-6", "--precision", "float", "--engine", engine, "-o", tmp_path / "out",
               "--dump-grads", tmp_path / "g.npz")
    assert r.returncode == 0, r.stderr
    got = np.load(tmp_path / "g.npz")
    keys = sorted(k for k in gold.files if k.startswith("grad/"))
    assert sorted(k for k in got.files if k.startswith("grad/")) == keys
    assert np.all(np.abs(got["loss"] - gold["loss"]) <= 1e-5 * np.abs(gold["loss"]))
    for key in keys:
        for s in range(4):
            want = gold[key][s]
            assert np.abs(got[key][s] - want).max() <= 1e-4 * max(np.abs(want).max(), 1e-30), (key, s)


def test_report_update_gives_the_training_memory(tmp_path):
    """tinyc report --update: the training section's totals are tinyc train's, the
    peak's tensors add up to the step's live bytes, and both renderings show it;
    a bad spec is one line, exit 2."""
    d = np.load(EXAMPLES / "digits_samples.npz")
    np.savez(tmp_path / "d.npz", train_x=d["inputs"], train_y=d["labels"])
    common = ["--calib", EXAMPLES / "digits_samples.npz"]
    r = _tinyc("report", EXAMPLES / "digits_cnn.onnx", "--board", "stm32f746", "--format", "json", "--update",
               "weight=-1; bias=last2", *common)
    assert r.returncode == 0, r.stderr
    t = json.loads(r.stdout)["training"]
    r = _tinyc("train", EXAMPLES / "digits_cnn.onnx", "--data", tmp_path / "d.npz", "--update", "weight=-1; bias=last2",
               "--lr", "0.01", "-o", tmp_path / "p", "--json", *common)
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    for key in ("train_arena_bytes", "trainable_bytes", "train_total_bytes", "full_backprop_total_bytes"):
        assert t[key] == s[key], key
    assert t["verdict"]["fits"] and t["verdict"]["needed"] > t["train_total_bytes"]
    assert sum(x["bytes"] for x in t["at_peak"]) <= t["train_arena_bytes"]
    assert {p["kind"] for p in t["params"]} == {"weight", "bias"}
    assert set(t["others"]) == {"bias_only", "full_backprop"}
    for fmt in ("md", "html"):
        out = tmp_path / f"r.{fmt}"
        r = _tinyc("report", EXAMPLES / "digits_cnn.onnx", "--board", "all", "--format", fmt, "-o", out, "--update",
                   "head", *common)
        assert r.returncode == 0, r.stderr
        assert "On-device training" in out.read_text() and "full backprop" in out.read_text()
    r = _tinyc("report", EXAMPLES / "digits_cnn.onnx", "--board", "host", "--format", "json", "--update", "weight=9",
               *common)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "layer 9" in r.stderr
