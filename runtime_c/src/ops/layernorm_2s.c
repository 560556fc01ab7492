/* TSPTQ_LAYERNORM_2S (docs/integer-semantics.md; tsptq.intmodel.kernels.layernorm_2s). Two passes over each row (S and
 * sum x_c^2, then the output): no scratch. 64-bit throughout (x_c, d_c are small, V and the products are not). For
 * D <= LN_MAX_D = 4096 and |q - in_zp| <= 255, in_shift <= 7 (the op's prepare): |x_c| <= 255 << 7 < 2^15 and, one
 * zero point, |x_c - x_j| <= 255 << 7, so |S| < 2^27, |d_c| = |sum_j (x_c - x_j)| < 2^27, sum x_c^2 < 2^42, and
 *   V = sum_c d_c^2 / D + eps = D sum_c x_c^2 - S^2 + eps   (exact: sum d_c^2 = D (D sum x_c^2 - S^2);
 *                                                             sum d_c^2 itself passes 2^63 for D > 3260)
 * with D sum x_c^2 < 2^54 and D sum x_c^2 - S^2 = D^2 (the row's variance) <= D^2 (255 << 6)^2 < 2^52: V < 2^63. Then
 * V << 2e < 2^63, sigma < 2^31.5, and |d_c| 2^(24 + e) <= sqrt(D V) 2^(24 + e) < sqrt(D) 2^55.5 <= 2^61.5
 * (d_c^2 <= D (V - eps)); |n_c| <= sqrt(D) 2^24 (1 + 2^-19) + 1 < 2^30.01, |n_c g_c| < 2^61.01, and with |beta| <=
 * 2^62 the sum stays below 2^63. On x86 (ln_row_simd, rows up to LN_SIMD_MAX_D channels): AVX-512 (avx512vnni, amx)
 * 16 channels at a time, AVX2 its sums 8 at a time; wider rows take ln_row_ref. On Arm M-profile (ln_row_arm) the
 * division by sigma through its reciprocal (exact: tq_div32_q, dot.h), with Helium the sums 8 channels a vector and,
 * for rows with ln_short_ok and out_shift >= 2, the output 4 (ln_mve_out).
 * tq_layernorm_2s_x16 (an int16 input, x_c = q_c: |x_c| <= 2^15, |x_c - x_j| < 2^16) keeps every bound above:
 * |S| <= 2^27, |d_c| <= 4095 (2^16 - 1) < 2^28, D sum x_c^2 <= 2^54 and D^2 (the row's variance) < 2^54, so V < 2^63;
 * the bounds from sigma on do not depend on x. Its rows take ln_row_ref_x16 or, on Arm M-profile, ln_row_arm's
 * path with the int16 values as they are (ln_row_arm_any, X16). */
#include <string.h>

#include "../fixedpoint.h"
#include "../kernels.h"
#include "dot.h"
#include "layernorm_sigma.h"
#include "op_util.h"

#define TQ_NORM_FRAC_BITS 24
#define LN_MAX_D 4096 /* the op's prepare refuses wider rows (the bounds above; tsptq.intmodel.kernels.LN_MAX_CHANNELS) */

/* x_c of a row: the int8 code aligned, (q_c - zp) << k_c, or (X16) the int16 value itself. */
static inline __attribute__((always_inline)) int64_t ln_x(const int8_t *xr, const int16_t *xh, int32_t in_zp,
                                                          const int8_t *in_shift, int32_t c, const int X16) {
    return X16 ? (int64_t)xh[c] : tq_shl64((int64_t)xr[c] - in_zp, in_shift[c]);
}

/* The portable row, of an int8 code (xr) or (X16) of int16 values (xh). */
static inline __attribute__((always_inline)) void ln_row_ref_any(const int8_t *xr, const int16_t *xh, int32_t D,
                                                                 int32_t in_zp, const int8_t *in_shift,
                                                                 const int32_t *gamma_mul, const int64_t *beta_bias,
                                                                 int64_t eps, int32_t out_zp, int32_t out_shift,
                                                                 int8_t *yr, const int X16) {
    int64_t S = 0, sq = 0, sigma;
    int32_t c;
    int e;
    for (c = 0; c < D; c++) {
        const int64_t x = ln_x(xr, xh, in_zp, in_shift, c, X16);
        S += x;
        sq += x * x;
    }
    sigma = tq_ln_sigma(S, sq, D, eps, &e);
    for (c = 0; c < D; c++) {
        int64_t d = (int64_t)D * ln_x(xr, xh, in_zp, in_shift, c, X16) - S;
        int64_t nrm = tq_div_round(tq_shl64(d, TQ_NORM_FRAC_BITS + e), sigma);
        yr[c] = tq_sat8(tq_rshift_round(nrm * gamma_mul[c] + beta_bias[c], out_shift) + out_zp);
    }
}

static void ln_row_ref(const int8_t *xr, int32_t D, int32_t in_zp, const int8_t *in_shift, const int32_t *gamma_mul,
                       const int64_t *beta_bias, int64_t eps, int32_t out_zp, int32_t out_shift, int8_t *yr) {
    ln_row_ref_any(xr, NULL, D, in_zp, in_shift, gamma_mul, beta_bias, eps, out_zp, out_shift, yr, 0);
}

/* The int16 input's row (tq_layernorm_2s_x16): x_c = q_c, zero point 0, no shift. */
static void ln_row_ref_x16(const int16_t *xh, int32_t D, const int32_t *gamma_mul, const int64_t *beta_bias,
                           int64_t eps, int32_t out_zp, int32_t out_shift, int8_t *yr) {
    ln_row_ref_any(NULL, xh, D, 0, NULL, gamma_mul, beta_bias, eps, out_zp, out_shift, yr, 1);
}

#if defined(TQ_SIMD_VNNI) || defined(TQ_SIMD_DSP)
/* Whether the output's rounding shift can be one sum: tq_rdbpot64(v, n) = (v + 2^(n-1) + (v >> 63)) >> n for n >= 1
 * (the rem > thr test as one sum), v = nrm g + beta with |v| < 2^61.01 + 2^61 (the bounds above, |beta| <= 2^61), so
 * the sum stays below 2^63. */
static int ln_short_ok(int32_t D, const int64_t *beta_bias, int32_t out_shift) {
    int32_t c = 0;
    if (out_shift < 1 || out_shift > 61) return 0;
#if defined(TQ_SIMD_MVE)
    { /* Helium, 4 channels a vector (VLD2: the high words): every high word in [-2^29, 2^29 - 1] means
       * -2^61 <= beta < 2^61; any other (2^61 itself among them) sends every channel to the exact test below */
        int32x4_t lo = vdupq_n_s32(0), hi = lo;
        for (; c + 4 <= D; c += 4) {
            const int32x4x2_t b = vld2q_s32((const int32_t *)(const void *)(beta_bias + c));
            lo = vminq_s32(lo, b.val[1]);
            hi = vmaxq_s32(hi, b.val[1]);
        }
        if (vminvq_s32(0, lo) < -(1 << 29) || vmaxvq_s32(0, hi) > (1 << 29) - 1) c = 0;
    }
#endif
    for (; c < D; c++)
        if (beta_bias[c] < -((int64_t)1 << 61) || beta_bias[c] > ((int64_t)1 << 61)) return 0;
    return 1;
}
#endif

#if defined(TQ_SIMD_AVX2)
/* x86 (AVX-512 and AVX2): x_c in int32 lanes (the bounds checked in ln_simd_ok keep x_c, S and d_c there: |x_c| <=
 * 383 << 7 < 2^16, |S| < 2^27, |d_c| < 2^28 for D <= 2048), one pass for S and sum x_c^2 (the squares in int64
 * lanes, the sum below 2^43), V as the reference's (tq_ln_sigma), and (AVX-512) the output pass with the division as a
 * double estimate of the quotient, taken where it is certain (ln_out8); a row with a quotient that is not, or wider
 * than LN_SIMD_MAX_D, is done by ln_row_ref. */
#define LN_SIMD_MAX_D 2048 /* 10 KB of stack for the row buffers (x86 only: the pool's threads get 2 MB) */

static int ln_simd_ok(int32_t D, int32_t in_zp, const int8_t *in_shift, int64_t eps, int32_t out_shift) {
    int32_t c;
    if (D < 1 || D > LN_SIMD_MAX_D || in_zp < -255 || in_zp > 255 || eps < 0 || eps > ((int64_t)1 << 61) ||
        out_shift < 0 || out_shift > 62)
        return 0;
    for (c = 0; c < D; c++)
        if (in_shift[c] < 0 || in_shift[c] > 7) return 0;
    return 1;
}
#endif

#if defined(TQ_SIMD_VNNI)
/* x_c = (q_c - in_zp) << in_shift_c for the 16 channels from c (lanes m, 0 elsewhere) */
static inline __m512i ln_x16(const int8_t *xr, const int8_t *in_shift, int32_t c, __mmask16 m, __m512i zp) {
    const __m512i q = _mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(m, xr + c));
    const __m512i sh = _mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(m, in_shift + c));
    return _mm512_maskz_sllv_epi32(m, _mm512_sub_epi32(q, zp), sh);
}

/* The output of 8 channels from their d_c (int32 lanes); *ok cleared where the quotient is not certain.
 * nrm = div_round(d << s, sigma) = sign(d) floor(t), t = (|d| 2^s + h) / sigma, h = sigma >> 1, s = 24 + e. The
 * estimate est = fma(|d|, K, H) with K = 2^s / sigma and H = h / sigma (doubles; |d| < 2^29, sigma < 2^32 and 2^s
 * are exact) has three roundings, each of relative size below 2^-52 in any rounding mode (2^-53 in the default one):
 * |est - t| < 3.01 * 2^-52 * t, below 2^-19.4 for t < 2^31. Where est <= 2^31 - 4 (so t < 2^31 - 3) and est is at
 * least 2^-19 from the integers (est - floor(est) is exact), t lies strictly between floor(est) and floor(est) + 1:
 * floor(t) = floor(est) (= its truncation, est >= 0). Any other lane (about 2^-18 of them, and t = 0, a constant row
 * with sigma = 1) sends the row to ln_row_ref. */
static inline __m128i ln_out8(__m256i d, const int32_t *g, const int64_t *bb, __mmask8 mh, __m512d K, __m512d H,
                              __m128i osh, __m512i omask, __m512i ohalf, __m512i zp, __mmask8 *ok) {
    const __m512d est = _mm512_fmadd_pd(_mm512_cvtepi32_pd(_mm256_abs_epi32(d)), K, H);
    const __m512d fr = _mm512_sub_pd(est, _mm512_roundscale_pd(est, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC));
    const __mmask8 sure = _mm512_cmp_pd_mask(fr, _mm512_set1_pd(1.0 / (1 << 19)), _CMP_GE_OQ) &
                          _mm512_cmp_pd_mask(fr, _mm512_set1_pd(1.0 - 1.0 / (1 << 19)), _CMP_LE_OQ) &
                          _mm512_cmp_pd_mask(est, _mm512_set1_pd(2147483644.0), _CMP_LE_OQ);
    /* clamped first: a lane past D or a quotient too large to be certain must not raise FE_INVALID in the
     * conversion (a host with that trap enabled would stop); such lanes are discarded or sent to ln_row_ref */
    const __m256i q = _mm512_cvttpd_epi32(_mm512_min_pd(est, _mm512_set1_pd(2147483644.0)));
    const __m256i nrm = _mm256_mask_sub_epi32(q, _mm256_cmplt_epi32_mask(d, _mm256_setzero_si256()),
                                              _mm256_setzero_si256(), q);
    /* nrm * gamma (|nrm| < 2^31, an exact vpmuldq) + beta, modulo 2^64 as the reference's numpy int64 */
    const __m512i v = _mm512_add_epi64(_mm512_mul_epi32(_mm512_cvtepi32_epi64(nrm),
                                                        _mm512_cvtepi32_epi64(_mm256_maskz_loadu_epi32(mh, g))),
                                       _mm512_maskz_loadu_epi64(mh, bb));
    /* tq_rdbpot64(v, out_shift) */
    __m512i o = _mm512_sra_epi64(v, osh);
    o = _mm512_mask_add_epi64(o, _mm512_cmpgt_epi64_mask(_mm512_and_si512(v, omask),
                                                         _mm512_add_epi64(ohalf, _mm512_srli_epi64(v, 63))),
                              o, _mm512_set1_epi64(1));
    *ok &= (__mmask8)(sure | (__mmask8)~mh); /* lanes past D do not count */
    return _mm512_cvtsepi64_epi8(_mm512_add_epi64(o, zp));
}

/* The same output with fewer operations, for 1 <= out_shift <= 61 and every |beta| <= 2^61 (ln_short_ok; the
 * common case). The quotient: est_lo = fma(|d|, K, H - 2^-18) and est_hi = fma(|d|, K, H + 2^-18), each within
 * 2^-20 of t -/+ 2^-18 (K, H, H -/+ 2^-18 and the fma rounded once each, t < 2^30.01 by the bounds above, so no
 * conversion overflows): est_lo < t < est_hi, so where trunc(est_lo) = trunc(est_hi) = q, floor(t) = q (est_lo > -1:
 * for est_lo < 0, t < 1 and q = 0); a lane where they differ (about 2^-17 of them) sends the row to ln_row_ref
 * (*bad). The rounding shift as one sum (ln_short_ok). */
static inline __m128i ln_out8s(__m512d ad, __mmask8 neg, const int32_t *g, const int64_t *bb, __mmask8 mh, __m512d K,
                               __m512d Hlo, __m512d Hhi, __m128i osh, __m512i half, __m512i zp, __mmask8 *bad) {
    const __m256i qlo = _mm512_cvtt_roundpd_epi32(_mm512_fmadd_pd(ad, K, Hlo), _MM_FROUND_NO_EXC);
    const __m256i qhi = _mm512_cvtt_roundpd_epi32(_mm512_fmadd_pd(ad, K, Hhi), _MM_FROUND_NO_EXC);
    const __m256i nrm = _mm256_mask_sub_epi32(qhi, neg, _mm256_setzero_si256(), qhi);
    const __m512i v = _mm512_add_epi64(_mm512_mul_epi32(_mm512_cvtepi32_epi64(nrm),
                                                        _mm512_cvtepi32_epi64(_mm256_maskz_loadu_epi32(mh, g))),
                                       _mm512_maskz_loadu_epi64(mh, bb));
    const __m512i o = _mm512_sra_epi64(_mm512_add_epi64(_mm512_add_epi64(v, half), _mm512_srai_epi64(v, 63)), osh);
    *bad |= _mm256_mask_cmpneq_epi32_mask(mh, qlo, qhi);
    return _mm512_cvtsepi64_epi8(_mm512_add_epi64(o, zp));
}

/* A row's x_c (into xs, which has room for the whole last vector), its sum S, sigma and e. */
typedef struct {
    int64_t S, sigma;
    int e;
} ln_stats;

static inline void ln_row_stats(const int8_t *xr, int32_t D, int32_t in_zp, const int8_t *in_shift, int64_t eps,
                                int32_t *xs, ln_stats *st) {
    const __m512i zp = _mm512_set1_epi32(in_zp);
    __m512i sum = _mm512_setzero_si512(), sq = sum;
    int32_t c;
    for (c = 0; c < D; c += 16) {
        const __m512i x = ln_x16(xr, in_shift, c, tqv_lanes(D - c), zp);
        _mm512_storeu_si512(xs + c, x);
        sum = _mm512_add_epi32(sum, x);
        sq = _mm512_add_epi64(sq, _mm512_mul_epi32(x, x));
        sq = _mm512_add_epi64(sq, _mm512_mul_epi32(_mm512_srli_epi64(x, 32), _mm512_srli_epi64(x, 32)));
    }
    st->S = _mm512_reduce_add_epi32(sum);
    st->sigma = tq_ln_sigma(st->S, _mm512_reduce_add_epi64(sq), D, eps, &st->e);
}

/* The row's outputs from its stats into out (LN_SIMD_MAX_D bytes), then to yr; returns 0 (having written nothing to
 * yr) if a quotient could not be verified. */
static inline int ln_row_out(const int32_t *xs, const ln_stats *st, int32_t D, const int32_t *gamma_mul,
                             const int64_t *beta_bias, int32_t out_zp, int32_t out_shift, int short_ok, int8_t *out,
                             int8_t *yr) {
    const __m512i dd = _mm512_set1_epi32(D), S = _mm512_set1_epi32((int32_t)st->S);
    const __m512i omask = _mm512_set1_epi64((int64_t)(((uint64_t)1 << out_shift) - 1u));
    const __m512i ohalf = _mm512_srli_epi64(omask, 1), ozp = _mm512_set1_epi64(out_zp);
    const __m128i osh = _mm_cvtsi32_si128(out_shift);
    const __m512d K = _mm512_set1_pd((double)((int64_t)1 << (TQ_NORM_FRAC_BITS + st->e)) / (double)st->sigma);
    const __m512d H = _mm512_set1_pd((double)(st->sigma >> 1) / (double)st->sigma);
    __mmask8 ok = 0xFF;
    int32_t c;
    if (short_ok) {
        const __m512d Hlo = _mm512_sub_pd(H, _mm512_set1_pd(1.0 / (1 << 18))),
                      Hhi = _mm512_add_pd(H, _mm512_set1_pd(1.0 / (1 << 18)));
        const __m512i half = _mm512_set1_epi64((int64_t)1 << (out_shift - 1));
        __mmask8 bad = 0;
        for (c = 0; c < D; c += 16) {
            const __mmask16 m = tqv_lanes(D - c);
            const __m512i d = _mm512_sub_epi32(_mm512_mullo_epi32(dd, _mm512_loadu_si512(xs + c)), S);
            const __m512i ad = _mm512_abs_epi32(d);
            const __mmask16 neg = _mm512_cmplt_epi32_mask(d, _mm512_setzero_si512());
            const __m128i lo = ln_out8s(_mm512_cvtepi32_pd(_mm512_castsi512_si256(ad)), (__mmask8)neg, gamma_mul + c,
                                        beta_bias + c, (__mmask8)m, K, Hlo, Hhi, osh, half, ozp, &bad);
            const __m128i hi = ln_out8s(_mm512_cvtepi32_pd(_mm512_extracti64x4_epi64(ad, 1)), (__mmask8)(neg >> 8),
                                        gamma_mul + c + 8, beta_bias + c + 8, (__mmask8)(m >> 8), K, Hlo, Hhi, osh,
                                        half, ozp, &bad);
            _mm_mask_storeu_epi8(out + c, m, _mm_unpacklo_epi64(lo, hi));
        }
        if (bad) return 0;
        memcpy(yr, out, (size_t)D);
        return 1;
    }
    for (c = 0; c < D; c += 16) {
        const __mmask16 m = tqv_lanes(D - c);
        const __m512i d = _mm512_sub_epi32(_mm512_mullo_epi32(dd, _mm512_loadu_si512(xs + c)), S);
        const __m128i lo = ln_out8(_mm512_castsi512_si256(d), gamma_mul + c, beta_bias + c, (__mmask8)m, K, H, osh,
                                   omask, ohalf, ozp, &ok);
        const __m128i hi = ln_out8(_mm512_extracti64x4_epi64(d, 1), gamma_mul + c + 8, beta_bias + c + 8,
                                   (__mmask8)(m >> 8), K, H, osh, omask, ohalf, ozp, &ok);
        _mm_mask_storeu_epi8(out + c, m, _mm_unpacklo_epi64(lo, hi));
    }
    if (ok != 0xFF) return 0;
    memcpy(yr, out, (size_t)D);
    return 1;
}

/* One row; returns 0 (having written nothing) if a quotient could not be verified. */
static int ln_row_simd(const int8_t *xr, int32_t D, int32_t in_zp, const int8_t *in_shift, const int32_t *gamma_mul,
                       const int64_t *beta_bias, int64_t eps, int32_t out_zp, int32_t out_shift, int short_ok,
                       int8_t *yr) {
    int32_t xs[LN_SIMD_MAX_D];
    int8_t out[LN_SIMD_MAX_D];
    ln_stats st;
    ln_row_stats(xr, D, in_zp, in_shift, eps, xs, &st);
    return ln_row_out(xs, &st, D, gamma_mul, beta_bias, out_zp, out_shift, short_ok, out, yr);
}

/* Two rows: both rows' sums and sigma (a serial chain: the square root, the divisions) before either's outputs, so
 * that they overlap. Bit r of the result: row r written (else it is left to ln_row_ref). */
static int ln_rows2_simd(const int8_t *x0, int32_t D, int32_t in_zp, const int8_t *in_shift, const int32_t *gamma_mul,
                         const int64_t *beta_bias, int64_t eps, int32_t out_zp, int32_t out_shift, int short_ok,
                         int8_t *y0) {
    int32_t xs[2][LN_SIMD_MAX_D];
    int8_t out[LN_SIMD_MAX_D];
    ln_stats st[2];
    int done;
    ln_row_stats(x0, D, in_zp, in_shift, eps, xs[0], &st[0]);
    ln_row_stats(x0 + D, D, in_zp, in_shift, eps, xs[1], &st[1]);
    done = ln_row_out(xs[0], &st[0], D, gamma_mul, beta_bias, out_zp, out_shift, short_ok, out, y0);
    return done | ln_row_out(xs[1], &st[1], D, gamma_mul, beta_bias, out_zp, out_shift, short_ok, out, y0 + D) << 1;
}
#elif defined(TQ_SIMD_AVX2)
/* AVX2: the sums 8 channels a vector, the output 4 (int64 lanes), the division as with AVX-512 (ln_out8) but with a
 * separate multiply and add (AVX2 builds have no FMA): four roundings, |est - t| < 4.01 * 2^-52 * t < 2^-18.99 for
 * t < 2^31, so est must lie 2^-18 from the integers. The arithmetic shift of int64 lanes (none in AVX2) is the
 * logical one of v ^ sign, ^ sign. */
static inline int ln_out4(__m128i d, const int32_t *g, const int64_t *bb, __m256d K, __m256d H, __m128i osh,
                          __m256i omask, __m256i ohalf, int64_t *o) {
    const __m256d est = _mm256_add_pd(_mm256_mul_pd(_mm256_cvtepi32_pd(_mm_abs_epi32(d)), K), H);
    const __m256d fr = _mm256_sub_pd(est, _mm256_floor_pd(est));
    const __m256d sure = _mm256_and_pd(
        _mm256_and_pd(_mm256_cmp_pd(fr, _mm256_set1_pd(1.0 / (1 << 18)), _CMP_GE_OQ),
                      _mm256_cmp_pd(fr, _mm256_set1_pd(1.0 - 1.0 / (1 << 18)), _CMP_LE_OQ)),
        _mm256_cmp_pd(est, _mm256_set1_pd(2147483644.0), _CMP_LE_OQ));
    const __m128i nrm = _mm_sign_epi32(_mm256_cvttpd_epi32(est), d); /* d = 0: t = h / sigma < 1, q = 0 */
    const __m256i v = _mm256_add_epi64(
        _mm256_mul_epi32(_mm256_cvtepi32_epi64(nrm), _mm256_cvtepi32_epi64(_mm_loadu_si128((const __m128i *)(const void *)g))),
        _mm256_loadu_si256((const __m256i *)(const void *)bb));
    const __m256i sign = _mm256_cmpgt_epi64(_mm256_setzero_si256(), v);
    __m256i q = _mm256_xor_si256(_mm256_srl_epi64(_mm256_xor_si256(v, sign), osh), sign);
    /* tq_rdbpot64: + (rem > (mask >> 1) + (v < 0)) */
    q = _mm256_sub_epi64(q, _mm256_cmpgt_epi64(_mm256_and_si256(v, omask), _mm256_sub_epi64(ohalf, sign)));
    _mm256_storeu_si256((__m256i *)(void *)o, q);
    return _mm256_movemask_pd(sure) == 0xF;
}

static int ln_row_simd(const int8_t *xr, int32_t D, int32_t in_zp, const int8_t *in_shift, const int32_t *gamma_mul,
                       const int64_t *beta_bias, int64_t eps, int32_t out_zp, int32_t out_shift, int short_ok,
                       int8_t *yr) {
    int32_t xs[LN_SIMD_MAX_D];
    int8_t out[LN_SIMD_MAX_D];
    const __m256i zp = _mm256_set1_epi32(in_zp);
    const __m256i omask = _mm256_set1_epi64x((int64_t)(((uint64_t)1 << out_shift) - 1u));
    const __m256i ohalf = _mm256_srli_epi64(omask, 1);
    const __m128i osh = _mm_cvtsi32_si128(out_shift);
    __m256i sum = _mm256_setzero_si256(), sq = sum;
    __m256d K, H;
    int64_t sigma, Ssum = 0, lanes64[4], sqsum = 0;
    int32_t lanes32[8], c, j;
    int e;
    (void)short_ok;
    for (c = 0; c + 8 <= D; c += 8) {
        const __m256i q = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(const void *)(xr + c)));
        const __m256i k = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(const void *)(in_shift + c)));
        const __m256i x = _mm256_sllv_epi32(_mm256_sub_epi32(q, zp), k);
        _mm256_storeu_si256((__m256i *)(void *)(xs + c), x);
        sum = _mm256_add_epi32(sum, x);
        sq = _mm256_add_epi64(sq, _mm256_mul_epi32(x, x));
        sq = _mm256_add_epi64(sq, _mm256_mul_epi32(_mm256_srli_epi64(x, 32), _mm256_srli_epi64(x, 32)));
    }
    _mm256_storeu_si256((__m256i *)(void *)lanes32, sum);
    _mm256_storeu_si256((__m256i *)(void *)lanes64, sq);
    for (j = 0; j < 8; j++) Ssum += lanes32[j];
    for (j = 0; j < 4; j++) sqsum += lanes64[j];
    for (; c < D; c++) {
        xs[c] = (int32_t)tq_shl64((int64_t)xr[c] - in_zp, in_shift[c]);
        Ssum += xs[c];
        sqsum += (int64_t)xs[c] * xs[c];
    }
    sigma = tq_ln_sigma(Ssum, sqsum, D, eps, &e);
    K = _mm256_set1_pd((double)((int64_t)1 << (TQ_NORM_FRAC_BITS + e)) / (double)sigma);
    H = _mm256_set1_pd((double)(sigma >> 1) / (double)sigma);
    for (c = 0; c + 4 <= D; c += 4) {
        const __m128i d = _mm_sub_epi32(_mm_mullo_epi32(_mm_set1_epi32(D), _mm_loadu_si128((const __m128i *)(const void *)(xs + c))),
                                        _mm_set1_epi32((int32_t)Ssum));
        int64_t o[4];
        if (!ln_out4(d, gamma_mul + c, beta_bias + c, K, H, osh, omask, ohalf, o)) return 0;
        for (j = 0; j < 4; j++) out[c + j] = tq_sat8(o[j] + out_zp);
    }
    for (; c < D; c++) {
        const int64_t d = (int64_t)D * xs[c] - Ssum;
        const int64_t nrm = tq_div_round(tq_shl64(d, TQ_NORM_FRAC_BITS + e), sigma);
        out[c] = tq_sat8(tq_rshift_round(nrm * gamma_mul[c] + beta_bias[c], out_shift) + out_zp);
    }
    memcpy(yr, out, (size_t)D);
    return 1;
}
#endif

#if defined(TQ_SIMD_DSP)
/* Arm M-profile (DSP; Helium for the first pass and, ln_mve_out, most rows' output): the reference's arithmetic with
 * the 64-bit division of the output pass, div_round(d << s, sigma) = sign(d) floor((|d| 2^s + h) / sigma),
 * h = sigma >> 1, s = 24 + e, done as a division by an invariant divisor (tq_div32_q, dot.h) of
 * u = (|d| 2^s + h) << L by dn = sigma << L (top bit set):
 * floor(u / dn) is the quotient wanted. A row takes this path when max |d| 2^s + h < sigma 2^31 (so u < dn 2^31, as
 * tq_div32_q needs, and the quotient fits an int32; the bounds above make that every row but the constant ones);
 * others take ln_row_ref. */
/* tq_layernorm_2s_x16's rows: x_c = q_c (int16, zero point 0, no shift; |x_c| <= 2^15, |x_c - x_j| < 2^16, so
 * |S| <= 2^27, |d_c| < 2^28 still, D sum x_c^2 <= 2^54 and the variance term D^2 (the row's variance) < 2^54: the
 * bounds above hold). */
static int ln_arm_ok_x16(int32_t D, int64_t eps, int32_t out_shift) {
    return D >= 1 && D <= LN_MAX_D && eps >= 0 && eps <= ((int64_t)1 << 62) && out_shift >= 0 && out_shift <= 62;
}

static int ln_arm_ok(int32_t D, int32_t in_zp, const int8_t *in_shift, int64_t eps, int32_t out_shift) {
    int32_t c = 0;
    if (!ln_arm_ok_x16(D, eps, out_shift) || !tq_zp_ok(in_zp)) return 0;
#if defined(TQ_SIMD_MVE)
    { /* Helium, 16 channels a vector: the largest shift as an unsigned byte (a negative one is 128 or more) */
        uint8x16_t m = vdupq_n_u8(0);
        for (; c + 16 <= D; c += 16) m = vmaxq_u8(m, vldrbq_u8((const uint8_t *)(const void *)(in_shift + c)));
        if (vmaxvq_u8(0, m) > 7) return 0;
    }
#endif
    for (; c < D; c++)
        if (in_shift[c] < 0 || in_shift[c] > 7) return 0;
    return 1;
}

/* The first pass: S = sum x_c, sq = sum x_c^2 and the extremes of x_c (|x_c| <= 255 << 7: int16 lanes, exact). */
static inline void ln_arm_sums(const int8_t *xr, int32_t D, int32_t in_zp, const int8_t *in_shift, int32_t *S,
                               int64_t *sq, int32_t *xmin, int32_t *xmax) {
#if defined(TQ_SIMD_MVE)
    int32_t s = 0, c = 0;
    int64_t q2 = 0;
    int16_t lo = INT16_MAX, hi = INT16_MIN;
    for (; c + 8 <= D; c += 8) {
        const int16x8_t x = vshlq_s16(vsubq_n_s16(vldrbq_s16(xr + c), (int16_t)in_zp), vldrbq_s16(in_shift + c));
        s = vaddvaq_s16(s, x);
        q2 = vmlaldavaq_s16(q2, x, x);
        lo = vminvq_s16(lo, x);
        hi = vmaxvq_s16(hi, x);
    }
    if (c < D) { /* the tail: the reductions take the active lanes only */
        const mve_pred16_t p = vctp16q((uint32_t)(D - c));
        const int16x8_t x = vshlq_s16(vsubq_n_s16(vldrbq_z_s16(xr + c, p), (int16_t)in_zp),
                                      vldrbq_z_s16(in_shift + c, p));
        s = vaddvaq_p_s16(s, x, p);
        q2 = vmlaldavaq_p_s16(q2, x, x, p);
        lo = vminvq_p_s16(lo, x, p);
        hi = vmaxvq_p_s16(hi, x, p);
    }
    *S = s, *sq = q2, *xmin = lo, *xmax = hi;
#else
    int32_t s = 0, lo = INT32_MAX, hi = INT32_MIN, c;
    int64_t q2 = 0;
    for (c = 0; c < D; c++) {
        const int32_t x = ((int32_t)xr[c] - in_zp) * (1 << in_shift[c]);
        s += x;
        q2 += (int64_t)x * x;
        lo = x < lo ? x : lo;
        hi = x > hi ? x : hi;
    }
    *S = s, *sq = q2, *xmin = lo, *xmax = hi;
#endif
}

/* ln_arm_sums of an int16 row: the values as they are (int16 lanes). */
static inline void ln_arm_sums_x16(const int16_t *xr, int32_t D, int32_t *S, int64_t *sq, int32_t *xmin,
                                   int32_t *xmax) {
#if defined(TQ_SIMD_MVE)
    int32_t s = 0, c = 0;
    int64_t q2 = 0;
    int16x8_t lo = vdupq_n_s16(INT16_MAX), hi = vdupq_n_s16(INT16_MIN); /* the extremes lane by lane, then across */
    for (; c + 8 <= D; c += 8) {
        const int16x8_t x = vldrhq_s16(xr + c);
        s = vaddvaq_s16(s, x);
        q2 = vmlaldavaq_s16(q2, x, x); /* each product <= 2^30, the sum in 64 bits */
        lo = vminq_s16(lo, x);
        hi = vmaxq_s16(hi, x);
    }
    if (c < D) { /* the tail: the active lanes only (the others keep lo's and hi's) */
        const mve_pred16_t p = vctp16q((uint32_t)(D - c));
        const int16x8_t x = vldrhq_z_s16(xr + c, p);
        s = vaddvaq_p_s16(s, x, p);
        q2 = vmlaldavaq_p_s16(q2, x, x, p);
        lo = vminq_m_s16(lo, lo, x, p);
        hi = vmaxq_m_s16(hi, hi, x, p);
    }
    *S = s, *sq = q2, *xmin = vminvq_s16(INT16_MAX, lo), *xmax = vmaxvq_s16(INT16_MIN, hi);
#else
    int32_t s = 0, lo = INT32_MAX, hi = INT32_MIN, c;
    int64_t q2 = 0;
    for (c = 0; c < D; c++) {
        const int32_t x = xr[c];
        s += x;
        q2 += (int64_t)x * x;
        lo = x < lo ? x : lo;
        hi = x > hi ? x : hi;
    }
    *S = s, *sq = q2, *xmin = lo, *xmax = hi;
#endif
}

/* The output pass from channel c: s = 24 + e + L, hL = h << L; SHORT: ln_short_ok, HIGH: s >= 32 (constants where
 * inlined; with s >= 32 the dividend's low word is hL's, |d| 2^s having none, and its high word takes no carry). */
static inline __attribute__((always_inline)) void ln_arm_out(const int8_t *xr, const int16_t *xh, int32_t D,
                                                             int32_t in_zp, const int8_t *in_shift, int32_t S, int s,
                                                             uint64_t hL, const tq_div32 *dv,
                                                             const int32_t *gamma_mul, const int64_t *beta_bias,
                                                             int32_t out_zp, int32_t out_shift, int8_t *yr,
                                                             int32_t c, const int SHORT, const int HIGH,
                                                             const int X16) {
    const int64_t half = SHORT ? (int64_t)1 << (out_shift - 1) : 0;
    const uint32_t h1 = (uint32_t)(hL >> 32), h0 = (uint32_t)hL;
    for (; c < D; c++) {
        const int32_t x = X16 ? (int32_t)xh[c] : ((int32_t)xr[c] - in_zp) * (1 << in_shift[c]);
        const int32_t d = D * x - S; /* |d| < 2^28 */
        const uint32_t ad = d < 0 ? 0u - (uint32_t)d : (uint32_t)d;
        const int32_t q = (int32_t)(HIGH ? tq_div32_q2((ad << (s - 32)) + h1, h0, dv)
                                         : tq_div32_q(((uint64_t)ad << s) + hL, dv));
        const int32_t nrm = d < 0 ? -q : q;
        const int64_t v = (int64_t)nrm * gamma_mul[c] + beta_bias[c]; /* |nrm| < 2^31: one 32x32 product */
        yr[c] = tq_sat8((SHORT ? (v + half + (v >> 63)) >> out_shift : tq_rshift_round(v, out_shift)) + out_zp);
    }
}

#if defined(TQ_SIMD_MVE)
/* ln_arm_out for SHORT rows with out_shift n >= 2, 4 channels a vector (uint32 lanes), up to the last multiple of 4
 * (returned; the rest is ln_arm_out's). d_c = D x_c - S as ln_arm_out (|d| < 2^28, exact in int32). The dividend
 * u = |d| 2^s + hL: its high word u1 = (|d| << (s - 32)) + h1 (a right shift by 32 - s for s < 32, VSHL by a negative
 * count), plus, for s < 32, the carry of the low word u0 = (|d| << s) + h0 mod 2^32; for s >= 32 u0 = h0 (HIGH). The
 * quotient is tq_div32_q2's, lane by lane (tq_div32_q2_mve, dot.h). nrm = sign(d) q as (q ^ m) - m (carries, masks:
 * no predicates, which GCC 12 moves through core registers). v = nrm g + beta and W = v + 2^(n-1) + (v >> 63) in 64
 * bits as (high, low) int32 pairs (beta's words by VLD2), each low-word add's carry as tq_mve_carry; with m = v >> 63
 * (0 or -1), 2^(n-1) + m is (low, high) = (2^(n-1) + m, 0) for n <= 32 and (m, 2^(n-33) + m) for n >= 33 (where the
 * low word is 0 and adding -1 borrows). Modulo 2^64 these are the reference's values (|v| < 2^62.01, W < 2^63:
 * ln_short_ok). W >> n: for n >= 32 (NB 1, 2) Whi >> (n - 32), an int32; for 2 <= n <= 31 (NB 0)
 * sat(Whi 2^(32 - n)) | (Wlo >> n) (VQSHL), W >> n itself where that fits an int32, else INT32_MAX, or INT32_MIN plus
 * less than 2^30: either way beyond the int8 range on W's side. Then + out_zp and the int8 clamp (saturating: << 24,
 * >> 24). X16: x_c from the int16 row xh (tq_layernorm_2s_x16; VLDRH widening to int32 lanes). */
static inline __attribute__((always_inline)) int32_t ln_mve_out(const int8_t *xr, const int16_t *xh, int32_t D,
                                                                int32_t in_zp, const int8_t *in_shift, int32_t S,
                                                                int s, uint64_t hL, const tq_div32 *dv,
                                                                const int32_t *gamma_mul, const int64_t *beta_bias,
                                                                int32_t out_zp, int32_t out_shift, int8_t *yr,
                                                                const int HIGH, const int NB, const int X16) {
    const uint32_t h1 = (uint32_t)(hL >> 32), h0 = (uint32_t)hL, dn = dv->dn;
    const uint64_t half = (uint64_t)1 << (out_shift - 1);
    const uint32_t hlo = (uint32_t)half, hhi = (uint32_t)(half >> 32); /* hhi = 0 for NB < 2, hlo = 0 for NB 2 */
    const int32_t sh1 = s - 32, nl = 32 - out_shift, nr = -out_shift;
    const uint32x4_t rv = vdupq_n_u32(dv->v), u0h = vdupq_n_u32(h0);
    const int64_t *bp = beta_bias;
    int32_t n = D >> 2;
    for (; n > 0; n--) {
        const int32x4_t xc =
            X16 ? vldrhq_s32(xh) : vshlq_s32(vsubq_n_s32(vldrbq_s32(xr), in_zp), vldrbq_s32(in_shift));
        const int32x4_t d = vsubq_n_s32(vmulq_n_s32(xc, D), S); /* D x_c - S */
        const uint32x4_t ad = vreinterpretq_u32_s32(vabsq_s32(d)), sd = vreinterpretq_u32_s32(vshrq_n_s32(d, 31));
        uint32x4_t u1 = vaddq_n_u32(vshlq_r_u32(ad, sh1), h1), u0 = u0h, q, m;
        uint32x4_t vlo, vhi, wlo, whi, plo;
        int32x4x2_t bb;
        int32x4_t res;
        if (!HIGH) {
            const uint32x4_t sl = vshlq_r_u32(ad, s);
            u0 = vaddq_u32(sl, u0h);
            u1 = vaddq_u32(u1, tq_mve_carry(sl, u0h));
        }
        q = tq_div32_q2_mve(u1, u0, rv, dn);
        q = vsubq_u32(veorq_u32(q, sd), sd); /* nrm, |nrm| < 2^31 */
        bb = vld2q_s32((const int32_t *)(const void *)bp); /* [0] the low words, [1] the high ones */
        {
            const uint32x4_t g = vreinterpretq_u32_s32(vldrwq_s32(gamma_mul));
            const uint32x4_t blo = vreinterpretq_u32_s32(bb.val[0]);
            plo = vmulq_u32(q, g);
            vlo = vaddq_u32(plo, blo);
            vhi = vaddq_u32(vreinterpretq_u32_s32(vmulhq_s32(vreinterpretq_s32_u32(q), vreinterpretq_s32_u32(g))),
                            vreinterpretq_u32_s32(bb.val[1]));
            vhi = vaddq_u32(vhi, tq_mve_carry(plo, blo));
        }
        m = vreinterpretq_u32_s32(vshrq_n_s32(vreinterpretq_s32_u32(vhi), 31));
        if (NB < 2) {
            const uint32x4_t klo = vaddq_n_u32(m, hlo);
            wlo = vaddq_u32(vlo, klo);
            whi = vaddq_u32(vhi, tq_mve_carry(vlo, klo));
        } else {
            wlo = vaddq_u32(vlo, m);
            whi = vaddq_u32(vaddq_u32(vhi, vaddq_n_u32(m, hhi)), tq_mve_carry(vlo, m));
        }
        if (NB)
            res = vshlq_r_s32(vreinterpretq_s32_u32(whi), nl);
        else
            res = vorrq_s32(vqshlq_r_s32(vreinterpretq_s32_u32(whi), nl),
                            vreinterpretq_s32_u32(vshlq_r_u32(wlo, nr)));
        res = vshrq_n_s32(vqshlq_n_s32(vqaddq_n_s32(res, out_zp), 24), 24);
        vstrbq_s32(yr, res);
        if (X16)
            xh += 4;
        else
            xr += 4, in_shift += 4;
        gamma_mul += 4, bp += 4, yr += 4;
    }
    (void)nr, (void)hlo, (void)hhi;
    return D & ~3;
}

/* Out of line, so that the loop gets the registers (inlined into ln_row_arm, GCC 12 spills the row's values); one
 * loop for each of the six forms. */
static __attribute__((noinline)) int32_t ln_mve_rows(const int8_t *xr, int32_t D, int32_t in_zp,
                                                     const int8_t *in_shift, int32_t S, int s, uint64_t hL,
                                                     const tq_div32 *dv, const int32_t *gamma_mul,
                                                     const int64_t *beta_bias, int32_t out_zp, int32_t out_shift,
                                                     int8_t *yr) {
#define LN_MVE(HIGH, NB)                                                                                               \
    ln_mve_out(xr, NULL, D, in_zp, in_shift, S, s, hL, dv, gamma_mul, beta_bias, out_zp, out_shift, yr, HIGH, NB, 0)
    const int nb = out_shift < 32 ? 0 : out_shift == 32 ? 1 : 2;
    if (s >= 32) return nb == 0 ? LN_MVE(1, 0) : nb == 1 ? LN_MVE(1, 1) : LN_MVE(1, 2);
    return nb == 0 ? LN_MVE(0, 0) : nb == 1 ? LN_MVE(0, 1) : LN_MVE(0, 2);
#undef LN_MVE
}

/* ln_mve_rows for an int16 row (tq_layernorm_2s_x16). */
static __attribute__((noinline)) int32_t ln_mve_rows_x16(const int16_t *xh, int32_t D, int32_t S, int s,
                                                         uint64_t hL, const tq_div32 *dv, const int32_t *gamma_mul,
                                                         const int64_t *beta_bias, int32_t out_zp, int32_t out_shift,
                                                         int8_t *yr) {
#define LN_MVE(HIGH, NB)                                                                                               \
    ln_mve_out(NULL, xh, D, 0, NULL, S, s, hL, dv, gamma_mul, beta_bias, out_zp, out_shift, yr, HIGH, NB, 1)
    const int nb = out_shift < 32 ? 0 : out_shift == 32 ? 1 : 2;
    if (s >= 32) return nb == 0 ? LN_MVE(1, 0) : nb == 1 ? LN_MVE(1, 1) : LN_MVE(1, 2);
    return nb == 0 ? LN_MVE(0, 0) : nb == 1 ? LN_MVE(0, 1) : LN_MVE(0, 2);
#undef LN_MVE
}
#endif

/* One row (in ln_arm_ok's range; X16: an int16 row xh in ln_arm_ok_x16's); returns 0 (having written nothing) for
 * a row outside the division's range. */
static inline __attribute__((always_inline)) int ln_row_arm_any(const int8_t *xr, const int16_t *xh, int32_t D,
                                                                int32_t in_zp, const int8_t *in_shift,
                                                                const int32_t *gamma_mul, const int64_t *beta_bias,
                                                                int64_t eps, int32_t out_zp, int32_t out_shift,
                                                                int short_ok, int8_t *yr, const int X16) {
    int32_t S, xmin, xmax, c = 0;
    int64_t sq, sigma, maxd;
    uint64_t hL;
    tq_div32 dv;
    int e, s, L;
    if (X16)
        ln_arm_sums_x16(xh, D, &S, &sq, &xmin, &xmax);
    else
        ln_arm_sums(xr, D, in_zp, in_shift, &S, &sq, &xmin, &xmax);
    sigma = tq_ln_sigma(S, sq, D, eps, &e);
    s = TQ_NORM_FRAC_BITS + e;
    maxd = (int64_t)D * xmax - S;
    if (S - (int64_t)D * xmin > maxd) maxd = S - (int64_t)D * xmin;
    /* |d| 2^s + h < sigma 2^31 for every d (sigma < 2^32: V << 2e < 2^63); maxd = 0: a constant row */
    if (maxd < 1 || sigma >= ((int64_t)1 << 32) || tq_bit_length64((uint64_t)maxd) + s > 62 ||
        ((uint64_t)maxd << s) + (uint64_t)(sigma >> 1) >= (uint64_t)sigma << 31)
        return 0;
    L = 32 - tq_bit_length64((uint64_t)sigma); /* then s + L <= 62: 2^(s + L) <= maxd 2^s 2^L < 2^63 */
    dv = tq_div32_init((uint32_t)sigma << L);
    hL = (uint64_t)(sigma >> 1) << L;
    s += L;
#if defined(TQ_SIMD_MVE)
    c = !(short_ok && out_shift >= 2) ? 0 /* then the last D % 4 channels, or all of a row it does not take */
        : X16 ? ln_mve_rows_x16(xh, D, S, s, hL, &dv, gamma_mul, beta_bias, out_zp, out_shift, yr)
              : ln_mve_rows(xr, D, in_zp, in_shift, S, s, hL, &dv, gamma_mul, beta_bias, out_zp, out_shift, yr);
#endif
#define LN_ARM_OUT(SHORT, HIGH)                                                                                        \
    ln_arm_out(xr, xh, D, in_zp, in_shift, S, s, hL, &dv, gamma_mul, beta_bias, out_zp, out_shift, yr, c, SHORT, HIGH, \
               X16)
    if (short_ok && s >= 32)
        LN_ARM_OUT(1, 1);
    else if (short_ok)
        LN_ARM_OUT(1, 0);
    else if (s >= 32)
        LN_ARM_OUT(0, 1);
    else
        LN_ARM_OUT(0, 0);
#undef LN_ARM_OUT
    return 1;
}

static int ln_row_arm(const int8_t *xr, int32_t D, int32_t in_zp, const int8_t *in_shift, const int32_t *gamma_mul,
                      const int64_t *beta_bias, int64_t eps, int32_t out_zp, int32_t out_shift, int short_ok,
                      int8_t *yr) {
    return ln_row_arm_any(xr, NULL, D, in_zp, in_shift, gamma_mul, beta_bias, eps, out_zp, out_shift, short_ok, yr, 0);
}

static int ln_row_arm_x16(const int16_t *xh, int32_t D, const int32_t *gamma_mul, const int64_t *beta_bias,
                          int64_t eps, int32_t out_zp, int32_t out_shift, int short_ok, int8_t *yr) {
    return ln_row_arm_any(NULL, xh, D, 0, NULL, gamma_mul, beta_bias, eps, out_zp, out_shift, short_ok, yr, 1);
}
#endif

void tq_layernorm_2s(const int8_t *x, int32_t rows, int32_t D, int32_t in_zp, const int8_t *in_shift,
                     const int32_t *gamma_mul, const int64_t *beta_bias, int64_t eps, int32_t out_zp,
                     int32_t out_shift, int8_t *y) {
    int32_t r;
#if defined(TQ_SIMD_AVX2)
    const int fast = ln_simd_ok(D, in_zp, in_shift, eps, out_shift);
#if defined(TQ_SIMD_VNNI)
    const int short_ok = fast && ln_short_ok(D, beta_bias, out_shift);
#else
    const int short_ok = 0;
#endif
#elif defined(TQ_SIMD_DSP)
    const int fast = ln_arm_ok(D, in_zp, in_shift, eps, out_shift);
    const int short_ok = fast && ln_short_ok(D, beta_bias, out_shift);
#endif
    r = 0;
#if defined(TQ_SIMD_VNNI)
    if (fast)
        for (; r + 2 <= rows; r += 2) {
            const int8_t *xr = x + (ptrdiff_t)r * D;
            int8_t *yr = y + (ptrdiff_t)r * D;
            const int done = ln_rows2_simd(xr, D, in_zp, in_shift, gamma_mul, beta_bias, eps, out_zp, out_shift,
                                           short_ok, yr);
            if (!(done & 1)) ln_row_ref(xr, D, in_zp, in_shift, gamma_mul, beta_bias, eps, out_zp, out_shift, yr);
            if (!(done & 2))
                ln_row_ref(xr + D, D, in_zp, in_shift, gamma_mul, beta_bias, eps, out_zp, out_shift, yr + D);
        }
#endif
    for (; r < rows; r++) {
        const int8_t *xr = x + (ptrdiff_t)r * D;
        int8_t *yr = y + (ptrdiff_t)r * D;
#if defined(TQ_SIMD_AVX2)
        if (fast && ln_row_simd(xr, D, in_zp, in_shift, gamma_mul, beta_bias, eps, out_zp, out_shift, short_ok, yr))
            continue;
#elif defined(TQ_SIMD_DSP)
        if (fast && ln_row_arm(xr, D, in_zp, in_shift, gamma_mul, beta_bias, eps, out_zp, out_shift, short_ok, yr))
            continue;
#endif
        ln_row_ref(xr, D, in_zp, in_shift, gamma_mul, beta_bias, eps, out_zp, out_shift, yr);
    }
}

/* TSPTQ_LAYERNORM_2S_I16's int16 input (the NPU variant's int16 residual stream): tq_layernorm_2s with x_c = q_c
 * (zero point 0, every in_shift 0), |q_c| <= 2^15; the bounds of the file's head hold (ln_arm_ok_x16). */
void tq_layernorm_2s_x16(const int16_t *x, int32_t rows, int32_t D, const int32_t *gamma_mul,
                         const int64_t *beta_bias, int64_t eps, int32_t out_zp, int32_t out_shift, int8_t *y) {
    int32_t r;
#if defined(TQ_SIMD_DSP)
    const int fast = ln_arm_ok_x16(D, eps, out_shift);
    const int short_ok = fast && ln_short_ok(D, beta_bias, out_shift);
#endif
    for (r = 0; r < rows; r++) {
        const int16_t *xr = x + (ptrdiff_t)r * D;
        int8_t *yr = y + (ptrdiff_t)r * D;
#if defined(TQ_SIMD_DSP)
        if (fast && ln_row_arm_x16(xr, D, gamma_mul, beta_bias, eps, out_zp, out_shift, short_ok, yr)) continue;
#endif
        ln_row_ref_x16(xr, D, gamma_mul, beta_bias, eps, out_zp, out_shift, yr);
    }
}

/* ---- the op: TSPTQ_LAYERNORM_2S (op_table.h) --------------------------------------------------------------------- */

enum { TQ_LN_IN_ZP = 0, TQ_LN_EPS, TQ_LN_OUT_ZP, TQ_LN_OUT_SHIFT };
static const char *const layernorm_keys[] = {"in_zp", "eps", "out_zp", "out_shift"};

static int layernorm_prepare(tq_op_ctx *ctx) {
    tsptq_tensor *const *in = ctx->in, *out = ctx->out;
    const uint32_t k = ctx->k;
    int64_t *o = ctx->op->opt;
    int i;
    tsptq_tensor *x = in[0];
    int64_t D = x->rank ? x->shape[x->rank - 1] : 0, c;
    if (x->type != TSPTQ_INT8 || out->type != TSPTQ_INT8 || !tq_same_shape(x, out) || D < 1)
        TQ_BAD(ctx, "op %u (TSPTQ_LAYERNORM_2S): input and output must be int8 of the same shape", k);
    if (D > LN_MAX_D) TQ_BAD(ctx, "op %u (TSPTQ_LAYERNORM_2S): %L channels, at most %d", k, D, LN_MAX_D);
    for (i = 1; i < 4; i++)
        if (in[i]->rank != 1 || in[i]->shape[0] != D)
            TQ_BAD(ctx, "op %u (TSPTQ_LAYERNORM_2S): per-channel parameters must have %L entries", k, D);
    if (in[1]->type != TSPTQ_INT8 || in[2]->type != TSPTQ_INT32 || in[3]->type != TSPTQ_INT64)
        TQ_BAD(ctx, "op %u (TSPTQ_LAYERNORM_2S): parameters must be int8, int32 and int64", k);
    for (c = 0; c < D; c++) {
        int64_t bb = ((const int64_t *)in[3]->data)[c];
        if (!tq_in_range(((const int8_t *)in[1]->data)[c], 0, 7) ||
            !tq_in_range(bb, -((int64_t)1 << 62), (int64_t)1 << 62))
            TQ_BADQ(ctx, "op %u (TSPTQ_LAYERNORM_2S): channel shift or beta out of range", k);
    }
    if (!tq_in_shift_agrees(ctx, x, in[1], D)) return 0;
    if (!tq_in_range(o[TQ_LN_IN_ZP], -128, 127) || !tq_in_range(o[TQ_LN_OUT_ZP], -128, 127) ||
        !tq_in_range(o[TQ_LN_EPS], 0, (int64_t)1 << 62) || !tq_in_range(o[TQ_LN_OUT_SHIFT], 0, 62))
        TQ_BADQ(ctx, "op %u (TSPTQ_LAYERNORM_2S): options out of range", k);
    return 1;
}

/* Rows [r0, r1): the thread pool's part (op_table.h) and, over every row, the op. */
static void layernorm_eval_part(tsptq_model *m, const tsptq_op *op, int64_t r0, int64_t r1, int32_t *scratch) {
    const tsptq_tensor *x = &m->tensors[op->inputs[0]];
    const int64_t *o = op->opt, D = tq_last_dim(x);
    (void)scratch;
    tq_layernorm_2s((const int8_t *)tq_ptr(m, op->inputs[0]) + r0 * D, (int32_t)(r1 - r0), (int32_t)D,
                    TQ_O32(o[TQ_LN_IN_ZP]), (const int8_t *)tq_ptr(m, op->inputs[1]), tq_in32(m, op, 2),
                    tq_in64(m, op, 3), o[TQ_LN_EPS], TQ_O32(o[TQ_LN_OUT_ZP]), TQ_O32(o[TQ_LN_OUT_SHIFT]),
                    (int8_t *)tq_act(m, op->output) + r0 * D);
}
static void layernorm_eval(tsptq_model *m, const tsptq_op *op) {
    layernorm_eval_part(m, op, 0, tq_rows(&m->tensors[op->inputs[0]]), NULL);
}
static int64_t layernorm_units(const tsptq_model *m, const tsptq_op *op, int64_t *grain) {
    return tq_row_units(&m->tensors[op->inputs[0]], grain);
}

const tq_op_def TQ_OP_DEF(tq_layernorm_2s, _op) = {
    .name = "TSPTQ_LAYERNORM_2S", .builtin_code = TQ_CUSTOM, .min_inputs = 4, .max_inputs = 4, .n_outputs = 1,
    .const_from = 1, .n_option_keys = TQ_COUNT_OF(layernorm_keys), .option_keys = layernorm_keys,
    .prepare = layernorm_prepare, .eval = layernorm_eval, .units = layernorm_units,
    .eval_part = layernorm_eval_part};
