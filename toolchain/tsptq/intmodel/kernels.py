"""The integer kernels: the definition the C runtime matches byte for byte.

Each kernel takes integer numpy arrays (activations carry a leading batch axis) and the op's integer
parameters, and returns the output codes. Builtin kernels take their multipliers from the tensors' scales the way
TFLite's Prepare does (``builtin_multipliers``); the two-scale kernels get precomputed integers from the file.
Products are summed in float64 where that is exact (every partial sum below 2^53, checked when the model is
lowered) because numpy has no integer BLAS; the result is the int64 sum, bit for bit.
"""
from __future__ import annotations

import numpy as np

from tsptq.intmodel.fixedpoint import (div_round, isqrt, multiply_by_quantized_multiplier, quantize_multiplier,
                           rounding_divide_by_pot, rshift_round, saturating_rounding_doubling_high_mul)

# Code kinds of a tensor (custom options carry these numbers).
UNIFORM, CHANNEL_POW2, TWO_SCALE, SIGN_SPLIT, LOG2 = 0, 1, 2, 3, 4
CODE_KINDS = {"uniform": UNIFORM, "channel_pow2": CHANNEL_POW2, "two_scale": TWO_SCALE, "sign_split": SIGN_SPLIT,
              "log2": LOG2}
EXP_FRAC_BITS = 20  # the softmax exp table holds round(2^20 * exp(-s * j))
PROB_FRAC_BITS = 30  # probabilities are Q30 between the reciprocal and the output code
TWO_SCALE_FRAC_BITS = 16  # a two-scale output is first computed in Q16 units of its fine step
NORM_FRAC_BITS = 24  # LayerNorm's normalized value (x - mean) / std is Q24
SIGMA_EXTRA_BITS = 20  # LayerNorm's standard deviation carries up to 20 extra fraction bits
LN_MAX_CHANNELS = 4096  # the integer LayerNorm's widest row (its int64 bounds; runtime_c layernorm_2s.c's LN_MAX_D)


def saturate(x: np.ndarray, dtype) -> np.ndarray:
    info = np.iinfo(dtype)
    return np.clip(x, info.min, info.max).astype(dtype)


def exact_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Integer a @ b through float64 BLAS (exact while every partial sum stays below 2^53)."""
    return np.rint(a.astype(np.float64) @ b.astype(np.float64)).astype(np.int64)


# --- decoding codes to integers (the consumers of two-scale codes) ---------------------------------------------------

def decode_two_scale(code: np.ndarray, bits: int, m: int, signed_fine: bool) -> np.ndarray:
    """V-2SF code -> d with real = s * d: fine field (flag 0) or field << m (flag 1)."""
    code = code.astype(np.int64) & ((1 << bits) - 1)
    flag, field = code >> (bits - 1), code & ((1 << (bits - 1)) - 1)
    fine = np.where(field >= (1 << (bits - 2)), field - (1 << (bits - 1)), field) if signed_fine else field
    return np.where(flag == 1, field << m, fine)


def decode_log2(code: np.ndarray, bits: int, frac: int) -> np.ndarray:
    """log2 code q -> d = 2^(frac - q) (0 for q > frac and for the zero code); real = 2^-frac * d."""
    q = code.astype(np.int64) & ((1 << bits) - 1)
    return np.where(q <= frac, np.int64(1) << np.maximum(frac - q, 0), 0)


# --- builtin ops (TFLite reference semantics) ------------------------------------------------------------------------

def builtin_multipliers(in_scale, w_scales, out_scales) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (M, shift) as TFLite's Prepare computes them for conv/FC/BMM: double(s_in) * double(s_w) /
    double(s_out), from float32 scales (per-channel output scales are the project's FC_2S extension)."""
    s_in = float(np.float32(in_scale))
    w = np.atleast_1d(np.asarray(w_scales, np.float32))
    out = np.atleast_1d(np.asarray(out_scales, np.float32))
    pairs = [quantize_multiplier(s_in * float(w[c % len(w)]) / float(out[c % len(out)]))
             for c in range(max(len(w), len(out)))]
    return np.array([p[0] for p in pairs], np.int64), np.array([p[1] for p in pairs], np.int64)


def bmm_multiplier(a_scale, b_scale, out_scale) -> tuple[int, int]:
    """(M, shift) as TFLite's BATCH_MATMUL Prepare computes them: the input scales multiplied in float32, then divided
    by the output scale in double (unlike conv/FC's double product; found against LiteRT 2.3's reference kernel,
    where the double product put 1 in 10^4 scores one code off)."""
    product = np.float32(np.float32(a_scale) * np.float32(b_scale))
    return quantize_multiplier(float(product) / float(np.float32(out_scale)))


def requantize(acc: np.ndarray, mult, shift, out_zp: int, dtype=np.int8) -> np.ndarray:
    """Builtin ops: TFLite's MultiplyByQuantizedMultiplier (two roundings)."""
    return saturate(multiply_by_quantized_multiplier(acc, mult, shift) + out_zp, dtype)


def requantize_single(acc: np.ndarray, mult, shift, out_zp: int) -> np.ndarray:
    """TSPTQ ops: one rounding, acc * M / 2^(31 - shift) (acc and M int32, the product int64)."""
    return saturate(rshift_round(np.asarray(acc, np.int64) * np.asarray(mult, np.int64), 31 - np.asarray(shift)) + out_zp,
                    np.int8)


def tflite_single_rounding(acc: np.ndarray, mult, shift) -> np.ndarray:
    """TFLite's single-rounding MultiplyByQuantizedMultiplier: (acc * M + 2^(30 - shift)) >> (31 - shift), i.e. half
    up. LiteRT's per-channel FULLY_CONNECTED uses it (measured against its reference kernels)."""
    total = 31 - np.asarray(shift, np.int64)
    return (np.asarray(acc, np.int64) * np.asarray(mult, np.int64) + (np.int64(1) << (total - 1))) >> total


def _accumulate(x, in_zp, w, bias):
    """bias + sum_i (x_i - in_zp) * w[o, i] for x (..., I), w (O, I)."""
    acc = exact_matmul(x.astype(np.int64) - in_zp, w.T)
    return acc if bias is None else acc + bias.astype(np.int64)


def fully_connected(x, in_zp, w, bias, mult, shift, out_zp, per_channel: bool = True):
    """x (..., I) int8, w (O, I) int8, bias (O,) int32 -> (..., O) int8. Per-channel weights requantize with one
    rounding, per-tensor weights with TFLite's two (as LiteRT does)."""
    acc = _accumulate(x, in_zp, w, bias)
    if per_channel:
        return saturate(tflite_single_rounding(acc, mult, shift) + out_zp, np.int8)
    return requantize(acc, mult, shift, out_zp)


def conv2d_patches(x, in_zp, w, bias, mult, shift, out_zp, stride):
    """CONV_2D with kernel == stride and VALID padding (the patch embedding): x (B,H,W,C), w (O,kh,kw,C)."""
    B, H, W, C = x.shape
    O, kh, kw, _ = w.shape
    h, wd = (H - kh) // stride + 1, (W - kw) // stride + 1
    patches = x[:, : h * kh, : wd * kw].reshape(B, h, kh, wd, kw, C).transpose(0, 1, 3, 2, 4, 5)
    acc = _accumulate(patches.reshape(B, h, wd, kh * kw * C), in_zp, w.reshape(O, -1), bias)
    return requantize(acc, mult, shift, out_zp)  # CONV_2D keeps TFLite's two roundings


def batch_matmul(a, a_zp, b, b_zp, mult, shift, out_zp, adj_y: bool):
    """(..., N, K) x (..., K, M) (or (..., M, K) with adj_y) -> int8."""
    bb = b.astype(np.int64) - b_zp
    acc = exact_matmul(a.astype(np.int64) - a_zp, np.swapaxes(bb, -1, -2) if adj_y else bb)
    return requantize(acc, mult, shift, out_zp)


def bmm_heads_multipliers(a_scale, b_scale, out_scales) -> tuple[np.ndarray, np.ndarray]:
    """TSPTQ_BMM_HEADS: BATCH_MATMUL's (M, shift) for each head's output scale (``bmm_multiplier``)."""
    pairs = [bmm_multiplier(a_scale, b_scale, s) for s in np.atleast_1d(np.asarray(out_scales, np.float32))]
    return np.array([p[0] for p in pairs], np.int64), np.array([p[1] for p in pairs], np.int64)


def bmm_heads(a, a_zp, b, b_zp, mult, shift, out_zp):
    """TSPTQ_BMM_HEADS (q.k^T with one output code per head): a (..., H, N, K), b (..., H, M, K) -> (..., H, N, M);
    head h is BATCH_MATMUL (adj_y) with its own multiplier, shift and output zero point (length-H arrays)."""
    per_head = lambda v: np.asarray(v, np.int64).reshape(-1, 1, 1)  # noqa: E731
    acc = exact_matmul(a.astype(np.int64) - a_zp, np.swapaxes(b.astype(np.int64) - b_zp, -1, -2))
    return requantize(acc, per_head(mult), per_head(shift), per_head(out_zp))


def add_params(a_scale, b_scale, out_scale, left_shift: int = 20) -> np.ndarray:
    """TFLite ADD's Prepare, per channel: rows a_mult, a_shift, b_mult, b_shift, out_mult, out_shift."""
    a_scale, b_scale, out_scale = (np.atleast_1d(np.asarray(s, np.float32)) for s in (a_scale, b_scale, out_scale))
    n = max(len(a_scale), len(b_scale), len(out_scale))
    rows = np.zeros((6, n), np.int64)
    for c in range(n):
        sa, sb, so = (float(s[c % len(s)]) for s in (a_scale, b_scale, out_scale))
        twice_max = 2.0 * max(sa, sb)
        for r, real in enumerate((sa / twice_max, sb / twice_max, twice_max / ((1 << left_shift) * so))):
            rows[2 * r: 2 * r + 2, c] = quantize_multiplier(real)
    return rows


def add(a, a_zp, b, b_zp, params, out_zp, left_shift: int = 20, dtype=np.int8):
    """TFLite's int8 ADD; ``params`` (6, C) per channel (C = 1 for the builtin: one column broadcast). With
    ``left_shift`` 15 and ``dtype`` int16 (zero points 0) it is TFLite's general int16 ADD (``pot_scale_int16`` off):
    |x| << 15 < 2^31, and the same rescalings."""
    a_mult, a_shift, b_mult, b_shift, o_mult, o_shift = params
    sa = rounding_divide_by_pot(saturating_rounding_doubling_high_mul((a.astype(np.int64) - a_zp) << left_shift,
                                                                      a_mult), -a_shift)
    sb = rounding_divide_by_pot(saturating_rounding_doubling_high_mul((b.astype(np.int64) - b_zp) << left_shift,
                                                                      b_mult), -b_shift)
    return requantize(sa + sb, o_mult, o_shift, out_zp, dtype)


# --- the two-scale ops -----------------------------------------------------------------------------------------------

def layernorm_2s(x, in_zp, in_shift, gamma_mul, beta_bias, eps, out_zp, out_shift):
    """Integer LayerNorm over the last axis; input channels aligned by shift (O-2SF), output per-channel folded.

    x_c = (q_c - zp) << k_c; S = sum(x); d_c = D x_c - S; V = sum(d^2) / D + eps = D sum(x^2) - S^2 + eps
    (= (D sigma)^2 in input units; exact, and below 2^54 + eps for D <= 4096); sigma = isqrt(V << 2e) with e extra
    fraction bits; n_c = round(d_c * 2^(24 + e) / sigma) (Q24); y_c = round((n_c * g_c + b_c) / 2^out_shift) + out_zp.
    """
    D = x.shape[-1]
    xs = (x.astype(np.int64) - in_zp) << in_shift.astype(np.int64)
    S = xs.sum(-1, keepdims=True)
    d = D * xs - S
    sigma, extra = layernorm_sigma(S, (xs * xs).sum(-1, keepdims=True), D, eps)
    n = div_round(d << (NORM_FRAC_BITS + extra), sigma)
    y = rshift_round(n * gamma_mul.astype(np.int64) + beta_bias.astype(np.int64), out_shift) + out_zp
    return saturate(y, np.int8)


def layernorm_sigma(S, sq, D: int, eps):
    """The integer LayerNorm's row deviation (``layernorm_2s``): V = D sum(x^2) - S^2 + eps, e extra fraction bits,
    sigma = isqrt(V << 2e) (at least 1), in input units times D * 2^e."""
    var = D * sq - S * S + eps
    extra = np.clip((62 - bit_length(var)) // 2, 0, SIGMA_EXTRA_BITS)
    return np.maximum(isqrt(var << (2 * extra)), 1), extra


def bit_length(v: np.ndarray) -> np.ndarray:
    """Number of significant bits of non-negative int64 values (0 for 0)."""
    v = np.asarray(v, np.int64)
    n = np.zeros(v.shape, np.int64)
    for step in (32, 16, 8, 4, 2, 1):
        n = np.where((v >> (n + step)) > 0, n + step, n)
    return n + (v > 0)


def softmax_2s(x, exp_lut, out_kind, mult, shift, out_zp, bits, m, signed_fine):
    """Integer softmax over the last axis: exp from a 256-entry table of (max - q), Q30 probabilities, then the
    output code (uniform, V-2SF or log2). ``exp_lut`` holds one table (256 entries) or one per head (256 * L
    entries, L = x.shape[-3], a per-head scores code): x (..., L, R, N), the rows of head l read table l."""
    q = x.astype(np.int64)
    tables = np.asarray(exp_lut).astype(np.int64).reshape(-1, 256)
    idx = q.max(-1, keepdims=True) - q
    e = tables[0][idx] if len(tables) == 1 else tables[np.arange(len(tables)).reshape(-1, 1, 1), idx]
    recip = (np.int64(1) << (PROB_FRAC_BITS + EXP_FRAC_BITS)) // e.sum(-1, keepdims=True)
    p = rshift_round(e * recip, EXP_FRAC_BITS)  # Q30
    return encode_probability(p, out_kind, mult, shift, out_zp, bits, m, signed_fine)


def softmax_mask_2s(x, mask, exp_lut, out_kind, mult, shift, out_zp, bits, m, signed_fine):
    """TSPTQ_SOFTMAX_MASK_2S: TSPTQ_SOFTMAX_2S over the pairs a mask keeps (Swin's shifted windows). x (B, W, H, N, N)
    int8 scores, mask (W, N, N) int8, 1 where the pair takes part, 0 where it does not (every row keeps one at
    least): the maximum and the sum run over the kept pairs only, a masked pair gets p = 0 exactly (the code of 0)."""
    keep = np.asarray(mask).astype(bool)[:, None]  # (W, 1, N, N): the same mask for every image and head
    q = x.astype(np.int64)
    mx = np.where(keep, q, -128).max(-1, keepdims=True)
    e = np.where(keep, exp_lut.astype(np.int64)[np.where(keep, mx - q, 0)], 0)
    recip = (np.int64(1) << (PROB_FRAC_BITS + EXP_FRAC_BITS)) // e.sum(-1, keepdims=True)
    p = rshift_round(e * recip, EXP_FRAC_BITS)  # Q30, 0 where masked
    return encode_probability(p, out_kind, mult, shift, out_zp, bits, m, signed_fine)


def encode_probability(p, out_kind, mult, shift, out_zp, bits, m, signed_fine):
    if out_kind == UNIFORM:
        return saturate(rshift_round(p * mult, shift) + out_zp, np.int8)
    if out_kind == TWO_SCALE:
        return encode_two_scale(rshift_round(p * mult, shift), bits, m, signed_fine)
    if out_kind == LOG2:
        # q = round(-log2(p / 2^30)): k = floor(log2 p); one more when p >= 2^(k + 1/2), i.e. p^2 >= 2^(2k+1)
        k = np.floor(np.log2(np.maximum(p, 1))).astype(np.int64)
        k = np.where(np.int64(1) << k > p, k - 1, k)  # exact floor(log2) despite float rounding
        k = np.where(np.int64(1) << (k + 1) <= p, k + 1, k)
        q = PROB_FRAC_BITS - k - (p * p >= (np.int64(1) << (2 * k + 1)))
        zero = (1 << bits) - 1
        return np.where(p > 0, np.clip(q, 0, zero), zero).astype(np.uint8)
    raise ValueError(f"softmax output code kind {out_kind}")


def encode_two_scale(v_q8, bits, m, signed_fine):
    """V-2SF encoding of v (Q8 units of the fine step): nearest representable value, the coarse region beyond the
    midpoint between the largest fine value and the first coarse one."""
    field_max = (1 << (bits - 1)) - 1
    lo, hi = (-(1 << (bits - 2)), (1 << (bits - 2)) - 1) if signed_fine else (0, field_max)
    c0 = (hi >> m) + 1
    fine = np.clip(rshift_round(v_q8, TWO_SCALE_FRAC_BITS), lo, hi)
    coarse = np.clip(rshift_round(v_q8, TWO_SCALE_FRAC_BITS + m), c0, field_max)
    use_coarse = 2 * v_q8 >= (hi + (c0 << m)) << TWO_SCALE_FRAC_BITS
    return np.where(use_coarse, coarse | (1 << (bits - 1)), fine & field_max).astype(np.uint8)


def token_mean(x, first: int, zp: int):
    """TOKEN_MEAN: the mean of tokens ``first``.. of (B, T, D) codes, per channel, in the input's code:
    zp + round_half_away(sum_t (x_t - zp) / n). A per-channel code keeps its channels, so the mean of the codes is
    the code of the mean of the values."""
    tokens = np.asarray(x, np.int64)[:, first:]
    return (div_round((tokens - zp).sum(1, keepdims=True), tokens.shape[1]) + zp).astype(np.int8)


def lookup(x, lut, in_shift=None):
    """GELU_2S: out = lut[q + 128] for int8 q (uint8 q indexes directly). With ``in_shift`` (a per-channel
    power-of-two input code: one shift per channel of the last axis), the table holds 256 entries per shift level
    and channel c reads level in_shift[c]: out = lut[256 * in_shift[c] + q + 128]."""
    idx = x.astype(np.int64) + (128 if x.dtype == np.int8 else 0)
    if in_shift is not None:
        idx = idx + 256 * np.asarray(in_shift, np.int64)
    return lut[idx]


def decode_operand(x, kind, zp, shift, bits, m, signed_fine, log2_frac):
    """Any input code -> integer d with real = unit * d (sign-split gives the positive part; see fc_2s)."""
    if kind == UNIFORM:
        return x.astype(np.int64) - zp
    if kind == CHANNEL_POW2:
        return (x.astype(np.int64) - zp) << shift.astype(np.int64)
    if kind == TWO_SCALE:
        return decode_two_scale(x, bits, m, signed_fine)
    if kind == LOG2:
        return decode_log2(x, bits, log2_frac)
    raise ValueError(f"operand code kind {kind}")


def fc_2s(x, kind, in_zp, in_shift, bits, m, signed_fine, neg_mult, neg_shift, w, bias, mult, shift, out_zp):
    """Fully connected over a two-scale or per-channel input code, per-channel output multipliers.

    Sign-split input (twin GELU): acc = sum(pos field * w) - round(sum(neg field * w) * neg_mult / 2^(31 - neg_shift)).
    """
    if kind == SIGN_SPLIT:
        code = x.astype(np.int64)
        field, neg = code & ((1 << (bits - 1)) - 1), (code >> (bits - 1)) & 1
        acc_pos = exact_matmul(np.where(neg == 0, field, 0), w.T)
        acc_neg = exact_matmul(np.where(neg == 1, field, 0), w.T)
        acc = acc_pos - rshift_round(acc_neg * np.int64(neg_mult), 31 - neg_shift)
    else:
        acc = exact_matmul(decode_operand(x, kind, in_zp, in_shift, bits, m, signed_fine, 0), w.T)
    return requantize_single(acc + bias.astype(np.int64), mult, shift, out_zp)


def bmm_2s(a, kind, bits, m, signed_fine, log2_frac, b, b_zp, mult, shift, out_zp):
    """Attention x V with a two-scale or log2 probability code: acc = sum_j d(a_ij) * (v_j - zp)."""
    d = decode_operand(a, kind, 0, None, bits, m, signed_fine, log2_frac)
    return requantize_single(exact_matmul(d, b.astype(np.int64) - b_zp), mult, shift, out_zp)


def bmm_bias(a, a_zp, b, b_zp, bias, bias_shift, mult, shift, out_zp):
    """TSPTQ_BMM_BIAS (Swin's scores): acc = sum_k (a_ik - a_zp) (b_jk - b_zp); t = (acc << bias_shift) + bias (bias
    int32 in units of the accumulator's unit / 2^bias_shift, the output's trailing dims, broadcast over the leading
    ones; |t| < 2^31); y = sat8(rshift_round(t * mult, 31 - shift + bias_shift) + out_zp): one rounding."""
    acc = exact_matmul(a.astype(np.int64) - a_zp, np.swapaxes(b.astype(np.int64) - b_zp, -1, -2))
    total = (acc << bias_shift) + bias.astype(np.int64)
    return saturate(rshift_round(total * np.int64(mult), 31 - shift + bias_shift) + out_zp, np.int8)


# --- the NPU variant (``lower(qm, npu=True)``, docs/integer-semantics.md "The NPU variant") -------------------------

def fully_connected_16x8(x, w, bias, mult, shift):
    """FULLY_CONNECTED 16x8 as LiteRT's reference kernel computes it: x (..., I) int16 (zero point 0), w (O, I) int8,
    bias (O,) int64, 64-bit accumulator, then one rounding half away from zero, ``rshift_round(acc * M, 31 - shift)``
    (the custom ops' ``requant1``; measured against LiteRT 2.3's BUILTIN_REF at exact ties, where it differs from the
    int8 kernel's half-up form), per-channel and per-tensor weights alike, saturated to int16 (zero point 0)."""
    acc = _accumulate(x, 0, w, bias)
    mult, n = np.asarray(mult, np.int64), 31 - np.asarray(shift, np.int64)
    if np.abs(acc).max(initial=0) < 2**32:  # acc * M < 2^63
        return saturate(rshift_round(acc * mult, n), np.int16)
    # a wider accumulator (int16 inputs near full scale on a wide row): the same rounding on Python integers
    v = acc.astype(object) * np.broadcast_to(mult, acc.shape[-1:]).astype(object)
    half = np.broadcast_to(np.left_shift(1, n - 1), acc.shape[-1:]).astype(object)
    q = (np.abs(v) + half) >> np.broadcast_to(n, acc.shape[-1:]).astype(object)
    return saturate(np.where(v < 0, -q, q).astype(np.float64), np.int16)


def requantize_same_scale(x, in_zp: int, out_zp: int, dtype) -> np.ndarray:
    """QUANTIZE between two codes of the same scale: x - in_zp + out_zp, saturated (TFLite's Requantize with the
    multiplier of 1.0, M = 2^30 and shift 1, which is exact)."""
    return saturate(np.asarray(x, np.int64) - in_zp + out_zp, dtype)


def layernorm_2s_i16(x, in_zp, in_shift, gamma_mul, beta_bias, eps, out_zp, out_shift, out_ch_shift):
    """TSPTQ_LAYERNORM_2S_I16: TSPTQ_LAYERNORM_2S's int8 output code y_c, decoded onto the output code's base scale
    as int16: (y_c - out_zp) << out_ch_shift_c (|value| <= 255 << 7 < 2^15). ``x`` is the int8 code of the residual
    stream, or with ``residual16`` its int16 value (in_zp 0, every in_shift 0: x_c itself, |x_c| <= 2^15)."""
    y = layernorm_2s(x, in_zp, in_shift, gamma_mul, beta_bias, eps, out_zp, out_shift)
    return ((y.astype(np.int64) - out_zp) << out_ch_shift.astype(np.int64)).astype(np.int16)


def add_i16(a, a_zp, b, b_zp, params, out_zp):
    """TSPTQ_ADD_2S_I16: TSPTQ_ADD_2S with its operand b given as an int16 value v before its int8 code: the code is
    sat8(v + b_zp), and the add is TSPTQ_ADD_2S's (TFLite's ADD per channel, left shift 20) on it."""
    code = saturate(np.asarray(b, np.int64) + b_zp, np.int8)
    return add(a, a_zp, code, b_zp, params, out_zp)


def token_mean_i16(x, shift, first: int) -> np.ndarray:
    """TSPTQ_TOKEN_MEAN_I16: the mean of tokens ``first``.. of (B, T, D) int16 values, per channel, rounded half away
    from zero onto the channel's step 2^shift_c: round_half_away(sum_t x_t / (n * 2^shift_c)) << shift_c, saturated
    to int16. On TSPTQ_LAYERNORM_2S_I16's output x_t = (q_t - zp) << shift_c this is TSPTQ_TOKEN_MEAN's code of the
    q_t, decoded the same way."""
    tokens = np.asarray(x, np.int64)[:, first:]
    shift = np.asarray(shift, np.int64)
    mean = div_round(tokens.sum(1, keepdims=True), tokens.shape[1] << shift)
    return saturate(mean << shift, np.int16)


def plane_2s(code, plane: int, bits: int, signed_fine: bool) -> np.ndarray:
    """TSPTQ_PLANE_2S: one int8 plane of a V-2SF code, d = fine + (coarse << m): plane 0 the fine value (flag 0,
    else 0), plane 1 the coarse field (flag 1, else 0). Each is an int8 operand of its own BATCH_MATMUL."""
    code = np.asarray(code).astype(np.int64) & ((1 << bits) - 1)
    flag, field = code >> (bits - 1), code & ((1 << (bits - 1)) - 1)
    if plane == 0:
        fine = np.where(field >= (1 << (bits - 2)), field - (1 << (bits - 1)), field) if signed_fine else field
        return np.where(flag == 0, fine, 0).astype(np.int8)
    return np.where(flag == 1, field, 0).astype(np.int8)


def add_i16_equal_scales(a, b) -> np.ndarray:
    """ADD int16 + int16 -> int16, all three of one scale, zero point 0: sat16(a + b). TFLite's int16 ADD then rescales
    by exactly 0.5 (inputs, after the left shift 15) and 2^-14 (output), and its power-of-two form (a scale within 1e-3
    of 2^k in log2) shifts by 0: neither rounds (checked against LiteRT 2.3's BUILTIN_REF by tests/test_npu_variant.py;
    the power-of-two form aborts on a broadcast operand, so the lowering gives it a full-shape constant)."""
    return saturate(np.asarray(a, np.int64) + np.asarray(b, np.int64), np.int16)


def ln_neg_mean(x) -> np.ndarray:
    """TSPTQ_LN_NEG_MEAN: minus each row's mean of int16 values, -round_half_away(S / D), saturated to int16 (the NPU
    LayerNorm's first operand; the same scale as x)."""
    x = np.asarray(x, np.int64)
    return saturate(-div_round(x.sum(-1, keepdims=True), x.shape[-1]), np.int16)


def ln_rstd(x, eps: int, c: int) -> np.ndarray:
    """TSPTQ_LN_RSTD: each row's reciprocal deviation of int16 values, round_half_away(2^(c + e) / sigma) with sigma
    and e as ``layernorm_sigma`` (so about 2^c / (D sigma_x)), saturated to [0, 32767]."""
    x = np.asarray(x, np.int64)
    sigma, extra = layernorm_sigma(x.sum(-1, keepdims=True), (x * x).sum(-1, keepdims=True), x.shape[-1], eps)
    return np.minimum(div_round(np.int64(1) << (c + extra), sigma), 32767).astype(np.int16)


def mul_int16(a, b, mult: int, shift: int) -> np.ndarray:
    """TFLite's int16 MUL (zero points 0; broadcasting): MultiplyByQuantizedMultiplier(a * b), saturated to int16."""
    prod = np.asarray(a, np.int64) * np.asarray(b, np.int64)
    return saturate(multiply_by_quantized_multiplier(prod, mult, shift), np.int16)


def depthwise_16x8(x, w, bias, mult, shift) -> np.ndarray:
    """DEPTHWISE_CONV_2D 1x1 16x8 as LiteRT's reference kernel computes it (per-channel weights, int64 bias):
    acc = x_c w_c + b_c (int64), then TFLite's 64-bit MultiplyByQuantizedMultiplier, which keeps the multiplier's top
    16 bits: r = (M + 2^15) >> 16 (0x7FFF from M >= 0x7FFF0000), (acc * r + 2^(14 - shift)) >> (15 - shift), as int32,
    saturated to int16 (measured against LiteRT 2.3's BUILTIN_REF, large biases included)."""
    acc = np.asarray(x, np.int64) * np.asarray(w, np.int64) + np.asarray(bias, np.int64)
    mult, shift = np.asarray(mult, np.int64), np.asarray(shift, np.int64)
    reduced = np.where(mult < 0x7FFF0000, (mult + (1 << 15)) >> 16, 0x7FFF)
    total = 15 - shift
    v = (acc * reduced + (np.int64(1) << (total - 1))) >> total
    return saturate(((v + 2**31) & 0xFFFFFFFF) - 2**31, np.int16)


def batch_matmul_i32(a, b) -> np.ndarray:
    """BATCH_MATMUL int8 x int8 -> int32 as LiteRT's reference kernel computes it: the raw products, summed in int32,
    **no zero point applied** (of either input) and no requantization (measured against LiteRT 2.3's BUILTIN_REF)."""
    acc = exact_matmul(a, b)
    if np.abs(acc).max(initial=0) > 2**31 - 1:
        raise ValueError("BATCH_MATMUL int32: the accumulator overflows int32")
    return acc.astype(np.int32)


def pv_sum_2s(acc_fine, acc_coarse, code, bits, m, signed_fine, b_zp, mult, shift, out_zp):
    """TSPTQ_PV_SUM_2S: attention x V of a V-2SF P from its two planes' int32 products (BATCH_MATMUL int8 -> int32,
    raw: acc_fine = fine . v, acc_coarse = coarse . v), with one rounding: acc = acc_fine + (acc_coarse << m) -
    b_zp * sum_j d_j, where sum_j d_j is the row sum of P's decoded values, then TSPTQ_BMM_2S's requantization. Since
    d = fine + (coarse << m), acc is TSPTQ_BMM_2S's accumulator sum_j d_j (v_j - b_zp) and the output is its bytes."""
    rows = decode_two_scale(code, bits, m, signed_fine).sum(axis=-1, keepdims=True)
    acc = acc_fine.astype(np.int64) + (acc_coarse.astype(np.int64) << m) - b_zp * rows
    return requantize_single(acc, mult, shift, out_zp)
