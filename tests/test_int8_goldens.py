"""Acceptance: every shared model's int8 ONNX reproduces TFLite Micro's golden
outputs with 0 LSB difference, through the command line, with the generated C
(``--engine c``) and with the int8 reference interpreter (``--engine ref``).

The goldens were made by TFLM's reference kernels from the .tflite files the
ONNX models were converted from; see ../shared/models/README.md.
"""

from __future__ import annotations

import numpy as np
import pytest

from tinyc import api
from tinyc.cli import main

from .conftest import SHARED_MODELS, needs_shared, shared_models_index

MODELS = sorted(shared_models_index())


def _cli_run(model, data, out, engine) -> None:
    try:
        main(["run", str(model), "--engine", engine, "--input", str(data), "-o", str(out)])
    except SystemExit as e:
        assert e.code in (0, None), f"tinyc run exited {e.code}"


def _matches(out: np.ndarray, golden: np.ndarray) -> tuple[int, int]:
    out = out.reshape(golden.shape)
    assert out.dtype == golden.dtype, (out.dtype, golden.dtype)
    return sum(np.array_equal(out[i], golden[i]) for i in range(len(golden))), len(golden)


@needs_shared
@pytest.mark.parametrize("engine", ["c", "ref"])
@pytest.mark.parametrize("name", MODELS)
def test_int8_model_reproduces_tflm_goldens(tmp_path, name, engine):
    info = shared_models_index()[name]
    data = SHARED_MODELS / "goldens" / f"{name}.npz"
    golden = np.load(data)["outputs"]
    model = SHARED_MODELS / info["onnx_int8"]
    out = tmp_path / "out.npz"  # .npz holds any number of outputs
    _cli_run(model, data, out, engine)
    with np.load(out) as results:
        # the goldens hold the model's first output (MCUNet's detector has three)
        first = api.load(model).outputs[0]
        matched, total = _matches(results[first], golden)
    print(f"{name} --engine {engine}: {matched}/{total} samples bit-exact with TFLM")
    assert matched == total


def _tflite_fc_bias(tflite_path, size: int) -> tuple[np.ndarray, float]:
    """The .tflite's int32 bias of ``size`` values and its scale."""
    litert = pytest.importorskip("ai_edge_litert.interpreter")
    it = litert.Interpreter(model_path=str(tflite_path))
    it.allocate_tensors()
    biases = [d for d in it.get_tensor_details()
              if d["dtype"] == np.int32 and tuple(d["shape"]) == (size,) and d["quantization"][0] > 0]
    assert len(biases) == 1, biases
    return it.get_tensor(biases[0]["index"]), float(biases[0]["quantization"][0])


@needs_shared
def test_micro_speech_fc_bias_is_the_tflite_one():
    """tf2onnx dropped micro_speech's fully connected bias; the shared ONNX carries it
    again (an int32 DequantizeLinear + Add), and tinyc folds it into the layer as its
    int32 bias: the .tflite's values, at the .tflite's scale."""
    info = shared_models_index()["tflm_micro_speech"]
    graph = api.load(SHARED_MODELS / info["onnx_int8"])
    fc = next(n for n in graph.nodes if n.op == "FullyConnected")
    assert len(fc.inputs) == 3 and fc.inputs[2]
    w, b = (graph.tensors[i] for i in fc.inputs[1:])
    want, scale = _tflite_fc_bias(SHARED_MODELS / info["tflite_int8"], w.shape[0])
    assert np.any(want != 0)
    assert b.data.dtype == np.int32 and np.array_equal(b.data, want)
    assert np.isclose(float(b.quant.scale), scale, rtol=1e-6)
