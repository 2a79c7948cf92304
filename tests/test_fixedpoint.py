"""tinyc.quant.fixedpoint: TFLite / TFLM integer arithmetic, checked four ways.

1. Known values of each primitive.
2. Hypothesis properties: every vectorized function against a scalar reference
   written here with Python big ints / Fractions (independent formulations:
   SRDHM as floor(ab/2^31 + 1/2), RoundingDivideByPOT as round-half-away, ...).
3. The int8 op helpers against float math (within 1 LSB) and exact invariants.
4. Oracles: TFLite Micro itself.  The shared goldens are TFLM outputs; PyPI
   ``ai-edge-litert`` (BUILTIN_REF kernels, every intermediate tensor kept)
   reproduces TFLM layer by layer except FULLY_CONNECTED (single rounding),
   LOGISTIC (float lookup table) and MUL / HARD_SWISH multipliers (float32
   products); PyPI ``tflite-micro``
   is TFLM proper, run here on the shared models and on single-op models built
   on the fly.  Oracle tests skip when those packages are not installed.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tinyc.quant import fixedpoint as fx

INT32_MIN, INT32_MAX = fx.INT32_MIN, fx.INT32_MAX
int32s = st.integers(INT32_MIN, INT32_MAX)
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ----------------------------------------------------------------------------
# Scalar references (Python big ints / Fractions)
# ----------------------------------------------------------------------------


def ref_wrap32(v: int) -> int:
    return ((v + (1 << 31)) % (1 << 32)) - (1 << 31)


def ref_round_half_away(f: Fraction) -> int:
    n = math.floor(abs(f) + Fraction(1, 2))
    return n if f >= 0 else -n


def ref_srdhm(a: int, b: int) -> int:
    # VQRDMULH rounds (a*b)/2^31 to nearest with ties toward +infinity, saturating.
    return min(math.floor(Fraction(a * b, 1 << 31) + Fraction(1, 2)), INT32_MAX)


def ref_rdbp(x: int, e: int) -> int:
    return ref_round_half_away(Fraction(x, 1 << e))


def ref_mbqm(x: int, m: int, shift: int) -> int:
    left, right = max(shift, 0), max(-shift, 0)
    return ref_rdbp(ref_srdhm(ref_wrap32(x * (1 << left)), m), right)


def ref_quantize_multiplier(real: float) -> tuple[int, int]:
    if real == 0:
        return 0, 0
    f = Fraction(real)  # the exact double
    shift = 0
    while abs(f) >= 1:
        f /= 2
        shift += 1
    while abs(f) < Fraction(1, 2):
        f *= 2
        shift -= 1
    q = ref_round_half_away(f * (1 << 31))
    if q == 1 << 31:
        q //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    return q, shift


# ----------------------------------------------------------------------------
# QuantizeMultiplier
# ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "real, expected",
    [
        (0.5, (1 << 30, 0)),
        (1.0, (1 << 30, 1)),
        (0.0, (0, 0)),
        (0.75, (1610612736, 0)),
        (-0.5, (-(1 << 30), 0)),
        (2.0**-31, (1 << 30, -30)),
        (2.0**-32, (1 << 30, -31)),
        (2.0**-33, (0, 0)),  # shift < -31 flushes to zero
        (1e-12, (0, 0)),
        (1 - 2.0**-40, (1 << 30, 1)),  # q * 2^31 rounds to 2^31: corrected to 2^30, shift + 1
        (0.1, (1717986918, -3)),
    ],
)
def test_quantize_multiplier_known(real, expected):
    assert fx.quantize_multiplier(real) == expected
    m, s = fx.quantize_multiplier_array([real])
    assert (int(m[0]), int(s[0])) == expected


@SETTINGS
@given(st.floats(min_value=1e-15, max_value=1e9, allow_nan=False), st.booleans())
def test_quantize_multiplier_matches_fraction_reference(real, negative):
    real = -real if negative else real
    assert fx.quantize_multiplier(real) == ref_quantize_multiplier(real)


@SETTINGS
@given(st.lists(st.floats(min_value=0, max_value=1e6, allow_nan=False), min_size=1, max_size=40))
def test_quantize_multiplier_array_matches_scalar(reals):
    m, s = fx.quantize_multiplier_array(np.array(reals))
    assert m.dtype == np.int32 and s.dtype == np.int32
    assert [(int(a), int(b)) for a, b in zip(m, s)] == [fx.quantize_multiplier(r) for r in reals]


def test_quantize_multiplier_variants_check_ranges():
    assert fx.quantize_multiplier_smaller_than_one_exp(0.25) == (1 << 30, -1)
    assert fx.quantize_multiplier_greater_than_one(3.0) == (3 << 29, 2)
    with pytest.raises(ValueError):
        fx.quantize_multiplier_smaller_than_one_exp(1.0)
    with pytest.raises(ValueError):
        fx.quantize_multiplier_greater_than_one(1.0)
    with pytest.raises(ValueError):
        fx.quantize_multiplier(float("inf"))


def test_preprocess_softmax_scaling_and_input_radius():
    # beta * scale * 2^26 = 0.17185351 * 2^26 (float32 scale widened to double)
    m, left = fx.preprocess_softmax_scaling(1.0, float(np.float32(0.17185351)), 5)
    assert (m, left) == fx.quantize_multiplier(float(np.float32(0.17185351)) * 2.0**26)
    assert left == 24
    assert fx.calculate_input_radius(5, left) == math.floor(31 * 2**26 / 2**24)
    assert fx.calculate_input_radius(4, 0, 31) == 15 << 27


# ----------------------------------------------------------------------------
# SRDHM, RoundingDivideByPOT, MultiplyByQuantizedMultiplier
# ----------------------------------------------------------------------------


def test_srdhm_known():
    assert fx.saturating_rounding_doubling_high_mul(INT32_MIN, INT32_MIN) == INT32_MAX
    assert fx.saturating_rounding_doubling_high_mul(INT32_MAX, INT32_MAX) == INT32_MAX - 1
    assert fx.saturating_rounding_doubling_high_mul(1 << 30, 1 << 30) == 1 << 29
    assert fx.saturating_rounding_doubling_high_mul(INT32_MIN, INT32_MAX) == -INT32_MAX
    # a*b / 2^31 = -0.5: the nudge 1 - 2^30 with truncating division gives 0 (ties toward +inf)
    assert fx.saturating_rounding_doubling_high_mul(-1, 1 << 30) == 0
    assert fx.saturating_rounding_doubling_high_mul(1, 1 << 30) == 1
    assert fx.saturating_rounding_doubling_high_mul(-3, 1 << 30) == -1


@SETTINGS
@given(st.lists(st.tuples(int32s, int32s), min_size=1, max_size=30))
def test_srdhm_matches_reference(pairs):
    a = np.array([p[0] for p in pairs], dtype=np.int64)
    b = np.array([p[1] for p in pairs], dtype=np.int32)
    got = fx.saturating_rounding_doubling_high_mul(a, b)
    assert got.dtype == np.int32
    assert got.tolist() == [ref_srdhm(x, y) for x, y in pairs]


def test_rounding_divide_by_pot_known():
    rdbp = fx.rounding_divide_by_pot
    assert rdbp(-5, 1) == -3  # -2.5 rounds away from zero
    assert rdbp(5, 1) == 3
    assert rdbp(-4, 1) == -2
    assert rdbp(-6, 2) == -2  # -1.5 -> -2
    assert rdbp(-5, 2) == -1  # -1.25 -> -1
    assert rdbp(6, 2) == 2
    assert rdbp(123, 0) == 123
    assert rdbp(INT32_MIN, 31) == -1
    assert rdbp(INT32_MAX, 31) == 1
    assert rdbp(np.array([-3, 3, 10]), np.array([1, 1, 2])).tolist() == [-2, 2, 3]


@SETTINGS
@given(st.lists(st.tuples(int32s, st.integers(0, 31)), min_size=1, max_size=30))
def test_rounding_divide_by_pot_matches_reference(pairs):
    x = np.array([p[0] for p in pairs])
    e = np.array([p[1] for p in pairs])
    assert fx.rounding_divide_by_pot(x, e).tolist() == [ref_rdbp(v, k) for v, k in pairs]


def test_saturating_rounding_multiply_by_pot():
    f = fx.saturating_rounding_multiply_by_pot
    assert f(1 << 28, 2) == 1 << 30
    assert f(1 << 29, 2) == INT32_MAX
    assert f(-(1 << 29), 2) == INT32_MIN
    assert f(-(1 << 29) + 1, 2) == -(1 << 31) + 4
    assert f(-5, -1) == -3
    assert f(7, 0) == 7


def test_mbqm_known():
    mbqm = fx.multiply_by_quantized_multiplier
    assert mbqm(100, 1 << 30, 0) == 50
    assert mbqm(100, 1 << 30, 1) == 100
    assert mbqm(-100, 1 << 30, -2) == -13  # -12.5 rounds away from zero
    # Double rounding, as TFLM does it: SRDHM(-597, m) = -432 (from -431.6), then -432 / 32 = -13.5 -> -14,
    # where the exact product -13.487 rounds to -13.  (ic_resnet8's FC: TFLM 10, TFLite's single-rounding FC 11.)
    assert mbqm(-597, 1552512760, -5) == -14
    # per-channel multipliers / shifts broadcast against the accumulator array
    acc = np.array([[1000, -1000, 7], [3, 4, 5]])
    got = mbqm(acc, np.array([1 << 30, 1 << 30, 1 << 30]), np.array([0, -1, 2]))
    assert got.tolist() == [[500, -250, 14], [2, 1, 10]]


@SETTINGS
@given(
    st.lists(
        st.tuples(int32s, st.integers(0, INT32_MAX), st.integers(-31, 30)),
        min_size=1,
        max_size=30,
    )
)
def test_mbqm_matches_reference(triples):
    x = np.array([t[0] for t in triples])
    m = np.array([t[1] for t in triples])
    s = np.array([t[2] for t in triples])
    assert fx.multiply_by_quantized_multiplier(x, m, s).tolist() == [ref_mbqm(*t) for t in triples]


@SETTINGS
@given(st.integers(-(1 << 24), 1 << 24), st.floats(min_value=1e-6, max_value=50.0))
def test_mbqm_approximates_real_product(x, real):
    m, shift = fx.quantize_multiplier(real)
    got = int(fx.multiply_by_quantized_multiplier(x, m, shift))
    exact = Fraction(x) * m * Fraction(2) ** (shift - 31)
    assert abs(got - exact) <= 1
    if shift <= 0:
        assert fx.multiply_by_quantized_multiplier_smaller_than_one_exp(x, m, shift) == got
    else:
        assert fx.multiply_by_quantized_multiplier_greater_than_one(x, m, shift) == got


@SETTINGS
@given(
    st.integers(-(1 << 47), (1 << 47) - 1),
    st.integers(0, INT32_MAX),
    st.integers(-31, 7),
)
def test_mbqm_int64_matches_reference(x, m, shift):
    reduced = (m + (1 << 15)) >> 16 if m < 0x7FFF0000 else 0x7FFF
    total = 15 - shift
    expected = ref_wrap32((x * reduced + (1 << (total - 1))) >> total)
    assert fx.multiply_by_quantized_multiplier_int64(x, m, shift) == expected


# ----------------------------------------------------------------------------
# gemmlowp fixed-point functions vs float
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("integer_bits", [0, 1, 2, 3, 4, 5, 6, 7])
def test_exp_on_negative_values(integer_bits):
    rng = np.random.default_rng(integer_bits)
    a = -rng.integers(0, 1 << 31, 20000)
    a[:2] = [0, INT32_MIN]
    got = fx.exp_on_negative_values(a, integer_bits).astype(np.float64) / 2**31
    expected = np.exp(a / 2.0 ** (31 - integer_bits))
    assert np.abs(got - expected).max() < 1e-6
    assert fx.exp_on_negative_values(0, integer_bits) == INT32_MAX


def test_reciprocals_and_logistic_tanh():
    rng = np.random.default_rng(1)
    x = rng.integers(0, 1 << 31, 20000)
    xr = x / 2**31
    assert np.abs(fx.one_over_one_plus_x_for_x_in_0_1(x) / 2**31 - 1 / (1 + xr)).max() < 1e-7
    assert np.abs(fx.one_minus_x_over_one_plus_x_for_x_in_0_1(x) / 2**31 - (1 - xr) / (1 + xr)).max() < 1e-7
    for bits in (0, 3, 4, 5):
        a = rng.integers(INT32_MIN, INT32_MAX, 20000)
        a[0] = 0
        ar = a / 2.0 ** (31 - bits)
        assert np.abs(fx.fixed_point_logistic(a, bits) / 2**31 - 1 / (1 + np.exp(-ar))).max() < 1e-6
        assert np.abs(fx.fixed_point_tanh(a, bits) / 2**31 - np.tanh(ar)).max() < 1e-6
        assert fx.fixed_point_logistic(0, bits) == 1 << 30
        assert fx.fixed_point_tanh(0, bits) == 0


@SETTINGS
@given(st.lists(st.integers(1, INT32_MAX), min_size=1, max_size=20))
def test_get_reciprocal(values):
    x = np.array(values)
    scale, bits_over = fx.get_reciprocal(x, 12)
    for v, s, n in zip(values, scale.tolist(), bits_over.tolist()):
        assert n == 12 - (32 - v.bit_length())
        recip = Fraction(s, 1 << 31) / Fraction(2) ** n  # ~ 1 / (v / 2^19)
        assert abs(recip * Fraction(v, 1 << 19) - 1) < Fraction(1, 10**7)


def test_count_leading_zeros32():
    vals = [0, 1, 2, 3, 255, 1 << 30, INT32_MAX, -1, INT32_MIN]
    assert fx.count_leading_zeros32(np.array(vals)).tolist() == [32, 31, 30, 30, 24, 1, 1, 0, 0]


# ----------------------------------------------------------------------------
# int8 op helpers vs float, and invariants
# ----------------------------------------------------------------------------


def _f32(v: float) -> float:
    return float(np.float32(v))


def _float_quantize(real: np.ndarray, scale: float, zp: int) -> np.ndarray:
    return np.clip(np.floor(real / _f32(scale) + 0.5) + zp, -128, 127)


def test_activation_range_int8():
    assert fx.activation_range_int8(None, 0.05, -128) == (-128, 127)
    assert fx.activation_range_int8("RELU", 0.05, -10) == (-10, 127)
    assert fx.activation_range_int8("RELU6", 0.05, -128) == (-128, -8)
    assert fx.activation_range_int8("RELU6", 0.01, -128) == (-128, 127)
    assert fx.activation_range_int8("RELU_N1_TO_1", 0.05, 0) == (-20, 20)
    # 6 / s is computed in float32 before rounding: 134.4999... in double, 134.5 in float32.
    assert fx.activation_range_int8("RELU6", 0.044609665870666504, -128) == (-128, 7)


def test_rounded_average():
    acc = np.array([5, -5, 7, -7, 0, 4, -4, 6])
    cnt = np.array([2, 2, 3, 3, 3, 8, 8, 4])
    assert fx.rounded_average(acc, cnt).tolist() == [3, -3, 2, -2, 0, 1, -1, 2]


@SETTINGS
@given(st.integers(-(1 << 24), 1 << 24), st.integers(1, 4096))
def test_rounded_average_is_round_half_away(acc, count):
    assert fx.rounded_average(acc, count) == ref_round_half_away(Fraction(acc, count))


@pytest.mark.parametrize("seed", range(6))
def test_softmax_int8_vs_float(seed):
    rng = np.random.default_rng(seed)
    depth = int(rng.integers(2, 40))
    scale = _f32(10 ** rng.uniform(-2.5, 0.5))
    beta = float(rng.choice([1.0, 0.5, 2.0]))
    x = rng.integers(-128, 128, (5, depth)).astype(np.int8)
    y = fx.softmax_int8(x, scale, beta)
    assert y.dtype == np.int8 and y.shape == x.shape
    z = x.astype(np.float64) * scale * beta
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    assert np.abs(y.astype(int) - _float_quantize(p, 1 / 256, -128)).max() <= 1
    # outputs (scale 1/256, zero point -128) sum to ~256
    sums = (y.astype(int) + 128).sum(axis=1)
    assert np.all(np.abs(sums - 256) <= depth)
    # only differences matter: shifting a row leaves it unchanged
    shift = int(rng.integers(-20, 20))
    shifted = np.clip(x.astype(int) + shift, -128, 127)
    rows = np.all(shifted == x.astype(int) + shift, axis=1)
    assert np.array_equal(fx.softmax_int8(shifted[rows], scale, beta), y[rows])
    # monotone within a row; the row maximum gets the largest output
    order = np.argsort(x, axis=1, kind="stable")
    assert np.all(np.diff(np.take_along_axis(y.astype(int), order, axis=1), axis=1) >= 0)


def test_softmax_int8_axis_and_diff_min():
    x = np.array([[127, -128, 0], [5, 5, 5]], dtype=np.int8)
    y = fx.softmax_int8(x, 1.0)
    assert y[0].tolist() == [127, -128, -128]  # below diff_min: exactly -128
    assert y[1].tolist() == [-43, -43, -43]
    assert np.array_equal(fx.softmax_int8(x.T, 1.0, axis=0), y.T)
    p = fx.softmax_int8_params(1.0)
    assert p.diff_min < 0 and p.input_left_shift >= 0


@pytest.mark.parametrize("scale, zp", [(0.05, 0), (0.1, -20), (0.0078125, 5), (0.5, 100), (1e-3, -128), (1.5, 3)])
def test_logistic_int8_vs_float(scale, zp):
    x = np.arange(-128, 128)
    y = fx.logistic_int8(x, scale, zp)
    f = 1 / (1 + np.exp(-(x - zp) * _f32(scale)))
    assert np.abs(y.astype(int) - _float_quantize(f, 1 / 256, -128)).max() <= 1
    assert np.all(np.diff(y.astype(int)) >= 0)


@pytest.mark.parametrize(
    "si, zi, so, zo", [(0.05, 0, 0.03, -30), (0.1, -20, 0.05, -100), (0.001, 3, 0.001, 0), (0.5, -5, 0.3, -110)]
)
def test_hard_swish_int8_vs_float(si, zi, so, zo):
    x = np.arange(-128, 128)
    y = fx.hard_swish_int8(x, si, zi, so, zo)
    r = (x - zi) * _f32(si)
    assert np.abs(y.astype(int) - _float_quantize(r * np.clip(r + 3, 0, 6) / 6, so, zo)).max() <= 1


@pytest.mark.parametrize("seed", range(4))
def test_binary_ops_and_mean_vs_float(seed):
    rng = np.random.default_rng(seed)
    s1, s2, so = (_f32(10 ** rng.uniform(-2, 0)) for _ in range(3))
    z1, z2, zo = (int(v) for v in rng.integers(-100, 100, 3))
    a = rng.integers(-128, 128, (2, 3, 4, 5))
    b = rng.integers(-128, 128, (1, 1, 4, 5))  # broadcasts
    ra, rb = (a - z1) * s1, (b - z2) * s2
    for fn, real in [(fx.add_int8, ra + rb), (fx.sub_int8, ra - rb), (fx.mul_int8, ra * rb)]:
        got = fn(a, s1, z1, b, s2, z2, so, zo)
        assert got.dtype == np.int8 and got.shape == a.shape
        assert np.abs(got.astype(int) - _float_quantize(real, so, zo)).max() <= 1, fn.__name__
    lo, hi = fx.activation_range_int8("RELU6", so, zo)
    clamped = fx.add_int8(a, s1, z1, b, s2, z2, so, zo, lo, hi)
    assert clamped.min() >= lo and clamped.max() <= hi
    m = fx.mean_int8(a, (1, 2), s1, z1, so, zo)
    assert m.shape == (2, 1, 1, 5)
    assert np.abs(m.astype(int) - _float_quantize(ra.mean(axis=(1, 2), keepdims=True), so, zo)).max() <= 1
    m2 = fx.mean_int8(a, -1, s1, z1, s1, z1, keepdims=False)
    assert m2.shape == (2, 3, 4)
    # Rounds (twice: SRDHM then RoundingDivideByPOT, so 47.4 can become 48), never truncates.
    assert np.abs(m2.astype(int) - a.mean(axis=-1)).max() < 1


def test_average_pool_int8():
    rng = np.random.default_rng(0)
    x = rng.integers(-128, 128, (1, 5, 6, 3))
    y = fx.average_pool_int8(x, (2, 3), (2, 3))
    assert y.shape == (1, 2, 2, 3)
    win = x[:, 0:2, 0:3, :].sum(axis=(1, 2))
    assert y[:, 0, 0, :].tolist() == fx.rounded_average(win, 6).tolist()
    # SAME-style padding: windows are clipped and divided by the in-bounds count
    y = fx.average_pool_int8(x, (3, 3), (1, 1), (1, 1), (5, 6))
    assert y[0, 0, 0].tolist() == fx.rounded_average(x[0, 0:2, 0:2].sum(axis=(0, 1)), 4).tolist()


# ----------------------------------------------------------------------------
# Oracles: TFLite Micro (goldens, tflite-micro) and TFLite's reference kernels
# ----------------------------------------------------------------------------

ACTIVATIONS = {0: None, 1: "RELU", 2: "RELU_N1_TO_1", 3: "RELU6"}

# name -> (.tflite under ../shared/models, golden file, how many golden samples to use)
SHARED = {
    "ic_resnet8": ("mlperf_tiny/ic_resnet8_int8.tflite", "mlperf_ic_resnet8", None),
    "kws_dscnn": ("mlperf_tiny/kws_dscnn_int8.tflite", "mlperf_kws_dscnn", None),
    "vww_mbv1": ("mlperf_tiny/vww_mbv1_int8.tflite", "mlperf_vww_mbv1", None),
    "sww": ("mlperf_tiny/sww_int8.tflite", "mlperf_sww", 12),
    "micro_speech": ("tflm/micro_speech_int8.tflite", "tflm_micro_speech", None),
    "ad_autoencoder": ("mlperf_tiny/ad_fc_autoencoder_int8.tflite", "mlperf_ad_autoencoder", 8),
    "mcunet_vww1": ("mcunet/mcunet_vww1.tflite", "mcunet_vww1", 3),
    "mcunet_320kb": ("mcunet/mcunet_320kb_imagenet.tflite", "mcunet_in3_320kb", 2),
    "mcunetv2_large": ("mcunet/mcunetv2_large.tflite", "mcunetv2_large", 1),
}


def _schema():
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError:
        try:
            from tflite_micro.python.tflite_micro import runtime
        except ImportError:
            pytest.skip("needs ai-edge-litert or tflite-micro (TFLite flatbuffer schema)")
        schema = runtime.schema_fb
    return schema


class Graph:
    """The operators of a .tflite and their tensors' quantization, read with the TFLite schema."""

    def __init__(self, model_bytes: bytes):
        s = _schema()
        m = s.ModelT.InitFromObj(s.Model.GetRootAsModel(bytearray(model_bytes), 0))
        self.builtin = {v: k for k, v in vars(s.BuiltinOperator).items() if not k.startswith("_")}
        sg = m.subgraphs[0]
        self.tensors = sg.tensors
        self.ops = []
        for op in sg.operators:
            oc = m.operatorCodes[op.opcodeIndex]
            name = self.builtin[max(oc.builtinCode, oc.deprecatedBuiltinCode)]
            self.ops.append((name, list(op.inputs), list(op.outputs), op.builtinOptions))

    def quant(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        q = self.tensors[index].quantization
        return np.asarray(q.scale, dtype=np.float32), np.asarray(q.zeroPoint, dtype=np.int64)


COVERED_OPS = {"ADD", "SUB", "MUL", "SOFTMAX", "LOGISTIC", "HARD_SWISH", "MEAN", "AVERAGE_POOL_2D", "FULLY_CONNECTED"}


def _act(options) -> str | None:
    return ACTIVATIONS[getattr(options, "fusedActivationFunction", 0) or 0]


def _mine(graph: Graph, name, inputs, outputs, options, get):
    """Our helper's result for one layer, from the oracle's input tensors; None if not covered."""
    if name not in COVERED_OPS:
        return None
    (s0, z0) = graph.quant(inputs[0])
    so, zo = graph.quant(outputs[0])
    x = get(inputs[0])
    if name in ("ADD", "SUB", "MUL"):
        s1, z1 = graph.quant(inputs[1])
        lo, hi = fx.activation_range_int8(_act(options), so[0], zo[0])
        fn = {"ADD": fx.add_int8, "SUB": fx.sub_int8, "MUL": fx.mul_int8}[name]
        return fn(x, s0[0], z0[0], get(inputs[1]), s1[0], z1[0], so[0], zo[0], lo, hi)
    if name == "SOFTMAX":
        return fx.softmax_int8(x, s0[0], options.beta)
    if name == "LOGISTIC":
        return fx.logistic_int8(x, s0[0], z0[0])
    if name == "HARD_SWISH":
        return fx.hard_swish_int8(x, s0[0], z0[0], so[0], zo[0])
    if name == "MEAN":
        out_rank = len(graph.tensors[outputs[0]].shape)
        return fx.mean_int8(x, get(inputs[1]), s0[0], z0[0], so[0], zo[0], keepdims=out_rank == x.ndim)
    if name == "AVERAGE_POOL_2D":
        o = options
        out_shape = graph.tensors[outputs[0]].shape
        h, w = x.shape[1:3]
        oh, ow = int(out_shape[1]), int(out_shape[2])
        if o.padding == 0:  # SAME
            ph = max((oh - 1) * o.strideH + o.filterHeight - h, 0) // 2
            pw = max((ow - 1) * o.strideW + o.filterWidth - w, 0) // 2
        else:
            ph = pw = 0
        lo, hi = fx.activation_range_int8(_act(o), so[0], zo[0])
        return fx.average_pool_int8(
            x, (o.filterHeight, o.filterWidth), (o.strideH, o.strideW), (ph, pw), (oh, ow), lo, hi
        )
    if name == "FULLY_CONNECTED":
        w = get(inputs[1]).astype(np.int64)
        sw, _ = graph.quant(inputs[1])
        acc = (x.astype(np.int64).reshape(-1, w.shape[1]) - z0[0]) @ w.T
        if len(inputs) > 2 and inputs[2] >= 0:
            acc = acc + get(inputs[2]).astype(np.int64)
        real = sw.astype(np.float64) * float(s0[0]) / float(so[0])  # double, from the float32 scales
        m, sh = fx.quantize_multiplier_array(real)
        lo, hi = fx.activation_range_int8(_act(options), so[0], zo[0])
        return np.clip(fx.multiply_by_quantized_multiplier(acc, m, sh).astype(np.int64) + zo[0], lo, hi)
    return None


def _litert_run(path, x):
    interp_mod = pytest.importorskip("ai_edge_litert.interpreter")
    it = interp_mod.Interpreter(
        model_path=str(path),
        experimental_op_resolver_type=interp_mod.OpResolverType.BUILTIN_REF,
        experimental_preserve_all_tensors=True,
    )
    it.allocate_tensors()
    d = it.get_input_details()[0]
    it.set_tensor(d["index"], x.reshape(d["shape"]).astype(d["dtype"]))
    it.invoke()
    return it.get_tensor


def _tflm_runtime():
    pytest.importorskip("tflite_micro")
    from tflite_micro.python.tflite_micro import runtime

    return runtime


def _samples(shared_models, gold, limit):
    g = np.load(shared_models / "goldens" / f"{gold}.npz")
    n = len(g["inputs"]) if limit is None else min(limit, len(g["inputs"]))
    return g["inputs"][:n], g["outputs"][:n]


# Per-layer checks against TFLite's reference kernels: ai-edge-litert equals TFLM on these ops.
# It does not on FULLY_CONNECTED (single-rounding requantization), LOGISTIC (float lookup table:
# differs from TFLM's gemmlowp logistic on near-ties), and its MUL / HARD_SWISH multipliers are
# float32 products (TFLM: double), which the shared models' MULs happen not to expose.
LITERT_OPS = {"ADD", "SUB", "MUL", "SOFTMAX", "MEAN", "AVERAGE_POOL_2D"}


@pytest.mark.parametrize(
    "name", ["ic_resnet8", "kws_dscnn", "vww_mbv1", "mcunet_vww1", "mcunet_320kb", "mcunetv2_large"]
)
def test_layers_match_tflite_reference_kernels(shared_models, name):
    path, gold, limit = SHARED[name]
    graph = Graph((shared_models / path).read_bytes())
    inputs, _ = _samples(shared_models, gold, limit)
    checked = set()
    for x in inputs:
        get = _litert_run(shared_models / path, x)
        for op, ins, outs, options in graph.ops:
            if op not in LITERT_OPS:
                continue
            mine = _mine(graph, op, ins, outs, options, get)
            ref = get(outs[0])
            assert np.array_equal(mine.reshape(ref.shape), ref), f"{name}: {op} {outs[0]}"
            checked.add(op)
    assert checked


@pytest.mark.parametrize("name", ["ic_resnet8", "kws_dscnn", "vww_mbv1", "sww", "micro_speech"])
def test_fc_and_softmax_reproduce_tflm_goldens(shared_models, name):
    """The last FULLY_CONNECTED + SOFTMAX, recomputed by us from the FC's input, equal TFLM's golden outputs.

    The FC input comes from TFLite's reference kernels (equal to TFLM up to there);
    the FC is requantized with our double-rounding MultiplyByQuantizedMultiplier,
    which TFLM uses and TFLite's reference FC (single rounding) does not.
    """
    path, gold, limit = SHARED[name]
    graph = Graph((shared_models / path).read_bytes())
    names = [op[0] for op in graph.ops]
    assert names[-1] == "SOFTMAX"
    sm = graph.ops[-1]
    producer = {o: i for i, op in enumerate(graph.ops) for o in op[2]}
    fc_index = producer[sm[1][0]]
    while graph.ops[fc_index][0] == "RESHAPE":
        fc_index = producer[graph.ops[fc_index][1][0]]
    fc = graph.ops[fc_index]
    assert fc[0] == "FULLY_CONNECTED"
    inputs, outputs = _samples(shared_models, gold, limit)
    for x, golden in zip(inputs, outputs):
        get = _litert_run(shared_models / path, x)
        logits = _mine(graph, *fc, get).astype(np.int8)
        probs = fx.softmax_int8(logits.reshape(get(sm[1][0]).shape), graph.quant(sm[1][0])[0][0], sm[3].beta)
        assert np.array_equal(probs.reshape(golden.shape), golden)


@pytest.mark.parametrize(
    "name", ["ic_resnet8", "kws_dscnn", "vww_mbv1", "ad_autoencoder", "mcunet_vww1", "mcunet_320kb", "mcunetv2_large"]
)
def test_layers_match_tflm(shared_models, name):
    """Every covered layer (incl. FULLY_CONNECTED) against TFLM's own intermediate tensors."""
    path, gold, limit = SHARED[name]
    model = (shared_models / path).read_bytes()
    graph = Graph(model)
    inputs, outputs = _samples(shared_models, gold, limit)
    runtime = _tflm_runtime()
    for x, golden in zip(inputs, outputs):
        it = runtime.Interpreter.from_bytes(model, intrepreter_config=runtime.InterpreterConfig.kPreserveAllTensors)
        d = it.get_input_details(0)
        it.set_input(x.reshape(d["shape"]).astype(d["dtype"]), 0)
        it.invoke()
        assert np.array_equal(it.get_output(0).reshape(golden.shape), golden)

        def get(i, it=it):
            t = graph.tensors[i]
            return np.asarray(it.GetTensor(i, 0)["tensor_data"]).reshape([int(d) for d in t.shape])

        for op, ins, outs, options in graph.ops:
            mine = _mine(graph, op, ins, outs, options, get)
            if mine is None:
                continue
            ref = get(outs[0])
            assert np.array_equal(mine.reshape(ref.shape), ref), f"{name}: {op} {outs[0]}"


# --- single-op models built here and run by TFLM (and by TFLite where it agrees) ---


def single_op_model(op_name: str, options, inputs: list[dict], outputs: list[dict]) -> bytes:
    """A one-operator int8 .tflite: inputs/outputs are dicts(shape, scale, zp[, data for constants])."""
    import flatbuffers

    s = _schema()
    m = s.ModelT()
    m.version = 3
    m.buffers = [s.BufferT()]
    tensors = []
    graph_inputs = []
    for i, spec in enumerate(inputs + outputs):
        t = s.TensorT()
        t.shape = list(spec["shape"])
        t.name = f"t{i}"
        data = spec.get("data")
        t.type = s.TensorType.INT32 if data is not None and data.dtype == np.int32 else s.TensorType.INT8
        if "scale" in spec:
            q = s.QuantizationParametersT()
            q.scale = [float(spec["scale"])]
            q.zeroPoint = [int(spec["zp"])]
            t.quantization = q
        buf = s.BufferT()
        if data is not None:
            buf.data = list(np.ascontiguousarray(data).tobytes())
        elif i < len(inputs):
            graph_inputs.append(i)
        m.buffers.append(buf)
        t.buffer = len(m.buffers) - 1
        tensors.append(t)
    code = getattr(s.BuiltinOperator, op_name)
    oc = s.OperatorCodeT()
    oc.builtinCode = code
    oc.deprecatedBuiltinCode = min(code, 127)
    oc.version = 1
    op = s.OperatorT()
    op.opcodeIndex = 0
    op.inputs = list(range(len(inputs)))
    op.outputs = list(range(len(inputs), len(inputs) + len(outputs)))
    if options is not None:
        op.builtinOptionsType = getattr(s.BuiltinOptions, type(options).__name__[:-1])
        op.builtinOptions = options
    sg = s.SubGraphT()
    sg.tensors = tensors
    sg.inputs = graph_inputs
    sg.outputs = op.outputs
    sg.operators = [op]
    m.subgraphs = [sg]
    m.operatorCodes = [oc]
    b = flatbuffers.Builder(1024)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


def _options(cls_name: str, **fields):
    s = _schema()
    o = getattr(s, cls_name)()
    for k, v in fields.items():
        setattr(o, k, v)
    return o


def _single_op_cases():
    """(op name, model bytes, inputs, our result) for a spread of quantization parameters."""
    rng = np.random.default_rng(2024)
    cases = []
    ramp = np.arange(-128, 128, dtype=np.int8).reshape(1, 256)
    for scale, zp in [
        (0.05, 0),
        (0.1, -20),
        (0.0078125, 5),
        (0.5, 100),
        (0.02, -128),
        (0.2357, 17),
        (1e-3, 0),
        (3.0, 0),
    ]:
        model = single_op_model(
            "LOGISTIC",
            None,
            [dict(shape=ramp.shape, scale=scale, zp=zp)],
            [dict(shape=ramp.shape, scale=1 / 256, zp=-128)],
        )
        cases.append(("LOGISTIC", model, [ramp], fx.logistic_int8(ramp, scale, zp)))
    for _ in range(12):
        si, so = (_f32(10 ** rng.uniform(-3, 0)) for _ in range(2))
        zi, zo = (int(v) for v in rng.integers(-128, 128, 2))
        if fx.quantize_multiplier(si / 128 / so)[1] > 0:
            continue
        model = single_op_model(
            "HARD_SWISH",
            _options("HardSwishOptionsT"),
            [dict(shape=ramp.shape, scale=si, zp=zi)],
            [dict(shape=ramp.shape, scale=so, zp=zo)],
        )
        cases.append(("HARD_SWISH", model, [ramp], fx.hard_swish_int8(ramp, si, zi, so, zo)))
    # Scales for which computing the multipliers in float32 instead of double changes outputs:
    # TFLM computes HardSwish, Mul and Sub multipliers in double (TFLite: float32 for HardSwish and Mul).
    si, zi, so, zo = 0.00924612581729889, 44, 0.0080427136272192, 65
    model = single_op_model(
        "HARD_SWISH",
        _options("HardSwishOptionsT"),
        [dict(shape=ramp.shape, scale=si, zp=zi)],
        [dict(shape=ramp.shape, scale=so, zp=zo)],
    )
    cases.append(("HARD_SWISH", model, [ramp], fx.hard_swish_int8(ramp, si, zi, so, zo)))
    grid_a = np.repeat(np.arange(-128, 128), 256).astype(np.int8).reshape(1, 65536)
    grid_b = np.tile(np.arange(-128, 128), 256).astype(np.int8).reshape(1, 65536)
    for op_name, fn, (s1, s2, so) in [
        ("MUL", fx.mul_int8, (0.22383220493793488, 0.47351911664009094, 0.9462253451347351)),
        ("SUB", fx.sub_int8, (0.48567384481430054, 0.41360560059547424, 0.001136453473009169)),
    ]:
        model = single_op_model(
            op_name,
            _options(f"{op_name.title()}OptionsT"),
            [dict(shape=grid_a.shape, scale=s1, zp=0), dict(shape=grid_b.shape, scale=s2, zp=0)],
            [dict(shape=grid_a.shape, scale=so, zp=0)],
        )
        cases.append((op_name, model, [grid_a, grid_b], fn(grid_a, s1, 0, grid_b, s2, 0, so, 0)))
    for beta in (1.0, 0.5, 2.0, 0.37):
        for scale in (0.01, 0.17185351, 1.0, 4.0):
            x = rng.integers(-128, 128, (3, 17), dtype=np.int8)
            model = single_op_model(
                "SOFTMAX",
                _options("SoftmaxOptionsT", beta=beta),
                [dict(shape=x.shape, scale=scale, zp=3)],
                [dict(shape=x.shape, scale=1 / 256, zp=-128)],
            )
            cases.append(("SOFTMAX", model, [x], fx.softmax_int8(x, scale, beta)))
    for trial in range(18):
        shp1 = (1, 4, 5, 6)
        shp2 = [(1, 4, 5, 6), (1, 1, 1, 6), (1, 4, 1, 1)][trial % 3]
        a = rng.integers(-128, 128, shp1, dtype=np.int8)
        b = rng.integers(-128, 128, shp2, dtype=np.int8)
        s1, s2, so = (_f32(10 ** rng.uniform(-3, 0)) for _ in range(3))
        z1, z2, zo = (int(v) for v in rng.integers(-128, 128, 3))
        act = int(rng.integers(0, 4))
        lo, hi = fx.activation_range_int8(ACTIVATIONS[act], so, zo)
        for op_name, fn in [("ADD", fx.add_int8), ("SUB", fx.sub_int8), ("MUL", fx.mul_int8)]:
            opts = _options(f"{op_name.title()}OptionsT", fusedActivationFunction=act)
            model = single_op_model(
                op_name,
                opts,
                [dict(shape=shp1, scale=s1, zp=z1), dict(shape=shp2, scale=s2, zp=z2)],
                [dict(shape=shp1, scale=so, zp=zo)],
            )
            cases.append((op_name, model, [a, b], fn(a, s1, z1, b, s2, z2, so, zo, lo, hi)))
    for h, w, fh, fw, sh, sw, padding in [
        (8, 8, 3, 3, 1, 1, 0),
        (8, 8, 3, 3, 2, 2, 0),
        (7, 9, 2, 3, 2, 2, 1),
        (5, 5, 5, 5, 1, 1, 1),
        (6, 10, 3, 2, 1, 3, 0),
    ]:
        x = rng.integers(-128, 128, (2, h, w, 5), dtype=np.int8)
        if padding == 0:  # SAME
            oh, ow = -(-h // sh), -(-w // sw)
            ph, pw = max((oh - 1) * sh + fh - h, 0) // 2, max((ow - 1) * sw + fw - w, 0) // 2
        else:
            oh, ow, ph, pw = (h - fh) // sh + 1, (w - fw) // sw + 1, 0, 0
        opts = _options("Pool2DOptionsT", padding=padding, strideW=sw, strideH=sh, filterWidth=fw, filterHeight=fh)
        model = single_op_model(
            "AVERAGE_POOL_2D",
            opts,
            [dict(shape=x.shape, scale=0.1, zp=-3)],
            [dict(shape=(2, oh, ow, 5), scale=0.1, zp=-3)],
        )
        cases.append(("AVERAGE_POOL_2D", model, [x], fx.average_pool_int8(x, (fh, fw), (sh, sw), (ph, pw), (oh, ow))))
    for axes, keep, si, zi, so, zo in [
        ((1, 2), True, 0.1, -3, 0.1, -3),
        ((1, 2), True, 0.1, -3, 0.05, 10),
        ((2,), False, 0.02, 5, 0.07, -100),
        ((1, 2), False, 0.3, 0, 0.01, 0),
        ((3,), True, 0.05, 0, 0.05, 0),
    ]:
        x = rng.integers(-128, 128, (2, 6, 7, 5), dtype=np.int8)
        if keep:
            oshape = tuple(1 if i in axes else d for i, d in enumerate(x.shape))
        else:
            oshape = tuple(d for i, d in enumerate(x.shape) if i not in axes)
        ax = np.array(axes, dtype=np.int32)
        model = single_op_model(
            "MEAN",
            _options("ReducerOptionsT", keepDims=keep),
            [dict(shape=x.shape, scale=si, zp=zi), dict(shape=ax.shape, data=ax)],
            [dict(shape=oshape, scale=so, zp=zo)],
        )
        cases.append(("MEAN", model, [x], fx.mean_int8(x, axes, si, zi, so, zo, keepdims=keep)))
    for scale, zp in [(0.05, 0), (0.1, -20), (0.0078125, 5), (0.5, 100), (0.02, -128), (0.2357, 17), (3.0, 0)]:
        model = single_op_model(
            "TANH", None, [dict(shape=ramp.shape, scale=scale, zp=zp)], [dict(shape=ramp.shape, scale=1 / 128, zp=0)]
        )
        cases.append(("TANH", model, [ramp], fx.tanh_int8(ramp, scale, zp)))
    for alpha in (0.01, 0.1, 0.2, 0.5):
        for _ in range(3):
            si, so = (_f32(10 ** rng.uniform(-3, 0)) for _ in range(2))
            zi, zo = (int(v) for v in rng.integers(-128, 128, 2))
            model = single_op_model(
                "LEAKY_RELU",
                _options("LeakyReluOptionsT", alpha=alpha),
                [dict(shape=ramp.shape, scale=si, zp=zi)],
                [dict(shape=ramp.shape, scale=so, zp=zo)],
            )
            cases.append(("LEAKY_RELU", model, [ramp], fx.leaky_relu_int8(ramp, si, zi, alpha, so, zo)))
    for op_name, fn in (("MAXIMUM", np.maximum), ("MINIMUM", np.minimum)):
        for shp2 in [(1, 4, 5, 6), (1, 1, 1, 6), (1, 4, 1, 1)]:
            a = rng.integers(-128, 128, (1, 4, 5, 6), dtype=np.int8)
            b = rng.integers(-128, 128, shp2, dtype=np.int8)
            q = dict(scale=0.05, zp=-7)
            model = single_op_model(op_name, None, [dict(shape=a.shape, **q), dict(shape=shp2, **q)],
                                    [dict(shape=a.shape, **q)])
            cases.append((op_name, model, [a, b], fn(a, b)))
    from tinyc.kernels.conv import matmul_s8
    from tinyc.kernels.params import MatMulParams

    for batches, m, k, n in [(1, 3, 5, 4), (4, 17, 16, 17), (2, 1, 33, 9)]:
        a = rng.integers(-128, 128, (batches, m, k), dtype=np.int8)
        b = rng.integers(-128, 128, (batches, k, n), dtype=np.int8)
        s1, s2, so = _f32(10 ** rng.uniform(-2, 0)), _f32(10 ** rng.uniform(-2, 0)), _f32(10 ** rng.uniform(-1, 1))
        z1, z2, zo = (int(v) for v in rng.integers(-128, 128, 3))
        mult, shift = fx.quantize_multiplier(float(np.float32(np.float32(s1) * np.float32(s2))) / float(np.float32(so)))
        p = MatMulParams(batches, m, k, n, m * k, k * n, -z1, -z2, zo, mult, shift)
        model = single_op_model(
            "BATCH_MATMUL",
            _options("BatchMatMulOptionsT", adjX=False, adjY=False),
            [dict(shape=a.shape, scale=s1, zp=z1), dict(shape=b.shape, scale=s2, zp=z2)],
            [dict(shape=(batches, m, n), scale=so, zp=zo)],
        )
        cases.append(("BATCH_MATMUL", model, [a, b], matmul_s8(p, a, b)))
    for h, w, oh, ow in [(3, 4, 7, 5), (4, 4, 8, 8), (5, 3, 2, 7), (1, 6, 1, 12), (6, 6, 3, 3)]:
        for corners, half in [(False, True), (False, False), (True, False)]:
            x = rng.integers(-128, 128, (1, h, w, 3), dtype=np.int8)
            size = np.array([oh, ow], np.int32)
            model = single_op_model(
                "RESIZE_BILINEAR",
                _options("ResizeBilinearOptionsT", alignCorners=corners, halfPixelCenters=half),
                [dict(shape=x.shape, scale=0.1, zp=3), dict(shape=size.shape, data=size)],
                [dict(shape=(1, oh, ow, 3), scale=0.1, zp=3)],
            )
            mine = fx.resize_bilinear_int8(x, oh, ow, fx.resize_bilinear_scale_10(h, oh, corners),
                                           fx.resize_bilinear_scale_10(w, ow, corners), half)
            cases.append(("RESIZE_BILINEAR", model, [x], mine))
    return cases


@pytest.fixture(scope="module")
def single_op_cases():
    return _single_op_cases()


@pytest.mark.parametrize(
    "op_name", ["LOGISTIC", "HARD_SWISH", "SOFTMAX", "ADD", "SUB", "MUL", "AVERAGE_POOL_2D", "MEAN", "TANH",
                "LEAKY_RELU", "MAXIMUM", "MINIMUM", "BATCH_MATMUL", "RESIZE_BILINEAR"]
)
def test_single_op_models_match_tflm(single_op_cases, op_name):
    runtime = _tflm_runtime()
    n = 0
    for name, model, inputs, mine in single_op_cases:
        if name != op_name:
            continue
        it = runtime.Interpreter.from_bytes(model, arena_size=1 << 20)
        for i, x in enumerate(inputs):
            it.set_input(x, i)
        it.invoke()
        ref = it.get_output(0)
        assert np.array_equal(mine.reshape(ref.shape), ref), op_name
        n += 1
    assert n


@pytest.mark.parametrize("op_name", ["SOFTMAX", "ADD", "SUB", "AVERAGE_POOL_2D", "MEAN"])
def test_single_op_models_match_tflite_reference_kernels(single_op_cases, op_name):
    interp_mod = pytest.importorskip("ai_edge_litert.interpreter")
    n = 0
    for name, model, inputs, mine in single_op_cases:
        if name != op_name:
            continue
        it = interp_mod.Interpreter(
            model_content=model, experimental_op_resolver_type=interp_mod.OpResolverType.BUILTIN_REF
        )
        it.allocate_tensors()
        for d, x in zip(it.get_input_details(), inputs):
            it.set_tensor(d["index"], x)
        it.invoke()
        ref = it.get_tensor(it.get_output_details()[0]["index"])
        assert np.array_equal(mine.reshape(ref.shape), ref), op_name
        n += 1
    assert n
