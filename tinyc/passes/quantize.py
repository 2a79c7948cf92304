"""Post-training quantization of a canonical float graph (TFLite's int8 scheme).

Calibration runs the float reference on sample data and records each activation's
range (``minmax``: observed extremes; ``percentile``: the 0.01 / 99.99 percentiles;
``mse``: the clipping range that minimizes the int8 round-trip error of the
observed values). ``quantize_graph`` then gives every activation per-tensor
asymmetric int8 parameters, Conv2D and FullyConnected weights per-output-channel
symmetric int8, and biases int32 with scale s_in * s_w. The result has the same
form as an imported pre-quantized (QDQ) model, so one int8 path serves both.
"""

from __future__ import annotations

import numpy as np

from ..errors import TinycError
from ..ir import Graph, QuantParams
from ..ops import all_ops, get_op
from ..reference import run_float

METHODS = ("minmax", "percentile", "mse")
PERCENTILE = 99.99
# Keep at most this many values per tensor for percentile / mse estimates.
_MAX_KEPT = 1 << 20
# The mse search evaluates candidate ranges on at most this many of them.
_MSE_VALUES = 1 << 16
_MSE_GRID = np.linspace(1.0, 0.05, 96)  # candidate fractions of the observed extreme
_INT32_MAX = 2**31 - 1

# TFLite's output-parameter rules, from the ops (OpDef.int8_output).
SAME_PARAMS = tuple(name for name, op in all_ops().items() if op.int8_output == "input")
FIXED_OUTPUT = {name: op.int8_output for name, op in all_ops().items() if isinstance(op.int8_output, tuple)}
# ops whose constant operands are int8 data like an activation's (per-tensor,
# asymmetric): a positional embedding added, a scale multiplied, a bound compared
CONST_OPERAND_OPS = ("Add", "Sub", "Mul", "Max", "Min", "MatMul", "Concat")


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
            if method != "minmax":
                step = max(1, v.size * len(samples) // _MAX_KEPT)
                kept.setdefault(name, []).append(v[::step])
    ranges = {}
    for name in lows:
        lo, hi = min(lows[name]), max(highs[name])
        if method == "minmax":
            ranges[name] = (lo, hi)
        elif method == "percentile":
            values = np.concatenate(kept[name])
            ranges[name] = (float(np.percentile(values, 100 - PERCENTILE)), float(np.percentile(values, PERCENTILE)))
        else:
            ranges[name] = mse_range(np.concatenate(kept[name]), lo, hi)
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


def _round_trip_errors(values: np.ndarray, los: np.ndarray, his: np.ndarray) -> np.ndarray:
    """Mean squared int8 round-trip error of ``values`` for each candidate range."""
    params = [activation_params(float(a), float(b)) for a, b in zip(los, his)]
    scale = np.array([float(p.scale) for p in params])[:, None]
    zp = np.array([int(p.zero_point) for p in params], dtype=np.float64)[:, None]
    q = np.clip(np.rint(values[None, :] / scale) + zp, -128, 127)
    return np.mean(((q - zp) * scale - values[None, :]) ** 2, axis=1)


def mse_range(values: np.ndarray, lo: float, hi: float) -> tuple[float, float]:
    """The range [lo', hi'] inside [lo, hi] whose int8 parameters reproduce ``values``
    with the least mean squared error: a search over a common shrink factor, then
    over each end alone (clipping rare outliers buys resolution for the rest)."""
    values = np.asarray(values, dtype=np.float64).ravel()
    if values.size > _MSE_VALUES:
        values = values[:: -(-values.size // _MSE_VALUES)]
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    if hi - lo < 1e-12:
        return lo, hi
    grid = _MSE_GRID
    err = _round_trip_errors(values, lo * grid, hi * grid)
    best = int(np.argmin(err))
    lo_b, hi_b = lo * grid[best], hi * grid[best]
    for _ in range(2):  # coordinate refinement, each end with the other fixed
        if hi > 0:
            cand = np.unique(np.concatenate([[hi_b], hi * grid]))
            err = _round_trip_errors(values, np.full(cand.size, lo_b), cand)
            hi_b = float(cand[np.argmin(err)])
        if lo < 0:
            cand = np.unique(np.concatenate([[lo_b], lo * grid]))
            err = _round_trip_errors(values, cand, np.full(cand.size, hi_b))
            lo_b = float(cand[np.argmin(err)])
    return float(lo_b), float(hi_b)


def _symmetric(w: np.ndarray, axis: int | None, min_scale=0.0) -> tuple[np.ndarray, QuantParams]:
    """Symmetric int8 weights (zero point 0), per tensor or per ``axis``; scales
    are at least ``min_scale`` (so that the bias fits int32)."""
    if axis is None:
        m = float(np.abs(w).max())
        scale = np.float32(max(m / 127.0 if m > 0 else 1.0, float(np.max(min_scale))))
        q = np.clip(np.round(w / scale), -127, 127).astype(np.int8)
        return q, QuantParams(scale, np.int32(0))
    reduce = tuple(i for i in range(w.ndim) if i != axis)
    m = np.abs(w).max(axis=reduce)
    scale = np.maximum(np.where(m > 0, m / 127.0, 1.0), min_scale).astype(np.float32)
    shape = [1] * w.ndim
    shape[axis] = -1
    q = np.clip(np.round(w / scale.reshape(shape)), -127, 127).astype(np.int8)
    return q, QuantParams(scale, np.zeros(scale.shape, np.int32), axis)


def _param_groups(graph: Graph) -> list[list[str]]:
    """Activations that must share int8 parameters: those joined by byte-moving ops
    (input 0 and output; for Concat every activation input and the output), so a
    chain such as producer -> Reshape -> Concat gets one set of parameters."""
    parent: dict[str, str] = {}

    def find(a: str) -> str:
        while parent.setdefault(a, a) != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    def is_activation(n: str) -> bool:
        t = graph.tensors[n]
        return bool(n) and not t.is_const and np.issubdtype(t.dtype, np.floating)

    for node in graph.nodes:
        if node.op not in SAME_PARAMS:
            continue
        linked = node.inputs if node.op == "Concat" else node.inputs[:1]
        names = [n for n in (*linked, node.outputs[0]) if n and is_activation(n)]
        for n in names[1:]:
            parent[find(n)] = find(names[0])
    groups: dict[str, list[str]] = {}
    for n in graph.tensors:  # tensor order: deterministic
        if n in parent:
            groups.setdefault(find(n), []).append(n)
    return [g for g in groups.values() if len(g) > 1]


def _covers(params: tuple[float, int], lo: float, hi: float) -> bool:
    """Whether int8 (scale, zero point) represent [lo, hi], give or take one step."""
    scale, zp = params
    return scale * (-129 - zp) <= lo and hi <= scale * (128 - zp)


def quantize_graph(graph: Graph, ranges: dict[str, tuple[float, float]]) -> None:
    """Attach int8 parameters to every activation and quantize weights and biases."""
    for node in graph.nodes:
        if not get_op(node.op).has_int8_kernel:
            raise TinycError(f"node {node.name!r} ({node.op}) has no int8 kernel in tinyc; it cannot be quantized")
    # activations from calibration
    for name, (lo, hi) in ranges.items():
        t = graph.tensors[name]
        if t.quant is None and np.issubdtype(t.dtype, np.floating):
            t.quant = activation_params(lo, hi)
    fixed: dict[str, QuantParams] = {}
    for node in graph.nodes:
        params = FIXED_OUTPUT.get(node.op)
        if params is not None:
            fixed[node.outputs[0]] = QuantParams(np.float32(params[0]), np.int32(params[1]))
            graph.tensors[node.outputs[0]].quant = fixed[node.outputs[0]]
    # byte-moving ops: one set of parameters per chain. A fixed output (softmax)
    # in the chain sets it; otherwise one range covers every tensor of the chain
    # (for Reshape / pools / Pad ... that is the input's range; a Concat's spans
    # all its inputs).
    for group in _param_groups(graph):
        known = [ranges[n] for n in group if n in ranges]
        lo = min((r[0] for r in known), default=0.0)
        hi = max((r[1] for r in known), default=0.0)
        fixed_here = {(float(fixed[n].scale), int(fixed[n].zero_point)) for n in group if n in fixed}
        if len(fixed_here) == 1 and _covers(next(iter(fixed_here)), lo, hi):
            params = next(fixed[n] for n in group if n in fixed)
        elif known:  # fixed outputs that disagree or are too narrow requantize to these
            params = activation_params(lo, hi)
        else:
            continue
        for n in group:
            graph.tensors[n].quant = params
    # constant operands of elementwise ops and MatMul
    for node in graph.nodes:
        if node.op not in CONST_OPERAND_OPS:
            continue
        for k, name in enumerate(node.inputs):
            t = graph.tensors[name]
            if t.is_const and t.quant is None and np.issubdtype(t.dtype, np.floating):
                v = t.float_value()
                q = activation_params(float(min(v.min(), 0.0)), float(max(v.max(), 0.0)))
                data = np.clip(np.round(v / np.float32(q.scale)) + int(q.zero_point), -128, 127).astype(np.int8)
                node.inputs[k] = graph.add_const(name + "_q", data, q)
    # weights (per output channel) and biases
    for node in graph.nodes:
        if node.op not in ("Conv2D", "FullyConnected"):
            continue
        w_t = graph.tensors[node.inputs[1]]
        if w_t.quant is not None:
            continue
        s_in = np.float64(graph.tensors[node.inputs[0]].quant.scale)
        has_bias = len(node.inputs) > 2 and bool(node.inputs[2])
        b = graph.tensors[node.inputs[2]].float_value().astype(np.float64) if has_bias else None
        # a weight scale so small that bias / (s_in * s_w) overflows int32 is raised
        # (TFLite's converter does the same)
        min_scale = np.abs(b) / (s_in * _INT32_MAX) if b is not None else 0.0
        q, wq = _symmetric(w_t.float_value(), 0, min_scale)
        node.inputs[1] = graph.add_const(node.inputs[1] + "_q", q, wq)
        if b is not None:
            bscale = (s_in * wq.scale.astype(np.float64)) * np.ones_like(b)
            qb = np.clip(np.round(b / bscale), -(2**31), _INT32_MAX).astype(np.int32)
            bq = QuantParams(bscale.astype(np.float32), np.zeros(b.shape, np.int32), 0)
            node.inputs[2] = graph.add_const(node.inputs[2] + "_q", qb, bq)
    graph.remove_unused()
