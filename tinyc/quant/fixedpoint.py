"""TFLite / TFLite Micro integer arithmetic, in numpy: the executable spec for tinyc's int8 C kernels.

Every function here mirrors one function of TensorFlow Lite's reference kernels (as
used by TFLite Micro, ``tensorflow/lite/kernels/internal/...`` and
``tensorflow/lite/micro/kernels/*_common.cc``) or of gemmlowp's
``fixedpoint/fixedpoint.h``, bit for bit.  The C kernels that tinyc emits must
compute exactly what these functions compute; tests compare the two.

Conventions
-----------
* Values are held in ``int64`` numpy arrays whose contents are in the range of
  the C type being mirrored (``int32_t`` almost everywhere).  Where C code relies
  on two's-complement wrap-around (e.g. ``x * (1 << left_shift)`` on
  ``int32_t``), the result is wrapped explicitly with :func:`wrap_int32`.
* Public functions accept Python ints or numpy arrays (broadcasting, so a
  per-channel multiplier/shift array can be applied to an activation array) and
  return ``np.int32`` arrays, or an ``np.int32`` scalar for scalar inputs.
* C integer division truncates toward zero; Python's ``//`` floors.  The
  helpers below use :func:`_trunc_div` wherever C divides.
* ``TfLiteRound`` / ``std::round`` round half away from zero (Python's
  ``round`` and ``np.round`` round half to even): :func:`round_half_away`.
* Scales stored in a .tflite are ``float32``; TFLM widens them to double
  before computing multipliers (fused-activation bounds alone are computed in
  float32).  Every ``*_params`` function takes the scales as given and performs
  the float32/double steps the TFLM kernel performs, so pass the raw tensor scales.

This module implements TFLite's default "double rounding" build
(``TFLITE_SINGLE_ROUNDING`` undefined), which is what TFLite Micro's reference
kernels and CMSIS-NN use.

Where TFLM revisions disagree, the reference is the PyPI ``tflite-micro``
build (0.dev20261023), which produced the goldens in ../shared/models:
tests/test_fixedpoint.py checks every op helper against it layer by layer and
on single-op models.  TFLite's own reference kernels (PyPI ``ai-edge-litert``,
``BUILTIN_REF``) agree except for FULLY_CONNECTED (single rounding), LOGISTIC
(float lookup table) and the MUL / HARD_SWISH multipliers (float32 products).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

INT32_MIN = -(1 << 31)
INT32_MAX = (1 << 31) - 1
INT16_MIN = -(1 << 15)
INT16_MAX = (1 << 15) - 1
INT8_MIN = -128
INT8_MAX = 127

__all__ = [
    "INT32_MIN",
    "INT32_MAX",
    "wrap_int32",
    "round_half_away",
    "quantize_multiplier",
    "quantize_multiplier_array",
    "quantize_multiplier_smaller_than_one_exp",
    "quantize_multiplier_greater_than_one",
    "saturating_rounding_doubling_high_mul",
    "rounding_divide_by_pot",
    "saturating_rounding_multiply_by_pot",
    "multiply_by_quantized_multiplier",
    "multiply_by_quantized_multiplier_int64",
    "multiply_by_quantized_multiplier_smaller_than_one_exp",
    "multiply_by_quantized_multiplier_greater_than_one",
    "rounding_half_sum",
    "exp_on_interval_between_negative_one_quarter_and_0_excl",
    "exp_on_negative_values",
    "one_over_one_plus_x_for_x_in_0_1",
    "one_minus_x_over_one_plus_x_for_x_in_0_1",
    "fixed_point_logistic",
    "fixed_point_tanh",
    "count_leading_zeros32",
    "get_reciprocal",
    "calculate_input_radius",
    "preprocess_softmax_scaling",
    "quantize_value",
    "activation_range_int8",
    "ArithmeticParams",
    "add_int8_params",
    "sub_int8_params",
    "add_int8",
    "sub_int8",
    "MulParams",
    "mul_int8_params",
    "mul_int8",
    "rounded_average",
    "average_pool_int8",
    "mean_int8",
    "mean_int8_multiplier",
    "SoftmaxParams",
    "softmax_int8_params",
    "softmax_int8",
    "LogisticParams",
    "logistic_int8_params",
    "logistic_int8",
    "HardSwishParams",
    "downscale_int32_to_int16_multiplier",
    "hard_swish_int8_params",
    "hard_swish_int8",
]


# ----------------------------------------------------------------------------
# Small exact-integer helpers
# ----------------------------------------------------------------------------


def _i64(x) -> np.ndarray:
    """As an int64 array (no copy when already int64); rejects floats."""
    a = np.asarray(x)
    if a.dtype.kind not in "iub":
        if a.dtype == object:
            a = a.astype(np.int64)
        else:
            raise TypeError(f"expected integer values, got dtype {a.dtype}")
    return a.astype(np.int64, copy=False)


def _out32(x: np.ndarray):
    """int64 working array -> np.int32 array (or np.int32 scalar for 0-d)."""
    r = np.asarray(x).astype(np.int32)
    return r[()] if r.ndim == 0 else r


def _check_range(x: np.ndarray, lo: int, hi: int, what: str) -> None:
    if x.size and (x.min() < lo or x.max() > hi):
        raise ValueError(f"{what} outside [{lo}, {hi}]")


def wrap_int32(x):
    """Two's-complement wrap of integer values to int32 (what C's overflow does in practice)."""
    x = _i64(x)
    return ((x + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)


def _wrap16(x: np.ndarray) -> np.ndarray:
    return ((x + (1 << 15)) & 0xFFFF) - (1 << 15)


def _trunc_div(n: np.ndarray, d) -> np.ndarray:
    """C integer division (truncation toward zero) of int64 arrays, d > 0."""
    d = np.asarray(d, dtype=np.int64)
    q = np.abs(n) // d
    return np.where(n < 0, -q, q)


def round_half_away(x):
    """``TfLiteRound`` / ``std::round``: round to nearest, ties away from zero (float in, float out)."""
    x = np.asarray(x, dtype=np.float64)
    r = np.where(x >= 0, np.floor(x + 0.5), -np.floor(-x + 0.5))
    return r[()] if r.ndim == 0 else r


def _round_half_away_scalar(x: float) -> int:
    return int(math.floor(x + 0.5)) if x >= 0 else -int(math.floor(-x + 0.5))


def _f32(x) -> float:
    """A scale as TFLite stores it (float32), widened to double."""
    return float(np.float32(x))


# ----------------------------------------------------------------------------
# Multiplier quantization (tensorflow/lite/kernels/internal/quantization_util.cc)
# ----------------------------------------------------------------------------


def quantize_multiplier(real: float) -> tuple[int, int]:
    """Mirror of TFLite ``QuantizeMultiplier(double, int32_t*, int*)``.

    ``real`` is taken as a C ``double``.  ``frexp`` splits it into
    ``q * 2**shift`` with ``0.5 <= |q| < 1``; ``q * 2**31`` is rounded half away
    from zero; a result of exactly ``2**31`` becomes ``2**30`` with ``shift + 1``;
    a ``shift < -31`` flushes to ``(0, 0)``.  ``real == 0`` gives ``(0, 0)``.

    Returns ``(quantized_multiplier, shift)`` as Python ints, with the meaning
    ``real ~= quantized_multiplier * 2**(shift - 31)`` (positive shift = left).
    """
    real = float(real)
    if not math.isfinite(real):
        raise ValueError(f"multiplier must be finite, got {real!r}")
    if real == 0.0:
        return 0, 0
    q, shift = math.frexp(real)
    q_fixed = _round_half_away_scalar(q * float(1 << 31))
    if q_fixed > (1 << 31):  # TFLITE_CHECK; cannot happen for |q| < 1
        raise AssertionError("q_fixed > 2^31")
    if q_fixed == (1 << 31):
        q_fixed //= 2
        shift += 1
    if q_fixed > INT32_MAX:  # pragma: no cover - guarded by the correction above
        raise AssertionError("q_fixed > INT32_MAX")
    if shift < -31:
        return 0, 0
    if shift > 31:  # the kernels shift left by at most 31 (TFLite's kernels too)
        raise ValueError(f"multiplier {real:g} is too large for int32 fixed point")
    return int(q_fixed), int(shift)


def quantize_multiplier_array(reals) -> tuple[np.ndarray, np.ndarray]:
    """Vectorized :func:`quantize_multiplier` (e.g. per-channel conv requantization).

    ``reals`` is converted to float64 (pass per-channel ``s_in * s_w[c] / s_out``
    computed as TFLite computes it: in double from the float32 scales).
    Returns ``(multipliers, shifts)`` as int32 arrays of the same shape.
    """
    r = np.asarray(reals, dtype=np.float64)
    if not np.all(np.isfinite(r)):
        raise ValueError("multipliers must be finite")
    q, shift = np.frexp(r)  # frexp(0) == (0, 0), like std::frexp
    q_fixed = round_half_away(q * float(1 << 31))
    q_fixed = np.asarray(q_fixed).astype(np.int64)
    shift = np.asarray(shift).astype(np.int64)
    fix = q_fixed == (1 << 31)
    q_fixed = np.where(fix, q_fixed // 2, q_fixed)
    shift = np.where(fix, shift + 1, shift)
    tiny = shift < -31
    if (shift > 31).any():  # the kernels shift left by at most 31 (TFLite's kernels too)
        raise ValueError(f"multiplier {r[shift > 31].reshape(-1)[0]:g} is too large for int32 fixed point")
    q_fixed = np.where(tiny, 0, q_fixed)
    shift = np.where(tiny, 0, shift)
    return q_fixed.astype(np.int32), shift.astype(np.int32)


def quantize_multiplier_smaller_than_one_exp(real: float) -> tuple[int, int]:
    """Mirror of ``QuantizeMultiplierSmallerThanOneExp``: requires ``0 < real < 1``; shift <= 0."""
    real = float(real)
    if not 0.0 < real < 1.0:
        raise ValueError(f"expected 0 < multiplier < 1, got {real!r}")
    m, shift = quantize_multiplier(real)
    if shift > 0:  # pragma: no cover - impossible for real < 1
        raise AssertionError("shift > 0")
    return m, shift


def quantize_multiplier_greater_than_one(real: float) -> tuple[int, int]:
    """Mirror of ``QuantizeMultiplierGreaterThanOne``: requires ``real > 1``; returns a left shift >= 0."""
    real = float(real)
    if not real > 1.0:
        raise ValueError(f"expected multiplier > 1, got {real!r}")
    m, shift = quantize_multiplier(real)
    if shift < 0:  # pragma: no cover
        raise AssertionError("shift < 0")
    return m, shift


# ----------------------------------------------------------------------------
# gemmlowp primitives (fixedpoint/fixedpoint.h), int32 raw type
# ----------------------------------------------------------------------------


def _srdhm(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    overflow = (a == b) & (a == INT32_MIN)
    ab = a * b  # |ab| <= 2^62: exact in int64
    nudge = np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    high = _trunc_div(ab + nudge, 1 << 31)
    return np.where(overflow, INT32_MAX, high)


def saturating_rounding_doubling_high_mul(a, b):
    """Mirror of gemmlowp ``SaturatingRoundingDoublingHighMul(int32_t, int32_t)`` (ARM VQRDMULH).

    ``(a * b + nudge) / 2**31`` with C truncating division, where ``nudge`` is
    ``2**30`` for a non-negative product and ``1 - 2**30`` otherwise; the single
    overflow case ``INT32_MIN * INT32_MIN`` saturates to ``INT32_MAX``.
    """
    a, b = _i64(a), _i64(b)
    _check_range(a, INT32_MIN, INT32_MAX, "a")
    _check_range(b, INT32_MIN, INT32_MAX, "b")
    return _out32(_srdhm(a, b))


def _rdbp(x: np.ndarray, exponent) -> np.ndarray:
    e = np.asarray(exponent, dtype=np.int64)
    mask = (np.int64(1) << e) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0)
    return (x >> e) + (remainder > threshold)


def rounding_divide_by_pot(x, exponent):
    """Mirror of gemmlowp ``RoundingDivideByPOT(int32_t x, int exponent)``, 0 <= exponent <= 31.

    A rounding arithmetic right shift: ``remainder = x & (2**e - 1)``,
    ``threshold = (mask >> 1) + (x < 0)``, result ``(x >> e) + (remainder > threshold)``;
    i.e. round to nearest with ties away from zero.  ``exponent`` may be an array.
    """
    x = _i64(x)
    e = _i64(exponent)
    _check_range(x, INT32_MIN, INT32_MAX, "x")
    _check_range(e, 0, 31, "exponent")
    return _out32(_rdbp(x, e))


def _srmbpot(x: np.ndarray, exponent: int) -> np.ndarray:
    if exponent == 0:
        return x
    if exponent < 0:
        return _rdbp(x, -exponent)
    threshold = (1 << (31 - exponent)) - 1
    shifted = wrap_int32(x * (1 << exponent))
    return np.where(x > threshold, INT32_MAX, np.where(x < -threshold, INT32_MIN, shifted))


def saturating_rounding_multiply_by_pot(x, exponent: int):
    """Mirror of gemmlowp ``SaturatingRoundingMultiplyByPOT<Exponent>`` (and TFLite's ``...Param`` form).

    Positive exponent: saturating left shift (values beyond ``±(2**(31-e) - 1)``
    saturate); negative: :func:`rounding_divide_by_pot`; zero: identity.
    """
    x = _i64(x)
    _check_range(x, INT32_MIN, INT32_MAX, "x")
    return _out32(_srmbpot(x, int(exponent)))


def _rescale(x: np.ndarray, src_integer_bits: int, dst_integer_bits: int) -> np.ndarray:
    """gemmlowp ``Rescale<dst>(FixedPoint<int32, src>)``."""
    return _srmbpot(x, src_integer_bits - dst_integer_bits)


def _add(a, b):  # gemmlowp Add on int32: plain, wraps on overflow
    return wrap_int32(a + b)


def _sub(a, b):
    return wrap_int32(a - b)


def _one(integer_bits: int) -> int:
    """``FixedPoint<int32, N>::One()``: INT32_MAX for N == 0, else 1 << (31 - N)."""
    return INT32_MAX if integer_bits == 0 else 1 << (31 - integer_bits)


def _rounding_half_sum(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    s = a + b
    sign = np.where(s >= 0, 1, -1)
    return _trunc_div(s + sign, 2)


def rounding_half_sum(a, b):
    """Mirror of gemmlowp ``RoundingHalfSum(int32_t, int32_t)``: ``(a + b ± 1) / 2`` in 64 bits, truncating."""
    return _out32(_rounding_half_sum(_i64(a), _i64(b)))


# ----------------------------------------------------------------------------
# TFLite MultiplyByQuantizedMultiplier family (kernels/internal/common.{h,cc})
# ----------------------------------------------------------------------------


def _mbqm(x: np.ndarray, multiplier, shift) -> np.ndarray:
    shift = np.asarray(shift, dtype=np.int64)
    multiplier = np.asarray(multiplier, dtype=np.int64)
    left = np.maximum(shift, 0)
    right = np.maximum(-shift, 0)
    return _rdbp(_srdhm(wrap_int32(x * (np.int64(1) << left)), multiplier), right)


def multiply_by_quantized_multiplier(x, multiplier, shift):
    """Mirror of TFLite ``MultiplyByQuantizedMultiplier(int32_t x, int32_t multiplier, int shift)``.

    The double-rounding reference version that TFLM's int8 conv / depthwise /
    fully-connected / mul / mean kernels call:
    ``RoundingDivideByPOT(SRDHM(x * (1 << max(shift, 0)), multiplier), max(-shift, 0))``.
    ``x * (1 << left_shift)`` is int32 arithmetic in C; an overflow there wraps
    here (it is undefined behaviour in C; the kernels' ranges never trigger it).
    ``multiplier`` and ``shift`` may be per-channel arrays broadcasting against ``x``.
    """
    x = _i64(x)
    m = _i64(multiplier)
    s = _i64(shift)
    _check_range(x, INT32_MIN, INT32_MAX, "x")
    _check_range(m, INT32_MIN, INT32_MAX, "multiplier")
    _check_range(s, -31, 31, "shift")
    return _out32(_mbqm(x, m, s))


def multiply_by_quantized_multiplier_int64(x, multiplier, shift):
    """Mirror of TFLite ``MultiplyByQuantizedMultiplier(int64_t x, int32_t multiplier, int shift)``.

    The int64-input overload (used by the int16x8 conv / FC kernels): the
    multiplier is reduced to 16 bits ``(m + 2**15) >> 16`` (or 0x7FFF when
    ``m >= 0x7FFF0000``), then ``(x * reduced + 2**(total_shift-1)) >> total_shift``
    with ``total_shift = 15 - shift``; the result is truncated to int32.
    Requires ``multiplier >= 0``, ``-31 <= shift < 8``, ``|x| < 2**47``.
    """
    x = _i64(x)
    m = _i64(multiplier)
    s = _i64(shift)
    _check_range(m, 0, INT32_MAX, "multiplier")
    _check_range(s, -31, 7, "shift")
    _check_range(x, -(1 << 47), (1 << 47) - 1, "x")
    reduced = np.where(m < 0x7FFF0000, (m + (1 << 15)) >> 16, 0x7FFF)
    total = 15 - s
    # x * reduced < 2^47 * 2^15 = 2^62: exact in int64.
    r = (x * reduced + (np.int64(1) << (total - 1))) >> total
    return _out32(wrap_int32(r))


def multiply_by_quantized_multiplier_smaller_than_one_exp(x, multiplier, left_shift):
    """Mirror of TFLite ``MultiplyByQuantizedMultiplierSmallerThanOneExp`` (double rounding).

    ``RoundingDivideByPOT(SRDHM(x, multiplier), -left_shift)`` with ``left_shift <= 0``.
    This is what TFLM's int8 Add / Sub use for both the input rescales and the
    output rescale.  (For ``left_shift <= 0`` it equals
    :func:`multiply_by_quantized_multiplier`.)
    """
    x = _i64(x)
    m = _i64(multiplier)
    s = _i64(left_shift)
    _check_range(x, INT32_MIN, INT32_MAX, "x")
    _check_range(s, -31, 0, "left_shift")
    return _out32(_rdbp(_srdhm(x, m), -s))


def multiply_by_quantized_multiplier_greater_than_one(x, multiplier, left_shift):
    """Mirror of TFLite ``MultiplyByQuantizedMultiplierGreaterThanOne``: ``SRDHM(x * (1 << left_shift), m)``.

    Used by the int8 Softmax for the beta/input-scale rescale.  ``left_shift >= 0``;
    the int32 product wraps on overflow as compiled C does.
    """
    x = _i64(x)
    m = _i64(multiplier)
    s = _i64(left_shift)
    _check_range(x, INT32_MIN, INT32_MAX, "x")
    _check_range(s, 0, 31, "left_shift")
    return _out32(_srdhm(wrap_int32(x * (np.int64(1) << s)), m))


# ----------------------------------------------------------------------------
# gemmlowp fixed-point transcendental functions (raw int32 values)
# ----------------------------------------------------------------------------


def _exp_quarter(a: np.ndarray) -> np.ndarray:
    """exp(a) for a in [-1/4, 0), Q0.31 in and out."""
    constant_term = 1895147668  # exp(-1/8)
    constant_1_over_3 = 715827883
    x = _add(a, 1 << 28)  # a + 1/8
    x2 = _srdhm(x, x)
    x3 = _srdhm(x2, x)
    x4 = _srdhm(x2, x2)
    x4_over_4 = _srmbpot(x4, -2)
    poly = _srmbpot(_add(_srdhm(_add(x4_over_4, x3), constant_1_over_3), x2), -1)
    return _add(constant_term, _srdhm(constant_term, _add(x, poly)))


def exp_on_interval_between_negative_one_quarter_and_0_excl(a):
    """Mirror of gemmlowp ``exp_on_interval_between_negative_one_quarter_and_0_excl`` (Q0.31 raw values)."""
    return _out32(_exp_quarter(_i64(a)))


_EXP_BARREL = (
    (-2, 1672461947),  # exp(-1/4)
    (-1, 1302514674),  # exp(-1/2)
    (0, 790015084),  # exp(-1)
    (1, 290630308),  # exp(-2)
    (2, 39332535),  # exp(-4)
    (3, 720401),  # exp(-8)
    (4, 242),  # exp(-16)
)


def _exp_neg(a: np.ndarray, integer_bits: int) -> np.ndarray:
    frac = 31 - integer_bits
    one_quarter = 1 << (frac - 2)
    mask = one_quarter - 1
    a_mod_quarter_minus_one_quarter = (a & mask) - one_quarter
    result = _exp_quarter(_rescale(a_mod_quarter_minus_one_quarter, integer_bits, 0))
    remainder = _sub(a_mod_quarter_minus_one_quarter, a)
    for exponent, multiplier in _EXP_BARREL:
        if integer_bits > exponent:
            bit = 1 << (frac + exponent)
            result = np.where((remainder & bit) != 0, _srdhm(result, multiplier), result)
    if integer_bits > 5:
        clamp = -(1 << (36 - integer_bits))  # -32.0 in Q(integer_bits)
        result = np.where(a < clamp, 0, result)
    return np.where(a == 0, INT32_MAX, result)


def exp_on_negative_values(a, integer_bits: int):
    """Mirror of gemmlowp ``exp_on_negative_values(FixedPoint<int32_t, integer_bits>)``.

    ``a`` holds raw Q(integer_bits).(31-integer_bits) values <= 0; returns exp(a)
    as raw Q0.31 (``a == 0`` gives INT32_MAX, i.e. ``One()``).  Includes the
    barrel shifter over exp(-2**k) and, for ``integer_bits > 5``, the clamp to 0
    below -32.
    """
    if not 0 <= integer_bits <= 30:
        raise ValueError("integer_bits must be in [0, 30]")
    return _out32(_exp_neg(_i64(a), integer_bits))


def _newton_reciprocal_f2(half_denominator: np.ndarray) -> np.ndarray:
    """Shared Newton-Raphson loop of one_over_one_plus_x / one_minus_x_over_one_plus_x (x in Q2.29)."""
    constant_48_over_17 = 1515870810
    constant_neg_32_over_17 = -1010580540
    f2_one = 1 << 29
    x = _add(constant_48_over_17, _srdhm(half_denominator, constant_neg_32_over_17))
    for _ in range(3):
        half_denominator_times_x = _srdhm(half_denominator, x)
        one_minus = _sub(f2_one, half_denominator_times_x)
        x = _add(x, _rescale(_srdhm(x, one_minus), 4, 2))
    return x


def _one_over_one_plus_x(a: np.ndarray) -> np.ndarray:
    half_denominator = _rounding_half_sum(a, np.int64(INT32_MAX))
    x = _newton_reciprocal_f2(half_denominator)
    # Rescale<0>(ExactMulByPot<-1>(x)): x viewed as Q1.30, rescaled to Q0.31.
    return _rescale(x, 1, 0)


def one_over_one_plus_x_for_x_in_0_1(a):
    """Mirror of gemmlowp ``one_over_one_plus_x_for_x_in_0_1`` (Q0.31 raw in and out)."""
    return _out32(_one_over_one_plus_x(_i64(a)))


def _one_minus_x_over_one_plus_x(a: np.ndarray) -> np.ndarray:
    half_denominator = _rounding_half_sum(a, np.int64(INT32_MAX))
    x = _newton_reciprocal_f2(half_denominator)
    return _rescale(_sub(x, 1 << 29), 2, 0)


def one_minus_x_over_one_plus_x_for_x_in_0_1(a):
    """Mirror of gemmlowp ``one_minus_x_over_one_plus_x_for_x_in_0_1`` (Q0.31 raw in and out)."""
    return _out32(_one_minus_x_over_one_plus_x(_i64(a)))


def _logistic(a: np.ndarray, integer_bits: int) -> np.ndarray:
    positive = a > 0
    zero = a == 0
    abs_input = np.where(positive, a, wrap_int32(-a))
    result_if_positive = _one_over_one_plus_x(_exp_neg(wrap_int32(-abs_input), integer_bits))
    result_if_negative = _sub(INT32_MAX, result_if_positive)
    return np.where(zero, 1 << 30, np.where(positive, result_if_positive, result_if_negative))


def fixed_point_logistic(a, integer_bits: int):
    """Mirror of gemmlowp ``logistic(FixedPoint<int32_t, integer_bits>)``: raw Q0.31 result."""
    if not 0 <= integer_bits <= 30:
        raise ValueError("integer_bits must be in [0, 30]")
    return _out32(_logistic(_i64(a), integer_bits))


def _tanh(a: np.ndarray, integer_bits: int) -> np.ndarray:
    negative = a < 0
    zero = a == 0
    n = np.where(negative, a, wrap_int32(-a))
    # ExactMulByPot<1>: same raw value, one more integer bit.
    t = _one_minus_x_over_one_plus_x(_exp_neg(n, integer_bits + 1))
    return np.where(zero, 0, np.where(negative, wrap_int32(-t), t))


def fixed_point_tanh(a, integer_bits: int):
    """Mirror of gemmlowp ``tanh(FixedPoint<int32_t, integer_bits>)``: raw Q0.31 result."""
    if not 0 <= integer_bits <= 29:
        raise ValueError("integer_bits must be in [0, 29]")
    return _out32(_tanh(_i64(a), integer_bits))


def _clz32(x: np.ndarray) -> np.ndarray:
    v = x & 0xFFFFFFFF
    bit_length = np.zeros(v.shape, dtype=np.int64)
    for s in (16, 8, 4, 2, 1):
        high = (v >> s) != 0
        bit_length = bit_length + np.where(high, s, 0)
        v = np.where(high, v >> s, v)
    bit_length = bit_length + (v != 0)
    return 32 - bit_length


def count_leading_zeros32(x):
    """``CountLeadingZeros(static_cast<uint32_t>(x))`` (32 for zero)."""
    return _out32(_clz32(_i64(x)))


def _get_reciprocal(x: np.ndarray, x_integer_digits: int) -> tuple[np.ndarray, np.ndarray]:
    headroom_plus_one = _clz32(x)
    num_bits_over_unit = x_integer_digits - headroom_plus_one
    u = x & 0xFFFFFFFF
    shifted = ((u << headroom_plus_one) - (1 << 31)) & 0xFFFFFFFF  # uint32 arithmetic
    shifted_sum_minus_one = wrap_int32(shifted)
    return _one_over_one_plus_x(shifted_sum_minus_one), num_bits_over_unit


def get_reciprocal(x, x_integer_digits: int):
    """Mirror of TFLite ``GetReciprocal(int32_t x, int x_integer_digits, int* num_bits_over_unit)``.

    Returns ``(raw Q0.31 reciprocal scale, num_bits_over_unit)``: ``x`` is
    normalized by its leading zeros so that ``1/x`` is computed by
    :func:`one_over_one_plus_x_for_x_in_0_1`.
    """
    r, n = _get_reciprocal(_i64(x), int(x_integer_digits))
    return _out32(r), _out32(n)


def calculate_input_radius(input_integer_bits: int, input_left_shift: int, total_signed_bits: int = 31) -> int:
    """Mirror of TFLite ``CalculateInputRadius`` (non-emulated-float build).

    ``floor((2**bits - 1) * 2**(total - bits) / 2**left_shift)`` in double.
    """
    if input_left_shift < 0:
        raise ValueError("input_left_shift must be >= 0 (1LL << negative is undefined in C)")
    max_input_rescaled = (
        1.0
        * ((1 << input_integer_bits) - 1)
        * float(1 << (total_signed_bits - input_integer_bits))
        / float(1 << input_left_shift)
    )
    return int(math.floor(max_input_rescaled))


def preprocess_softmax_scaling(beta: float, input_scale: float, input_integer_bits: int) -> tuple[int, int]:
    """Mirror of TFLite ``PreprocessSoftmaxScaling`` (double-rounding build).

    ``min(beta * input_scale * 2**(31 - input_integer_bits), 2**31 - 1)`` in
    double, then ``QuantizeMultiplierGreaterThanOne``.  Pass ``beta`` and
    ``input_scale`` as their float32 values (TFLM widens both to double).
    Returns ``(input_multiplier, input_left_shift)``.
    """
    real = min(float(beta) * float(input_scale) * float(1 << (31 - input_integer_bits)), float((1 << 31) - 1))
    return quantize_multiplier_greater_than_one(real)


# ----------------------------------------------------------------------------
# Fused activations (kernel_util.cc CalculateActivationRangeQuantized)
# ----------------------------------------------------------------------------


def quantize_value(f: float, scale: float, zero_point: int) -> int:
    """Mirror of TFLite ``kernel_util`` ``Quantize``: ``zp + (int)TfLiteRound(f / scale)`` in float32."""
    tmp = np.float32(f) / np.float32(scale)
    return int(zero_point) + _round_half_away_scalar(float(tmp))


def activation_range_int8(activation: str | None, scale: float, zero_point: int) -> tuple[int, int]:
    """Mirror of ``CalculateActivationRangeQuantized`` for int8 outputs.

    ``activation`` is one of ``None``/``"NONE"``, ``"RELU"``, ``"RELU6"``,
    ``"RELU_N1_TO_1"``.  Returns ``(act_min, act_max)``, the output clamp bounds.
    """
    act = (activation or "NONE").upper()
    qmin, qmax = INT8_MIN, INT8_MAX
    if act == "NONE":
        return qmin, qmax
    if act == "RELU":
        return max(qmin, quantize_value(0.0, scale, zero_point)), qmax
    if act == "RELU6":
        return (
            max(qmin, quantize_value(0.0, scale, zero_point)),
            min(qmax, quantize_value(6.0, scale, zero_point)),
        )
    if act == "RELU_N1_TO_1":
        return (
            max(qmin, quantize_value(-1.0, scale, zero_point)),
            min(qmax, quantize_value(1.0, scale, zero_point)),
        )
    raise ValueError(f"unsupported fused activation {activation!r}")


# ----------------------------------------------------------------------------
# Add / Sub (micro/kernels/add_common.cc, sub_common.cc; reference_integer_ops/add.h)
# ----------------------------------------------------------------------------


class ArithmeticParams(NamedTuple):
    """Requantization constants of TFLM's int8 Add / Sub (``OpDataAdd`` / ``OpDataSub``)."""

    left_shift: int
    input1_multiplier: int
    input1_shift: int
    input2_multiplier: int
    input2_shift: int
    output_multiplier: int
    output_shift: int


def add_int8_params(input1_scale: float, input2_scale: float, output_scale: float) -> ArithmeticParams:
    """Mirror of TFLM ``CalculateOpDataAdd`` (int8): left_shift 20, all in double.

    ``twice_max = 2 * max(s1, s2)``; input multipliers ``s_i / twice_max``;
    output multiplier ``twice_max / (2**20 * s_out)``; each quantized with
    ``QuantizeMultiplierSmallerThanOneExp``.
    """
    left_shift = 20
    s1, s2, so = _f32(input1_scale), _f32(input2_scale), _f32(output_scale)
    twice_max = 2.0 * max(s1, s2)
    m1, sh1 = quantize_multiplier_smaller_than_one_exp(s1 / twice_max)
    m2, sh2 = quantize_multiplier_smaller_than_one_exp(s2 / twice_max)
    mo, sho = quantize_multiplier_smaller_than_one_exp(twice_max / (float(1 << left_shift) * so))
    return ArithmeticParams(left_shift, m1, sh1, m2, sh2, mo, sho)


def sub_int8_params(input1_scale: float, input2_scale: float, output_scale: float) -> ArithmeticParams:
    """Mirror of TFLM ``CalculateOpDataSub`` (int8): the same constants as :func:`add_int8_params`.

    Left shift 20 and the ratios computed in double from the float32 scales.
    (Some TFLM revisions of sub_common.cc divide in float32 instead, which moves
    the multipliers' low bits and flips about 1 in 30,000 outputs; the TFLM and
    TFLite builds on PyPI compute in double, which is what this mirrors.)
    """
    return add_int8_params(input1_scale, input2_scale, output_scale)


def _add_sub(x1, zp1, x2, zp2, params: ArithmeticParams, zpo, act_min, act_max, sign: int):
    x1, x2 = _i64(x1), _i64(x2)
    v1 = wrap_int32((x1 - int(zp1)) * (1 << params.left_shift))
    v2 = wrap_int32((x2 - int(zp2)) * (1 << params.left_shift))
    s1 = _rdbp(_srdhm(v1, params.input1_multiplier), -params.input1_shift)
    s2 = _rdbp(_srdhm(v2, params.input2_multiplier), -params.input2_shift)
    raw = wrap_int32(s1 + sign * s2)
    out = _rdbp(_srdhm(raw, params.output_multiplier), -params.output_shift) + int(zpo)
    return np.clip(out, act_min, act_max).astype(np.int8)


def add_int8(
    x1,
    x1_scale: float,
    x1_zero_point: int,
    x2,
    x2_scale: float,
    x2_zero_point: int,
    output_scale: float,
    output_zero_point: int,
    act_min: int = INT8_MIN,
    act_max: int = INT8_MAX,
) -> np.ndarray:
    """Mirror of TFLM int8 ADD (``reference_integer_ops::AddFunc``), numpy-broadcasting.

    Per element: ``v_i = (x_i - zp_i) << 20``; ``s_i =
    MultiplyByQuantizedMultiplierSmallerThanOneExp(v_i, m_i, shift_i)``;
    ``out = MBQMSmallerThanOneExp(s1 + s2, m_out, shift_out) + zp_out``,
    clamped to ``[act_min, act_max]`` (see :func:`activation_range_int8`).
    """
    p = add_int8_params(x1_scale, x2_scale, output_scale)
    return _add_sub(x1, x1_zero_point, x2, x2_zero_point, p, output_zero_point, act_min, act_max, +1)


def sub_int8(
    x1,
    x1_scale: float,
    x1_zero_point: int,
    x2,
    x2_scale: float,
    x2_zero_point: int,
    output_scale: float,
    output_zero_point: int,
    act_min: int = INT8_MIN,
    act_max: int = INT8_MAX,
) -> np.ndarray:
    """Mirror of TFLM int8 SUB (``reference_ops`` ``SubElementwise``): as Add with ``s1 - s2``."""
    p = sub_int8_params(x1_scale, x2_scale, output_scale)
    return _add_sub(x1, x1_zero_point, x2, x2_zero_point, p, output_zero_point, act_min, act_max, -1)


# ----------------------------------------------------------------------------
# Mul (micro/kernels/mul_common.cc; reference_integer_ops/mul.h)
# ----------------------------------------------------------------------------


class MulParams(NamedTuple):
    output_multiplier: int
    output_shift: int


def mul_int8_params(input1_scale: float, input2_scale: float, output_scale: float) -> MulParams:
    """Mirror of TFLM ``CalculateOpDataMul`` (int8): ``QuantizeMultiplier(s1 * s2 / s_out)`` in double."""
    real = _f32(input1_scale) * _f32(input2_scale) / _f32(output_scale)
    return MulParams(*quantize_multiplier(real))


def mul_int8(
    x1,
    x1_scale: float,
    x1_zero_point: int,
    x2,
    x2_scale: float,
    x2_zero_point: int,
    output_scale: float,
    output_zero_point: int,
    act_min: int = INT8_MIN,
    act_max: int = INT8_MAX,
) -> np.ndarray:
    """Mirror of TFLM int8 MUL (``reference_integer_ops::MulElementwise`` / ``BroadcastMul4DSlow``).

    ``out = zp_out + MultiplyByQuantizedMultiplier((x1 - zp1) * (x2 - zp2), m, shift)``, clamped.
    """
    p = mul_int8_params(x1_scale, x2_scale, output_scale)
    prod = (_i64(x1) - int(x1_zero_point)) * (_i64(x2) - int(x2_zero_point))
    out = int(output_zero_point) + _mbqm(prod, p.output_multiplier, p.output_shift)
    return np.clip(out, act_min, act_max).astype(np.int8)


# ----------------------------------------------------------------------------
# AveragePool (reference_integer_ops/pooling.h)
# ----------------------------------------------------------------------------


def rounded_average(acc, count):
    """The int8 AveragePool division: ``acc > 0 ? (acc + count/2) / count : (acc - count/2) / count``.

    C truncating division throughout, so halves round away from zero.
    """
    acc = _i64(acc)
    count = _i64(count)
    if np.any(count <= 0):
        raise ValueError("count must be positive")
    half = count // 2
    return _out32(np.where(acc > 0, _trunc_div(acc + half, count), _trunc_div(acc - half, count)))


def average_pool_int8(
    x,
    filter_hw: tuple[int, int],
    stride_hw: tuple[int, int],
    padding_hw: tuple[int, int] = (0, 0),
    output_hw: tuple[int, int] | None = None,
    act_min: int = INT8_MIN,
    act_max: int = INT8_MAX,
) -> np.ndarray:
    """Mirror of ``reference_integer_ops::AveragePool`` (int8, NHWC).

    Sums the raw int8 values (no zero-point handling: input and output share
    scale and zero point) over the window clipped to the input, divides by the
    number of in-bounds taps with :func:`rounded_average`, clamps.
    ``padding_hw`` are TFLite's ``padding_values`` (top, left offsets);
    ``output_hw`` defaults to ``(in + 2*pad - filter) // stride + 1``.
    """
    x = _i64(x)
    if x.ndim != 4:
        raise ValueError("expected an NHWC tensor")
    n, h, w, c = x.shape
    fh, fw = filter_hw
    sh, sw = stride_hw
    ph, pw = padding_hw
    if output_hw is None:
        output_hw = ((h + 2 * ph - fh) // sh + 1, (w + 2 * pw - fw) // sw + 1)
    oh, ow = output_hw
    out = np.empty((n, oh, ow, c), dtype=np.int64)
    for oy in range(oh):
        y0 = oy * sh - ph
        ys, ye = max(0, y0), min(h, y0 + fh)
        for ox in range(ow):
            x0 = ox * sw - pw
            xs, xe = max(0, x0), min(w, x0 + fw)
            count = (ye - ys) * (xe - xs)
            if count <= 0:
                raise ValueError("empty pooling window")
            acc = x[:, ys:ye, xs:xe, :].sum(axis=(1, 2))
            out[:, oy, ox, :] = rounded_average(acc, count)
    return np.clip(out, act_min, act_max).astype(np.int8)


# ----------------------------------------------------------------------------
# Mean (micro/kernels/reduce_common.cc; reference/reduce.h)
# ----------------------------------------------------------------------------


def mean_int8_multiplier(multiplier: int, shift: int, num_elements: int) -> tuple[int, int]:
    """The 1/N folding of ``reference_ops::QuantizedMeanOrSum`` (mean case).

    ``s = min(floor(log2 N), 32, 31 + shift)``;
    ``multiplier' = (multiplier << s) / N`` (int64, truncating); ``shift' = shift - s``.
    """
    if num_elements <= 0:
        raise ValueError("num_elements must be positive")
    s = 63 - (64 - int(num_elements).bit_length())  # 63 - CountLeadingZeros(uint64)
    s = min(s, 32)
    s = min(s, 31 + int(shift))
    return int((int(multiplier) << s) // int(num_elements)), int(shift) - s


def mean_int8(
    x,
    axis,
    input_scale: float,
    input_zero_point: int,
    output_scale: float,
    output_zero_point: int,
    keepdims: bool = True,
) -> np.ndarray:
    """Mirror of TFLM int8 MEAN: ``reference_ops::QuantizedMeanOrSum<int8_t, int32_t>`` (mean case).

    ``m, shift = QuantizeMultiplier(double(s_in) / double(s_out))``, folded with
    1/N by :func:`mean_int8_multiplier`; the int32 sum of the raw values over
    ``axis`` gives ``MultiplyByQuantizedMultiplier(sum - zp_in * N, m', shift') + zp_out``,
    clamped to int8.  This rounds to nearest; it is used even when input and
    output share scale and zero point (checked against TFLM 0.dev20261023 and
    TFLite's reference kernel on MCUNet's means).  Some TFLM revisions routed the
    equal-quantization case to ``reference_ops::Mean<int8_t, int32_t>``, a
    *truncating* ``sum / N``; the TFLM that produced the shared goldens does not.
    """
    x = _i64(x)
    axes = tuple(sorted({a % x.ndim for a in np.atleast_1d(axis).tolist()}))
    n = 1
    for a in axes:
        n *= x.shape[a]
    total = wrap_int32(x.sum(axis=axes, keepdims=keepdims))
    m, shift = quantize_multiplier(_f32(input_scale) / _f32(output_scale))
    m, shift = mean_int8_multiplier(m, shift, n)
    shifted = wrap_int32(total - int(input_zero_point) * n)
    out = _mbqm(shifted, m, shift) + int(output_zero_point)
    return np.clip(out, INT8_MIN, INT8_MAX).astype(np.int8)


# ----------------------------------------------------------------------------
# Softmax (micro/kernels/softmax_common.cc; reference/softmax.h)
# ----------------------------------------------------------------------------

SOFTMAX_SCALED_DIFF_INTEGER_BITS = 5
SOFTMAX_ACCUMULATION_INTEGER_BITS = 12


class SoftmaxParams(NamedTuple):
    input_multiplier: int
    input_left_shift: int
    diff_min: int


def softmax_int8_params(input_scale: float, beta: float = 1.0) -> SoftmaxParams:
    """Mirror of TFLM ``CalculateSoftmaxParams`` for int8 in / int8 out.

    ``PreprocessSoftmaxScaling(beta, s_in, kScaledDiffIntegerBits=5)`` and
    ``diff_min = -CalculateInputRadius(5, input_left_shift)``.  The output must
    have scale 1/256 and zero point -128 (TFLM checks this).
    """
    m, left = preprocess_softmax_scaling(_f32(beta), _f32(input_scale), SOFTMAX_SCALED_DIFF_INTEGER_BITS)
    diff_min = -calculate_input_radius(SOFTMAX_SCALED_DIFF_INTEGER_BITS, left)
    return SoftmaxParams(m, left, diff_min)


def softmax_int8(x, input_scale: float, beta: float = 1.0, axis: int = -1) -> np.ndarray:
    """Mirror of ``reference_ops::Softmax<int8_t, int8_t>`` as run by TFLM (output scale 1/256, zp -128).

    Per row: ``diff = x - max``; entries with ``diff >= diff_min`` contribute
    ``exp_on_negative_values<5>(MBQMGreaterThanOne(diff, m, left_shift))``,
    accumulated in Q12.19 (``Rescale<12>``); ``GetReciprocal`` of the sum gives
    a Q0.31 scale and ``num_bits_over_unit``; each output is
    ``RoundingDivideByPOT(SRDHM(scale, exp), num_bits_over_unit + 23) - 128``,
    saturated to int8.  Entries below ``diff_min`` output -128.
    The input zero point does not matter (only differences are used).
    """
    p = softmax_int8_params(input_scale, beta)
    x = np.moveaxis(_i64(x), axis, -1)
    max_in_row = x.max(axis=-1, keepdims=True)
    diff = x - max_in_row
    valid = diff >= p.diff_min
    rescaled = _srdhm(wrap_int32(diff * (1 << p.input_left_shift)), p.input_multiplier)
    exp = _exp_neg(rescaled, SOFTMAX_SCALED_DIFF_INTEGER_BITS)
    contrib = np.where(valid, _rescale(exp, 0, SOFTMAX_ACCUMULATION_INTEGER_BITS), 0)
    sum_of_exps = wrap_int32(contrib.sum(axis=-1, keepdims=True))
    shifted_scale, num_bits_over_unit = _get_reciprocal(sum_of_exps, SOFTMAX_ACCUMULATION_INTEGER_BITS)
    exponent = num_bits_over_unit + 31 - 8
    if np.any((exponent < 0) | (exponent > 31)):  # TFLITE_CHECK in the kernel
        raise AssertionError("softmax exponent out of [0, 31]")
    unsat = _rdbp(_srdhm(shifted_scale, exp), exponent)
    out = np.where(valid, np.clip(unsat + INT8_MIN, INT8_MIN, INT8_MAX), INT8_MIN)
    return np.moveaxis(out.astype(np.int8), -1, axis)


# ----------------------------------------------------------------------------
# Logistic (micro/kernels/logistic_common.cc; reference_integer_ops/logistic.h)
# ----------------------------------------------------------------------------

LOGISTIC_INPUT_INTEGER_BITS = 4


class LogisticParams(NamedTuple):
    input_zero_point: int
    input_multiplier: int
    input_left_shift: int
    input_range_radius: int


def logistic_int8_params(input_scale: float, input_zero_point: int) -> LogisticParams:
    """Mirror of TFLM ``CalculateArithmeticOpDataLogistic`` (int8).

    Note TFLM does *not* call QuantizeMultiplier here: ``q, left_shift =
    frexp(double(s_in) * 2**27)`` and ``multiplier = (int32)TfLiteRound(q * 2**31)``
    (no 2**31 correction; it cannot trigger for a float32 scale).  The output
    must have zero point -128 and is assumed to have scale 1/256.
    """
    real = _f32(input_scale) * float(1 << (31 - LOGISTIC_INPUT_INTEGER_BITS))
    q, left_shift = math.frexp(real)
    m = _round_half_away_scalar(q * float(1 << 31))
    if m > INT32_MAX:
        raise ValueError("input multiplier overflows int32 (TFLM would wrap)")
    radius = calculate_input_radius(LOGISTIC_INPUT_INTEGER_BITS, left_shift, 31)
    return LogisticParams(int(input_zero_point), int(m), int(left_shift), radius)


def logistic_int8(x, input_scale: float, input_zero_point: int) -> np.ndarray:
    """Mirror of ``reference_integer_ops::Logistic`` (int8) as run by TFLM.

    ``d = x - zp``; ``d <= -radius`` -> -128, ``d >= radius`` -> 127; otherwise
    ``q4 = MultiplyByQuantizedMultiplier(d, m, left_shift)`` (Q4.27),
    ``y = gemmlowp::logistic(q4)`` (Q0.31), output
    ``clamp(RoundingDivideByPOT(y, 23) - 128)``.

    TFLite (non-micro) instead evaluates int8 Logistic through a float lookup
    table, so ai-edge-litert is not an oracle for this op.
    """
    p = logistic_int8_params(input_scale, input_zero_point)
    return saturating_activation(_i64(x) - p.input_zero_point, p, _logistic, 31 - 8, INT8_MIN)


def saturating_activation(d: np.ndarray, p, function, shift: int, offset: int) -> np.ndarray:
    """The body TFLM's int8 Logistic and Tanh share: ``d = x - zp`` at or beyond
    the input radius saturates; inside it ``q4 = MultiplyByQuantizedMultiplier(d,
    m, left_shift)`` (Q4.27) goes through the gemmlowp ``function`` (Q0.31 out),
    then ``clamp(RoundingDivideByPOT(y, shift) + offset)``."""
    r = p.input_range_radius
    q4 = _mbqm(np.clip(d, -r, r), p.input_multiplier, p.input_left_shift)
    mid = np.clip(_rdbp(function(q4, 4), shift) + offset, INT8_MIN, INT8_MAX)
    return np.where(d <= -r, INT8_MIN, np.where(d >= r, INT8_MAX, mid)).astype(np.int8)


# ----------------------------------------------------------------------------
# HardSwish (micro/kernels/hard_swish_common.cc; reference/hard_swish.h)
# ----------------------------------------------------------------------------


class HardSwishParams(NamedTuple):
    input_zero_point: int
    output_zero_point: int
    reluish_multiplier_fixedpoint_int16: int
    reluish_multiplier_exponent: int
    output_multiplier_fixedpoint_int16: int
    output_multiplier_exponent: int


def downscale_int32_to_int16_multiplier(multiplier: int) -> int:
    """Mirror of TFLite ``DownScaleInt32ToInt16Multiplier``: ``(m + 2**15) >> 16``, saturating to 32767."""
    multiplier = int(multiplier)
    if multiplier < 0:
        raise ValueError("multiplier must be >= 0")
    if multiplier >= INT32_MAX - (1 << 15):
        return INT16_MAX
    return (multiplier + (1 << 15)) >> 16


def hard_swish_int8_params(
    input_scale: float, input_zero_point: int, output_scale: float, output_zero_point: int
) -> HardSwishParams:
    """Mirror of TFLM ``HardSwishPrepare`` (int8), as built in TFLM 0.dev20261023 (PyPI).

    In double from the float32 scales: ``hires = s_in / 128``,
    ``out_mult = hires / s_out``, ``reluish_mult = hires / (3 / 32768)``; each
    through ``QuantizeMultiplier`` and downscaled to int16.  The output exponent
    must be <= 0.  (TFLite's activations.cc, and older TFLM sources, compute the
    three ratios in float32; that moves the multipliers' low bits and changes
    rare outputs by 1.  Bit-exactness with TFLM was checked on random scales.)
    """
    s_in, s_out = _f32(input_scale), _f32(output_scale)
    hires = (1.0 / 128.0) * s_in
    reluish_scale = 3.0 / 32768.0
    om, oe = quantize_multiplier(hires / s_out)
    rm, re_ = quantize_multiplier(hires / reluish_scale)
    if oe > 0:
        raise ValueError("HardSwish output multiplier exponent must be <= 0 (TFLM rejects the model)")
    return HardSwishParams(
        int(input_zero_point),
        int(output_zero_point),
        downscale_int32_to_int16_multiplier(rm),
        re_,
        downscale_int32_to_int16_multiplier(om),
        oe,
    )


def _srdhm16(a: np.ndarray, b) -> np.ndarray:
    overflow = (a == b) & (a == INT16_MIN)
    ab = a * b
    nudge = np.where(ab >= 0, 1 << 14, 1 - (1 << 14))
    high = _wrap16(_trunc_div(ab + nudge, 1 << 15))
    return np.where(overflow, INT16_MAX, high)


def _sdhm16(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """TFLite ``SaturatingDoublingHighMul(int16, int16)``: truncating, not rounding."""
    overflow = (a == b) & (a == INT16_MIN)
    high = _wrap16(_trunc_div(a * b, 1 << 15))
    return np.where(overflow, INT16_MAX, high)


def _rdbp16(x: np.ndarray, exponent: int) -> np.ndarray:
    mask = _wrap16(np.int64((1 << exponent) - 1))  # Dup<int16_t>((1ll << e) - 1)
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0)
    return _wrap16((x >> exponent) + (remainder > threshold))


def _sat_left_shift16(x: np.ndarray, amount: int) -> np.ndarray:
    return np.clip(x * (1 << amount), INT16_MIN, INT16_MAX)


def hard_swish_int8(
    x, input_scale: float, input_zero_point: int, output_scale: float, output_zero_point: int
) -> np.ndarray:
    """Mirror of ``reference_ops::HardSwish<int8_t>`` (quantized), TFLM and TFLite alike.

    All in int16 fixed point: ``v = (x - zp_in) * 128``; ``pre_out =
    SRDHM16(v, out_mult16)``; the "reluish" factor rescales ``v`` so that 3.0
    maps to 32768 (saturating shifts, SRDHM16, rounding right shift), is mapped
    to [0, 1] by ``(r + 32768) >> 1``; ``SaturatingDoublingHighMul(r, pre_out)``
    (truncating), ``RoundingDivideByPOT(., -out_exponent) + zp_out``, clamped to int8.
    """
    p = hard_swish_int8_params(input_scale, input_zero_point, output_scale, output_zero_point)
    v = _wrap16(_i64(x) - p.input_zero_point)
    hires = _wrap16(v * (1 << 7))
    pre_out = _srdhm16(hires, p.output_multiplier_fixedpoint_int16)
    r = hires
    e = p.reluish_multiplier_exponent
    if e > 0:
        r = _sat_left_shift16(r, e - 1)
    r = _srdhm16(r, p.reluish_multiplier_fixedpoint_int16)
    if e > 0:
        r = _sat_left_shift16(r, 1)
    if e < 0:
        r = _rdbp16(r, -e)
    r = _wrap16((r + (1 << 15)) >> 1)
    pre_shift = _sdhm16(r, pre_out)
    out = _wrap16(_rdbp16(pre_shift, -p.output_multiplier_exponent) + p.output_zero_point)
    return np.clip(out, INT8_MIN, INT8_MAX).astype(np.int8)


# ----------------------------------------------------------------------------
# Tanh (micro/kernels/tanh_common.cc; reference_integer_ops/tanh.h)
# ----------------------------------------------------------------------------

def tanh_int8_params(input_scale: float, input_zero_point: int) -> LogisticParams:
    """Mirror of TFLM ``CalculateArithmeticOpDataTanh`` (int8): the same frexp
    multiplier and radius as Logistic's, with 4 integer bits."""
    return logistic_int8_params(input_scale, input_zero_point)


def tanh_int8(x, input_scale: float, input_zero_point: int) -> np.ndarray:
    """Mirror of ``reference_integer_ops::Tanh`` (int8) as run by TFLM.

    ``d = x - zp``; ``d <= -radius`` -> -128, ``d >= radius`` -> 127; otherwise
    ``q4 = MultiplyByQuantizedMultiplier(d, m, left_shift)`` (Q4.27),
    ``y = gemmlowp::tanh(q4)`` (Q0.31), output ``clamp(RoundingDivideByPOT(y, 24))``:
    scale 1/128, zero point 0.
    """
    p = tanh_int8_params(input_scale, input_zero_point)
    return saturating_activation(_i64(x) - p.input_zero_point, p, _tanh, 31 - 7, 0)


# ----------------------------------------------------------------------------
# LeakyRelu (micro/kernels/leaky_relu_common.cc; reference_ops::QuantizeLeakyRelu)
# ----------------------------------------------------------------------------


class LeakyReluParams(NamedTuple):
    identity_multiplier: int
    identity_shift: int
    alpha_multiplier: int
    alpha_shift: int


def leaky_relu_int8_params(input_scale: float, alpha: float, output_scale: float) -> LeakyReluParams:
    """Mirror of TFLM ``CalculateOpDataLeakyRelu``: the products and quotients in
    float32 (``input->params.scale * params->alpha / output->params.scale``), then
    widened to double for QuantizeMultiplier."""
    si, a, so = np.float32(input_scale), np.float32(alpha), np.float32(output_scale)
    alpha_mult = quantize_multiplier(float(np.float32(np.float32(si * a) / so)))
    identity_mult = quantize_multiplier(float(np.float32(si / so)))
    return LeakyReluParams(*identity_mult, *alpha_mult)


def leaky_relu_int8(x, input_scale: float, input_zero_point: int, alpha: float, output_scale: float,
                    output_zero_point: int) -> np.ndarray:
    """Mirror of ``reference_ops::QuantizeLeakyRelu`` (int8): ``x - zp_in`` times the
    identity multiplier where it is >= 0, the alpha multiplier below, plus ``zp_out``."""
    p = leaky_relu_int8_params(input_scale, alpha, output_scale)
    d = _i64(x) - int(input_zero_point)
    pos = _mbqm(d, p.identity_multiplier, p.identity_shift)
    neg = _mbqm(d, p.alpha_multiplier, p.alpha_shift)
    out = np.where(d >= 0, pos, neg) + int(output_zero_point)
    return np.clip(out, INT8_MIN, INT8_MAX).astype(np.int8)


# ----------------------------------------------------------------------------
# Lookup tables (TFLite's PopulateLookupTable, kernels/internal/common.h)
# ----------------------------------------------------------------------------


def lookup_table_int8(fn, input_scale: float, input_zero_point: int, output_scale: float,
                      output_zero_point: int) -> np.ndarray:
    """The 256-entry int8 table of a float function, as TFLite's ``LUTPopulate``
    builds the tables of its int8 ELU / GELU / (optimized) Tanh and Logistic
    kernels, all in float32: ``dequantized = s_in * (q - zp_in)``,
    ``y = fn(dequantized)``, ``q_out = round(y * (1 / s_out)) + zp_out`` (round
    half away from zero) clamped to int8.  Entry ``i`` is the output for the
    input value ``i - 128``.

    ``fn`` takes and returns a float32 array; non-finite results clamp to the
    int8 range (a NaN to the zero point), so any table is defined."""
    q = np.arange(INT8_MIN, INT8_MAX + 1, dtype=np.int64)
    f32 = np.float32
    dequantized = (f32(input_scale) * (q - int(input_zero_point)).astype(f32)).astype(f32)
    inverse_scale = f32(1) / f32(output_scale)
    with np.errstate(all="ignore"):
        y = np.asarray(fn(dequantized), dtype=f32)
        scaled = (y * inverse_scale).astype(f32)
    scaled = np.where(np.isnan(scaled), f32(0), np.clip(scaled, f32(-1e6), f32(1e6))).astype(f32)
    # roundf: exact in double for a float32 value (floor(x + 0.5) in float32 is not)
    out = round_half_away(scaled.astype(np.float64)).astype(np.int64) + int(output_zero_point)
    return np.clip(out, INT8_MIN, INT8_MAX).astype(np.int8)


# ----------------------------------------------------------------------------
# ResizeBilinear (reference_ops::ResizeBilinearInteger)
# ----------------------------------------------------------------------------


def resize_bilinear_scale_10(in_size: int, out_size: int, align_corners: bool) -> int:
    """TFLite's Q10 ratio of input to output size (rounded), (in - 1) / (out - 1) with align_corners."""
    if align_corners and out_size > 1:
        return ((1 << 10) * (in_size - 1) + (out_size - 1) // 2) // (out_size - 1)
    return ((1 << 10) * in_size + out_size // 2) // out_size


def _interpolation_values(n_out: int, scale_10: int, half_pixel: bool, in_size: int):
    v = np.arange(n_out, dtype=np.int64) * scale_10
    if half_pixel:
        v = v + scale_10 // 2 - (1 << 9)
    lower = np.maximum(_trunc_div(v, 1 << 10), 0)
    upper = np.minimum(_trunc_div(v + (1 << 10) - 1, 1 << 10), in_size - 1)
    return v, lower, upper


def resize_bilinear_int8(x, out_h: int, out_w: int, scale_h_10: int, scale_w_10: int, half_pixel: bool):
    """Mirror of ``ResizeBilinearInteger`` (int8) on an NHWC array: Q10 source
    coordinates, four Q20 products, ``(sum +- 2^19) / 2^20`` truncating (a rounding
    half away from zero), input and output in one scale."""
    x = _i64(x)
    n, h, w, c = x.shape
    iy, y0, y1 = _interpolation_values(out_h, scale_h_10, half_pixel, h)
    ix, x0, x1 = _interpolation_values(out_w, scale_w_10, half_pixel, w)
    wy1 = (iy - (y0 << 10))[:, None, None]  # weight of row y1, Q10
    wx1 = (ix - (x0 << 10))[None, :, None]
    wy0, wx0 = (1 << 10) - wy1, (1 << 10) - wx1
    out = np.empty((n, out_h, out_w, c), dtype=np.int64)
    for b in range(n):
        img = x[b]
        acc = (img[y0][:, x0] * wy0 * wx0 + img[y1][:, x0] * wy1 * wx0
               + img[y0][:, x1] * wy0 * wx1 + img[y1][:, x1] * wy1 * wx1)
        out[b] = _trunc_div(acc + np.where(acc > 0, 1 << 19, -(1 << 19)), 1 << 20)
    return out.astype(np.int8)
