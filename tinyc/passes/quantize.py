"""Post-training quantization of a canonical float graph (TFLite's int8 scheme).

Calibration runs the float reference on sample data and records each activation's
range; ``quantize_graph`` then gives every activation per-tensor asymmetric int8
parameters, Conv2D weights per-output-channel symmetric int8, FullyConnected
weights per-tensor symmetric int8, and biases int32 with scale s_in * s_w. The
result has the same form as an imported pre-quantized (QDQ) model, so one int8
path serves both.
"""

from __future__ import annotations

import numpy as np

from ..errors import TinycError
from ..ir import Graph, QuantParams
from ..reference import run_float

METHODS = ("minmax", "percentile")
PERCENTILE = 99.99
# Keep at most this many values per tensor for percentile estimates.
_MAX_KEPT = 1 << 20

# Ops whose int8 kernels copy or select bytes: their output must keep the input's
# parameters (TFLite requires it for these kernels).
SAME_PARAMS = ("Reshape", "MaxPool2D", "AvgPool2D", "Pad", "ResizeNearest", "Transpose", "Slice", "Gather", "Concat")
# Ops whose int8 output parameters TFLite fixes.
FIXED_OUTPUT = {
    "Softmax": (1.0 / 256.0, -128),
    "Sigmoid": (1.0 / 256.0, -128),
    "Tanh": (1.0 / 128.0, 0),
    "LogSoftmax": (16.0 / 256.0, 127),
}
INT8_OPS = set(SAME_PARAMS) | set(FIXED_OUTPUT) | {
    "Conv2D", "FullyConnected", "Add", "Mul", "ReduceMean", "Clamp", "HardSwish"}


def calibrate(graph: Graph, samples: list[dict[str, np.ndarray]], method: str = "minmax") -> dict[str, tuple[float, float]]:
    """Range (lo, hi) of every activation over ``samples`` (internal layout feeds)."""
    if method not in METHODS:
        raise TinycError(f"calibration method {method!r} is unknown; use one of {', '.join(METHODS)}")
    if not samples:
        raise TinycError("calibration data holds no samples; give at least one")
    lows: dict[str, list[float]] = {}
    highs: dict[str, list[float]] = {}
    kept: dict[str, list[np.ndarray]] = {}
    for feeds in samples:
        for name, v in run_float(graph, feeds, keep_all=True).items():
            v = np.asarray(v, dtype=np.float32).ravel()
            lows.setdefault(name, []).append(float(v.min()))
            highs.setdefault(name, []).append(float(v.max()))
            if method == "percentile":
                step = max(1, v.size * len(samples) // _MAX_KEPT)
                kept.setdefault(name, []).append(v[::step])
    ranges = {}
    for name in lows:
        if method == "minmax":
            ranges[name] = (min(lows[name]), max(highs[name]))
        else:
            values = np.concatenate(kept[name])
            ranges[name] = (float(np.percentile(values, 100 - PERCENTILE)), float(np.percentile(values, PERCENTILE)))
    return ranges


def activation_params(lo: float, hi: float) -> QuantParams:
    """Asymmetric int8 parameters covering [lo, hi] with zero exactly representable."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    if hi - lo < 1e-12:
        hi = lo + 1e-6
    scale = (hi - lo) / 255.0
    zero_from_min = -128 - lo / scale
    zp = int(np.clip(np.round(zero_from_min), -128, 127))
    return QuantParams(np.float32(scale), np.int32(zp))


def _symmetric(w: np.ndarray, axis: int | None) -> tuple[np.ndarray, QuantParams]:
    if axis is None:
        m = float(np.abs(w).max())
        scale = np.float32(m / 127.0 if m > 0 else 1.0)
        q = np.clip(np.round(w / scale), -127, 127).astype(np.int8)
        return q, QuantParams(scale, np.int32(0))
    reduce = tuple(i for i in range(w.ndim) if i != axis)
    m = np.abs(w).max(axis=reduce)
    scale = np.where(m > 0, m / 127.0, 1.0).astype(np.float32)
    shape = [1] * w.ndim
    shape[axis] = -1
    q = np.clip(np.round(w / scale.reshape(shape)), -127, 127).astype(np.int8)
    return q, QuantParams(scale, np.zeros(scale.shape, np.int32), axis)


def quantize_graph(graph: Graph, ranges: dict[str, tuple[float, float]]) -> None:
    """Attach int8 parameters to every activation and quantize weights and biases."""
    for node in graph.nodes:
        if node.op not in INT8_OPS:
            raise TinycError(f"node {node.name!r} ({node.op}) has no int8 kernel in tinyc; it cannot be quantized")
    # activations from calibration
    for name, (lo, hi) in ranges.items():
        t = graph.tensors[name]
        if t.quant is None and np.issubdtype(t.dtype, np.floating):
            t.quant = activation_params(lo, hi)
    prod = graph.producers()
    for node in graph.nodes:
        fixed = FIXED_OUTPUT.get(node.op)
        if fixed is not None:
            graph.tensors[node.outputs[0]].quant = QuantParams(np.float32(fixed[0]), np.int32(fixed[1]))
    # byte-moving ops: output keeps the input's parameters; Concat: one range for all
    for node in graph.nodes:
        if node.op not in SAME_PARAMS:
            continue
        if node.op == "Concat":
            names = [*node.inputs, node.outputs[0]]
            lo = min(ranges[n][0] for n in names)
            hi = max(ranges[n][1] for n in names)
            params = activation_params(lo, hi)
            for n in names:
                if n in graph.inputs or prod.get(n) is not None:
                    graph.tensors[n].quant = params
        else:
            graph.tensors[node.outputs[0]].quant = graph.tensors[node.inputs[0]].quant
    # weights and biases
    for node in graph.nodes:
        if node.op not in ("Conv2D", "FullyConnected"):
            continue
        w_t = graph.tensors[node.inputs[1]]
        if w_t.quant is not None:
            continue
        axis = 0 if node.op == "Conv2D" else None
        q, wq = _symmetric(w_t.float_value(), axis)
        node.inputs[1] = graph.add_const(node.inputs[1] + "_q", q, wq)
        s_in = graph.tensors[node.inputs[0]].quant.scale.astype(np.float64)
        if len(node.inputs) > 2 and node.inputs[2]:
            b = graph.tensors[node.inputs[2]].float_value().astype(np.float64)
            bscale = (s_in * wq.scale.astype(np.float64)) * np.ones_like(b)
            qb = np.clip(np.round(b / bscale), -(2**31), 2**31 - 1).astype(np.int32)
            bq = QuantParams(bscale.astype(np.float32), np.zeros(b.shape, np.int32), 0)
            node.inputs[2] = graph.add_const(node.inputs[2] + "_q", qb, bq)
    graph.remove_unused()
