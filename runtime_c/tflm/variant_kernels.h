/* tsptq NPU variant: the variant-only arithmetic of its CPU custom ops (docs/integer-semantics.md "The NPU variant";
 * toolchain/tsptq/intmodel/kernels.py), written once. tflm_ops.c's Eval functions run these around the C runtime's
 * kernels (tq_layernorm_2s, tq_add) or as the whole op, and benchmarks/npu_cpu_steps.c times the same functions on the
 * Cortex-M55. C99, static inline, plain pointers and sizes (the caller checks the shapes and the option ranges, as
 * tflm_ops.c's prepare functions do), no allocation, no libc.
 *
 * Each loop's portable body is its *_scalar function, the reference. On Armv8.1-M with integer Helium (Cortex-M55/M85,
 * the condition dot.h uses for TQ_SIMD_MVE; -DTSPTQ_NO_MVE turns it off) the unsuffixed names run MVE forms that give
 * the scalar bytes for every input they take and call the scalar body for the cases they do not cover; elsewhere
 * (the x86 build of tflm_ops.c) the unsuffixed names are the scalar bodies. */
#ifndef TSPTQ_VARIANT_KERNELS_H
#define TSPTQ_VARIANT_KERNELS_H

#include <stdint.h>

#include "fixedpoint.h"
#include "ops/layernorm_sigma.h"

/* TSPTQ_LAYERNORM_2S_I16 after tq_layernorm_2s: its int8 code y (rows, D) decoded to int16,
 * out = (y_c - out_zp) << out_shift_c (docs/integer-semantics.md "The NPU variant", LayerNorm outputs). */
static inline void tq_layernorm_2s_i16_tail_scalar(const int8_t *y, int64_t rows, int32_t D, int32_t out_zp,
                                                   const int8_t *out_shift, int16_t *out) {
    int64_t r;
    int32_t j;
    for (r = 0; r < rows; r++, y += D, out += D)
        for (j = 0; j < D; j++) out[j] = (int16_t)tq_shl64((int64_t)y[j] - out_zp, out_shift[j]);
}

/* TSPTQ_ADD_2S_I16 before tq_add: the int16 branch b (n values) saturated into its int8 code, sat8(b + b_zp)
 * (docs/integer-semantics.md "The NPU variant", TSPTQ_ADD_2S_I16). */
static inline void tq_add_2s_i16_code_scalar(const int16_t *b, int64_t n, int32_t b_zp, int8_t *code) {
    int64_t i;
    for (i = 0; i < n; i++) code[i] = tq_sat8((int64_t)b[i] + b_zp);
}

/* TSPTQ_GELU_2S with an int16 table (the V-2SF decode of each entry): out = table[q + 128] for int8 codes
 * (input_signed), table[q] for uint8 ones (docs/integer-semantics.md "The NPU variant", GELU outputs). */
static inline void tq_lookup_i16_scalar(const uint8_t *x, int64_t n, int input_signed, const int16_t *table,
                                        int16_t *out) {
    const uint8_t flip = input_signed ? 0x80u : 0u; /* int8 q + 128 */
    int64_t i;
    for (i = 0; i < n; i++) out[i] = table[(uint8_t)(x[i] ^ flip)];
}

/* TSPTQ_PLANE_2S: one plane of n V-2SF codes of `bits` bits; plane 0 the fine value where flag = 0 (else 0), plane 1
 * the coarse field where flag = 1 (else 0), so that d = fine + (coarse << m) (docs/integer-semantics.md "The NPU
 * variant", P x V with a V-2SF P). */
static inline void tq_plane_2s_scalar(const uint8_t *x, int64_t n, int32_t plane, int32_t bits, int32_t signed_fine,
                                      int8_t *y) {
    int64_t i;
    for (i = 0; i < n; i++) {
        uint32_t code = x[i] & ((1u << bits) - 1u), flag = code >> (bits - 1);
        int64_t v = 0;
        if (plane == 0 && !flag) v = tq_decode_two_scale(code, bits, 0, signed_fine);
        else if (plane == 1 && flag) v = (int64_t)(code & ((1u << (bits - 1)) - 1u));
        y[i] = (int8_t)v;
    }
}

/* TSPTQ_PV_SUM_2S: acc = fine + (coarse << m) - b_zp * sum_j d_j (d the decoded row of P's code), then
 * sat8(requant1(acc, mult, shift) + out_zp): TSPTQ_BMM_2S's accumulator and bytes. code (rows, N); fine, coarse and
 * y (rows, M) (docs/integer-semantics.md "The NPU variant", P x V with a V-2SF P). tq_pv_row_2s: one row's bytes from
 * its dsum (both forms). */
static inline void tq_pv_row_2s(const int32_t *fine, const int32_t *coarse, int64_t dsum, int32_t M, int32_t m,
                                int32_t b_zp, int32_t mult, int32_t shift, int32_t out_zp, int8_t *y) {
    int32_t j;
    for (j = 0; j < M; j++) {
        int64_t acc = (int64_t)fine[j] + tq_shl64(coarse[j], m) - (int64_t)b_zp * dsum;
        y[j] = tq_sat8(tq_requant1(acc, mult, shift) + out_zp);
    }
}

static inline void tq_pv_sum_2s_scalar(const int32_t *fine, const int32_t *coarse, const uint8_t *code, int64_t rows,
                                       int32_t N, int32_t M, int32_t bits, int32_t m, int32_t signed_fine,
                                       int32_t b_zp, int32_t mult, int32_t shift, int32_t out_zp, int8_t *y) {
    int64_t r;
    int32_t j;
    for (r = 0; r < rows; r++) {
        int64_t dsum = 0;
        for (j = 0; j < N; j++) dsum += tq_decode_two_scale(code[r * N + j], bits, m, signed_fine);
        tq_pv_row_2s(fine + r * M, coarse + r * M, dsum, M, m, b_zp, mult, shift, out_zp, y + r * M);
    }
}

/* TSPTQ_TOKEN_MEAN_I16: x int16 (B, T, D), y int16 (B, D): the mean of tokens first..T-1 per channel, rounded half
 * away from zero onto the channel's step 2^shift_c, saturated to int16 (docs/integer-semantics.md "The NPU variant",
 * the patch-token mean of a token+avg head). */
static inline void tq_token_mean_i16(const int16_t *x, int64_t B, int32_t T, int32_t D, int32_t first,
                                     const int8_t *shift, int16_t *y) {
    int64_t b;
    int32_t t, j;
    for (b = 0; b < B; b++)
        for (j = 0; j < D; j++) {
            int64_t sum = 0;
            for (t = first; t < T; t++) sum += x[(b * T + t) * D + j];
            y[b * D + j] = (int16_t)tq_clamp64(
                tq_shl64(tq_div_round(sum, (int64_t)(T - first) << shift[j]), shift[j]), -32768, 32767);
        }
}

/* ---- the NPU LayerNorm's row statistics (layernorm_npu: TSPTQ_LN_NEG_MEAN, TSPTQ_LN_RSTD) ------------------------
 * x int16 (rows, D), zero point 0, D in 1..4096 (the ops' prepare); y int16, one value per row
 * (docs/integer-semantics.md "The LayerNorm on the NPU"; kernels.py ln_neg_mean, ln_rstd, layernorm_sigma). The
 * bounds are the integer LayerNorm's for an int16 row (runtime_c/src/ops/layernorm_2s.c's header): |x_c| <= 2^15, so
 * |S| <= 2^27, sq = sum x_c^2 <= 2^42, D sq <= 2^54 and D sq - S^2 = D^2 (the row's variance) < 2^54, so with
 * eps <= 2^62 V < 2^63: no int64 wraps. Then V << 2e < 2^63 (e is chosen so), sigma < 2^31.5, and 2^(c + e) <= 2^62
 * (c <= 42, e <= 20) plus sigma / 2 fits an int64 too. */

/* -div_round(S, D), saturated to int16: |S| <= 2^15 D, so the quotient's magnitude is at most 2^15 and only the
 * all -32768 row's 2^15 saturates. For D <= 2^16 (every row the ops take) |S| + D / 2 < 2^32, so tq_div_round's
 * arithmetic runs in uint32: one 32-bit division (UDIV) rather than a 64-bit library call on 32-bit cores. */
static inline int16_t tq_ln_neg_mean_row(int64_t S, int32_t D) {
    int64_t q;
    if (D <= 65536) {
        const uint32_t a = (uint32_t)(S < 0 ? -S : S);
        q = (int64_t)((a + ((uint32_t)D >> 1)) / (uint32_t)D);
        q = S < 0 ? -q : q;
    } else {
        q = tq_div_round(S, D);
    }
    return (int16_t)tq_clamp64(-q, -32768, 32767);
}

/* min(32767, div_round(2^(c + e), sigma)), e and sigma the row's (tq_ln_sigma, layernorm_sigma.h: TSPTQ_LAYERNORM_2S's
 * own). */
static inline int16_t tq_ln_rstd_row(int64_t S, int64_t sq, int32_t D, int64_t eps, int32_t c) {
    int e;
    const int64_t sigma = tq_ln_sigma(S, sq, D, eps, &e);
    int64_t r;
    /* div_round(2^(c+e), sigma) >= 32767 exactly when 2^(c+e) + sigma / 2 >= 32767 sigma: no division then (the
     * common case is not this one, but a saturated row costs nothing); 32767 sigma < 2^47 */
    if (((uint64_t)1 << (c + e)) + (uint64_t)(sigma >> 1) >= (uint64_t)32767 * (uint64_t)sigma) return 32767;
    r = tq_div_round((int64_t)1 << (c + e), sigma);
    return (int16_t)r;
}

/* S = sum x_c of one row (64 bits: the reference holds for any D). */
static inline int64_t tq_ln_sum_i16_scalar(const int16_t *x, int32_t D) {
    int64_t S = 0;
    int32_t j;
    for (j = 0; j < D; j++) S += x[j];
    return S;
}

/* S and sq = sum x_c^2 of one row (sq reaches 2^42 at D = 4096: 64 bits). */
static inline void tq_ln_sums_i16_scalar(const int16_t *x, int32_t D, int64_t *S, int64_t *sq) {
    int64_t s = 0, q = 0;
    int32_t j;
    for (j = 0; j < D; j++) {
        s += x[j];
        q += (int64_t)x[j] * x[j];
    }
    *S = s, *sq = q;
}

/* TSPTQ_LN_NEG_MEAN: y_r = sat16(-div_round(sum_c x_rc, D)), D >= 1. */
static inline void tq_ln_neg_mean_i16_scalar(const int16_t *x, int64_t rows, int32_t D, int16_t *y) {
    int64_t r;
    for (r = 0; r < rows; r++, x += D) y[r] = tq_ln_neg_mean_row(tq_ln_sum_i16_scalar(x, D), D);
}

/* TSPTQ_LN_RSTD: y_r = tq_ln_rstd_row of the row's sums; D in 1..4096, 0 <= eps <= 2^62, 0 <= c <= 42 (the bounds
 * above). */
static inline void tq_ln_rstd_i16_scalar(const int16_t *x, int64_t rows, int32_t D, int64_t eps, int32_t c,
                                         int16_t *y) {
    int64_t r, S, sq;
    for (r = 0; r < rows; r++, x += D) {
        tq_ln_sums_i16_scalar(x, D, &S, &sq);
        y[r] = tq_ln_rstd_row(S, sq, D, eps, c);
    }
}

/* ---- the Helium (MVE) forms -------------------------------------------------------------------------------------
 * Each loop runs 16 (bytes), 8 (int16) or 4 (int32) lanes at a time: whole blocks unpredicated, then the last part
 * block tail-predicated (VCTP: a zeroing load, a predicated store), so every length is taken and nothing is written
 * past the end. A case a form does not cover goes to the scalar body. */
#if defined(__ARM_FEATURE_MVE) && (__ARM_FEATURE_MVE & 1) && !defined(TSPTQ_NO_MVE)
#include <arm_mve.h>
#define TQ_VARIANT_MVE 1

/* (y - out_zp) << k in int16 lanes: the scalar form keeps the low 16 bits of the int64 result, which depend only on
 * the low 16 bits of y - out_zp, so int16 wrap-around arithmetic gives them for any out_zp; VSHL by a per-lane amount
 * k in 0..63 gives (v << k) mod 2^16 (0 from k = 16 up), as the scalar cast does. */
static inline void tq_layernorm_2s_i16_tail(const int8_t *y, int64_t rows, int32_t D, int32_t out_zp,
                                            const int8_t *out_shift, int16_t *out) {
    const int16_t zp = (int16_t)(uint16_t)(uint32_t)out_zp; /* its low 16 bits */
    int64_t r;
    int32_t j;
    for (r = 0; r < rows; r++, y += D, out += D) {
        for (j = 0; j + 8 <= D; j += 8)
            vst1q_s16(out + j, vshlq_s16(vsubq_n_s16(vldrbq_s16(y + j), zp), vldrbq_s16(out_shift + j)));
        if (j < D) {
            mve_pred16_t p = vctp16q((uint32_t)(D - j));
            int16x8_t v = vsubq_n_s16(vldrbq_z_s16(y + j, p), zp);
            vstrhq_p_s16(out + j, vshlq_s16(v, vldrbq_z_s16(out_shift + j, p)), p);
        }
    }
}

/* sat8(b + b_zp): a saturating int16 add saturates only where b + b_zp is outside int16, hence outside int8 on the
 * same side, so clamping its result to [-128, 127] is exact; the narrowing store keeps each lane's low byte. */
static inline int16x8_t tq_vk_sat8_16(int16x8_t b, int16_t b_zp) {
    return vminq_s16(vmaxq_s16(vqaddq_n_s16(b, b_zp), vdupq_n_s16(-128)), vdupq_n_s16(127));
}
static inline void tq_add_2s_i16_code(const int16_t *b, int64_t n, int32_t b_zp, int8_t *code) {
    if (b_zp < -32768 || b_zp > 32767) {
        tq_add_2s_i16_code_scalar(b, n, b_zp, code);
        return;
    }
    for (; n >= 8; n -= 8, b += 8, code += 8) vstrbq_s16(code, tq_vk_sat8_16(vld1q_s16(b), (int16_t)b_zp));
    if (n > 0) {
        mve_pred16_t p = vctp16q((uint32_t)n);
        vstrbq_p_s16(code, tq_vk_sat8_16(vldrhq_z_s16(b, p), (int16_t)b_zp), p);
    }
}

/* table[x ^ flip]: a gather of 8 halfwords at the widened codes (offsets scaled by 2), the same 256 entries. */
static inline void tq_lookup_i16(const uint8_t *x, int64_t n, int input_signed, const int16_t *table, int16_t *out) {
    const uint16x8_t flip = vdupq_n_u16(input_signed ? 0x80u : 0u);
    for (; n >= 8; n -= 8, x += 8, out += 8)
        vst1q_s16(out, vldrhq_gather_shifted_offset_s16(table, veorq_u16(vldrbq_u16(x), flip)));
    if (n > 0) {
        mve_pred16_t p = vctp16q((uint32_t)n);
        uint16x8_t i = veorq_u16(vldrbq_z_u16(x, p), flip);
        vstrhq_p_s16(out, vldrhq_gather_shifted_offset_z_s16(table, i, p), p);
    }
}

/* One plane of 16 codes. t = x << (8 - bits) puts the code's flag at bit 7 and drops the bits above the code (the
 * scalar mask); t << 1 puts the (bits - 1)-bit field at the top, and an arithmetic right shift by 9 - bits gives it
 * sign-extended (the signed fine value), masked to bits - 1 bits it is the unsigned field. The flag's lanes (t >> 7,
 * arithmetic: all ones) keep plane 1 and clear plane 0 (keep_flip all ones). Every value fits int8 as in the scalar
 * cast. */
static inline int8x16_t tq_vk_plane16(uint8x16_t x, int32_t up, int32_t down, int8x16_t field_mask,
                                      int8x16_t keep_flip) {
    int8x16_t t = vreinterpretq_s8_u8(vshlq_r_u8(x, up));
    int8x16_t v = vandq_s8(vshlq_r_s8(vshlq_n_s8(t, 1), -down), field_mask);
    return vandq_s8(v, veorq_s8(vshrq_n_s8(t, 7), keep_flip));
}
static inline void tq_plane_2s(const uint8_t *x, int64_t n, int32_t plane, int32_t bits, int32_t signed_fine,
                               int8_t *y) {
    const int32_t up = 8 - bits, down = 9 - bits;
    const int8x16_t field_mask = vdupq_n_s8((int8_t)(plane == 0 && signed_fine ? -1 : (1 << (bits - 1)) - 1));
    const int8x16_t keep_flip = vdupq_n_s8((int8_t)(plane == 0 ? -1 : 0)); /* plane 0 keeps the flag-0 lanes */
    if ((plane != 0 && plane != 1) || bits < 3 || bits > 8) {
        tq_plane_2s_scalar(x, n, plane, bits, signed_fine, y);
        return;
    }
    for (; n >= 16; n -= 16, x += 16, y += 16) vst1q_s8(y, tq_vk_plane16(vld1q_u8(x), up, down, field_mask, keep_flip));
    if (n > 0) {
        mve_pred16_t p = vctp8q((uint32_t)n);
        vstrbq_p_s8(y, tq_vk_plane16(vldrbq_z_u8(x, p), up, down, field_mask, keep_flip), p);
    }
}

/* sum_j d_j of one row of codes, 16 a step: as in tq_plane_2s, the fine values (flag-0 lanes, the flag lanes
 * cleared) and the coarse fields (flag-1 lanes) summed apart by VADDVA into int32, d's sum being
 * fine + (coarse << m) (exact: each coarse d = field << m with field << m < 2^31, m <= 24). Zero-loaded tail lanes are
 * fine zeros. The int32 sums are moved into the int64 total every 2^16 codes (|sum| < 2^16 * 128), so no N
 * overflows them. */
static inline void tq_vk_dsum16(uint8x16_t x, int32_t up, int32_t down, int8x16_t field_mask, int32_t *fine,
                                uint32_t *coarse) {
    int8x16_t t = vreinterpretq_s8_u8(vshlq_r_u8(x, up)), f = vshlq_n_s8(t, 1), flag = vshrq_n_s8(t, 7);
    *fine = vaddvaq_s8(*fine, vbicq_s8(vandq_s8(vshlq_r_s8(f, -down), field_mask), flag));
    *coarse = vaddvaq_u8(*coarse, vandq_u8(vshlq_r_u8(vreinterpretq_u8_s8(f), -down), vreinterpretq_u8_s8(flag)));
}
static inline int64_t tq_pv_dsum_2s(const uint8_t *code, int32_t N, int32_t bits, int32_t m, int32_t signed_fine) {
    const int32_t up = 8 - bits, down = 9 - bits;
    const int8x16_t field_mask = vdupq_n_s8((int8_t)(signed_fine ? -1 : (1 << (bits - 1)) - 1));
    int64_t total = 0;
    int32_t j = 0;
    while (j < N) {
        const int32_t end = N - j > 65536 ? j + 65536 : N;
        int32_t fine = 0;
        uint32_t coarse = 0;
        for (; j + 16 <= end; j += 16) tq_vk_dsum16(vld1q_u8(code + j), up, down, field_mask, &fine, &coarse);
        if (j < end) {
            tq_vk_dsum16(vldrbq_z_u8(code + j, vctp8q((uint32_t)(end - j))), up, down, field_mask, &fine, &coarse);
            j = end;
        }
        total += (int64_t)fine + ((int64_t)coarse << m);
    }
    return total;
}

/* One row's bytes, 4 a step, where every accumulator fits int32 (tq_pv_row_2s otherwise). acc is formed with
 * saturating adds and shift: a lane that never saturated is exact, and one that did ends at INT32_MIN or INT32_MAX,
 * which the row's largest |value| (VMAXAV of each stage) reveals; such a row is redone by tq_pv_row_2s. With
 * |acc| < 2^31 - 1 and 0 <= mult < 2^31 the scalar product acc * mult is exact (no wrap), and its rounding half away
 * from zero by e = 31 - shift (1..62) is sign(acc) * ((|acc| * mult + 2^(e-1)) >> e). The 64-bit |acc| * mult is
 * hi * 2^32 + lo (VMULH, VMUL unsigned); then (hi * 2^32 + lo + 2^(e-1)) >> e = (hi << (32 - e)) + ((lo + 2^(e-1))
 * >> e) for e <= 32, and (hi + 2^(e-33)) >> (e - 32) for e > 32 (2^(e-1) is then a multiple of 2^32, so lo cannot
 * carry into the result; its term is 0). VRSHL/VQRSHL by a register do exactly these rounded shifts (the
 * architecture forms the rounding sum without overflow; a right shift past the lane gives 0, a negative amount to
 * VQRSHL is the rounded right shift of hi). The left shift and the sum saturate at 2^32 - 1, and the magnitude is
 * clamped to 2^16: beyond that the byte saturates either way (|out_zp| <= 2^15). */
static inline int32x4_t tq_vk_pv4(int32x4_t fine, int32x4_t coarse, int32_t m, int32_t base, uint32_t mult, int32_t e,
                                  int32_t out_zp, uint32_t *big) {
    int32x4_t c = vqshlq_r_s32(coarse, m), a = vqaddq_s32(fine, c), v, sign;
    uint32x4_t mag, hi, lo;
    *big = vmaxavq_s32(*big, c);
    *big = vmaxavq_s32(*big, a);
    a = vqaddq_n_s32(a, base);
    *big = vmaxavq_s32(*big, a);
    mag = vreinterpretq_u32_s32(vabsq_s32(a));
    hi = vmulhq_u32(mag, vdupq_n_u32(mult));
    lo = vmulq_n_u32(mag, mult);
    mag = vqaddq_u32(vqrshlq_n_u32(hi, 32 - e), vrshlq_n_u32(lo, -e));
    v = vreinterpretq_s32_u32(vminq_u32(mag, vdupq_n_u32(65536u)));
    sign = vshrq_n_s32(a, 31); /* -1 where acc < 0: (v ^ -1) - -1 = -v */
    v = vaddq_n_s32(vsubq_s32(veorq_s32(v, sign), sign), out_zp);
    return vminq_s32(vmaxq_s32(v, vdupq_n_s32(-128)), vdupq_n_s32(127));
}
static inline void tq_pv_row_2s_mve(const int32_t *fine, const int32_t *coarse, int64_t dsum, int32_t M, int32_t m,
                                    int32_t b_zp, int32_t mult, int32_t shift, int32_t out_zp, int8_t *y) {
    const int64_t base = -(int64_t)b_zp * dsum;
    const int32_t e = 31 - shift;
    uint32_t big = 0;
    int32_t j;
    if (base <= -2147483647 || base >= 2147483647) {
        tq_pv_row_2s(fine, coarse, dsum, M, m, b_zp, mult, shift, out_zp, y);
        return;
    }
    for (j = 0; j + 4 <= M; j += 4)
        vstrbq_s32(y + j, tq_vk_pv4(vld1q_s32(fine + j), vld1q_s32(coarse + j), m, (int32_t)base, (uint32_t)mult, e,
                                    out_zp, &big));
    if (j < M) {
        mve_pred16_t p = vctp32q((uint32_t)(M - j));
        vstrbq_p_s32(y + j, tq_vk_pv4(vldrwq_z_s32(fine + j, p), vldrwq_z_s32(coarse + j, p), m, (int32_t)base,
                                      (uint32_t)mult, e, out_zp, &big), p);
    }
    if (big >= 2147483647u) tq_pv_row_2s(fine, coarse, dsum, M, m, b_zp, mult, shift, out_zp, y);
}

static inline void tq_pv_sum_2s(const int32_t *fine, const int32_t *coarse, const uint8_t *code, int64_t rows,
                                int32_t N, int32_t M, int32_t bits, int32_t m, int32_t signed_fine, int32_t b_zp,
                                int32_t mult, int32_t shift, int32_t out_zp, int8_t *y) {
    int64_t r;
    if (bits < 3 || bits > 8 || m < 0 || m > 24 || N < 0 || mult < 0 || shift < -31 || shift > 30 ||
        out_zp < -32768 || out_zp > 32767) {
        tq_pv_sum_2s_scalar(fine, coarse, code, rows, N, M, bits, m, signed_fine, b_zp, mult, shift, out_zp, y);
        return;
    }
    for (r = 0; r < rows; r++)
        tq_pv_row_2s_mve(fine + r * M, coarse + r * M, tq_pv_dsum_2s(code + r * N, N, bits, m, signed_fine), M, m,
                         b_zp, mult, shift, out_zp, y + r * M);
}

/* The row sums, 8 int16 lanes a step: VADDVA adds the lanes into an int32 (exact: |S| <= 2^15 D < 2^31 for
 * D < 2^16), VMLALDAVA the lanes' squares (each <= 2^30) into an int64. The tail's zeroing load gives zero lanes,
 * which add nothing. SQ (a constant where inlined): the squares too. */
static inline __attribute__((always_inline)) int64_t tq_vk_ln_sums16(const int16_t *x, int32_t D, int64_t *sq,
                                                                     const int SQ) {
    int32_t s = 0, j = 0;
    int64_t q = 0;
    for (; j + 8 <= D; j += 8) {
        const int16x8_t v = vld1q_s16(x + j);
        s = vaddvaq_s16(s, v);
        if (SQ) q = vmlaldavaq_s16(q, v, v);
    }
    if (j < D) {
        const int16x8_t v = vldrhq_z_s16(x + j, vctp16q((uint32_t)(D - j)));
        s = vaddvaq_s16(s, v);
        if (SQ) q = vmlaldavaq_s16(q, v, v);
    }
    if (SQ) *sq = q;
    return s;
}
static inline void tq_ln_neg_mean_i16(const int16_t *x, int64_t rows, int32_t D, int16_t *y) {
    int64_t r;
    if (D < 1 || D > 65535) {
        tq_ln_neg_mean_i16_scalar(x, rows, D, y);
        return;
    }
    for (r = 0; r < rows; r++, x += D) y[r] = tq_ln_neg_mean_row(tq_vk_ln_sums16(x, D, 0, 0), D);
}
static inline void tq_ln_rstd_i16(const int16_t *x, int64_t rows, int32_t D, int64_t eps, int32_t c, int16_t *y) {
    int64_t r, sq;
    if (D < 1 || D > 65535) {
        tq_ln_rstd_i16_scalar(x, rows, D, eps, c, y);
        return;
    }
    for (r = 0; r < rows; r++, x += D) {
        const int64_t S = tq_vk_ln_sums16(x, D, &sq, 1);
        y[r] = tq_ln_rstd_row(S, sq, D, eps, c);
    }
}

#else /* the portable bodies */
static inline void tq_layernorm_2s_i16_tail(const int8_t *y, int64_t rows, int32_t D, int32_t out_zp,
                                            const int8_t *out_shift, int16_t *out) {
    tq_layernorm_2s_i16_tail_scalar(y, rows, D, out_zp, out_shift, out);
}
static inline void tq_add_2s_i16_code(const int16_t *b, int64_t n, int32_t b_zp, int8_t *code) {
    tq_add_2s_i16_code_scalar(b, n, b_zp, code);
}
static inline void tq_lookup_i16(const uint8_t *x, int64_t n, int input_signed, const int16_t *table, int16_t *out) {
    tq_lookup_i16_scalar(x, n, input_signed, table, out);
}
static inline void tq_plane_2s(const uint8_t *x, int64_t n, int32_t plane, int32_t bits, int32_t signed_fine,
                               int8_t *y) {
    tq_plane_2s_scalar(x, n, plane, bits, signed_fine, y);
}
static inline void tq_pv_sum_2s(const int32_t *fine, const int32_t *coarse, const uint8_t *code, int64_t rows,
                                int32_t N, int32_t M, int32_t bits, int32_t m, int32_t signed_fine, int32_t b_zp,
                                int32_t mult, int32_t shift, int32_t out_zp, int8_t *y) {
    tq_pv_sum_2s_scalar(fine, coarse, code, rows, N, M, bits, m, signed_fine, b_zp, mult, shift, out_zp, y);
}
static inline void tq_ln_neg_mean_i16(const int16_t *x, int64_t rows, int32_t D, int16_t *y) {
    tq_ln_neg_mean_i16_scalar(x, rows, D, y);
}
static inline void tq_ln_rstd_i16(const int16_t *x, int64_t rows, int32_t D, int64_t eps, int32_t c, int16_t *y) {
    tq_ln_rstd_i16_scalar(x, rows, D, eps, c, y);
}
#endif

#endif
