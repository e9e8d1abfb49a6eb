"""The integer reference (converter.ops.int8_reference) against independent formulations:
exact rational arithmetic (fractions.Fraction) for every rounding rule, and plain Python loops
for the ops, so a wrong shift, a wrong tie direction or a padding bug shows up as a mismatch."""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from converter.ir import Quantization
from converter.ops import OPS, int8_reference as ref
from converter.quantize.params import activation_params

RNG = np.random.default_rng(1234)


def floor_half_up(value: Fraction) -> int:
    """Round half toward +infinity, exactly."""
    return math.floor(value + Fraction(1, 2))


def round_half_away(value: Fraction) -> int:
    magnitude = math.floor(abs(value) + Fraction(1, 2))
    return magnitude if value >= 0 else -magnitude


def exact_multiplier(real: float) -> tuple[int, int]:
    """quantize_multiplier from its definition, with Fractions: M = m * 2**-shift, m 31 bits."""
    exact = Fraction(real)
    exponent = 0
    while exact >= Fraction(2) ** exponent:
        exponent += 1
    while exact < Fraction(2) ** (exponent - 1):
        exponent -= 1
    m = round_half_away(exact * Fraction(2) ** (31 - exponent))
    if m == 2 ** 31:
        m, exponent = m // 2, exponent + 1
    shift = 31 - exponent
    if shift >= 63:
        return 0, 62
    return m, shift


def per_tensor(scale: float, zero_point: int) -> Quantization:
    return Quantization((float(np.float32(scale)),), (int(zero_point),), 0)


# ---- fixed-point rules ----

@pytest.mark.parametrize("real", [0.5, 0.75, 1.0, 2.0 ** -31, 2.0 ** -32, 2.0 ** -33, 1e-12, 0.999999999999,
                                  1.0 - 2.0 ** -40, 3.0, 1000.5, 2.0 ** 29])
def test_quantize_multiplier_matches_exact_definition(real):
    assert ref.quantize_multiplier(real) == exact_multiplier(real)


def test_quantize_multiplier_random_and_accuracy():
    for real in np.exp(RNG.uniform(np.log(2.0 ** -45), np.log(2.0 ** 29), 2000)):
        real = float(real)
        m, shift = ref.quantize_multiplier(real)
        assert (m, shift) == exact_multiplier(real)
        assert 0 < shift < 63
        if m:
            assert 2 ** 30 <= m < 2 ** 31
            # m / 2**shift is the nearest 31-bit fixed-point value: error at most half a step
            assert abs(Fraction(m, 2 ** shift) - Fraction(real)) <= Fraction(1, 2 ** (shift + 1))
        else:
            assert real < 2.0 ** -32


def test_quantize_multiplier_rejects_too_large():
    with pytest.raises(ValueError):
        ref.quantize_multiplier(2.0 ** 30)
    with pytest.raises(ValueError):
        ref.quantize_multiplier(0.0)


def test_requantize_is_round_half_up_exactly():
    acc = RNG.integers(-2 ** 31, 2 ** 31, 3000, dtype=np.int64)
    m = RNG.integers(2 ** 30, 2 ** 31, 3000, dtype=np.int64)
    shift = RNG.integers(1, 63, 3000, dtype=np.int64)
    got = ref.requantize(acc, m, shift)
    for a, mm, s, g in zip(acc.tolist(), m.tolist(), shift.tolist(), got.tolist()):
        assert g == floor_half_up(Fraction(a * mm, 2 ** s))


def test_requantize_ties_go_toward_positive_infinity():
    # acc * m / 2**shift = k + 1/2 exactly, positive and negative
    m, shift = 2 ** 30, 31            # multiplier 0.5
    for acc, expected in ((5, 3), (-5, -2), (1, 1), (-1, 0), (3, 2), (-3, -1)):
        assert int(ref.requantize(acc, m, shift)) == expected


# ---- Quantize / Dequantize ----

def test_quantize_dequantize_error_bound():
    for _ in range(20):
        low, high = sorted(RNG.uniform(-10, 10, 2))
        params = activation_params(low, high)
        s, zp = params.scale[0], params.zero_point[0]
        x = RNG.uniform(min(low, 0), max(high, 0), 500).astype(np.float32)
        q = ref.quantize_values(x, params)
        back = ref.dequantize_values(q, params)
        assert q.dtype == np.int8 and back.dtype == np.float32
        # inside the representable range the error is half a step (plus float32 rounding)
        inside = (x >= (-128 - zp) * s) & (x <= (127 - zp) * s)
        assert np.all(np.abs(back[inside] - x[inside]) <= s * 0.5 * (1 + 1e-5) + 1e-6)
        # 0.0 is exact
        assert ref.dequantize_values(ref.quantize_values(np.zeros(1, np.float32), params), params)[0] == 0.0


def test_quantize_is_float32_product_then_half_even_then_clamp():
    params = per_tensor(0.5, 3)
    x = np.array([0.25, 0.75, -0.25, -0.75, 1000.0, -1000.0, 1.25], np.float32)
    # x * 2 = 0.5, 1.5, -0.5, -1.5, 2.5 -> ties to even 0, 2, -0, -2, 2; then + 3
    assert ref.quantize_values(x, params).tolist() == [3, 5, 3, 1, 127, -128, 5]
    # per element with Python floats cast to float32 at each step
    scale = np.float32(0.1)
    params = per_tensor(scale, -7)
    x = RNG.normal(0, 5, 1000).astype(np.float32)
    inverse = np.float32(1) / scale
    expected = [max(-128, min(127, -7 + int(np.rint(np.float32(v) * inverse)))) for v in x]
    assert ref.quantize_values(x, params).tolist() == expected


def test_dequantize_per_channel_axis():
    params = Quantization((0.5, 0.25), (0, 0), 1)
    q = np.array([[2, 4], [-2, 8]], np.int8)
    assert ref.dequantize_values(q, params).tolist() == [[1.0, 1.0], [-1.0, 2.0]]


# ---- ops against loops and Fractions ----

def _output(acc: int, real: float, zp: int, bounds=(-128, 127)) -> int:
    m, shift = exact_multiplier(real)
    return max(bounds[0], min(bounds[1], zp + floor_half_up(Fraction(acc * m, 2 ** shift))))


def _qp(pair):
    return (ref.f32(pair[0]), pair[1])


def test_conv2d_int8_matches_loops_with_padding_and_groups():
    n, h, w, c, o, kh, kw, groups = 1, 5, 6, 4, 6, 3, 3, 2
    x = RNG.integers(-128, 128, (n, h, w, c)).astype(np.int8)
    wq = RNG.integers(-127, 128, (o, kh, kw, c // groups)).astype(np.int8)
    bias = RNG.integers(-3000, 3000, o).astype(np.int32)
    s_x, zp_x, s_y, zp_y = 0.05, 7, 0.3, -5
    s_w = RNG.uniform(0.001, 0.02, o).astype(np.float32)
    attrs = {"strides": (2, 1), "dilations": (1, 2), "pads": (1, 2, 1, 0), "groups": groups, "layout": "NHWC",
             "activation": ("Relu", 0.0, 0.0),
             "quantization": ([per_tensor(s_x, zp_x), Quantization(tuple(map(float, s_w)), (0,) * o, 0),
                               Quantization(tuple(float(np.float32(np.float32(s_x) * v)) for v in s_w), (0,) * o, 0)],
                              [per_tensor(s_y, zp_y)])}
    got = ref.conv2d_int8([x, wq, bias], attrs)[0]
    (sh, sw), (dh, dw), (pt, pl, pb, pr) = attrs["strides"], attrs["dilations"], attrs["pads"]
    oh = (h + pt + pb - dh * (kh - 1) - 1) // sh + 1
    ow = (w + pl + pr - dw * (kw - 1) - 1) // sw + 1
    assert got.shape == (n, oh, ow, o)
    per_group = o // groups
    for i in range(oh):
        for j in range(ow):
            for oc in range(o):
                g = oc // per_group
                acc = int(bias[oc])
                for a in range(kh):
                    for b in range(kw):
                        r, col = i * sh - pt + a * dh, j * sw - pl + b * dw
                        for ci in range(c // groups):
                            xv = int(x[0, r, col, g * (c // groups) + ci]) if 0 <= r < h and 0 <= col < w else zp_x
                            acc += (xv - zp_x) * int(wq[oc, a, b, ci])
                real = ref.f32(s_x) * float(s_w[oc]) / ref.f32(s_y)
                assert got[0, i, j, oc] == _output(acc, real, zp_y, (zp_y, 127)), (i, j, oc)


def test_fully_connected_int8_matches_loops():
    x = RNG.integers(-128, 128, (3, 17)).astype(np.int8)
    wq = RNG.integers(-127, 128, (5, 17)).astype(np.int8)
    s_w = RNG.uniform(0.0002, 0.002, 5).astype(np.float32)      # outputs mostly inside the Relu6 clamp
    s_x, zp_x, s_y, zp_y = 0.02, -3, 0.1, 4
    attrs = {"activation": ("Relu6", 0.0, 0.0),
             "quantization": ([per_tensor(s_x, zp_x), Quantization(tuple(map(float, s_w)), (0,) * 5, 0)],
                              [per_tensor(s_y, zp_y)])}
    got = ref.fully_connected_int8([x, wq], attrs)[0]
    top = min(127, zp_y + round(6 / ref.f32(s_y)))
    for r in range(3):
        for c in range(5):
            acc = sum((int(x[r, k]) - zp_x) * int(wq[c, k]) for k in range(17))
            real = ref.f32(s_x) * float(s_w[c]) / ref.f32(s_y)
            assert got[r, c] == _output(acc, real, zp_y, (zp_y, top))


def test_batch_matmul_int8_two_activations():
    a = RNG.integers(-128, 128, (2, 3, 4)).astype(np.int8)
    b = RNG.integers(-128, 128, (2, 5, 4)).astype(np.int8)
    pa, pb, py = (0.03, 5), (0.07, -9), (0.2, 1)
    attrs = {"transpose_b": True,
             "quantization": ([per_tensor(*pa), per_tensor(*pb)], [per_tensor(*py)])}
    got = ref.batch_matmul_int8([a, b], attrs)[0]
    for i in range(2):
        for r in range(3):
            for c in range(5):
                acc = sum((int(a[i, r, k]) - pa[1]) * (int(b[i, c, k]) - pb[1]) for k in range(4))
                real = ref.f32(pa[0]) * ref.f32(pb[0]) / ref.f32(py[0])
                assert got[i, r, c] == _output(acc, real, py[1])


@pytest.mark.parametrize("op,sign", [("Add", 1), ("Sub", -1)])
def test_add_sub_int8_against_fractions(op, sign):
    a = RNG.integers(-128, 128, (4, 6)).astype(np.int8)
    b = RNG.integers(-128, 128, (6,)).astype(np.int8)           # broadcast
    pa, pb, py = _qp((0.07, 3)), _qp((0.011, -20)), _qp((0.09, -1))
    attrs = {"quantization": ([per_tensor(*pa), per_tensor(*pb)], [per_tensor(*py)])}
    got = OPS[op].int8([a, b], attrs)[0]
    ma_real, mb_real = pa[0] / py[0], pb[0] / py[0]
    # the shift: the largest s <= 62 keeping the larger multiplier below 2**31
    s = max(k for k in range(1, 63) if round_half_away(Fraction(max(ma_real, mb_real)) * 2 ** k) < 2 ** 31)
    ma, mb = round_half_away(Fraction(ma_real) * 2 ** s), round_half_away(Fraction(mb_real) * 2 ** s)
    for i in range(4):
        for j in range(6):
            total = (int(a[i, j]) - pa[1]) * ma + sign * (int(b[j]) - pb[1]) * mb
            expected = max(-128, min(127, py[1] + floor_half_up(Fraction(total, 2 ** s))))
            assert got[i, j] == expected
            # and it is the real sum to within one step (plus the output clamp)
            real = ((int(a[i, j]) - pa[1]) * pa[0] + sign * (int(b[j]) - pb[1]) * pb[0]) / py[0] + py[1]
            assert abs(got[i, j] - max(-128, min(127, real))) <= 1.0


def test_mul_int8_against_fractions():
    a = RNG.integers(-128, 128, 50).astype(np.int8)
    b = RNG.integers(-128, 128, 50).astype(np.int8)
    pa, pb, py = _qp((0.05, 10)), _qp((0.02, -4)), _qp((0.4, 2))
    attrs = {"quantization": ([per_tensor(*pa), per_tensor(*pb)], [per_tensor(*py)])}
    got = ref.mul_int8([a, b], attrs)[0]
    for k in range(50):
        acc = (int(a[k]) - pa[1]) * (int(b[k]) - pb[1])
        assert got[k] == _output(acc, pa[0] * pb[0] / py[0], py[1])


def test_avg_pool_int8_counts_and_rounding():
    x = RNG.integers(-128, 128, (1, 5, 5, 3)).astype(np.int8)
    px, py = _qp((0.1, -6)), _qp((0.08, 2))
    for include_pad in (False, True):
        attrs = {"kernel": (3, 3), "strides": (2, 2), "pads": (1, 1, 1, 1), "layout": "NHWC",
                 "count_include_pad": include_pad,
                 "quantization": ([per_tensor(*px)], [per_tensor(*py)])}
        got = ref.avg_pool_int8([x], attrs)[0]
        assert got.shape == (1, 3, 3, 3)
        for i in range(3):
            for j in range(3):
                cells = [(r, c) for r in range(2 * i - 1, 2 * i + 2) for c in range(2 * j - 1, 2 * j + 2)]
                inside = [(r, c) for r, c in cells if 0 <= r < 5 and 0 <= c < 5]
                count = len(cells) if include_pad else len(inside)
                for ch in range(3):
                    # a counted padding cell holds the zero point: it adds (zp - zp) = 0
                    total = sum(int(x[0, r, c, ch]) - px[1] for r, c in inside)
                    assert got[0, i, j, ch] == _output(total, px[0] / (py[0] * count), py[1])


def test_reduce_mean_int8_over_hw():
    x = RNG.integers(-128, 128, (2, 3, 4, 5)).astype(np.int8)
    px, py = _qp((0.05, 9)), _qp((0.01, -3))
    attrs = {"axes": (1, 2), "keepdims": False, "quantization": ([per_tensor(*px)], [per_tensor(*py)])}
    got = ref.reduce_mean_int8([x], attrs)[0]
    assert got.shape == (2, 5)
    for n in range(2):
        for c in range(5):
            total = int(x[n, :, :, c].astype(np.int64).sum()) - 12 * px[1]
            assert got[n, c] == _output(total, px[0] / (py[0] * 12), py[1])


def test_softmax_int8_against_fractions():
    x = RNG.integers(-128, 128, (3, 10)).astype(np.int8)
    s_x = ref.f32(0.07)
    attrs = {"axis": 1, "quantization": ([per_tensor(s_x, 0)], [ref.SOFTMAX_OUTPUT])}
    got = ref.softmax_int8([x], attrs)[0]
    for r in range(3):
        top = int(x[r].max())
        table = [round_half_away(Fraction(math.exp(-(top - int(v)) * s_x)) * 2 ** 16) for v in x[r]]
        total = sum(table)
        for c in range(10):
            expected = max(-128, min(127, -128 + floor_half_up(Fraction(table[c] * 256, total))))
            assert got[r, c] == expected
        # the dequantized row is a probability distribution to within the output step per entry
        probabilities = (got[r].astype(np.float64) + 128) / 256
        exact = np.exp((x[r].astype(np.float64) - top) * s_x)
        exact /= exact.sum()
        assert np.all(np.abs(probabilities - np.minimum(exact, 255 / 256)) <= 1 / 512 + 1e-9)


def test_concat_requantizes_each_input_and_copies_identical_params():
    a = RNG.integers(-128, 128, (2, 3)).astype(np.int8)
    b = RNG.integers(-128, 128, (2, 2)).astype(np.int8)
    pa, py = _qp((0.05, 4)), _qp((0.1, -2))
    attrs = {"axis": 1, "quantization": ([per_tensor(*pa), per_tensor(*py)], [per_tensor(*py)])}
    got = ref.concat_int8([a, b], attrs)[0]
    assert np.array_equal(got[:, 3:], b)
    for i in range(2):
        for j in range(3):
            assert got[i, j] == _output(int(a[i, j]) - pa[1], pa[0] / py[0], py[1])


def test_activation_bounds():
    out = per_tensor(0.05, -100)
    assert ref.activation_bounds({}, out) == (-128, 127)
    assert ref.activation_bounds({"activation": ("Relu", 0, 0)}, out) == (-100, 127)
    assert ref.activation_bounds({"activation": ("Relu6", 0, 0)}, out) == (-100, 20)   # 6/0.05 = 120
    assert ref.activation_bounds({"activation": ("Clip", -1.0, 2.0)}, out) == (-120, -60)
    with pytest.raises(ValueError):
        ref.activation_bounds({"activation": ("Sigmoid", 0, 0)}, out)


def test_dynamic_fully_connected_matches_its_definition():
    x = RNG.normal(0, 1, (4, 9)).astype(np.float32)
    x[2] = 0.0                                                   # an all-zero row: scale 1
    wq = RNG.integers(-127, 128, (3, 9)).astype(np.int8)
    s_w = RNG.uniform(0.001, 0.01, 3).astype(np.float32)
    bias = RNG.normal(0, 1, 3).astype(np.float32)
    attrs = {"quantization": ([None, Quantization(tuple(map(float, s_w)), (0,) * 3, 0), None], [None])}
    got = ref.fully_connected_dynamic([x, wq, bias], attrs)[0]
    for r in range(4):
        peak = np.float32(np.abs(x[r]).max())
        s_row = np.float32(1.0) if peak == 0 else np.float32(peak / np.float32(127.0))
        xq = [int(max(-127, min(127, np.rint(np.float32(v) / s_row)))) for v in x[r]]
        for c in range(3):
            acc = sum(a * int(b) for a, b in zip(xq, wq[c]))
            expected = np.float32(np.float32(acc) * np.float32(s_row * s_w[c])) + bias[c]
            assert got[r, c] == np.float32(expected)
