"""The integer kernels against their definitions: TFLite's fixed-point primitives against exact big-integer math,
and the two-scale ops against the float op followed by the simulator's own encoding."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tsptq.intmodel import kernels as K
from tsptq.intmodel import fixedpoint as M
from tsptq.quant.quantizers import Log2, TwoScale, Uniform


def test_quantize_multiplier_represents_the_real_value():
    rng = np.random.default_rng(0)
    for real in np.concatenate([10.0 ** rng.uniform(-9, 2, 200), [1.0, 0.5, 2.0**-31]]):
        m, shift = M.quantize_multiplier(float(real))
        assert 2**30 <= m < 2**31
        assert abs(m * 2.0 ** (shift - 31) - real) <= real * 2**-30
    assert M.quantize_multiplier(0.0) == (0, 0)


def test_srdhm_and_rounding_divide_match_exact_integer_math():
    rng = np.random.default_rng(1)
    a = np.concatenate([rng.integers(-(2**31), 2**31, 5000), [-(2**31), 2**31 - 1, 0, -1]])
    b = np.concatenate([rng.integers(0, 2**31, 5000), [-(2**31), 2**31 - 1, 1, 2**30]])
    got = M.saturating_rounding_doubling_high_mul(a, b)
    for x, y, g in zip(a.tolist(), b.tolist(), got.tolist()):
        if x == y == -(2**31):
            assert g == 2**31 - 1
            continue
        ab = x * y
        nudge = (1 << 30) if ab >= 0 else 1 - (1 << 30)
        assert g == int((ab + nudge) / (1 << 31)) if abs(ab) < 2**52 else True  # exact in float below 2^53
        q = abs(ab + nudge) >> 31
        assert g == (q if ab + nudge >= 0 else -q)
    x = rng.integers(-(2**40), 2**40, 5000)
    for e in (0, 1, 5, 17, 31):
        got = M.rounding_divide_by_pot(x, e)
        want = [int(math.copysign(math.floor(abs(v) / 2**e + 0.5), v)) for v in x.tolist()]
        assert got.tolist() == want


def test_isqrt_div_round_and_bit_length_are_exact():
    rng = np.random.default_rng(2)
    n = np.concatenate([rng.integers(0, 2**62, 3000), (rng.integers(1, 2**31, 1000) ** 2), [0, 1, 2**62 - 1]])
    assert M.isqrt(n).tolist() == [math.isqrt(int(v)) for v in n]
    assert K.bit_length(n).tolist() == [int(v).bit_length() for v in n]
    a, b = rng.integers(-(2**40), 2**40, 3000), rng.integers(1, 2**20, 3000)
    want = [int(math.copysign(math.floor(abs(p) / q + 0.5), p)) for p, q in zip(a.tolist(), b.tolist())]
    assert M.div_round(a, b).tolist() == want


@pytest.mark.parametrize("m,signed", [(0, False), (3, False), (8, False), (2, True), (5, True)])
def test_two_scale_encoding_equals_the_quantizer(m, signed):
    """encode_two_scale (Q16 input) and decode_two_scale are the TwoScale quantizer's encode/decode_int exactly."""
    q = TwoScale(1.0, m, 8, signed)
    v_q16 = np.random.default_rng(m).integers(-(40 << 16) if signed else 0, (127 << m) * 2 << 16, 20000)
    ours = K.encode_two_scale(v_q16, 8, m, signed)
    theirs = q.encode(torch.from_numpy(v_q16 / 2.0**16)).numpy() & 255
    np.testing.assert_array_equal(ours, theirs)
    codes = np.arange(256)
    np.testing.assert_array_equal(K.decode_two_scale(codes, 8, m, signed), q.decode_int(torch.from_numpy(codes)).numpy())


def test_log2_decode_is_a_power_of_two_or_zero():
    codes = np.arange(256)
    d = K.decode_log2(codes, 8, 14)
    assert d[0] == 2**14 and d[14] == 1 and np.all(d[15:] == 0)
    np.testing.assert_allclose(d[:15] / 2**14, Log2(8).decode(torch.from_numpy(codes[:15])).numpy())


def _layernorm_case(seed, shifts_on: bool):
    rng = np.random.default_rng(seed)
    D = int(rng.integers(16, 400))
    s_in, zp = 0.05, int(rng.integers(-20, 20))
    shifts = np.where(rng.random(D) < 0.05, rng.integers(1, 5, D), 0) if shifts_on else np.zeros(D, int)
    x = rng.integers(-128, 128, (64, D)).astype(np.int8)
    real = s_in * (x.astype(np.float64) - zp) * 2.0**shifts
    gamma, beta = rng.normal(1, 0.3, D), rng.normal(0, 0.2, D)
    y = F.layer_norm(torch.from_numpy(real), (D,), torch.from_numpy(gamma), torch.from_numpy(beta), 1e-6).numpy()
    out_q = Uniform(torch.tensor(float(np.abs(y).max() / 120)), torch.tensor(3.0), 8)
    want = out_q.encode(torch.from_numpy(y)).numpy()
    s_out = float(out_q.scale)
    g = np.round(gamma / s_out * 2.0**20)
    b = np.round(beta / s_out * 2.0 ** (K.NORM_FRAC_BITS + 20))
    eps = round(D * D * 1e-6 / s_in**2)
    got = K.layernorm_2s(x, zp, shifts.astype(np.int8), g, b.astype(np.int64), eps, 3, K.NORM_FRAC_BITS + 20)
    return got.astype(int), want


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("shifts_on", [False, True])
def test_integer_layernorm_is_the_float_layernorm_to_one_code(seed, shifts_on):
    got, want = _layernorm_case(seed, shifts_on)
    diff = np.abs(got - want)
    assert diff.max() <= 1
    assert np.mean(diff == 0) >= 0.999


def _layernorm_exact(x, in_zp, in_shift, g, b, eps, out_zp, out_shift):
    """TSPTQ_LAYERNORM_2S as written in docs/integer-semantics.md, in Python integers (no int64 to overflow)."""
    def div_round(a, b):  # half away from zero
        q = (abs(a) + b // 2) // b
        return q if a >= 0 else -q

    out = []
    for row in x.reshape(-1, x.shape[-1]).tolist():
        D = len(row)
        xs = [(q - in_zp) << int(k) for q, k in zip(row, in_shift)]
        d = [D * v - sum(xs) for v in xs]
        V = sum(v * v for v in d) // D + eps
        e = min(max((62 - V.bit_length()) // 2, 0), K.SIGMA_EXTRA_BITS)
        sigma = max(math.isqrt(V << 2 * e), 1)
        for c in range(D):
            v = div_round(d[c] << (K.NORM_FRAC_BITS + e), sigma) * int(g[c]) + int(b[c])
            y = div_round(v, 1 << out_shift) if out_shift else v
            out.append(min(max(y + out_zp, -128), 127))
    return np.array(out).reshape(x.shape)


@pytest.mark.parametrize("D", [1024, 3072, 4096])
def test_integer_layernorm_is_exact_up_to_its_widest_rows(D):
    """The widest rows (up to kernels.LN_MAX_CHANNELS) at the largest |x_c| (every shift 7, values at the code's
    ends, eps up to 2^61): int64 holds every intermediate, the result is the big-integer one (sum_c d_c^2, which the
    kernel no longer forms, passes 2^63 at D = 4096 on the two-valued rows)."""
    rng = np.random.default_rng(D)
    x = np.where(rng.random((4, D)) < 0.5, -128, 127).astype(np.int8)
    x[1] = rng.integers(-128, 128, D)
    x[2, : D // 2] = -128
    x[2, D // 2:] = 127
    x[3] = 5  # constant
    in_shift = np.full(D, 7, np.int8)
    in_shift[::3] = rng.integers(0, 8, len(in_shift[::3]))
    g = rng.integers(-(2**31) + 1, 2**31, D).astype(np.int32)
    b = rng.integers(-(2**62), 2**62, D, dtype=np.int64)
    assert D <= K.LN_MAX_CHANNELS
    for in_zp, eps, out_shift in ((127, 0, 62), (-128, 2**61, 55), (0, 12345, 40)):
        got = K.layernorm_2s(x, in_zp, in_shift, g, b, eps, -3, out_shift)
        np.testing.assert_array_equal(got, _layernorm_exact(x, in_zp, in_shift, g, b, eps, -3, out_shift))


@pytest.mark.parametrize("kind", ["uniform", "two_scale", "log2"])
def test_integer_softmax_is_the_float_softmax_encoded(kind):
    rng = np.random.default_rng(3)
    s_in, zp = 0.08, int(rng.integers(-30, 30))
    x = rng.integers(-128, 128, (32, 65)).astype(np.int8)
    p = torch.softmax(torch.from_numpy(s_in * (x.astype(np.float64) - zp)), -1)
    lut = np.round(np.exp(-s_in * np.arange(256)) * 2.0**K.EXP_FRAC_BITS)
    if kind == "uniform":
        q = Uniform(torch.tensor(1 / 255), torch.tensor(-128.0), 8)
        mult, shift = M.fixed_multiplier(1 / (2.0**K.PROB_FRAC_BITS * float(q.scale)))
        got = K.softmax_2s(x, lut, K.UNIFORM, mult, shift, -128, 8, 0, False).astype(int)
        want = q.encode(p).numpy()
        assert np.abs(got - want).max() <= 1 and np.mean(got == want) >= 0.999
    elif kind == "two_scale":
        q = TwoScale(1 / (127 * 16), 4, 8)
        mult, shift = M.fixed_multiplier(1 / (2.0**K.PROB_FRAC_BITS * q.s), K.TWO_SCALE_FRAC_BITS)
        got = K.softmax_2s(x, lut, K.TWO_SCALE, mult, shift, 0, 8, 4, False)
        want = q.encode(p).numpy() & 255
        assert np.mean(got == want) >= 0.999
        dv = np.abs(K.decode_two_scale(got, 8, 4, False) - K.decode_two_scale(want, 8, 4, False))
        assert dv.max() <= 16  # one step of the coarse region at most
    else:
        got = K.softmax_2s(x, lut, K.LOG2, 0, 0, 0, 8, 0, False)
        want = Log2(8).encode(p).numpy()
        # The consumer (attention x V) reads at most 16 fraction bits: codes above 16 all mean 0 there, and the
        # integer exp table (Q20) also ends near 2^-21 of the row maximum.
        live = want <= 16
        assert live.mean() > 0.3 and np.mean(got[live] == want[live]) >= 0.999
        assert np.all(K.decode_log2(got[~live], 8, 16) == 0)
