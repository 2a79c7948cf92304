"""Running models: the float reference, and an int8 program's I/O around the int8
reference interpreter (build.py runs the generated C and QEMU firmware with the
same I/O functions).

``program_feeds`` quantizes float input as TFLM's QUANTIZE does and
``program_results`` dequantizes (TFLM's DEQUANTIZE) and runs the float tail, so
every engine gives the same numbers for the same int8 program.
"""

from __future__ import annotations

import numpy as np

from .data import Batch, _to_external, _to_internal, external_dtype
from .errors import TinycError
from .ir import Graph
from .ops import get_op
from .reference import run_float, run_int8


def run_reference(graph: Graph, batch: Batch) -> dict[str, np.ndarray]:
    """Run every sample through the float reference; returns name -> (N, *external shape)."""
    results: dict[str, list[np.ndarray]] = {n: [] for n in graph.outputs}
    for k in range(batch.count):
        feeds = {n: _to_internal(graph, n, batch.arrays[n][k]) for n in graph.inputs}
        out = run_float(graph, feeds)
        for n in graph.outputs:
            results[n].append(_to_external(graph, n, out[n]))
    return {n: np.stack(v) for n, v in results.items()}


def compile_int8(graph: Graph, model_path=None):
    """Lower a quantized graph to an int8 program; a float model must be calibrated first."""
    from .passes.int8 import is_quantized, lower_to_int8

    for node in graph.nodes:  # Q/DQ the importer could not fold into tensor parameters
        if node.op in ("Quantize", "Dequantize") and not graph.tensors[node.inputs[0]].is_const:
            q = node.attrs.quant
            onnx_op = "QuantizeLinear" if node.op == "Quantize" else "DequantizeLinear"
            if q.per_axis:
                raise TinycError(
                    f"node {node.name!r} ({onnx_op}) quantizes activation {node.inputs[0]!r} per axis; tinyc "
                    "(like TFLite) needs one scale and zero point per activation tensor"
                )
            if np.dtype(node.attrs.dtype) != np.int8:
                raise TinycError(
                    f"node {node.name!r} ({onnx_op}) uses {np.dtype(node.attrs.dtype).name}; tinyc compiles int8 "
                    "activations only (TFLite's int8 spec): quantize the model to int8"
                )
    if not is_quantized(graph):
        where = f"{model_path}: " if model_path else ""
        raise TinycError(
            f"{where}is a float model; give --calib DATA (sample inputs) to quantize it to int8, "
            "or use a pre-quantized (QDQ) model"
        )
    return lower_to_int8(graph)


def quantize_like_tflm(x: np.ndarray, quant) -> np.ndarray:
    """TFLM's QUANTIZE (float -> int8): zp + round-half-away(x / scale), the division
    in float32 (checked on MCUNet's inputs, where x / scale lands on .5), saturated."""
    ratio = (x.astype(np.float32) / np.float32(quant.scale)).astype(np.float64)
    q = np.floor(np.abs(ratio) + 0.5) * np.sign(ratio)
    return np.clip(q + int(quant.zero_point), -128, 127).astype(np.int8)


def dequantize_like_tflm(q: np.ndarray, quant) -> np.ndarray:
    """TFLM's DEQUANTIZE: float(double(scale) * (q - zp))."""
    scale = np.float64(np.float32(quant.scale))
    return (scale * (q.astype(np.int64) - int(quant.zero_point))).astype(np.float32)


def program_feeds(program, batch: Batch) -> dict[str, np.ndarray]:
    """Batch (external layout and type) -> int8 arrays (N, *internal shape) per program input."""
    graph = program.graph
    feeds = {}
    for name in program.inputs:
        x = batch.arrays[name]
        perm = graph.input_perm.get(name)
        if perm:
            x = x.transpose((0,) + tuple(p + 1 for p in perm))
        if x.dtype != np.int8:
            x = quantize_like_tflm(x, graph.tensors[name].quant)
        feeds[name] = np.ascontiguousarray(x, dtype=np.int8)
    return feeds


def program_results(program, int8_outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """int8 outputs (N, *internal shape) -> the graph outputs in external layout and type,
    running the float tail (if any) on the dequantized values."""
    graph = program.graph
    n = next(iter(int8_outputs.values())).shape[0]
    results: dict[str, list[np.ndarray]] = {o: [] for o in graph.outputs}
    for k in range(n):
        values = {}
        for name, q in int8_outputs.items():
            if name in graph.outputs and np.dtype(external_dtype(graph, name)) == np.int8:
                values[name] = q[k]
            else:
                values[name] = dequantize_like_tflm(q[k], graph.tensors[name].quant)
        for node in program.float_tail:
            ins = [values[i] if i in values else (graph.tensors[i].float_value() if i else None) for i in node.inputs]
            for o, v in zip(node.outputs, get_op(node.op).ref(node, ins)):
                values[o] = v
        for o in graph.outputs:
            perm = graph.output_perm.get(o)
            y = values[o].transpose(perm) if perm else values[o]
            results[o].append(np.array(y, dtype=external_dtype(graph, o)))
    return {o: np.stack(v) for o, v in results.items()}


def run_program_ref(program, batch: Batch) -> dict[str, np.ndarray]:
    """The int8 reference interpreter on every sample."""
    feeds = program_feeds(program, batch)
    outs: dict[str, list[np.ndarray]] = {o: [] for o in program.outputs}
    for k in range(batch.count):
        y = run_int8(program, {n: f[k] for n, f in feeds.items()})
        for o in program.outputs:
            outs[o].append(y[o])
    return program_results(program, {o: np.stack(v) for o, v in outs.items()})
