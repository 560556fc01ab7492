/* TSPTQ_SOFTMAX_2S (docs/integer-semantics.md; tsptq.intmodel.kernels.softmax_2s / encode_probability / encode_two_scale).
 * scratch: N int32 (the row's exp values). With AVX-512 (the avx512vnni build), the maximum, the exp values and the
 * uniform or two-scale codes are vectorized. */
#include "../fixedpoint.h"
#include "../kernels.h"
#include "dot.h"
#include "op_util.h"

#define TQ_EXP_FRAC_BITS 20
#define TQ_PROB_FRAC_BITS 30
#define TQ_TWO_SCALE_FRAC_BITS 16

/* V-2SF encoding of v (Q16 units of the fine step): the nearest representable value. */
static inline uint8_t encode_two_scale(int64_t v, int32_t bits, int32_t m, int32_t signed_fine) {
    const int64_t field_max = ((int64_t)1 << (bits - 1)) - 1;
    const int64_t lo = signed_fine ? -((int64_t)1 << (bits - 2)) : 0;
    const int64_t hi = signed_fine ? ((int64_t)1 << (bits - 2)) - 1 : field_max;
    const int64_t c0 = (hi >> m) + 1;
    int64_t fine = tq_clamp64(tq_rshift_round(v, TQ_TWO_SCALE_FRAC_BITS), lo, hi);
    int64_t coarse = tq_clamp64(tq_rshift_round(v, TQ_TWO_SCALE_FRAC_BITS + m), c0, field_max);
    if (tq_shl64(v, 1) >= tq_shl64(hi + tq_shl64(c0, m), TQ_TWO_SCALE_FRAC_BITS))
        return (uint8_t)(coarse | ((int64_t)1 << (bits - 1)));
    return (uint8_t)(fine & field_max);
}

/* round(-log2(p / 2^30)) for a Q30 probability, clamped; the zero code 2^bits - 1 for p == 0. */
static inline uint8_t encode_log2(int64_t p, int32_t bits) {
    const int64_t zero = ((int64_t)1 << bits) - 1;
    int k;
    int64_t q;
    if (p <= 0) return (uint8_t)zero;
    k = tq_bit_length64((uint64_t)p) - 1;
    q = TQ_PROB_FRAC_BITS - k - ((uint64_t)p * (uint64_t)p >= ((uint64_t)1 << (2 * k + 1)) ? 1 : 0);
    return (uint8_t)tq_clamp64(q, 0, zero);
}

#if defined(TQ_SIMD_VNNI)
/* AVX-512: the probabilities and their uniform or two-scale codes in int64 lanes, 8 at a time (log2 codes stay
 * scalar). */
static int softmax_avx512_ok(int32_t out_kind, int32_t shift, int32_t bits, int32_t m) {
    if (shift < 0 || shift > 62) return 0;
    if (out_kind == TQ_UNIFORM) return 1;
    return out_kind == TQ_TWO_SCALE && bits >= 2 && bits <= 8 && m >= 0 && m <= 46;
}

/* encode_two_scale of 8 lanes */
static inline __m512i softmax_two_scale8(__m512i v, int32_t bits, int32_t m, int32_t signed_fine) {
    const int64_t field_max = ((int64_t)1 << (bits - 1)) - 1;
    const int64_t lo = signed_fine ? -((int64_t)1 << (bits - 2)) : 0;
    const int64_t hi = signed_fine ? ((int64_t)1 << (bits - 2)) - 1 : field_max;
    const int64_t c0 = (hi >> m) + 1;
    const int64_t split = tq_shl64(hi + tq_shl64(c0, m), TQ_TWO_SCALE_FRAC_BITS);
    const __m512i fine = _mm512_min_epi64(
        _mm512_max_epi64(tqv_rdbpot(v, _mm512_set1_epi64(TQ_TWO_SCALE_FRAC_BITS)), _mm512_set1_epi64(lo)),
        _mm512_set1_epi64(hi));
    const __m512i coarse = _mm512_min_epi64(
        _mm512_max_epi64(tqv_rdbpot(v, _mm512_set1_epi64(TQ_TWO_SCALE_FRAC_BITS + m)), _mm512_set1_epi64(c0)),
        _mm512_set1_epi64(field_max));
    const __mmask8 use_coarse = _mm512_cmpge_epi64_mask(_mm512_slli_epi64(v, 1), _mm512_set1_epi64(split));
    return _mm512_mask_blend_epi64(use_coarse, _mm512_and_si512(fine, _mm512_set1_epi64(field_max)),
                                   _mm512_or_si512(coarse, _mm512_set1_epi64((int64_t)1 << (bits - 1))));
}

/* The row's largest code. */
static inline int32_t softmax_max_avx512(const int8_t *xr, int32_t n) {
    __m512i mx = _mm512_set1_epi8(-128);
    __m256i m32;
    int32_t i;
    for (i = 0; i < n; i += 64) { /* lanes past n keep their maximum so far */
        const __mmask64 m = n - i >= 64 ? ~(__mmask64)0 : ((__mmask64)1 << (n - i)) - 1;
        mx = _mm512_max_epi8(mx, _mm512_mask_loadu_epi8(mx, m, xr + i));
    }
    m32 = _mm256_max_epi8(_mm512_castsi512_si256(mx), _mm512_extracti64x4_epi64(mx, 1));
    return _mm512_reduce_max_epi32(
        _mm512_cvtepi8_epi32(_mm_max_epi8(_mm256_castsi256_si128(m32), _mm256_extracti128_si256(m32, 1))));
}

/* e[i] = exp_lut[mx - x_i] and their sum E (int64). */
static inline int64_t softmax_exp_avx512(const int8_t *xr, int32_t n, int32_t mx, const int32_t *exp_lut, int32_t *e) {
    const __m512i vmx = _mm512_set1_epi32(mx);
    __m512i E = _mm512_setzero_si512();
    int32_t i;
    for (i = 0; i < n; i += 16) {
        const __mmask16 m = tqv_lanes(n - i);
        const __m512i idx = _mm512_sub_epi32(vmx, _mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(m, xr + i)));
        const __m512i ev = _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), m, idx, exp_lut, 4);
        _mm512_mask_storeu_epi32(e + i, m, ev);
        E = _mm512_add_epi64(E, _mm512_add_epi64(tqv_lo64(ev), tqv_hi64(ev)));
    }
    return _mm512_reduce_add_epi64(E);
}

/* The codes of one row from its exp values e (n of them) and 2^50 / E. */
static void softmax_row_avx512(const int32_t *e, int32_t n, int64_t recip, int32_t out_kind, int32_t mult,
                               int32_t shift, int32_t out_zp, int32_t bits, int32_t m, int32_t signed_fine,
                               uint8_t *yr) {
    const __m512i rc = _mm512_set1_epi64(recip), mu = _mm512_set1_epi64(mult), sh = _mm512_set1_epi64(shift),
                  ef = _mm512_set1_epi64(TQ_EXP_FRAC_BITS);
    int32_t i;
    for (i = 0; i < n; i += 8) {
        const __mmask8 lanes = (__mmask8)(n - i >= 8 ? 0xFF : (1u << (n - i)) - 1);
        const __m512i ev = _mm512_cvtepi32_epi64(_mm256_maskz_loadu_epi32(lanes, e + i));
        const __m512i p = tqv_rdbpot(_mm512_mullo_epi64(ev, rc), ef); /* Q30 */
        const __m512i v = tqv_rdbpot(_mm512_mullo_epi64(p, mu), sh);
        __m512i code;
        if (out_kind == TQ_TWO_SCALE) {
            code = softmax_two_scale8(v, bits, m, signed_fine);
        } else {
            code = _mm512_add_epi64(v, _mm512_set1_epi64(out_zp));
            code = _mm512_min_epi64(_mm512_max_epi64(code, _mm512_set1_epi64(-128)), _mm512_set1_epi64(127));
        }
        _mm_mask_storeu_epi8(yr + i, lanes, _mm512_cvtepi64_epi8(code));
    }
}
#endif

void tq_softmax_2s(const int8_t *x, int32_t rows, int32_t N, const int32_t *exp_lut, int32_t out_kind,
                   int32_t mult, int32_t shift, int32_t out_zp, int32_t bits, int32_t m, int32_t signed_fine,
                   uint8_t *y, int32_t *scratch) {
    int32_t r, i;
#if defined(TQ_SIMD_VNNI)
    const int fast = softmax_avx512_ok(out_kind, shift, bits, m);
#endif
    for (r = 0; r < rows; r++) {
        const int8_t *xr = x + (ptrdiff_t)r * N;
        uint8_t *yr = y + (ptrdiff_t)r * N;
        int32_t mx = -128;
        int64_t E = 0, recip;
#if defined(TQ_SIMD_VNNI)
        mx = softmax_max_avx512(xr, N);
        E = softmax_exp_avx512(xr, N, mx, exp_lut, scratch);
#else
        for (i = 0; i < N; i++)
            if (xr[i] > mx) mx = xr[i];
        for (i = 0; i < N; i++) {
            scratch[i] = exp_lut[mx - xr[i]];
            E += scratch[i];
        }
#endif
        /* 2^50 / E, floor (numpy's // gives 0 for a zero divisor) */
        if (E > 0)
            recip = ((int64_t)1 << (TQ_PROB_FRAC_BITS + TQ_EXP_FRAC_BITS)) / E;
        else if (E < 0)
            recip = -((((int64_t)1 << (TQ_PROB_FRAC_BITS + TQ_EXP_FRAC_BITS)) - E - 1) / -E);
        else
            recip = 0;
#if defined(TQ_SIMD_VNNI)
        if (fast) {
            softmax_row_avx512(scratch, N, recip, out_kind, mult, shift, out_zp, bits, m, signed_fine, yr);
            continue;
        }
#endif
        for (i = 0; i < N; i++) {
            const int64_t p = tq_rshift_round((int64_t)scratch[i] * recip, TQ_EXP_FRAC_BITS); /* Q30 */
            if (out_kind == TQ_TWO_SCALE)
                yr[i] = encode_two_scale(tq_rshift_round(p * mult, shift), bits, m, signed_fine);
            else if (out_kind == TQ_LOG2)
                yr[i] = encode_log2(p, bits);
            else
                yr[i] = (uint8_t)tq_sat8(tq_rshift_round(p * mult, shift) + out_zp);
        }
    }
}

/* ---- the op: TSPTQ_SOFTMAX_2S (op_table.h) ----------------------------------------------------------------------- */

enum { TQ_SM_OUT_KIND = 0, TQ_SM_MULT, TQ_SM_SHIFT, TQ_SM_OUT_ZP, TQ_SM_BITS, TQ_SM_M, TQ_SM_SIGNED_FINE };
static const char *const softmax_keys[] = {"out_kind", "mult", "shift", "out_zp", "bits", "ratio_log2",
                                           "signed_fine"};

static int softmax_prepare(tq_op_ctx *ctx) {
    tsptq_tensor *const *in = ctx->in, *out = ctx->out;
    const uint32_t k = ctx->k;
    int64_t *o = ctx->op->opt;
    int i;
    tsptq_tensor *x = in[0], *lut = in[1];
    int64_t N = x->rank ? x->shape[x->rank - 1] : 0, kind = o[TQ_SM_OUT_KIND];
    if (x->type != TSPTQ_INT8 || !tq_same_shape(x, out) || N < 1)
        TQ_BAD(ctx, "op %u (TSPTQ_SOFTMAX_2S): input must be int8, output of the same shape", k);
    if (N > 2047) TQ_BAD(ctx, "op %u (TSPTQ_SOFTMAX_2S): %L tokens, at most 2047", k, N);
    if (lut->rank != 1 || lut->shape[0] != 256 || lut->type != TSPTQ_INT32)
        TQ_BAD(ctx, "op %u (TSPTQ_SOFTMAX_2S): the lookup table must have 256 int32 entries", k);
    if (kind != TQ_UNIFORM && kind != TQ_TWO_SCALE && kind != TQ_LOG2)
        TQ_REFUSE(ctx, TSPTQ_ERR_UNSUPPORTED_OP, "op %u (TSPTQ_SOFTMAX_2S): output code kind %L", k, kind);
    if (out->type != (kind == TQ_UNIFORM ? TSPTQ_INT8 : TSPTQ_UINT8))
        TQ_BAD(ctx, "op %u (TSPTQ_SOFTMAX_2S): output dtype does not fit the code kind", k);
    if (((const int32_t *)lut->data)[0] != (1 << 20))
        TQ_BADQ(ctx, "op %u (TSPTQ_SOFTMAX_2S): exp table must start at 2^20", k);
    for (i = 0; i < 256; i++)
        if (!tq_in_range(((const int32_t *)lut->data)[i], 0, 1 << 20))
            TQ_BADQ(ctx, "op %u (TSPTQ_SOFTMAX_2S): exp table entry %d out of range", k, i);
    if (!tq_in_range(o[TQ_SM_MULT], 0, TQ_ACC_LIMIT) || !tq_in_range(o[TQ_SM_SHIFT], 0, 62) ||
        !tq_in_range(o[TQ_SM_OUT_ZP], -128, 127) || !tq_in_range(o[TQ_SM_BITS], 2, 8) ||
        !tq_in_range(o[TQ_SM_M], 0, 8) ||
        !tq_in_range(o[TQ_SM_SIGNED_FINE], 0, 1))
        TQ_BADQ(ctx, "op %u (TSPTQ_SOFTMAX_2S): options out of range", k);
    return 1;
}

static void softmax_eval(tsptq_model *m, const tsptq_op *op) {
    const tsptq_tensor *x = &m->tensors[op->inputs[0]];
    const int64_t *o = op->opt;
    tq_softmax_2s((const int8_t *)tq_ptr(m, op->inputs[0]), tq_rows(x), tq_last_dim(x), tq_in32(m, op, 1),
                  TQ_O32(o[TQ_SM_OUT_KIND]), TQ_O32(o[TQ_SM_MULT]), TQ_O32(o[TQ_SM_SHIFT]), TQ_O32(o[TQ_SM_OUT_ZP]),
                  TQ_O32(o[TQ_SM_BITS]), TQ_O32(o[TQ_SM_M]), TQ_O32(o[TQ_SM_SIGNED_FINE]), tq_act(m, op->output),
                  tq_scratch(m, op));
}

const tq_op_def TQ_OP_DEF(tq_softmax_2s, _op) = {
    .name = "TSPTQ_SOFTMAX_2S", .builtin_code = TQ_CUSTOM, .min_inputs = 2, .max_inputs = 2, .n_outputs = 1,
    .const_from = 1, .n_option_keys = TQ_COUNT_OF(softmax_keys), .option_keys = softmax_keys,
    .prepare = softmax_prepare, .scratch = tq_row_scratch, .eval = softmax_eval};
