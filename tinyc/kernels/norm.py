"""Numpy reference of the int8 layer normalization kernel (C: runtime_c/src/norm.c).

TFLite has no int8 LayerNorm, so tinyc defines one in integer arithmetic (in
the spirit of I-BERT's integer-only LayerNorm; int64 sums, one integer square
root and one division per row, no float):

  per row of ``depth`` values, with ``xs = x - in_zero_point``:
    d_i  = depth * xs_i - sum(xs)                       (depth times the centred value)
    V    = sum(d_i^2) + eps                             (eps = round(epsilon * depth^3 / s_in^2))
    k    = (62 - bit_length(V)) // 2
    R    = isqrt(V << 2k)                               (sqrt(V) * 2^k, in [2^30, 2^31))
    inv  = 2^62 // R
    n_i  = (d_i * inv + 2^(31-k)) >> (32 - k)           (d_i / sqrt(V) in Q30, |n_i| <= 2^30)
    out_i = clamp(((n_i * gamma_q[i] + (beta_q[i] << 30)) + 2^(s-1)) >> s) + out_zero_point)

with ``gamma_q = round(gamma * sqrt(depth) / s_out * 2^g)``, ``beta_q = round(beta / s_out * 2^g)``,
``s = out_shift = 30 + g``.  d_i / sqrt(V) * sqrt(depth) is (x - mean) / sqrt(var + epsilon).
"""

from __future__ import annotations

import math

import numpy as np

from tinyc.kernels.params import LayerNormParams

__all__ = ["layer_norm_s8"]


def _round_shift(v: np.ndarray, s: int) -> np.ndarray:
    return (v + (np.int64(1) << np.int64(s - 1))) >> np.int64(s)


def layer_norm_s8(p: LayerNormParams, x: np.ndarray, gamma_q: np.ndarray, beta_q: np.ndarray) -> np.ndarray:
    xs = np.ascontiguousarray(x).astype(np.int64).reshape(p.rows, p.depth) - p.in_zero_point
    g = np.asarray(gamma_q, dtype=np.int64).reshape(-1)
    b = np.asarray(beta_q, dtype=np.int64).reshape(-1)
    eps = (int(p.eps_hi) << 31) | int(p.eps_lo)
    out = np.empty((p.rows, p.depth), dtype=np.int64)
    for r in range(p.rows):
        d = p.depth * xs[r] - xs[r].sum()
        v = int((d * d).sum()) + eps
        if v == 0:
            n = np.zeros(p.depth, dtype=np.int64)
        else:
            k = max(0, (62 - v.bit_length()) // 2)
            inv = (1 << 62) // math.isqrt(v << (2 * k))
            n = _round_shift(d * np.int64(inv), 32 - k)
        out[r] = _round_shift(n * g + (b << np.int64(30)), p.out_shift) + p.out_zero_point
    return np.ascontiguousarray(np.clip(out, -128, 127).astype(np.int8).reshape(x.shape))
