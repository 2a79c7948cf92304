"""Hostile and malformed input (issue 14): every case below broke the error
contract (one line ``tinyc: error: ...``, exit 2, nothing written) before the
validation layer (tinyc/frontend/validate.py), the untrusted tinyc.json reader of
``flash``, the data limits and the linear-time planner; most were found by
scripts/fuzz.py. The CLI runs in a subprocess, as a user runs it.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import AttributeProto, TensorProto, helper, numpy_helper

from .conftest import needs_shared
from .test_errors import assert_user_error, conv_model, no_leftovers, qdq_model, save, tinyc


def _graph(nodes, inputs, outputs, inits=(), opset=13) -> onnx.ModelProto:
    g = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def _vi(name, shape, elem=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem, shape)


def matmul_with_three_inputs():
    w = numpy_helper.from_array(np.ones((4, 4), np.float32), "w")
    return _graph([helper.make_node("MatMul", ["x", "w", "w"], ["y"], name="mm")], [_vi("x", [1, 4])],
                  [_vi("y", [1, 4])], [w])


def dequantize_without_inputs():
    return _graph([helper.make_node("DequantizeLinear", [], ["d"], name="dq"),
                   helper.make_node("Add", ["x", "d"], ["y"], name="add")], [_vi("x", [1, 4])], [_vi("y", [1, 4])])


def concat_of_different_ranks():
    return _graph([helper.make_node("Concat", ["x", "x3"], ["y"], axis=1, name="cat")],
                  [_vi("x", [1, 4]), _vi("x3", [1, 4, 1])], [_vi("y", None)])


def reshape_to_more_dims():
    s = numpy_helper.from_array(np.array([1, 0, 0, 2], np.int64), "s")
    return _graph([helper.make_node("Reshape", ["x", "s"], ["y"], name="rs")], [_vi("x", [1, 4])],
                  [_vi("y", None)], [s])


def conv_attribute(name: str, change):
    m = conv_model()
    conv = m.graph.node[0]
    attr = next((a for a in conv.attribute if a.name == name), None)
    if attr is None:
        attr = conv.attribute.add()
        attr.name = name
    change(attr)
    return m


def _retype_pads_as_floats(a):
    a.type = AttributeProto.FLOATS
    del a.ints[:]
    a.floats.extend([1.0] * 4)


def _rename(a):
    a.name = "pbds"


def _stride_2_pow_40(a):  # one output row, but the C kernels multiply it by a row's size in int32
    a.type = AttributeProto.INTS
    del a.ints[:]
    a.ints.extend([2**40, 1])


def _kernel_shape_1x1(a):  # the weights are 3x3
    a.type = AttributeProto.INTS
    del a.ints[:]
    a.ints.extend([1, 1])


MALFORMED = {
    "matmul_three_inputs": (matmul_with_three_inputs, ("'mm' (MatMul)", "3 inputs", "takes 2")),
    "dequantize_no_inputs": (dequantize_without_inputs, ("'dq' (DequantizeLinear)", "0 inputs")),
    "concat_ranks": (concat_of_different_ranks, ("'cat' (Concat)", "ranks [2, 3]")),
    "reshape_more_dims": (reshape_to_more_dims, ("'rs' (Reshape)", "does not have")),
    "conv_attribute_type_flipped": (lambda: conv_attribute("pads", _retype_pads_as_floats),
                                    ("'conv1' (Conv)", "'pads'", "type floats")),
    "conv_attribute_name_flipped": (lambda: conv_attribute("pads", _rename), ("'conv1' (Conv)", "'pbds'")),
    "conv_attribute_value_flipped": (lambda: conv_attribute("strides", _stride_2_pow_40),
                                     ("'conv1' (Conv)", "strides [1099511627776, 1]", "above")),
    "conv_kernel_shape_contradicts_weights": (lambda: conv_attribute("kernel_shape", _kernel_shape_1x1),
                                              ("'conv1' (Conv)", "kernel_shape [1, 1]", "contradicts")),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_node_is_one_line_naming_it(tmp_path, case):
    make, words = MALFORMED[case]
    m = save(make(), tmp_path / "m.onnx")
    assert_user_error(tinyc(tmp_path, "inspect", m), *words)
    assert_user_error(tinyc(tmp_path, "build", m, "--calib", _calib(tmp_path, make()), "-o", "proj"), *words)
    assert not (tmp_path / "proj").exists()


def _calib(tmp_path, model) -> str:
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    np.save(tmp_path / "calib.npy", np.zeros([2, *shape], np.float32))
    return str(tmp_path / "calib.npy")


def test_invalid_utf8_in_a_name_is_one_line(tmp_path):
    raw = conv_model().SerializeToString().replace(b"relu1", b"rel\xe51")
    (tmp_path / "m.onnx").write_bytes(raw)
    assert_user_error(tinyc(tmp_path, "inspect", "m.onnx"), "UTF-8")


def _qdq_with(name: str, value):
    m = qdq_model()
    init = next(t for t in m.graph.initializer if t.name == name)
    old = numpy_helper.to_array(init)
    init.CopyFrom(numpy_helper.from_array(np.asarray(value, dtype=old.dtype), name))
    return m


QUANT = {
    "scale_nan": ("s_x", np.nan, ("'quant_x'", "'s_x'", "not finite")),
    "scale_inf": ("s_y", np.inf, ("'quant_c'", "'s_y'", "not finite")),
    "scale_negative_activation": ("s_x", -0.05, ("'quant_x'", "-0.05", "positive")),
    "scale_denormal": ("s_x", 1e-42, ("'quant_x'", "normal float32")),
    "scale_zero_weights": ("s_w", 0.0, ("'dequant_w'", "nonzero")),
    "zero_point_wrong_length": ("z_x", [0, 0], ("'quant_x'", "'z_x'", "2 values for a scale of 1")),
    "scale_absurd": ("s_w", 1e38, ("the_conv", "fixed point", "too large")),
}


@pytest.mark.parametrize("case", list(QUANT))
def test_bad_quantization_parameters_are_one_line(tmp_path, case):
    name, value, words = QUANT[case]
    m = save(_qdq_with(name, value), tmp_path / "q.onnx")
    r = tinyc(tmp_path, "build", m, "-o", "proj")
    assert_user_error(r, *words)
    assert not (tmp_path / "proj").exists()
    np.save(tmp_path / "x.npy", np.zeros((1, 3, 4, 4), np.float32))
    assert_user_error(tinyc(tmp_path, "run", m, "--engine", "ref", "--input", "x.npy", "-o", "y.npy"), *words)
    no_leftovers(tmp_path, tmp_path / "y.npy")


def test_negative_weight_scales_of_tflite_converters_still_build(tmp_path):
    """mcunet_320kb_imagenet's first conv has one (TFLM runs it): not refused."""
    m = save(_qdq_with("s_w", -0.02), tmp_path / "q.onnx")
    r = tinyc(tmp_path, "build", m, "-o", "proj")
    assert r.returncode == 0, r.stderr


# ------------------------------------------------------------------ paths
def _project(tmp_path, meta) -> str:
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "tinyc.json").write_text(meta if isinstance(meta, str) else json.dumps(meta))
    return "proj"


@pytest.mark.parametrize("meta, words", [
    ("{not json", ("tinyc.json", "not valid JSON")),
    ("[1, 2]", ("tinyc.json", "not a JSON object")),
    ({"board": 7, "name": "m"}, ("tinyc.json", "board or name")),
    ({"board": "stm32f746", "name": "../m"}, ("tinyc.json", "board or name")),
    ({"board": "stm32f746", "name": "m", "elf": "../secret.elf"}, ("secret.elf", "outside the project folder")),
    ({"board": "stm32f746", "name": "m", "elf": "/tmp/secret.elf"}, ("outside the project folder",)),
    ({"board": "stm32f746", "name": "m", "elf": "build/link.elf"}, ("outside the project folder",)),
    ({"board": "stm32f746", "name": "m", "elf": "m.bin"}, ("not a path to an .elf",)),
])
def test_flash_treats_tinyc_json_as_untrusted(tmp_path, meta, words):
    (tmp_path / "secret.elf").write_bytes(b"\x7fELF")
    proj = _project(tmp_path, meta)
    (tmp_path / "proj" / "build").mkdir()
    os.symlink(tmp_path / "secret.elf", tmp_path / "proj" / "build" / "link.elf")
    r = tinyc(tmp_path, "flash", proj, "--dry-run")
    assert_user_error(r, *words)


def test_flash_dry_run_names_the_image_inside_the_project(tmp_path):
    proj = _project(tmp_path, {"board": "stm32f746", "name": "m", "elf": "build/m.elf"})
    (tmp_path / "proj" / "build").mkdir()
    (tmp_path / "proj" / "build" / "m.elf").write_bytes(b"\x7fELF")
    r = tinyc(tmp_path, "flash", proj, "--dry-run")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().endswith("proj/build/m.elf")


def test_unwritable_places_give_one_line(tmp_path):
    """As root no folder is read-only, but /proc takes no new files; HOME there
    also leaves matplotlib without a config folder, which it warned about on
    stderr (a second line)."""
    m = save(qdq_model(), tmp_path / "q.onnx")
    home = {"HOME": "/proc/tinyc-no-home", "MPLCONFIGDIR": "", "XDG_CONFIG_HOME": "", "XDG_CACHE_HOME": ""}
    r = tinyc(tmp_path, "build", m, "-o", "/proc/tinyc-out", env=home)
    assert_user_error(r, "/proc/tinyc-out", "cannot write")
    r = tinyc(tmp_path, "report", m, "--board", "stm32f746", "-o", "/proc/r.md", env=home)
    assert_user_error(r, "cannot write")
    r = tinyc(tmp_path, "report", m, "--board", "stm32f746", "-o", "r.md", env=home)
    assert r.returncode == 0, r.stderr
    assert "matplotlib" not in r.stderr.lower() and len(r.stderr.splitlines()) == 2, r.stderr


# ------------------------------------------------------------------ data
def test_nan_and_inf_in_input_are_refused(tmp_path):
    m = save(conv_model(), tmp_path / "m.onnx")
    for bad in (np.nan, np.inf, -np.inf):
        x = np.zeros((1, 3, 8, 8), np.float32)
        x[0, 1, 2, 3] = bad
        np.save(tmp_path / "x.npy", x)
        r = tinyc(tmp_path, "run", m, "--input", "x.npy", "-o", "y.npy")
        assert_user_error(r, "x.npy", "NaN or infinity")
        no_leftovers(tmp_path, tmp_path / "y.npy")


def _npz_bomb(path, unpacked_bytes: int) -> None:
    """An .npz whose one array of zeros unpacks to ``unpacked_bytes`` (about 1 MB per GB packed)."""
    n = unpacked_bytes // 4
    header = np.lib.format.header_data_from_array_1_0(np.zeros(0, np.float32))
    header["shape"] = (n,)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        with z.open("inputs.npy", "w", force_zip64=True) as f:
            np.lib.format.write_array_header_1_0(f, header)
            chunk = bytes(16 << 20)
            left = n * 4
            while left:
                f.write(chunk[: min(left, len(chunk))])
                left -= min(left, len(chunk))


def test_npz_that_unpacks_to_a_gigabyte_is_refused_before_reading(tmp_path):
    m = save(conv_model(), tmp_path / "m.onnx")
    _npz_bomb(tmp_path / "bomb.npz", 1 << 30)
    assert (tmp_path / "bomb.npz").stat().st_size < 2 << 20
    r = tinyc(tmp_path, "run", m, "--input", "bomb.npz", "-o", "y.npy", limit_memory=True)
    assert_user_error(r, "bomb.npz", "unpack to 1,073,741,952 bytes", "TINYC_MAX_DATA_BYTES")
    r = tinyc(tmp_path, "build", m, "--calib", "bomb.npz", "-o", "proj", limit_memory=True)
    assert_user_error(r, "bomb.npz", "TINYC_MAX_DATA_BYTES")


def test_data_limits_say_how_to_raise_them(tmp_path):
    m = save(conv_model(), tmp_path / "m.onnx")
    np.save(tmp_path / "x.npy", np.zeros((4, 1, 3, 8, 8), np.float32))
    r = tinyc(tmp_path, "run", m, "--input", "x.npy", "-o", "y.npy", env={"TINYC_MAX_SAMPLES": "3"})
    assert_user_error(r, "4 samples", "TINYC_MAX_SAMPLES=N")
    r = tinyc(tmp_path, "run", m, "--input", "x.npy", "-o", "y.npy", env={"TINYC_MAX_DATA_BYTES": "1000"})
    assert_user_error(r, "TINYC_MAX_DATA_BYTES=BYTES")
    r = tinyc(tmp_path, "run", m, "--input", "x.npy", "-o", "y.npy", env={"TINYC_MAX_SAMPLES": "4"})
    assert r.returncode == 0, r.stderr


# ------------------------------------------------------------------ size
def _relu_chain(n: int) -> onnx.ModelProto:
    nodes = [helper.make_node("Relu", [f"r{i - 1}" if i else "x"], [f"r{i}"], name=f"relu{i}") for i in range(n)]
    return _graph(nodes, [_vi("x", [1, 16])], [_vi(f"r{n - 1}", [1, 16])])


def _fan_in(n: int) -> onnx.ModelProto:
    nodes = [helper.make_node("Relu", ["x"], [f"b{i}"], name=f"b{i}") for i in range(n)]
    nodes.append(helper.make_node("Concat", [f"b{i}" for i in range(n)], ["y"], axis=1, name="cat"))
    return _graph(nodes, [_vi("x", [1, 4])], [_vi("y", [1, 4 * n])])


@pytest.mark.parametrize("make", [_relu_chain, _fan_in])
def test_ten_thousand_node_graphs_build(tmp_path, make):
    """Before, inspecting the chain took ~50 s (quadratic activation fusion and
    naming) and the fan-in's build never finished (cubic placement, an order
    search over 10,000 ready nodes). benchmarks/scaling.py times them."""
    model = make(10_000)
    m = save(model, tmp_path / "m.onnx")
    r = tinyc(tmp_path, "build", m, "--calib", _calib(tmp_path, model), "-o", "proj", timeout=600)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "proj" / "m.c").is_file()


def test_a_chain_is_canonicalized_in_linear_work(monkeypatch):
    """The ReLU chain's import was quadratic: activation fusion rebuilt the reader
    map and scanned every node after each of its 10,000 fusions, and each new
    name scanned every node. Counted, not timed: the map is built a bounded
    number of times, and no fusion scans all nodes."""
    from tinyc import api
    from tinyc.ir.graph import Graph

    calls = {"consumers": 0, "full scans": 0}
    consumers, replace_uses = Graph.consumers, Graph.replace_uses

    def counting_consumers(self):
        calls["consumers"] += 1
        return consumers(self)

    def counting_replace_uses(self, old, new, *readers):
        calls["full scans"] += not readers or readers[0] is None
        return replace_uses(self, old, new, *readers)

    monkeypatch.setattr(Graph, "consumers", counting_consumers)
    monkeypatch.setattr(Graph, "replace_uses", counting_replace_uses)
    with tempfile.TemporaryDirectory() as tmp:
        graph = api.load(save(_relu_chain(2_000), Path(tmp) / "chain.onnx"))
    assert len(graph.nodes) == 1
    assert calls["consumers"] < 50 and calls["full scans"] < 50, calls


@needs_shared
def test_output_renamed_inside_the_int8_graph_builds(tmp_path, shared_models):
    """Found by the fuzzer: kws with its graph output renamed to the flatten's
    pre-quantization tensor leaves a float Quantize after the int8 outputs, whose
    scales tinyc.json cannot hold (the build died serializing them). The project
    builds; `tinyc run DIR` says why it cannot run it, the model file runs."""
    m = onnx.load(str(shared_models / "mlperf_tiny" / "kws_dscnn_int8.onnx"))
    m.graph.output[0].name = "functional_1/flatten/Reshape_prequant"
    save(m, tmp_path / "m.onnx")
    r = tinyc(tmp_path, "build", "m.onnx", "-o", "proj")
    assert r.returncode == 0, r.stderr
    np.save(tmp_path / "x.npy", np.zeros((1, 49, 10, 1), np.int8))
    assert_user_error(tinyc(tmp_path, "run", "proj", "--input", "x.npy", "-o", "y.npy"),
                      "cannot be run from the folder", "run the model file instead")
    r = tinyc(tmp_path, "run", "m.onnx", "--engine", "c", "--input", "x.npy", "-o", "y.npy")
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("model, words", [("missing.onnx", ("missing.onnx", "no such file")),
                                          ("folder", ("folder", "is a directory"))])
def test_report_update_checks_the_model_first(tmp_path, model, words):
    """Found by the command-line fuzzer: the update spec read the model unchecked."""
    (tmp_path / "folder").mkdir()
    r = tinyc(tmp_path, "report", model, "--board", "host", "--format", "json", "--update", "bias=last2")
    assert_user_error(r, *words)
