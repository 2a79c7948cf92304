"""The command line on the bundled example model: what the README promises."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
from click.testing import CliRunner
from onnx import TensorProto, helper

from tests.conftest import EXAMPLES, REPO
from tinyc import api
from tinyc.cli import cli

MODEL = EXAMPLES / "digits_cnn.onnx"
SAMPLES = EXAMPLES / "digits_samples.npz"


def invoke(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


def test_console_script_inspect_runs_as_the_readme_says():
    proc = subprocess.run([sys.executable, "-m", "tinyc.cli", "inspect", str(MODEL)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "Conv2D" in proc.stdout and "MACs" in proc.stdout


def test_inspect_json_totals_add_up():
    info = json.loads(invoke("inspect", "--json", MODEL).output)
    layers = info["layers"]
    assert info["totals"]["macs"] == sum(la["macs"] for la in layers) > 0
    assert info["totals"]["params"] == sum(la["params"] for la in layers)
    conv = [la for la in layers if la["op"] == "Conv2D"]
    # first conv: 8x8 output, 8 channels, 3x3x1 kernel
    assert conv[0]["output_shape"] == [1, 8, 8, 8] and conv[0]["macs"] == 8 * 8 * 8 * 9
    assert info["inputs"] == [{"name": "image", "shape": [1, 1, 8, 8], "dtype": "float32"}]


def test_dump_ir_shows_every_pass():
    result = CliRunner().invoke(cli, ["inspect", str(MODEL), "--dump-ir"])
    assert result.exit_code == 0
    for name in ("after import", "fold-qdq", "eliminate-transposes", "fold-scale-shift", "fuse-activations"):
        assert name in result.output
    # after import the model still has its BatchNormalization as Mul/Add and layout Transposes
    first = result.output.split("=== after fold-qdq")[0]
    assert "Transpose" in first and "Mul" in first


def test_run_batch_matches_onnxruntime_and_labels(tmp_path):
    out = tmp_path / "probs.npy"
    invoke("run", MODEL, "--input", SAMPLES, "-o", out, "--engine", "ref")
    probs = np.load(out)
    data = np.load(SAMPLES)
    # [16, 1, 8, 8] is a batch of 16 samples with the model's batch axis of 1 left out
    assert probs.shape == (len(data["inputs"]), 10)
    sess = ort.InferenceSession(str(MODEL), providers=["CPUExecutionProvider"])
    for x, p in zip(data["inputs"], probs):
        np.testing.assert_allclose(p, sess.run(None, {"image": x[None]})[0][0], rtol=1e-4, atol=1e-5)
    accuracy = float(np.mean(probs.argmax(axis=1) == data["labels"]))
    assert accuracy >= 0.8


def test_run_single_sample_keeps_single_sample_shape(tmp_path):
    x = np.load(SAMPLES)["inputs"][:1]  # [1, 1, 8, 8] is exactly the model's input shape
    np.save(tmp_path / "x.npy", x)
    invoke("run", MODEL, "--input", tmp_path / "x.npy", "-o", tmp_path / "y.npy")
    assert np.load(tmp_path / "y.npy").shape == (1, 10)


def test_run_batch_with_batch_axis(tmp_path):
    x = np.load(SAMPLES)["inputs"][:5, None]  # [5, 1, 1, 8, 8]: 5 samples of the full input shape
    np.save(tmp_path / "x.npy", x)
    invoke("run", MODEL, "--input", tmp_path / "x.npy", "-o", tmp_path / "y.npy")
    assert np.load(tmp_path / "y.npy").shape == (5, 1, 10)


def _two_input_model(path):
    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, [1, 4])
    b = helper.make_tensor_value_info("b", TensorProto.FLOAT, [1, 4])
    s = helper.make_tensor_value_info("sum", TensorProto.FLOAT, [1, 4])
    p = helper.make_tensor_value_info("prod", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["sum"]), helper.make_node("Mul", ["a", "b"], ["prod"])],
        "two", [a, b], [s, p])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)


def test_multi_input_npz_and_multi_output_npz(tmp_path):
    model = tmp_path / "two.onnx"
    _two_input_model(model)
    a = np.arange(12, dtype=np.float32).reshape(3, 1, 4)
    b = np.full((3, 1, 4), 2, dtype=np.float32)
    np.savez(tmp_path / "in.npz", a=a, b=b)
    invoke("run", model, "--input", tmp_path / "in.npz", "-o", tmp_path / "out.npz")
    out = np.load(tmp_path / "out.npz")
    np.testing.assert_array_equal(out["sum"], a + b)
    np.testing.assert_array_equal(out["prod"], a * b)


def test_canonical_example_ir_is_what_an_mcu_runs():
    g = api.load(MODEL)
    ops = [n.op for n in g.nodes]
    assert ops == ["Conv2D", "MaxPool2D", "Conv2D", "ReduceMean", "Reshape", "FullyConnected", "Softmax"]
    conv1 = g.nodes[0]
    assert conv1.attrs.act.lo == 0.0 and len(conv1.inputs) == 3  # BN folded into a new bias, ReLU fused
    assert g.input_perm == {"image": (0, 2, 3, 1)}


def test_readme_main_command_works(tmp_path):
    """The README's first command, after its pip install, run as written (paths moved to tmp)."""
    import re
    import shlex

    readme = (REPO / "README.md").read_text()
    first = re.search(r"```sh\n(.*?)\n```", readme, re.S).group(1)
    steps = [s.strip() for s in first.split("&&")]
    assert "pip install" in steps[0]
    for step in steps[1:]:
        args = shlex.split(step.replace("/tmp/", f"{tmp_path}/"))
        assert args[0] == "tinyc"
        proc = subprocess.run([sys.executable, "-m", "tinyc.cli", *args[1:]], cwd=REPO,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, (step, proc.stderr)
    probs = np.load(tmp_path / "digits_probs.npy")
    labels = np.load(SAMPLES)["labels"]
    assert probs.shape == (16, 1, 10) or probs.shape == (16, 10)
    assert (probs.reshape(16, 10).argmax(1) == labels).mean() >= 0.8
    assert (tmp_path / "digits_c" / "digits_cnn.c").is_file()
