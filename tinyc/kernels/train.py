"""Training kernels in numpy: the executable spec of runtime_c's train.c.

The backward pass and the SGD updates of an on-device training step, float32.
Each function mirrors one C kernel (same name without ``tinyc_``, the same
arguments in the same order, the outputs returned instead of written; sizes
the arrays imply are still taken, so that a call maps one to one). The C
header, tinyc/train.h, documents the arithmetic; in short:

* Saved activations are int8 with a per-tensor (scale, zero point): real value
  ``scale * (q - zero)``. Weights are int8 with a per-output-channel scale and
  zero point 0. Gradients are float32, NHWC, batch 1.
* Float kernels (the gradients, the loss) match C within float32 rounding:
  only the order of the sums differs.
* The updates (``sgd_update_s8`` / ``sgd_update_s32``) are bit-exact with C:
  the step ``-(lr * g) / scale`` is computed in float32 in this order, and the
  float -> int conversions round half to even (``np.rint``) or, for int8
  weights when a generator state is given, stochastically with train.h's
  counter generator (``uniform_draws``), exactly.
"""

from __future__ import annotations

import numpy as np

from .params import ConvParams, PoolParams

__all__ = [
    "clamp_grad_f32",
    "add_f32",
    "slice_f32",
    "conv2d_grad_input_f32",
    "conv2d_grad_input_sum_f32",
    "conv2d_grad_weight_f32",
    "bias_grad_f32",
    "fc_grad_input_f32",
    "fc_grad_weight_f32",
    "avg_pool_grad_f32",
    "max_pool_grad_f32",
    "mean_grad_f32",
    "softmax_xent_f32",
    "sgd_update_s8",
    "sgd_update_s32",
    "conv2d_train_weight_s8",
    "fc_train_weight_s8",
    "uniform_draws",
    "TRAIN_KERNELS",
]

F32 = np.float32
W_MAX = 127 * 256  # the 16-bit weight (256 w + residue) saturates at +-127.0


def _f32(a, size: int | None = None) -> np.ndarray:
    a = np.asarray(a, dtype=np.float32).reshape(-1)
    if size is not None and a.size != size:
        raise ValueError(f"expected {size} values, got {a.size}")
    return a


def _i32(a, size: int | None = None) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype.kind not in "iu":
        raise TypeError(f"expected integers, got dtype {a.dtype}")
    a = a.astype(np.int32).reshape(-1)
    if size is not None and a.size != size:
        raise ValueError(f"expected {size} values, got {a.size}")
    return a


def _scales(w_scale, n: int, per_channel: int) -> np.ndarray:
    """The float32 scale of each of n channels: w_scale[c], or w_scale[0] for all."""
    s = _f32(w_scale)
    return s[:n] if per_channel else np.full(n, s[0], np.float32)


# ---------------------------------------------------------------- activations
def clamp_grad_f32(n: int, dy, y_q, lo_q: int, hi_q: int) -> np.ndarray:
    """dx = dy where lo_q < y_q < hi_q, else 0 (a fused ReLU / ReLU6 / clip, from
    its int8 output and int8 bounds; -129 / 128 for a side without a bound)."""
    y = _i32(y_q, n)
    return np.where((y > lo_q) & (y < hi_q), _f32(dy, n), F32(0)).astype(np.float32)


def add_f32(n: int, a, b) -> np.ndarray:
    """a + b (a gradient's two contributions), float32."""
    return (_f32(a, n) + _f32(b, n)).astype(np.float32)


def slice_f32(in_shape, starts, out_shape, x) -> np.ndarray:
    """x (in_shape, 4-D) [starts : starts + out_shape] along each axis."""
    in_shape, starts, out_shape = (tuple(int(v) for v in _i32(a, 4)) for a in (in_shape, starts, out_shape))
    x = _f32(x, int(np.prod(in_shape))).reshape(in_shape)
    return np.ascontiguousarray(x[tuple(slice(s, s + n) for s, n in zip(starts, out_shape))])


# ---------------------------------------------------------------- convolution
def _conv_geometry(p: ConvParams):
    if p.groups < 1 or p.in_c % p.groups or p.out_c % p.groups:
        raise ValueError(f"{p.in_c} input / {p.out_c} output channels do not split in {p.groups} groups")
    return p.in_c // p.groups, p.out_c // p.groups


def _taps(p: ConvParams):
    """Per kernel tap (ky, kx): the output rows / cols whose tap lands inside the
    input, and the input rows / cols they read (index arrays)."""
    oy, ox = np.arange(p.out_h), np.arange(p.out_w)
    for ky in range(p.k_h):
        iy = oy * p.stride_h - p.pad_t + ky * p.dil_h
        my = (iy >= 0) & (iy < p.in_h)
        for kx in range(p.k_w):
            ix = ox * p.stride_w - p.pad_l + kx * p.dil_w
            mx = (ix >= 0) & (ix < p.in_w)
            yield ky, kx, oy[my], ox[mx], iy[my], ix[mx]


def _conv_grad_input(p: ConvParams, dz, w: np.ndarray) -> np.ndarray:
    """The transposed convolution of dz with real weights w [out_c, k_h, k_w, in_c / groups]."""
    cg, og = _conv_geometry(p)
    g = p.groups
    dz = _f32(dz, p.out_h * p.out_w * p.out_c).reshape(p.out_h, p.out_w, g, og)
    w = w.reshape(g, og, p.k_h, p.k_w, cg)
    dx = np.zeros((p.in_h, p.in_w, g, cg), np.float32)
    for ky, kx, oy, ox, iy, ix in _taps(p):
        if oy.size and ox.size:
            part = np.einsum("hwgo,goc->hwgc", dz[np.ix_(oy, ox)], w[:, :, ky, kx, :])
            dx[np.ix_(iy, ix)] += part  # within one tap, distinct outputs read distinct cells
    return dx.reshape(1, p.in_h, p.in_w, p.in_c)


def conv2d_grad_input_f32(p: ConvParams, dz, w_q, w_scale) -> np.ndarray:
    """dx [1, in_h, in_w, in_c] of a (grouped / depthwise) Conv2D: the transposed
    convolution of dz [out_h, out_w, out_c] with the real weights
    w_scale[o] * w_q[o, ky, kx, c] ([out_c, k_h, k_w, in_c / groups]).
    ``p.groups`` is the real group count (depthwise: groups == in_c)."""
    cg, _ = _conv_geometry(p)
    w = _i32(w_q, p.out_c * p.k_h * p.k_w * cg).reshape(p.out_c, p.k_h, p.k_w, cg)
    return _conv_grad_input(p, dz, w.astype(np.float32) * _scales(w_scale, p.out_c, 1)[:, None, None, None])


def conv2d_grad_input_sum_f32(p: ConvParams, dz, w_q, w_scale, y_q, lo_q: int, hi_q: int) -> np.ndarray:
    """ds [in_c]: conv2d_grad_input_f32's dx masked as clamp_grad_f32 masks it
    (``y_q`` None: no mask) and summed over the input positions, which is
    bias_grad_f32 of clamp_grad_f32 of conv2d_grad_input_f32 without the dx in
    between (the C gathers one cell at a time)."""
    dx = conv2d_grad_input_f32(p, dz, w_q, w_scale).reshape(-1)
    if y_q is not None:
        dx = clamp_grad_f32(dx.size, dx, y_q, lo_q, hi_q)
    return dx.reshape(-1, p.in_c).sum(axis=0, dtype=np.float32)


def conv2d_grad_weight_f32(p: ConvParams, k: int, x_q, x_scale: float, x_zero: int, dz) -> np.ndarray:
    """dw [k, k_h, k_w, in_c / groups] of the first k output channels: the sum over
    the output positions of dz[.., o] times the real input window
    x_scale * (x_q - x_zero) (0 in the padding)."""
    cg, og = _conv_geometry(p)
    if not 0 <= k <= p.out_c:
        raise ValueError(f"k = {k} is not in [0, {p.out_c}]")
    x = (_i32(x_q, p.in_h * p.in_w * p.in_c) - np.int32(x_zero)).astype(np.float32)
    x = (F32(x_scale) * x).reshape(p.in_h, p.in_w, p.in_c)
    dz = _f32(dz, p.out_h * p.out_w * p.out_c).reshape(p.out_h, p.out_w, p.out_c)[..., :k]
    group_in = (np.arange(k) // og)[:, None] * cg + np.arange(cg)[None, :]  # [k, cg]: input channel of (o, c)
    dw = np.zeros((k, p.k_h, p.k_w, cg), np.float32)
    for ky, kx, oy, ox, iy, ix in _taps(p):
        if oy.size and ox.size:
            xs = x[np.ix_(iy, ix)][:, :, group_in]  # [h, w, k, cg]
            dw[:, ky, kx, :] = np.einsum("hwo,hwoc->oc", dz[np.ix_(oy, ox)], xs)
    return dw


def bias_grad_f32(rows: int, channels: int, k: int, dz) -> np.ndarray:
    """db[c] = sum over the rows of dz[row, c], c < k (dz [rows, channels])."""
    return _f32(dz, rows * channels).reshape(rows, channels)[:, :k].sum(axis=0, dtype=np.float32)


# ------------------------------------------------------------ fully connected
def fc_grad_input_f32(rows: int, n_in: int, n_out: int, dz, w_q, w_scale, per_channel: int) -> np.ndarray:
    """dx [rows, in] = dz [rows, out] @ (s[o] * w_q [out, in]), s per output channel
    or one value (per_channel == 0)."""
    w = _i32(w_q, n_out * n_in).reshape(n_out, n_in).astype(np.float32)
    w = w * _scales(w_scale, n_out, per_channel)[:, None]
    return np.matmul(_f32(dz, rows * n_out).reshape(rows, n_out), w).astype(np.float32)


def fc_grad_weight_f32(rows: int, n_in: int, n_out: int, k: int, x_q, x_scale: float, x_zero: int,
                       dz) -> np.ndarray:
    """dw [k, in] = dz[:, :k].T @ x, x = x_scale * (x_q - x_zero) [rows, in]."""
    x = F32(x_scale) * (_i32(x_q, rows * n_in) - np.int32(x_zero)).astype(np.float32)
    dz = _f32(dz, rows * n_out).reshape(rows, n_out)[:, :k]
    return np.matmul(dz.T, x.reshape(rows, n_in)).astype(np.float32)


# ---------------------------------------------------------- pools and reductions
def avg_pool_grad_f32(p: PoolParams, dy) -> np.ndarray:
    """dx [1, in_h, in_w, channels] of an average pool: dy / count added to each
    in-bounds cell of each window; count = the in-bounds cells, or k_h * k_w with
    count_include_pad (tinyc_avg_pool_s8's divisor). A window with no cell
    counted passes nothing."""
    c = p.channels
    dy = _f32(dy, p.out_h * p.out_w * c).reshape(p.out_h, p.out_w, c)
    dx = np.zeros((p.in_h, p.in_w, c), np.float32)
    for oy in range(p.out_h):
        y0 = oy * p.stride_h - p.pad_t
        y1 = min(y0 + p.k_h, p.in_h)
        y0 = max(y0, 0)
        for ox in range(p.out_w):
            x0 = ox * p.stride_w - p.pad_l
            x1 = min(x0 + p.k_w, p.in_w)
            x0 = max(x0, 0)
            count = p.k_h * p.k_w if p.count_include_pad else (y1 - y0) * (x1 - x0)
            if y1 <= y0 or x1 <= x0 or count <= 0:
                continue
            dx[y0:y1, x0:x1, :] += dy[oy, ox] / F32(count)
    return dx.reshape(1, p.in_h, p.in_w, c)


def max_pool_grad_f32(p: PoolParams, dy, x_q) -> np.ndarray:
    """dx [1, in_h, in_w, channels] of a max pool: each output's gradient added to
    the in-bounds cell of its window holding the maximum of x_q (the first in
    row-major order on ties): max_pool_grad_ff32 on the int8 values, which
    float32 holds exactly."""
    x = _i32(x_q, p.in_h * p.in_w * p.channels).astype(np.float32)
    return max_pool_grad_ff32(p, dy, x)


def mean_grad_f32(outer: int, reduce: int, inner: int, dy) -> np.ndarray:
    """dx [outer, reduce, inner] = dy [outer, inner] / reduce, broadcast over reduce
    (the gradient of tinyc_mean_s8's view; a global average pool is outer = 1,
    reduce = H * W, inner = C)."""
    share = _f32(dy, outer * inner).reshape(outer, 1, inner) / F32(reduce)
    return np.ascontiguousarray(np.broadcast_to(share, (outer, reduce, inner)), dtype=np.float32)


# ------------------------------------------------------------------ the loss
def softmax_xent_f32(n: int, logits_q, scale: float, zero: int, label: int) -> tuple[np.float32, np.ndarray]:
    """(loss, dlogits) of the softmax cross-entropy of z = scale * (q - zero):
    s = scale * (q - max q), loss = log(sum exp s) - s[label],
    dlogits = exp(s) / sum - onehot(label), 0 where it would push a logit
    saturated at 127 / -128 further out. A label outside [0, n) adds neither
    the one-hot nor the -s[label] term."""
    q = _i32(logits_q, n)
    s = F32(scale) * (q - q.max()).astype(np.float32)
    e = np.exp(s)
    total = F32(0)
    for v in e:  # in order, as C sums
        total = F32(total + v)
    grad = (e / total).astype(np.float32)
    s_label = F32(0)
    if 0 <= label < n:
        grad[label] -= F32(1)
        s_label = s[label]
    grad[((q == 127) & (grad < 0)) | ((q == -128) & (grad > 0))] = F32(0)  # not further into saturation
    return F32(np.log(total) - s_label), grad


# ---------------------------------------------------------------- the updates
def _step(lr: float, g: np.ndarray, s: np.ndarray) -> np.ndarray:
    """-(lr * g) / s in float32, in this order (as C computes it)."""
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        return (-(F32(lr) * g) / s).astype(np.float32)


def _rint_clamped(t: np.ndarray, lim: int) -> np.ndarray:
    """rint(clamp(t, -lim, lim)) as int64, NaN -> 0 (C's rint_clamped)."""
    t = np.where(np.isnan(t), F32(0), np.clip(t, F32(-lim), F32(lim)))
    return np.rint(t).astype(np.int64)


GOLDEN = 0x9E3779B9  # the generator's counter increment, 2^32 / phi


def uniform_draws(state: int, n: int) -> tuple[np.ndarray, int]:
    """n draws of tinyc_sgd_update_s8's generator from ``state``: float32 in [0, 1)
    and the state after them. Draw i hashes the counter state + (i + 1) * GOLDEN
    (mod 2^32) with MurmurHash3's fmix32; u = (z >> 8) / 2^24."""
    z = ((np.uint64(state) + np.arange(1, n + 1, dtype=np.uint64) * np.uint64(GOLDEN)) & np.uint64(0xFFFFFFFF))
    z = z.astype(np.uint32)
    z ^= z >> np.uint32(16)
    z *= np.uint32(0x85EBCA6B)
    z ^= z >> np.uint32(13)
    z *= np.uint32(0xC2B2AE35)
    z ^= z >> np.uint32(16)
    u = (z >> np.uint32(8)).astype(np.float32) * F32(2.0**-24)
    return u, (int(state) + n * GOLDEN) & 0xFFFFFFFF


def _sround_clamped(t: np.ndarray, lim: int, u: np.ndarray) -> np.ndarray:
    """floor(t) + (u < t - floor(t)) for t clamped to [-lim, lim], NaN -> 0 (C's
    sround_clamped: the fraction is exact in float32)."""
    t = np.where(np.isnan(t), F32(0), np.clip(t, F32(-lim), F32(lim))).astype(np.float32)
    fl = np.floor(t)
    return fl.astype(np.int64) + (u < (t - fl)).astype(np.int64)


def _step_limit(max_units: int) -> int:
    """Whole units a step may move a weight: max_units, or 256 (none) outside (0, 256)."""
    return int(max_units) if 0 < int(max_units) < 256 else 256


def sgd_update_s8(k: int, count: int, lr: float, dw, w_scale, per_channel: int, max_units: int, w_q, residue=None,
                  rng: int | None = None) -> tuple[np.ndarray, np.ndarray | None, int | None]:
    """One SGD step on the first k channels (count weights each) of an int8 weight,
    in its channel's units (quantization-aware scaling); returns the new
    (w_q, residue, rng): int8 [k * count], int8 [k * count] or None, and the
    generator state or None.

    step = -(lr * dw) / s (float32). With a residue: the 16-bit weight
    v = 256 w + residue takes d = round(clamp(256 step, +-256 L)), saturates at
    +-127 * 256, and splits back as w = floor((v + 128) / 256) (rounded, halves
    up) and residue = v - 256 w in [-128, 127]. Without (None): w =
    clamp(w + round(clamp(step, +-L)), -127, 127), L = max_units (256 when not in
    (0, 256)): update clipping. round is rint (half to
    even) when rng is None, else stochastic with ``uniform_draws(rng, k * count)``."""
    n = k * count
    s = np.repeat(_scales(w_scale, k, per_channel), count)
    step = _step(lr, _f32(dw, n), s)
    u = None
    if rng is not None:
        u, rng = uniform_draws(rng, n)
    w = _i32(w_q, n).astype(np.int64)
    if residue is None:
        lim = _step_limit(max_units)
        d = _rint_clamped(step, lim) if u is None else _sround_clamped(step, lim, u)
        return np.clip(w + d, -127, 127).astype(np.int8), None, rng
    with np.errstate(over="ignore", invalid="ignore"):
        t = (step * F32(256)).astype(np.float32)
    lim = 256 * _step_limit(max_units)
    d = _rint_clamped(t, lim) if u is None else _sround_clamped(t, lim, u)
    v = np.clip(w * 256 + _i32(residue, n) + d, -W_MAX, W_MAX)
    w = np.floor_divide(v + 128, 256)
    return w.astype(np.int8), (v - w * 256).astype(np.int8), rng


def sgd_update_s32(k: int, lr: float, db, bias_scale, per_channel: int, bias_q) -> np.ndarray:
    """bias_q[c] += rint(-(lr * db[c]) / s[c]) (float32 step, exact sum), saturated to
    [-(2^31 - 1), 2^31 - 1]; returns the new int32 [k]."""
    step = _step(lr, _f32(db, k), _scales(bias_scale, k, per_channel))
    step = np.where(np.isnan(step), F32(0), step)
    add = np.clip(np.rint(step).astype(np.float64), -(2.0**31), 2.0**31).astype(np.int64)
    v = _i32(bias_q, k).astype(np.int64) + add
    return np.clip(v, -(2**31) + 1, 2**31 - 1).astype(np.int32)


# ------------------------------------------ fused weight gradient and update
def conv2d_train_weight_s8(p: ConvParams, k: int, x_q, x_scale: float, x_zero: int, dz, lr: float, w_scale,
                           max_units: int, w_q, residue=None, rng: int | None = None):
    """The weight gradient of the first k channels applied by sgd_update_s8 (per
    channel scales); C computes it a channel at a time into a scratch of one
    channel (not an output here). Returns (w_q, residue, rng) as sgd_update_s8."""
    dw = conv2d_grad_weight_f32(p, k, x_q, x_scale, x_zero, dz)
    return sgd_update_s8(k, int(np.prod(dw.shape[1:])), lr, dw, w_scale, 1, max_units, w_q, residue, rng)


def fc_train_weight_s8(rows: int, n_in: int, n_out: int, k: int, x_q, x_scale: float, x_zero: int, dz, lr: float,
                       w_scale, max_units: int, w_q, residue=None, rng: int | None = None):
    """fc_grad_weight_f32 of the first k outputs applied by sgd_update_s8 (as conv2d_train_weight_s8)."""
    dw = fc_grad_weight_f32(rows, n_in, n_out, k, x_q, x_scale, x_zero, dz)
    return sgd_update_s8(k, n_in, lr, dw, w_scale, 1, max_units, w_q, residue, rng)


# ---------------------------------------------------------- the float graph
def _conv_windows_f32(p: ConvParams, x) -> np.ndarray:
    """x [in_h, in_w, in_c] -> windows [out_h, out_w, k_h, k_w, in_c] (0 in the padding)."""
    x = _f32(x, p.in_h * p.in_w * p.in_c).reshape(p.in_h, p.in_w, p.in_c)
    win = np.zeros((p.out_h, p.out_w, p.k_h, p.k_w, p.in_c), np.float32)
    for ky, kx, oy, ox, iy, ix in _taps(p):
        if oy.size and ox.size:
            win[oy[:, None], ox[None, :], ky, kx] = x[np.ix_(iy, ix)]
    return win


def conv2d_f32(p: ConvParams, x, w, bias, lo: float, hi: float) -> np.ndarray:
    """y [1, out_h, out_w, out_c] = clamp(bias + sum over taps and the group's
    channels of x * w, lo, hi); w [out_c, k_h, k_w, in_c / groups]."""
    cg, og = _conv_geometry(p)
    win = _conv_windows_f32(p, x)
    w = _f32(w, p.out_c * p.k_h * p.k_w * cg).reshape(p.out_c, p.k_h, p.k_w, cg)
    y = np.empty((p.out_h, p.out_w, p.out_c), np.float32)
    for g in range(p.groups):
        y[..., g * og:(g + 1) * og] = np.einsum("hwabc,oabc->hwo", win[..., g * cg:(g + 1) * cg], w[g * og:(g + 1) * og])
    if bias is not None:
        y += _f32(bias, p.out_c)
    return np.clip(y, F32(lo), F32(hi)).reshape(1, p.out_h, p.out_w, p.out_c)


def fc_f32(rows: int, n_in: int, n_out: int, x, w, bias, lo: float, hi: float) -> np.ndarray:
    y = _f32(x, rows * n_in).reshape(rows, n_in) @ _f32(w, n_out * n_in).reshape(n_out, n_in).T
    if bias is not None:
        y = y + _f32(bias, n_out)
    return np.clip(y, F32(lo), F32(hi)).astype(np.float32)


def clamp_f32(n: int, lo: float, hi: float, x) -> np.ndarray:
    return np.clip(_f32(x, n), F32(lo), F32(hi))


def _pool_windows_f32(p: PoolParams, x):
    """Per output cell: (oy, ox, y0, y1, x0, x1, its in-bounds window [cells, channels])."""
    c = p.channels
    x = _f32(x, p.in_h * p.in_w * c).reshape(p.in_h, p.in_w, c)
    for oy in range(p.out_h):
        y0 = oy * p.stride_h - p.pad_t
        y1, y0 = min(y0 + p.k_h, p.in_h), max(y0, 0)
        for ox in range(p.out_w):
            x0 = ox * p.stride_w - p.pad_l
            x1, x0 = min(x0 + p.k_w, p.in_w), max(x0, 0)
            yield oy, ox, y0, y1, x0, x1, x[y0:y1, x0:x1].reshape(-1, c)


def avg_pool_f32(p: PoolParams, x) -> np.ndarray:
    y = np.zeros((p.out_h, p.out_w, p.channels), np.float32)
    for oy, ox, y0, y1, x0, x1, win in _pool_windows_f32(p, x):
        count = p.k_h * p.k_w if p.count_include_pad else (y1 - y0) * (x1 - x0)
        if win.size and count > 0:
            y[oy, ox] = win.sum(axis=0, dtype=np.float32) / F32(count)
    return y.reshape(1, p.out_h, p.out_w, p.channels)


def max_pool_f32(p: PoolParams, x) -> np.ndarray:
    y = np.zeros((p.out_h, p.out_w, p.channels), np.float32)
    for oy, ox, _, _, _, _, win in _pool_windows_f32(p, x):
        if win.size:
            y[oy, ox] = win.max(axis=0)
    return y.reshape(1, p.out_h, p.out_w, p.channels)


def concat2_f32(outer: int, inner_a: int, inner_b: int, a, b) -> np.ndarray:
    return np.concatenate([_f32(a, outer * inner_a).reshape(outer, inner_a),
                           _f32(b, outer * inner_b).reshape(outer, inner_b)], axis=1)


def mean_f32(outer: int, reduce: int, inner: int, x) -> np.ndarray:
    return (_f32(x, outer * reduce * inner).reshape(outer, reduce, inner).sum(axis=1, dtype=np.float32)
            / F32(reduce)).astype(np.float32)


def clamp_grad_ff32(n: int, dy, y, lo: float, hi: float) -> np.ndarray:
    y = _f32(y, n)
    return np.where((y > F32(lo)) & (y < F32(hi)), _f32(dy, n), F32(0)).astype(np.float32)


def conv2d_grad_input_ff32(p: ConvParams, dz, w) -> np.ndarray:
    """conv2d_grad_input_f32 with float weights."""
    cg, _ = _conv_geometry(p)
    return _conv_grad_input(p, dz, _f32(w, p.out_c * p.k_h * p.k_w * cg).reshape(p.out_c, p.k_h, p.k_w, cg))


def conv2d_grad_weight_ff32(p: ConvParams, k: int, x, dz) -> np.ndarray:
    cg, og = _conv_geometry(p)
    win = _conv_windows_f32(p, x)
    dz = _f32(dz, p.out_h * p.out_w * p.out_c).reshape(p.out_h, p.out_w, p.out_c)
    dw = np.empty((k, p.k_h, p.k_w, cg), np.float32)
    for o in range(k):
        g = o // og
        dw[o] = np.einsum("hw,hwabc->abc", dz[..., o], win[..., g * cg:(g + 1) * cg])
    return dw


def fc_grad_input_ff32(rows: int, n_in: int, n_out: int, dz, w) -> np.ndarray:
    return (_f32(dz, rows * n_out).reshape(rows, n_out) @ _f32(w, n_out * n_in).reshape(n_out, n_in)).astype(
        np.float32)


def fc_grad_weight_ff32(rows: int, n_in: int, n_out: int, k: int, x, dz) -> np.ndarray:
    dz = _f32(dz, rows * n_out).reshape(rows, n_out)[:, :k]
    return (dz.T @ _f32(x, rows * n_in).reshape(rows, n_in)).astype(np.float32)


def max_pool_grad_ff32(p: PoolParams, dy, x) -> np.ndarray:
    c = p.channels
    dy = _f32(dy, p.out_h * p.out_w * c).reshape(p.out_h, p.out_w, c)
    dx = np.zeros((p.in_h, p.in_w, c), np.float32)
    for oy, ox, y0, _, x0, x1, win in _pool_windows_f32(p, x):
        if win.size:
            first = win.argmax(axis=0)
            np.add.at(dx, (y0 + first // (x1 - x0), x0 + first % (x1 - x0), np.arange(c)), dy[oy, ox])
    return dx.reshape(1, p.in_h, p.in_w, c)


def softmax_xent_ff32(n: int, logits, label: int) -> tuple[np.float32, np.ndarray]:
    z = _f32(logits, n)
    s = (z - z.max()).astype(np.float32)
    e = np.exp(s)
    total = F32(0)
    for v in e:
        total = F32(total + v)
    grad = (e / total).astype(np.float32)
    s_label = F32(0)
    if 0 <= label < n:
        grad[label] -= F32(1)
        s_label = s[label]
    return F32(np.log(total) - s_label), grad


def sgd_update_f32(n: int, lr: float, g, w) -> np.ndarray:
    """w - lr * g (float32); returns the new w."""
    return (_f32(w, n) - F32(lr) * _f32(g, n)).astype(np.float32)


# Kernels that update persistent state in place (C: the trailing pointer
# arguments; numpy: passed last, returned new) instead of writing outputs.
UPDATE_KERNELS = ("sgd_update_s8", "sgd_update_s32", "conv2d_train_weight_s8", "fc_train_weight_s8",
                  "sgd_update_f32")

# name -> numpy spec (the C function is "tinyc_" + name)
TRAIN_KERNELS = {f.__name__: f for f in (
    clamp_grad_f32, add_f32, slice_f32, conv2d_grad_input_f32, conv2d_grad_input_sum_f32, conv2d_grad_weight_f32,
    bias_grad_f32, fc_grad_input_f32,
    fc_grad_weight_f32, avg_pool_grad_f32, max_pool_grad_f32, mean_grad_f32, softmax_xent_f32, sgd_update_s8, sgd_update_s32,
    conv2d_train_weight_s8, fc_train_weight_s8, conv2d_f32, fc_f32, clamp_f32, avg_pool_f32, max_pool_f32,
    concat2_f32, mean_f32,
    clamp_grad_ff32, conv2d_grad_input_ff32, conv2d_grad_weight_ff32, fc_grad_input_ff32, fc_grad_weight_ff32,
    max_pool_grad_ff32, softmax_xent_ff32, sgd_update_f32,
)}  # fmt: skip
