/* TSPTQ_LAYERNORM_2S (docs/integer-semantics.md; tsptq.intmodel.kernels.layernorm_2s). Three passes over each row (sum, sum of
 * squared deviations, output): no scratch. 64-bit throughout (x_c, d_c are small, V and the products are not). With
 * AVX-512 (the avx512vnni build), the same passes 16 channels at a time (ln_row_avx512). */
#include <string.h>

#include "../fixedpoint.h"
#include "../kernels.h"
#include "dot.h"
#include "op_util.h"

#define TQ_NORM_FRAC_BITS 24
#define TQ_SIGMA_EXTRA_BITS 20

/* e (the extra fraction bits of the standard deviation) and sigma from the row's sum of squared deviations. */
static int64_t ln_sigma(uint64_t ss, int32_t D, int64_t eps, int *e_out) {
    const int64_t V = (int64_t)(ss / (uint64_t)D) + eps; /* sum >= 0: floor division */
    int e = (62 - tq_bit_length64((uint64_t)V)) / 2;
    int64_t sigma;
    e = e < 0 ? 0 : (e > TQ_SIGMA_EXTRA_BITS ? TQ_SIGMA_EXTRA_BITS : e);
    sigma = tq_isqrt64((uint64_t)tq_shl64(V, 2 * e));
    *e_out = e;
    return sigma < 1 ? 1 : sigma;
}

static void ln_row_ref(const int8_t *xr, int32_t D, int32_t in_zp, const int8_t *in_shift, const int32_t *gamma_mul,
                       const int64_t *beta_bias, int64_t eps, int32_t out_zp, int32_t out_shift, int8_t *yr) {
    int64_t S = 0, sigma;
    uint64_t ss = 0;
    int32_t c;
    int e;
    for (c = 0; c < D; c++) S += tq_shl64((int64_t)xr[c] - in_zp, in_shift[c]);
    for (c = 0; c < D; c++) {
        int64_t d = (int64_t)D * tq_shl64((int64_t)xr[c] - in_zp, in_shift[c]) - S;
        ss += (uint64_t)(d * d);
    }
    sigma = ln_sigma(ss, D, eps, &e);
    for (c = 0; c < D; c++) {
        int64_t d = (int64_t)D * tq_shl64((int64_t)xr[c] - in_zp, in_shift[c]) - S;
        int64_t nrm = tq_div_round(tq_shl64(d, TQ_NORM_FRAC_BITS + e), sigma);
        yr[c] = tq_sat8(tq_rshift_round(nrm * gamma_mul[c] + beta_bias[c], out_shift) + out_zp);
    }
}

#if defined(TQ_SIMD_VNNI)
/* AVX-512: x_c and d_c in int32 lanes (the bounds checked in ln_avx512_ok keep them there), the squares, the division
 * and the output in int64 lanes. The division goes through a double estimate of the quotient, corrected by one step
 * and verified exactly; a row where a quotient cannot be verified is done by ln_row_ref. */
#define LN_MAX_D 4096

static int ln_avx512_ok(int32_t D, int32_t in_zp, const int8_t *in_shift, int64_t eps, int32_t out_shift) {
    int32_t c;
    /* |x_c| <= 383 << 7 < 2^16, |S| < 2^28, |d_c| < 2^29 */
    if (D < 1 || D > LN_MAX_D || in_zp < -255 || in_zp > 255 || eps < 0 || eps > ((int64_t)1 << 61) || out_shift < 0 ||
        out_shift > 62)
        return 0;
    for (c = 0; c < D; c++)
        if (in_shift[c] < 0 || in_shift[c] > 7) return 0;
    return 1;
}

/* x_c = (q_c - in_zp) << in_shift_c for the 16 channels from c (lanes m) */
static inline __m512i ln_x16(const int8_t *xr, const int8_t *in_shift, int32_t c, __mmask16 m, __m512i zp) {
    const __m512i q = _mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(m, xr + c));
    const __m512i sh = _mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(m, in_shift + c));
    return _mm512_maskz_sllv_epi32(m, _mm512_sub_epi32(q, zp), sh);
}

/* sign(a) * ((|a| + sigma / 2) / sigma) of 8 lanes; *ok cleared where the quotient could not be verified. */
static inline __m512i ln_div_round(__m512i a, int64_t sigma, double inv, __mmask8 *ok) {
    const __m512i sg = _mm512_set1_epi64(sigma), zero = _mm512_setzero_si512();
    const __m512i n = _mm512_add_epi64(_mm512_abs_epi64(a), _mm512_set1_epi64(sigma >> 1));
    __m512i q = _mm512_cvttpd_epi64(_mm512_mul_pd(_mm512_cvtepi64_pd(n), _mm512_set1_pd(inv)));
    __m512i r = _mm512_sub_epi64(n, _mm512_mullo_epi64(q, sg));
    const __mmask8 low = _mm512_cmplt_epi64_mask(r, zero), high = _mm512_cmpge_epi64_mask(r, sg);
    q = _mm512_mask_sub_epi64(q, low, q, _mm512_set1_epi64(1));
    q = _mm512_mask_add_epi64(q, high, q, _mm512_set1_epi64(1));
    r = _mm512_sub_epi64(n, _mm512_mullo_epi64(q, sg));
    *ok &= _mm512_cmpge_epi64_mask(r, zero) & _mm512_cmplt_epi64_mask(r, sg);
    return _mm512_mask_sub_epi64(q, _mm512_cmplt_epi64_mask(a, zero), zero, q);
}

/* One row; returns 0 (having written nothing) if a quotient could not be verified. */
static int ln_row_avx512(const int8_t *xr, int32_t D, int32_t in_zp, const int8_t *in_shift, const int32_t *gamma_mul,
                         const int64_t *beta_bias, int64_t eps, int32_t out_zp, int32_t out_shift, int8_t *yr) {
    int8_t out[LN_MAX_D];
    const __m512i zp = _mm512_set1_epi32(in_zp), dd = _mm512_set1_epi32(D);
    __m512i sum = _mm512_setzero_si512(), ss = sum, S;
    int64_t sigma;
    double inv;
    __mmask8 ok = 0xFF;
    int32_t c, h;
    int e;
    for (c = 0; c < D; c += 16) sum = _mm512_add_epi32(sum, ln_x16(xr, in_shift, c, tqv_lanes(D - c), zp));
    S = _mm512_set1_epi32(_mm512_reduce_add_epi32(sum));
    for (c = 0; c < D; c += 16) {
        const __mmask16 m = tqv_lanes(D - c);
        const __m512i d = _mm512_maskz_sub_epi32(m, _mm512_mullo_epi32(dd, ln_x16(xr, in_shift, c, m, zp)), S);
        ss = _mm512_add_epi64(ss, _mm512_mul_epi32(d, d));
        ss = _mm512_add_epi64(ss, _mm512_mul_epi32(_mm512_srli_epi64(d, 32), _mm512_srli_epi64(d, 32)));
    }
    sigma = ln_sigma((uint64_t)_mm512_reduce_add_epi64(ss), D, eps, &e);
    inv = 1.0 / (double)sigma;
    for (c = 0; c < D; c += 16) {
        const __mmask16 m = tqv_lanes(D - c);
        const __m512i d = _mm512_sub_epi32(_mm512_mullo_epi32(dd, ln_x16(xr, in_shift, c, m, zp)), S);
        const __m512i g = _mm512_maskz_loadu_epi32(m, gamma_mul + c);
        __m128i part[2];
        for (h = 0; h < 2; h++) {
            const __mmask8 mh = (__mmask8)(h ? m >> 8 : m);
            const __m512i a = _mm512_sll_epi64(h ? tqv_hi64(d) : tqv_lo64(d), _mm_cvtsi32_si128(TQ_NORM_FRAC_BITS + e));
            const __m512i nrm = ln_div_round(a, sigma, inv, &ok);
            const __m512i v = _mm512_add_epi64(_mm512_mullo_epi64(nrm, h ? tqv_hi64(g) : tqv_lo64(g)),
                                               _mm512_maskz_loadu_epi64(mh, beta_bias + c + 8 * h));
            __m512i o = _mm512_add_epi64(tqv_rdbpot(v, _mm512_set1_epi64(out_shift)), _mm512_set1_epi64(out_zp));
            o = _mm512_min_epi64(_mm512_max_epi64(o, _mm512_set1_epi64(-128)), _mm512_set1_epi64(127));
            part[h] = _mm512_cvtepi64_epi8(o);
        }
        _mm_mask_storeu_epi8(out + c, m, _mm_unpacklo_epi64(part[0], part[1]));
    }
    if (ok != 0xFF) return 0;
    memcpy(yr, out, (size_t)D);
    return 1;
}
#endif

void tq_layernorm_2s(const int8_t *x, int32_t rows, int32_t D, int32_t in_zp, const int8_t *in_shift,
                     const int32_t *gamma_mul, const int64_t *beta_bias, int64_t eps, int32_t out_zp,
                     int32_t out_shift, int8_t *y) {
    int32_t r;
#if defined(TQ_SIMD_VNNI)
    const int fast = ln_avx512_ok(D, in_zp, in_shift, eps, out_shift);
#endif
    for (r = 0; r < rows; r++) {
        const int8_t *xr = x + (ptrdiff_t)r * D;
        int8_t *yr = y + (ptrdiff_t)r * D;
#if defined(TQ_SIMD_VNNI)
        if (fast && ln_row_avx512(xr, D, in_zp, in_shift, gamma_mul, beta_bias, eps, out_zp, out_shift, yr)) continue;
#endif
        ln_row_ref(xr, D, in_zp, in_shift, gamma_mul, beta_bias, eps, out_zp, out_shift, yr);
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
    if (D > 1024) TQ_BAD(ctx, "op %u (TSPTQ_LAYERNORM_2S): %L channels, at most 1024", k, D);
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

static void layernorm_eval(tsptq_model *m, const tsptq_op *op) {
    const tsptq_tensor *x = &m->tensors[op->inputs[0]];
    const int64_t *o = op->opt;
    tq_layernorm_2s((const int8_t *)tq_ptr(m, op->inputs[0]), tq_rows(x), tq_last_dim(x), TQ_O32(o[TQ_LN_IN_ZP]),
                    (const int8_t *)tq_ptr(m, op->inputs[1]), tq_in32(m, op, 2), tq_in64(m, op, 3), o[TQ_LN_EPS],
                    TQ_O32(o[TQ_LN_OUT_ZP]), TQ_O32(o[TQ_LN_OUT_SHIFT]), (int8_t *)tq_act(m, op->output));
}

const tq_op_def TQ_OP_DEF(tq_layernorm_2s, _op) = {
    .name = "TSPTQ_LAYERNORM_2S", .builtin_code = TQ_CUSTOM, .min_inputs = 4, .max_inputs = 4, .n_outputs = 1,
    .const_from = 1, .n_option_keys = TQ_COUNT_OF(layernorm_keys), .option_keys = layernorm_keys,
    .prepare = layernorm_prepare, .eval = layernorm_eval};
