"""Every way a user can feed tinyc bad input ends the same way: one line
``tinyc: error: ...`` on stderr that names the file / node / op and says what to
do, exit status 2, no traceback, and no output file left behind.

The CLI runs in a subprocess (``python -m tinyc.cli``) with the test's tmp_path as
its working directory, so what is checked is exactly what a user sees.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

REPO = Path(__file__).resolve().parent.parent


# ------------------------------------------------------------------ helpers
def _env(**extra: str) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.update(extra)
    return env


def _limit_memory():  # pragma: no cover - runs in the child
    """Cap the child's address space: an attempt to allocate a declared absurd
    tensor then fails instead of swapping the test machine to death."""
    import resource

    cap = 8 * 1024**3  # far below the 40-160 GB the absurd shapes below declare
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))


def tinyc(cwd: Path, *args: str, limit_memory: bool = False, timeout: float = 120,
          env: dict | None = None) -> subprocess.CompletedProcess:
    extra = dict(env or {})
    if limit_memory:  # one BLAS / OpenMP thread: per-thread buffers must not eat the capped address space
        extra.update(OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, "-m", "tinyc.cli", *map(str, args)],
        cwd=cwd, env=_env(**extra),
        capture_output=True, text=True, timeout=timeout,
        preexec_fn=_limit_memory if limit_memory and sys.platform.startswith("linux") else None,
    )


def assert_user_error(r: subprocess.CompletedProcess, *words: str) -> str:
    """Exit 2, exactly one line ``tinyc: error: ...`` on stderr containing every word."""
    err = r.stderr
    assert "Traceback" not in err, err
    assert r.returncode == 2, (r.returncode, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    line = lines[0]
    assert line.startswith("tinyc: error: "), line
    for w in words:
        assert w.lower() in line.lower(), f"{w!r} not in {line!r}"
    assert r.stdout == "", r.stdout
    print(line)  # shown with pytest -s: the messages users get
    return line


def no_leftovers(folder: Path, target: Path) -> None:
    assert not target.exists(), f"{target} was written although the command failed"
    assert not list(folder.glob(".tinyc-*")), "a temporary output file was left behind"


def save(model: onnx.ModelProto, path: Path, **kw) -> Path:
    onnx.save_model(model, str(path), **kw)
    return path


def conv_model(shape=(1, 3, 8, 8), opset: int = 13, name: str = "conv1") -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    c = shape[1] if isinstance(shape[1], int) else 3
    w = numpy_helper.from_array(rng.standard_normal((4, c, 3, 3)).astype(np.float32) * 0.2, "w")
    b = numpy_helper.from_array(np.zeros(4, np.float32), "b")
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], name=name, pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["y"], name="relu1"),
    ]
    out_shape = [shape[0], 4, shape[2], shape[3]]
    g = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
        [w, b],
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def two_output_model() -> onnx.ModelProto:
    nodes = [
        helper.make_node("Relu", ["x"], ["y1"], name="r1"),
        helper.make_node("Sigmoid", ["x"], ["y2"], name="s1"),
    ]
    g = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y1", TensorProto.FLOAT, [1, 4]),
         helper.make_tensor_value_info("y2", TensorProto.FLOAT, [1, 4])],
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


def int8_model() -> onnx.ModelProto:
    """int8 in, int8 out: DequantizeLinear -> Relu -> QuantizeLinear."""
    s = numpy_helper.from_array(np.array(0.1, np.float32), "s")
    z = numpy_helper.from_array(np.array(0, np.int8), "z")
    nodes = [
        helper.make_node("DequantizeLinear", ["x", "s", "z"], ["xf"], name="dq"),
        helper.make_node("Relu", ["xf"], ["yf"], name="relu"),
        helper.make_node("QuantizeLinear", ["yf", "s", "z"], ["y"], name="q"),
    ]
    g = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("x", TensorProto.INT8, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.INT8, [1, 4])],
        [s, z],
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


def external_model(tmp_path: Path, location: str, dims=(4, 3, 3, 3)) -> Path:
    """A conv model whose weight says its bytes live in ``location``."""
    m = conv_model()
    w = next(t for t in m.graph.initializer if t.name == "w")
    w.ClearField("raw_data")
    w.ClearField("float_data")
    del w.dims[:]
    w.dims.extend(dims)
    w.data_location = TensorProto.EXTERNAL
    del w.external_data[:]
    e = w.external_data.add()
    e.key, e.value = "location", location
    folder = tmp_path / "model"
    folder.mkdir(exist_ok=True)
    return save(m, folder / "model.onnx")


@pytest.fixture
def model(tmp_path) -> Path:
    return save(conv_model(), tmp_path / "net.onnx")


# ------------------------------------------------------------ the model file
def test_python_dash_m_runs_the_cli(tmp_path, model):
    r = tinyc(tmp_path, "inspect", "net.onnx")
    assert r.returncode == 0, r.stderr
    assert "Conv2D" in r.stdout and "conv1" in r.stdout


def test_missing_model_file(tmp_path):
    line = assert_user_error(tinyc(tmp_path, "inspect", "nope.onnx"), "nope.onnx", "no such file")
    assert ".onnx" in line


def test_model_is_a_directory(tmp_path):
    (tmp_path / "adir").mkdir()
    assert_user_error(tinyc(tmp_path, "inspect", "adir"), "adir", "directory")


def test_truncated_model(tmp_path, model):
    raw = model.read_bytes()
    (tmp_path / "half.onnx").write_bytes(raw[: len(raw) // 2])
    assert_user_error(tinyc(tmp_path, "inspect", "half.onnx"), "half.onnx", "re-export")


@pytest.mark.parametrize("content", [
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x10\x00\x00\x00\x10\x08\x06\x00\x00\x00",
    b"hello, this is not a neural network\n" * 20,
    bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8)),
], ids=["png", "text", "random"])
def test_not_an_onnx_file(tmp_path, content):
    (tmp_path / "pic.onnx").write_bytes(content)
    assert_user_error(tinyc(tmp_path, "inspect", "pic.onnx"), "pic.onnx", "onnx")


def test_empty_file(tmp_path):
    (tmp_path / "blank.onnx").write_bytes(b"")
    assert_user_error(tinyc(tmp_path, "inspect", "blank.onnx"), "blank.onnx", "empty")


def test_unsupported_op_names_node_and_op(tmp_path):
    hidden, inp = 5, 4
    rng = np.random.default_rng(0)
    W = numpy_helper.from_array(rng.standard_normal((1, 4 * hidden, inp)).astype(np.float32), "W")
    R = numpy_helper.from_array(rng.standard_normal((1, 4 * hidden, hidden)).astype(np.float32), "R")
    node = helper.make_node("LSTM", ["x", "W", "R"], ["", "h"], name="encoder_lstm", hidden_size=hidden)
    g = helper.make_graph(
        [node], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [7, 1, inp])],
        [helper.make_tensor_value_info("h", TensorProto.FLOAT, [1, 1, hidden])],
        [W, R],
    )
    save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 14)]), tmp_path / "rnn.onnx")
    assert_user_error(tinyc(tmp_path, "inspect", "rnn.onnx"), "rnn.onnx", "encoder_lstm", "LSTM", "not supported")


def test_custom_domain_op(tmp_path):
    node = helper.make_node("FancyAct", ["x"], ["y"], name="fancy_1", domain="com.example")
    g = helper.make_graph(
        [node], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid("com.example", 1)])
    save(m, tmp_path / "custom.onnx")
    assert_user_error(tinyc(tmp_path, "inspect", "custom.onnx"), "custom.onnx", "fancy_1", "FancyAct", "com.example")


@pytest.mark.parametrize("opset", [3, 99])
def test_opset_out_of_range(tmp_path, opset):
    m = helper.make_model(
        helper.make_graph(
            [helper.make_node("Relu", ["x"], ["y"], name="r")], "g",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        ),
        opset_imports=[helper.make_opsetid("", opset)],
    )
    save(m, tmp_path / "old.onnx")
    assert_user_error(tinyc(tmp_path, "inspect", "old.onnx"), "old.onnx", f"opset {opset}", "version_converter")


def _tiny(nodes, inputs=None, outputs=None, inits=()) -> onnx.ModelProto:
    vi = helper.make_tensor_value_info
    g = helper.make_graph(
        nodes, "g",
        inputs if inputs is not None else [vi("x", TensorProto.FLOAT, [1, 4])],
        outputs if outputs is not None else [vi("y", TensorProto.FLOAT, None)],
        list(inits),
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


def test_node_reads_undefined_tensor(tmp_path):
    save(_tiny([helper.make_node("Add", ["x", "ghost"], ["y"], name="add_1")]), tmp_path / "m.onnx")
    assert_user_error(tinyc(tmp_path, "inspect", "m.onnx"), "m.onnx", "'add_1'", "Add", "'ghost'", "re-export")


def test_nodes_out_of_order(tmp_path):
    nodes = [helper.make_node("Add", ["x", "z"], ["y"], name="late"), helper.make_node("Relu", ["x"], ["z"], name="r")]
    save(_tiny(nodes), tmp_path / "m.onnx")
    assert_user_error(tinyc(tmp_path, "inspect", "m.onnx"), "m.onnx", "'late'", "'z'", "out of order")


def test_tensor_written_twice(tmp_path):
    nodes = [helper.make_node("Relu", ["x"], ["y"], name="a"), helper.make_node("Sigmoid", ["x"], ["y"], name="b")]
    save(_tiny(nodes), tmp_path / "m.onnx")
    assert_user_error(tinyc(tmp_path, "inspect", "m.onnx"), "m.onnx", "'b'", "'y'", "'a'")


def test_inconsistent_node_shapes(tmp_path):
    """Weights that do not fit the input: ONNX's non-strict inference lets it through,
    tinyc names the node and says how to check the model."""
    vi = helper.make_tensor_value_info
    w = numpy_helper.from_array(np.ones((4, 5, 3, 3), np.float32), "w")
    m = _tiny([helper.make_node("Conv", ["x", "w"], ["y"], name="conv_bad")],
              inputs=[vi("x", TensorProto.FLOAT, [1, 3, 8, 8])], inits=[w])
    save(m, tmp_path / "m.onnx")
    assert_user_error(tinyc(tmp_path, "inspect", "m.onnx"), "m.onnx", "'conv_bad'", "Conv", "onnx.checker")


def test_inline_data_shorter_than_shape(tmp_path):
    m = conv_model()
    w = next(t for t in m.graph.initializer if t.name == "w")
    w.raw_data = w.raw_data[:10]
    save(m, tmp_path / "cut.onnx")
    assert_user_error(tinyc(tmp_path, "inspect", "cut.onnx"), "cut.onnx", "'w'", "re-export")


def test_kernel_larger_than_input(tmp_path):
    vi = helper.make_tensor_value_info
    node = helper.make_node("MaxPool", ["x"], ["y"], name="pool_big", kernel_shape=[20, 20])
    save(_tiny([node], inputs=[vi("x", TensorProto.FLOAT, [1, 3, 8, 8])]), tmp_path / "m.onnx")
    np.save(tmp_path / "x.npy", np.zeros((1, 3, 8, 8), np.float32))
    r = tinyc(tmp_path, "run", "m.onnx", "--input", "x.npy", "-o", "y.npy")
    assert_user_error(r, "m.onnx", "'pool_big'", "MaxPool")
    no_leftovers(tmp_path, tmp_path / "y.npy")


def test_layer_too_wide_for_the_kernel_parameters(tmp_path):
    """The C kernels' parameter structs hold one axis's size in 16 bits: a Conv1d
    over 70,000 samples is refused (never a wrapped width), naming the node."""
    rng = np.random.default_rng(0)
    vi = helper.make_tensor_value_info
    w = numpy_helper.from_array(rng.standard_normal((4, 1, 3)).astype(np.float32) * 0.3, "w")
    node = helper.make_node("Conv", ["x", "w"], ["y"], name="conv_long", pads=[1, 1])
    save(_tiny([node], inputs=[vi("x", TensorProto.FLOAT, [1, 1, 70000])], inits=[w]), tmp_path / "m.onnx")
    np.save(tmp_path / "x.npy", rng.standard_normal((2, 1, 70000)).astype(np.float32))
    r = tinyc(tmp_path, "build", "m.onnx", "--calib", "x.npy", "-o", "out")
    assert_user_error(r, "'conv_long", "Conv2D", "in_w = 70000", "65535", "smaller")
    no_leftovers(tmp_path, tmp_path / "out")


def test_input_without_shape(tmp_path):
    vi = helper.make_tensor_value_info
    save(_tiny([helper.make_node("Relu", ["x"], ["y"], name="r")], inputs=[vi("x", TensorProto.FLOAT, None)]),
         tmp_path / "m.onnx")
    assert_user_error(tinyc(tmp_path, "inspect", "m.onnx"), "m.onnx", "'x'", "--input-shape")
    r = tinyc(tmp_path, "inspect", "m.onnx", "--input-shape", "x=1,6")
    assert r.returncode == 0, r.stderr


def test_unsupported_input_type(tmp_path):
    vi = helper.make_tensor_value_info
    m = _tiny([helper.make_node("Relu", ["x"], ["y"], name="r")],
              inputs=[vi("x", TensorProto.FLOAT16, [1, 4])], outputs=[vi("y", TensorProto.FLOAT16, [1, 4])])
    save(m, tmp_path / "m.onnx")
    assert_user_error(tinyc(tmp_path, "inspect", "m.onnx"), "m.onnx", "'x'", "float16")


# ------------------------------------------------------------------- shapes
def test_dynamic_spatial_dim_suggests_input_shape(tmp_path):
    save(conv_model(shape=(1, 3, "h", 32)), tmp_path / "dyn.onnx")
    line = assert_user_error(tinyc(tmp_path, "inspect", "dyn.onnx"), "dyn.onnx", "'x'", "'h'", "--input-shape")
    assert "x=1,3,N,32" in line
    r = tinyc(tmp_path, "inspect", "dyn.onnx", "--json", "--input-shape", "x=1,3,32,32")
    assert r.returncode == 0, r.stderr
    import json

    info = json.loads(r.stdout)
    assert info["inputs"][0]["shape"] == [1, 3, 32, 32]


def test_symbolic_batch_becomes_one(tmp_path):
    save(conv_model(shape=("batch", 3, 8, 8)), tmp_path / "bat.onnx")
    r = tinyc(tmp_path, "inspect", "bat.onnx", "--json")
    assert r.returncode == 0, r.stderr
    import json

    info = json.loads(r.stdout)
    assert info["inputs"][0]["shape"] == [1, 3, 8, 8]
    assert info["outputs"][0]["shape"] == [1, 4, 8, 8]


@pytest.mark.parametrize("spec", ["x:1,3,8,8", "x=1,three,8,8", "x=1,3,0,8", "=1,3,8,8", "x=", "x=1,,8,8"])
def test_bad_input_shape_syntax(tmp_path, model, spec):
    assert_user_error(tinyc(tmp_path, "inspect", "net.onnx", "--input-shape", spec), "--input-shape", "NAME=D1,D2")


def test_input_shape_unknown_name(tmp_path, model):
    assert_user_error(tinyc(tmp_path, "inspect", "net.onnx", "--input-shape", "image=1,3,8,8"), "'image'", "'x'")


def test_input_shape_wrong_rank(tmp_path, model):
    assert_user_error(tinyc(tmp_path, "inspect", "net.onnx", "--input-shape", "x=1,3,8"), "net.onnx", "'x'", "4")


def test_absurd_input_shape_refused_before_allocating(tmp_path):
    save(conv_model(shape=(1, 3, 100000, 100000)), tmp_path / "huge.onnx")
    t0 = time.monotonic()
    r = tinyc(tmp_path, "inspect", "huge.onnx", limit_memory=True)
    assert_user_error(r, "huge.onnx", "'x'", "100000")
    assert time.monotonic() - t0 < 30


def test_absurd_input_shape_given_on_command_line(tmp_path, model):
    r = tinyc(tmp_path, "inspect", "net.onnx", "--input-shape", "x=1,3,100000,100000", limit_memory=True)
    assert_user_error(r, "net.onnx", "'x'", "--input-shape")


def test_absurd_declared_input_can_be_fixed_with_input_shape(tmp_path):
    save(conv_model(shape=(1, 3, 100000, 100000)), tmp_path / "huge.onnx")
    r = tinyc(tmp_path, "inspect", "huge.onnx", "--json", "--input-shape", "x=1,3,8,8", limit_memory=True)
    assert r.returncode == 0, r.stderr
    import json

    assert json.loads(r.stdout)["outputs"][0]["shape"] == [1, 4, 8, 8]


def test_absurd_inferred_shape_refused_before_running(tmp_path):
    """A small input blown up inside the graph (Resize x 50000) is refused by name,
    before the importer or the interpreter allocates the result."""
    scales = numpy_helper.from_array(np.array([1, 1, 50000, 50000], np.float32), "scales")
    nodes = [helper.make_node("Resize", ["x", "", "scales"], ["y"], name="blowup", mode="nearest")]
    g = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [scales],
    )
    save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), tmp_path / "up.onnx")
    np.save(tmp_path / "x.npy", np.zeros((1, 1, 4, 4), np.float32))
    t0 = time.monotonic()
    r = tinyc(tmp_path, "run", "up.onnx", "--input", "x.npy", "-o", "y.npy", limit_memory=True)
    assert_user_error(r, "up.onnx", "'blowup'", "Resize", "'y'")
    assert time.monotonic() - t0 < 30
    no_leftovers(tmp_path, tmp_path / "y.npy")


def test_absurd_initializer_shape_refused_before_loading(tmp_path):
    path = external_model(tmp_path, "weights.bin", dims=(100000, 100000))
    (path.parent / "weights.bin").write_bytes(b"\0" * 1024)
    t0 = time.monotonic()
    r = tinyc(tmp_path, "inspect", path, limit_memory=True)
    assert_user_error(r, "model.onnx", "'w'", "100000")
    assert time.monotonic() - t0 < 30


def test_absurd_inline_initializer_shape(tmp_path):
    m = conv_model()
    w = next(t for t in m.graph.initializer if t.name == "w")
    del w.dims[:]
    w.dims.extend([100000, 100000])  # declared, but only a few bytes of data
    save(m, tmp_path / "liar.onnx")
    r = tinyc(tmp_path, "inspect", "liar.onnx", limit_memory=True)
    assert_user_error(r, "liar.onnx", "'w'")


# ------------------------------------------------------------ external data
_SPY = """
import os, sys
secret = os.path.realpath(sys.argv[1])
def hook(event, args):
    if event == "open" and args and isinstance(args[0], (str, bytes, os.PathLike)):
        try:
            p = os.path.realpath(os.fsdecode(args[0]))
        except Exception:
            return
        if p == secret:
            os.write(2, b"SECRET OPENED\\n")
            os._exit(99)
sys.addaudithook(hook)
from tinyc.cli import main
main(sys.argv[2:])
"""


def _run_spied(tmp_path: Path, secret: Path, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _SPY, str(secret), *map(str, args)],
                          cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=120)


def test_external_data_outside_model_dir_is_never_opened(tmp_path):
    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.ones(4 * 3 * 3 * 3, np.float32).tobytes())
    path = external_model(tmp_path, "../secret.bin")
    r = _run_spied(tmp_path, secret, "inspect", path)
    assert "SECRET OPENED" not in r.stderr
    assert_user_error(r, "model.onnx", "../secret.bin", "'w'", "outside")


def test_external_data_absolute_path_is_never_opened(tmp_path):
    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.ones(4 * 3 * 3 * 3, np.float32).tobytes())
    path = external_model(tmp_path, str(secret))
    r = _run_spied(tmp_path, secret, "inspect", path)
    assert "SECRET OPENED" not in r.stderr
    assert_user_error(r, "model.onnx", "secret.bin", "'w'", "outside")


def test_external_data_symlink_leaving_model_dir(tmp_path):
    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.ones(4 * 3 * 3 * 3, np.float32).tobytes())
    path = external_model(tmp_path, "link.bin")
    (path.parent / "link.bin").symlink_to(secret)
    r = _run_spied(tmp_path, secret, "inspect", path)
    assert "SECRET OPENED" not in r.stderr
    assert_user_error(r, "model.onnx", "link.bin", "outside")


def test_external_data_missing(tmp_path):
    path = external_model(tmp_path, "weights.bin")
    assert_user_error(tinyc(tmp_path, "inspect", path), "model.onnx", "weights.bin", "'w'", "missing")


def test_external_data_too_short(tmp_path):
    path = external_model(tmp_path, "weights.bin")
    (path.parent / "weights.bin").write_bytes(b"\0" * 10)
    assert_user_error(tinyc(tmp_path, "inspect", path), "model.onnx", "weights.bin", "'w'")


def test_external_data_beside_model_works(tmp_path):
    folder = tmp_path / "ok"
    folder.mkdir()
    save(conv_model(), folder / "model.onnx", save_as_external_data=True, all_tensors_to_one_file=True,
         location="model.weights", size_threshold=0)
    assert (folder / "model.weights").is_file()
    r = tinyc(tmp_path, "inspect", "ok/model.onnx")
    assert r.returncode == 0, r.stderr
    assert "conv1" in r.stdout
    # and from another working directory, by a relative path that goes through '..'
    other = tmp_path / "elsewhere"
    other.mkdir()
    r = tinyc(other, "inspect", "../ok/model.onnx")
    assert r.returncode == 0, r.stderr


# ------------------------------------------------------------------ tinyc run
@pytest.fixture
def x_ok(tmp_path) -> Path:
    path = tmp_path / "x.npy"
    np.save(path, np.zeros((1, 3, 8, 8), np.float32))
    return path


def test_run_works(tmp_path, model, x_ok):
    r = tinyc(tmp_path, "run", "net.onnx", "--input", "x.npy", "-o", "y.npy")
    assert r.returncode == 0, r.stderr
    assert np.load(tmp_path / "y.npy").shape == (1, 4, 8, 8)


def test_run_wrong_shape(tmp_path, model):
    np.save(tmp_path / "x.npy", np.zeros((1, 3, 9, 9), np.float32))
    r = tinyc(tmp_path, "run", "net.onnx", "--input", "x.npy", "-o", "y.npy")
    assert_user_error(r, "x.npy", "'x'", "[1, 3, 9, 9]", "[1, 3, 8, 8]")
    no_leftovers(tmp_path, tmp_path / "y.npy")


def test_run_int_data_to_float_model(tmp_path, model):
    np.save(tmp_path / "x.npy", np.zeros((1, 3, 8, 8), np.int8))
    r = tinyc(tmp_path, "run", "net.onnx", "--input", "x.npy", "-o", "y.npy")
    assert_user_error(r, "x.npy", "'x'", "float32", "int8")
    no_leftovers(tmp_path, tmp_path / "y.npy")


def test_run_float_data_to_int8_model(tmp_path):
    save(int8_model(), tmp_path / "q.onnx")
    np.save(tmp_path / "x.npy", np.zeros((1, 4), np.float32))
    r = tinyc(tmp_path, "run", "q.onnx", "--input", "x.npy", "-o", "y.npy")
    assert_user_error(r, "x.npy", "'x'", "int8", "float32")
    no_leftovers(tmp_path, tmp_path / "y.npy")
    # the same model with int8 data runs
    np.save(tmp_path / "x.npy", np.array([[-3, 0, 5, 127]], np.int8))
    r = tinyc(tmp_path, "run", "q.onnx", "--input", "x.npy", "-o", "y.npy")
    assert r.returncode == 0, r.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), [[0, 0, 5, 127]])


def test_run_npz_missing_key(tmp_path, model):
    np.savez(tmp_path / "x.npz", image=np.zeros((1, 3, 8, 8), np.float32))
    r = tinyc(tmp_path, "run", "net.onnx", "--input", "x.npz", "-o", "y.npy")
    assert_user_error(r, "x.npz", "'image'", "'x'", "inputs")
    no_leftovers(tmp_path, tmp_path / "y.npy")


@pytest.mark.parametrize("content", [b"\x93NUMPY\x01\x00garbage-garbage", b"", b"just text\n"],
                         ids=["bad-header", "empty", "text"])
def test_run_corrupt_npy(tmp_path, model, content):
    (tmp_path / "x.npy").write_bytes(content)
    r = tinyc(tmp_path, "run", "net.onnx", "--input", "x.npy", "-o", "y.npy")
    assert_user_error(r, "x.npy", "not a readable", "numpy.save")
    no_leftovers(tmp_path, tmp_path / "y.npy")


def test_run_truncated_npy(tmp_path, model):
    np.save(tmp_path / "x.npy", np.zeros((1, 3, 8, 8), np.float32))
    raw = (tmp_path / "x.npy").read_bytes()
    (tmp_path / "x.npy").write_bytes(raw[: len(raw) - 100])
    r = tinyc(tmp_path, "run", "net.onnx", "--input", "x.npy", "-o", "y.npy")
    assert_user_error(r, "x.npy")
    no_leftovers(tmp_path, tmp_path / "y.npy")


def test_run_pickled_npy(tmp_path, model):
    np.save(tmp_path / "x.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    r = tinyc(tmp_path, "run", "net.onnx", "--input", "x.npy", "-o", "y.npy")
    assert_user_error(r, "x.npy", "numeric")
    no_leftovers(tmp_path, tmp_path / "y.npy")


def test_run_missing_data_file(tmp_path, model):
    r = tinyc(tmp_path, "run", "net.onnx", "--input", "nodata.npy", "-o", "y.npy")
    assert_user_error(r, "nodata.npy", "no such")
    no_leftovers(tmp_path, tmp_path / "y.npy")


def test_run_data_file_is_a_directory(tmp_path, model):
    (tmp_path / "x.npy").mkdir()
    r = tinyc(tmp_path, "run", "net.onnx", "--input", "x.npy", "-o", "y.npy")
    assert_user_error(r, "x.npy", "directory")
    no_leftovers(tmp_path, tmp_path / "y.npy")


def test_run_multi_output_to_npy_asks_for_npz(tmp_path):
    save(two_output_model(), tmp_path / "two.onnx")
    np.save(tmp_path / "x.npy", np.zeros((1, 4), np.float32))
    r = tinyc(tmp_path, "run", "two.onnx", "--input", "x.npy", "-o", "y.npy")
    assert_user_error(r, "y.npy", "2 outputs", ".npz")
    no_leftovers(tmp_path, tmp_path / "y.npy")
    r = tinyc(tmp_path, "run", "two.onnx", "--input", "x.npy", "-o", "y.npz")
    assert r.returncode == 0, r.stderr
    assert sorted(np.load(tmp_path / "y.npz").files) == ["y1", "y2"]


def test_run_output_folder_missing(tmp_path, model, x_ok):
    r = tinyc(tmp_path, "run", "net.onnx", "--input", "x.npy", "-o", "out/y.npy")
    assert_user_error(r, "out", "does not exist")
    assert not (tmp_path / "out").exists()


def test_run_output_is_a_directory(tmp_path, model, x_ok):
    (tmp_path / "y.npy").mkdir()
    r = tinyc(tmp_path, "run", "net.onnx", "--input", "x.npy", "-o", "y.npy")
    assert_user_error(r, "y.npy", "directory")
    assert not list(tmp_path.glob(".tinyc-*"))


def test_run_bad_model_writes_nothing(tmp_path, x_ok):
    (tmp_path / "net.onnx").write_bytes(b"not a model")
    r = tinyc(tmp_path, "run", "net.onnx", "--input", "x.npy", "-o", "y.npy")
    assert_user_error(r, "net.onnx")
    no_leftovers(tmp_path, tmp_path / "y.npy")


def test_run_failed_write_keeps_the_old_output(tmp_path, x_ok):
    """A failure must not clobber an existing output file with half a result."""
    save(two_output_model(), tmp_path / "two.onnx")
    np.save(tmp_path / "x.npy", np.zeros((1, 4), np.float32))
    (tmp_path / "y.npy").write_bytes(b"old")
    r = tinyc(tmp_path, "run", "two.onnx", "--input", "x.npy", "-o", "y.npy")
    assert_user_error(r, ".npz")
    assert (tmp_path / "y.npy").read_bytes() == b"old"


# ------------------------------------------------------------ usage mistakes
@pytest.mark.parametrize("args, words", [
    (["run", "net.onnx", "-o", "y.npy"], ["--input"]),
    (["inspect", "net.onnx", "--frobnicate"], ["--frobnicate"]),
    (["run", "net.onnx", "--input", "x.npy", "-o", "y.npy", "--engine", "gpu"], ["--engine", "gpu"]),
    (["explode"], ["explode"]),
], ids=["missing-option", "unknown-option", "bad-choice", "unknown-command"])
def test_usage_errors_are_one_line(tmp_path, model, args, words):
    r = tinyc(tmp_path, *args)
    assert_user_error(r, *words, "--help")
    assert not (tmp_path / "y.npy").exists()


# ------------------------------------------------------------ int8 compilation
def qdq_model(act_type=TensorProto.INT8, w_zero_point=0, act_axis=None, w_type=TensorProto.INT8) -> onnx.ModelProto:
    """float x -> Q -> DQ -> Conv(1x1, int8 weights) -> Q -> DQ -> y: a minimal QDQ model."""
    np_act = {TensorProto.INT8: np.int8, TensorProto.UINT8: np.uint8, TensorProto.INT16: np.int16}[act_type]
    np_w = {TensorProto.INT8: np.int8, TensorProto.UINT8: np.uint8}[w_type]
    rng = np.random.default_rng(0)
    if act_axis is None:
        s_x = numpy_helper.from_array(np.array(0.05, np.float32), "s_x")
        z_x = numpy_helper.from_array(np.array(0, np_act), "z_x")
    else:
        s_x = numpy_helper.from_array(np.full(3, 0.05, np.float32), "s_x")
        z_x = numpy_helper.from_array(np.zeros(3, np_act), "z_x")
    inits = [
        s_x, z_x,
        numpy_helper.from_array(np.array(0.1, np.float32), "s_y"),
        numpy_helper.from_array(np.array(0, np_act), "z_y"),
        numpy_helper.from_array(rng.integers(0, 100, (4, 3, 1, 1)).astype(np_w), "wq"),
        numpy_helper.from_array(np.array(0.02, np.float32), "s_w"),
        numpy_helper.from_array(np.array(w_zero_point, np_w), "z_w"),
    ]
    qargs = {} if act_axis is None else {"axis": act_axis}
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s_x", "z_x"], ["xq"], name="quant_x", **qargs),
        helper.make_node("DequantizeLinear", ["xq", "s_x", "z_x"], ["xd"], name="dequant_x", **qargs),
        helper.make_node("DequantizeLinear", ["wq", "s_w", "z_w"], ["w"], name="dequant_w"),
        helper.make_node("Conv", ["xd", "w"], ["c"], name="the_conv"),
        helper.make_node("QuantizeLinear", ["c", "s_y", "z_y"], ["cq"], name="quant_c"),
        helper.make_node("DequantizeLinear", ["cq", "s_y", "z_y"], ["y"], name="dequant_c"),
    ]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 4, 4])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


@pytest.fixture
def x_qdq(tmp_path) -> Path:
    p = tmp_path / "xq.npy"
    np.save(p, np.random.default_rng(3).random((2, 1, 3, 4, 4), dtype=np.float32))
    return p


def test_qdq_model_compiles_and_runs(tmp_path, x_qdq):
    m = save(qdq_model(), tmp_path / "q.onnx")
    r = tinyc(tmp_path, "run", m, "--engine", "c", "--input", x_qdq, "-o", "y.npy")
    assert r.returncode == 0, r.stderr
    assert np.load(tmp_path / "y.npy").shape == (2, 1, 4, 4, 4)


@pytest.mark.parametrize("act_type, word", [(TensorProto.UINT8, "uint8"), (TensorProto.INT16, "int16")])
def test_qdq_activation_types_other_than_int8(tmp_path, x_qdq, act_type, word):
    m = save(qdq_model(act_type=act_type), tmp_path / "q.onnx")
    for engine in ("c", "ref"):
        r = tinyc(tmp_path, "run", m, "--engine", engine, "--input", x_qdq, "-o", "y.npy")
        assert_user_error(r, word, "int8")
        no_leftovers(tmp_path, tmp_path / "y.npy")
    r = tinyc(tmp_path, "build", m, "-o", "proj")
    assert_user_error(r, word)
    assert not (tmp_path / "proj").exists() and not list(tmp_path.glob(".proj*"))


def test_qdq_per_axis_activation(tmp_path, x_qdq):
    m = save(qdq_model(act_axis=1), tmp_path / "q.onnx")
    r = tinyc(tmp_path, "build", m, "-o", "proj")
    assert_user_error(r, "per axis")
    assert not (tmp_path / "proj").exists()


def test_weight_with_zero_point(tmp_path):
    m = save(qdq_model(w_zero_point=5), tmp_path / "q.onnx")
    r = tinyc(tmp_path, "build", m, "-o", "proj")
    assert_user_error(r, "the_conv", "zero point")
    assert not (tmp_path / "proj").exists()


def test_uint8_weights(tmp_path):
    m = save(qdq_model(w_type=TensorProto.UINT8), tmp_path / "q.onnx")
    r = tinyc(tmp_path, "build", m, "-o", "proj")
    assert_user_error(r, "the_conv", "int8")


def test_float_model_needs_calibration(tmp_path, model, x_ok):
    for args in (["run", model, "--engine", "c", "--input", x_ok, "-o", "y.npy"], ["build", model, "-o", "proj"]):
        r = tinyc(tmp_path, *args)
        assert_user_error(r, "float model", "--calib")
    assert not (tmp_path / "proj").exists()


def test_calibration_data_of_the_wrong_shape(tmp_path, model, x_ok):
    np.save(tmp_path / "cal.npy", np.zeros((4, 3, 9, 9), np.float32))
    r = tinyc(tmp_path, "build", model, "--calib", "cal.npy", "-o", "proj")
    assert_user_error(r, "cal.npy", "shape")
    assert not (tmp_path / "proj").exists()


def test_calibration_data_empty(tmp_path, model):
    np.save(tmp_path / "cal.npy", np.zeros((0, 1, 3, 8, 8), np.float32))
    r = tinyc(tmp_path, "build", model, "--calib", "cal.npy", "-o", "proj")
    assert_user_error(r, "cal.npy", "no samples")
    (tmp_path / "cal").mkdir()
    r = tinyc(tmp_path, "build", model, "--calib", "cal", "-o", "proj")
    assert_user_error(r, "cal", "no .npy")
    assert not (tmp_path / "proj").exists()


def test_calibration_data_not_finite(tmp_path, model):
    x = np.zeros((2, 1, 3, 8, 8), np.float32)
    x[1, 0, 0, 0, 0] = np.nan
    np.save(tmp_path / "cal.npy", x)
    r = tinyc(tmp_path, "build", model, "--calib", "cal.npy", "-o", "proj")
    assert_user_error(r, "cal.npy", "NaN")


def test_calibrating_a_quantized_model(tmp_path, x_qdq):
    m = save(qdq_model(), tmp_path / "q.onnx")
    r = tinyc(tmp_path, "build", m, "--calib", x_qdq, "-o", "proj")
    assert_user_error(r, "already quantized")


def test_build_into_a_foreign_folder(tmp_path, x_qdq):
    m = save(qdq_model(), tmp_path / "q.onnx")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    r = tinyc(tmp_path, "build", m, "-o", "mine")
    assert_user_error(r, "mine", "not empty and was not written by tinyc")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    assert not list(tmp_path.glob(".mine*"))


@pytest.mark.parametrize("name", ["9lives", "has space", "semi;colon", "a" * 65, "x-y"])
def test_build_bad_c_name(tmp_path, name):
    m = save(qdq_model(), tmp_path / "q.onnx")
    r = tinyc(tmp_path, "build", m, "-o", "proj", "--name", name)
    assert_user_error(r, "--name")
    assert not (tmp_path / "proj").exists()


def test_build_unknown_board(tmp_path):
    m = save(qdq_model(), tmp_path / "q.onnx")
    r = tinyc(tmp_path, "build", m, "-o", "proj", "--board", "nosuchboard")
    assert_user_error(r, "nosuchboard")


def test_op_without_int8_kernel_names_node(tmp_path):
    """A float op tinyc runs in float but has no int8 kernel for: named, with the fix."""
    split = numpy_helper.from_array(np.array([1, 1], np.int64), "split")
    g = helper.make_graph(
        [helper.make_node("Split", ["x", "split"], ["a", "b"], axis=1),
         helper.make_node("Div", ["a", "b"], ["y"], name="ratio")],  # of two activations: no int8 kernel
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 6, 6])], [split])
    m = save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), tmp_path / "d.onnx")
    np.save(tmp_path / "cal.npy", np.random.default_rng(0).random((3, 1, 2, 6, 6), dtype=np.float32) + 0.5)
    r = tinyc(tmp_path, "build", m, "--calib", "cal.npy", "-o", "proj")
    assert_user_error(r, "ratio", "no int8 kernel")
    assert not (tmp_path / "proj").exists()
