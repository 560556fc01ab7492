/* tsptq runtime: the fixed-point primitives of fixedpoint.h on AVX-512 vectors (internal to src/ops; compiled only
 * with -DTSPTQ_USE_AVX512VNNI, see dot.h): 8 int64 lanes at a time, lane by lane the same arithmetic as the scalar
 * functions, wrap-around included (vpmullq keeps the low 64 bits of a product, as the uint64 products there do).
 * Shift amounts must stay in the ranges the scalar functions define (tqv_shifts_ok checks a parameter vector).
 */
#ifndef TSPTQ_AVX512_H
#define TSPTQ_AVX512_H

#include <stdint.h>

#include <immintrin.h>

#include "../fixedpoint.h"

/* tq_rdbpot64: x / 2^e rounded half away from zero, 0 <= e <= 62 */
static inline __m512i tqv_rdbpot(__m512i x, __m512i e) {
    const __m512i one = _mm512_set1_epi64(1);
    const __m512i mask = _mm512_sub_epi64(_mm512_sllv_epi64(one, e), one);
    const __m512i rem = _mm512_and_si512(x, mask);
    const __m512i thr = _mm512_add_epi64(_mm512_srli_epi64(mask, 1), _mm512_srli_epi64(x, 63));
    const __m512i q = _mm512_srav_epi64(x, e);
    return _mm512_mask_add_epi64(q, _mm512_cmpgt_epi64_mask(rem, thr), q, one);
}

/* tq_requant1 */
static inline __m512i tqv_requant1(__m512i x, __m512i mult, __m512i shift) {
    return tqv_rdbpot(_mm512_mullo_epi64(x, mult), _mm512_sub_epi64(_mm512_set1_epi64(31), shift));
}

/* tq_mbqm1 */
static inline __m512i tqv_mbqm1(__m512i x, __m512i mult, __m512i shift) {
    const __m512i total = _mm512_sub_epi64(_mm512_set1_epi64(31), shift);
    const __m512i round = _mm512_sllv_epi64(_mm512_set1_epi64(1), _mm512_sub_epi64(total, _mm512_set1_epi64(1)));
    return _mm512_srav_epi64(_mm512_add_epi64(_mm512_mullo_epi64(x, mult), round), total);
}

/* tq_srdhm64 */
static inline __m512i tqv_srdhm(__m512i a, __m512i mult) {
    const __m512i zero = _mm512_setzero_si512(), imin = _mm512_set1_epi64(TQ_INT32_MIN);
    const __mmask8 sat = _mm512_cmpeq_epi64_mask(a, imin) & _mm512_cmpeq_epi64_mask(mult, imin);
    const __m512i ab = _mm512_mullo_epi64(a, mult);
    const __m512i nudge = _mm512_mask_blend_epi64(_mm512_cmplt_epi64_mask(ab, zero), _mm512_set1_epi64(1 << 30),
                                                  _mm512_set1_epi64(1 - (1 << 30)));
    const __m512i s = _mm512_add_epi64(ab, nudge);
    /* truncating division by 2^31: add 2^31 - 1 to negative values before the arithmetic shift */
    const __m512i h = _mm512_srai_epi64(
        _mm512_add_epi64(s, _mm512_and_si512(_mm512_srai_epi64(s, 63), _mm512_set1_epi64(0x7FFFFFFF))), 31);
    return _mm512_mask_mov_epi64(h, sat, _mm512_set1_epi64(TQ_INT32_MAX));
}

/* tq_mbqm: SRDHM(x << max(shift, 0), M), then RDBPOT by max(-shift, 0) */
static inline __m512i tqv_mbqm(__m512i x, __m512i mult, __m512i shift) {
    const __m512i zero = _mm512_setzero_si512();
    const __m512i h = tqv_srdhm(_mm512_sllv_epi64(x, _mm512_max_epi64(shift, zero)), mult);
    return tqv_rdbpot(h, _mm512_max_epi64(_mm512_sub_epi64(zero, shift), zero));
}

enum { TQV_REQUANT1, TQV_MBQM, TQV_MBQM1 };

/* sat8(requantize(x) + zp) of 8 int64 lanes, as the low 8 bytes. */
static inline __m128i tqv_out8(__m512i x, __m512i mult, __m512i shift, int how, int32_t zp) {
    __m512i v = how == TQV_REQUANT1 ? tqv_requant1(x, mult, shift)
                : how == TQV_MBQM1  ? tqv_mbqm1(x, mult, shift)
                                    : tqv_mbqm(x, mult, shift);
    v = _mm512_add_epi64(v, _mm512_set1_epi64(zp));
    v = _mm512_min_epi64(_mm512_max_epi64(v, _mm512_set1_epi64(-128)), _mm512_set1_epi64(127));
    return _mm512_cvtepi64_epi8(v);
}

static inline __m512i tqv_lo64(__m512i v) { return _mm512_cvtepi32_epi64(_mm512_castsi512_si256(v)); }
static inline __m512i tqv_hi64(__m512i v) { return _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(v, 1)); }

/* sat8(requantize(acc + bias) + zp) of 16 int32 lanes (acc + bias in 64 bits, as the reference adds them). */
static inline __m128i tqv_out16(__m512i acc, __m512i bias, __m512i mult, __m512i shift, int how, int32_t zp) {
    const __m128i lo = tqv_out8(_mm512_add_epi64(tqv_lo64(acc), tqv_lo64(bias)), tqv_lo64(mult), tqv_lo64(shift), how,
                                zp);
    const __m128i hi = tqv_out8(_mm512_add_epi64(tqv_hi64(acc), tqv_hi64(bias)), tqv_hi64(mult), tqv_hi64(shift), how,
                                zp);
    return _mm_unpacklo_epi64(lo, hi);
}

/* Lanes c < n of 16 (n may be <= 0 or >= 16). */
static inline __mmask16 tqv_lanes(int32_t n) {
    return n >= 16 ? (__mmask16)0xFFFF : n <= 0 ? (__mmask16)0 : (__mmask16)((1u << n) - 1);
}

/* 16 int32 per-channel values at p (lanes m), or v broadcast when p is NULL. */
static inline __m512i tqv_param(const int32_t *p, __mmask16 m, int32_t v) {
    return p ? _mm512_maskz_loadu_epi32(m, p) : _mm512_set1_epi32(v);
}

/* The vector requantization matches the scalar one for shifts in this range (every multiplier the exporter and
 * TFLite's QuantizeMultiplier make); other values take the scalar path. */
static inline int tqv_shifts_ok(const int32_t *shift, int32_t n) {
    int32_t i;
    for (i = 0; i < n; i++)
        if (shift[i] < -31 || shift[i] > 30) return 0;
    return 1;
}

/* ---- requantizing 16 int32 accumulators, parameters prepared once for many rows --------------------------------- */

/* The accumulators are split into even and odd lanes (each in the low dword of a qword), so vpmuldq multiplies them by
 * the int32 multipliers into exact int64 products without widening; the bias enters as the precomputed product
 * bias * M ((acc + bias) * M modulo 2^64, as the scalar code computes it).
 *
 * Short forms (`fast`), taken when every lane in use has parameters in their range (a requantization multiplier
 * below 1, the usual case), each equal to the scalar function there; p = (acc + bias) * M:
 *   REQUANT1, shift <= -1 (e = 31 - shift >= 32), |bias| <= 2^30:
 *     rdbpot64(p, e) = floor((p + 2^(e-1) - [p < 0]) / 2^e) (x / 2^e rounded half away from zero: the rem > thr form
 *     of tq_rdbpot64 as one sum); |acc + bias| < 1.5 * 2^31 and M < 2^31 keep the sum below 2^63, and flooring by 2^e
 *     is the high dword floored by 2^(e - 32), below 1.5 * 2^30 in size (so + zp cannot wrap before the saturating
 *     narrowing);
 *   MBQM1, shift <= -1 (total = 31 - shift >= 32): (p + 2^(total-1)) >> total (modulo 2^64, as tq_mbqm1) is the high
 *     dword of that sum shifted right by total - 32, any int32 (so + zp saturates in 16 bits);
 *   MBQM, shift <= 0 and M >= 0: no left shift, and SRDHM(a, M) = trunc((p + nudge) / 2^31) = floor((p + 2^30) / 2^31)
 *     (for p < 0, truncating is flooring after adding 2^31 - 1, and 1 - 2^30 + 2^31 - 1 = 2^30; |p| < 2^63 - 2^32,
 *     so the sum does not wrap; M >= 0 rules out the saturating case), then tq_rdbpot64 as before. */
typedef struct {
    int how;              /* TQV_REQUANT1, TQV_MBQM, TQV_MBQM1 */
    int sat;              /* MBQM with a multiplier INT32_MIN (SRDHM's saturating case): the lane-by-lane path */
    int fast;             /* the short form of `how` (above) */
    __m512i bias, mult, shift; /* as given (int32 lanes), for the saturating case */
    __m512i m[2], bm[2];  /* even / odd lanes: the multiplier, bias * multiplier */
    __m512i left[2];      /* MBQM: the left shift */
    __m512i e[2], mask[2], half[2]; /* the rounding right shift e, 2^e - 1, (2^e - 1) >> 1; MBQM1: e and 2^(e-1) */
    __m512i round[2];     /* fast REQUANT1, MBQM1: 2^(e-1); fast MBQM: 2^30 */
    __m512i k32;          /* fast REQUANT1, MBQM1: e - 32, as int32 lanes */
    __m512i zp;
    __m512i zp32;         /* as int32 lanes */
    __m256i zp16;         /* as int16 lanes */
} tqv_rq16;

static inline __m512i tqv_even64(__m512i v) { return _mm512_srai_epi64(_mm512_slli_epi64(v, 32), 32); }
static inline __m512i tqv_odd64(__m512i v) { return _mm512_srai_epi64(v, 32); }

/* Parameters of 16 channels; `lanes` the ones in use (the others' outputs are not stored, and their parameters do
 * not decide the form). */
static inline void tqv_rq_prepare(tqv_rq16 *q, int how, __m512i bias, __m512i mult, __m512i shift, int32_t zp,
                                  __mmask16 lanes) {
    const __m512i one = _mm512_set1_epi64(1), zero = _mm512_setzero_si512();
    const __m512i minus1 = _mm512_set1_epi32(-1);
    int p;
    q->how = how;
    q->bias = bias;
    q->mult = mult;
    q->shift = shift;
    q->sat = how == TQV_MBQM && _mm512_mask_cmpeq_epi32_mask(lanes, mult, _mm512_set1_epi32(TQ_INT32_MIN)) != 0;
    if (how == TQV_MBQM)
        q->fast = !q->sat && !_mm512_mask_cmpgt_epi32_mask(lanes, shift, zero) &&
                  !_mm512_mask_cmplt_epi32_mask(lanes, mult, zero);
    else
        /* |bias| < 2^30 strictly and M >= 0: at |bias| = 2^30 with M = INT32_MIN the short form's sum wraps */
        q->fast = !_mm512_mask_cmpgt_epi32_mask(lanes, shift, minus1) && !_mm512_mask_cmplt_epi32_mask(lanes, mult, zero) &&
                  (how == TQV_MBQM1 || !_mm512_mask_cmpge_epu32_mask(lanes, _mm512_abs_epi32(bias),
                                                                      _mm512_set1_epi32(1 << 30)));
    /* the fast forms add zp in 16-bit (MBQM1) or 32-bit lanes after clamping: exact for |zp| <= 2^15 - 128 (see
     * tqv_rqs); the loaders allow int8/uint8 zero points only, so this never costs a model the fast form */
    q->fast = q->fast && zp >= -32640 && zp <= 32640;
    /* lanes not in use get the in-use parameters' form of shift: their values are computed and dropped */
    shift = _mm512_mask_mov_epi32(_mm512_set1_epi32(how == TQV_MBQM ? 0 : -1), lanes, shift);
    q->zp = _mm512_set1_epi64(zp);
    q->zp32 = _mm512_set1_epi32(zp);
    q->zp16 = _mm256_set1_epi16((int16_t)zp);
    q->k32 = _mm512_sub_epi32(_mm512_set1_epi32(-1), shift);
    for (p = 0; p < 2; p++) {
        const __m512i b = p ? _mm512_srli_epi64(bias, 32) : bias, m = p ? _mm512_srli_epi64(mult, 32) : mult;
        const __m512i sh = p ? tqv_odd64(shift) : tqv_even64(shift);
        __m512i e;
        q->m[p] = m;
        q->bm[p] = _mm512_mul_epi32(b, m);
        q->left[p] = _mm512_max_epi64(sh, zero);
        e = how == TQV_MBQM ? _mm512_max_epi64(_mm512_sub_epi64(zero, sh), zero)
                            : _mm512_sub_epi64(_mm512_set1_epi64(31), sh);
        q->e[p] = e;
        q->mask[p] = _mm512_sub_epi64(_mm512_sllv_epi64(one, e), one);
        q->half[p] = how == TQV_MBQM1 ? _mm512_sllv_epi64(one, _mm512_sub_epi64(e, one))
                                      : _mm512_srli_epi64(q->mask[p], 1);
        q->round[p] = how == TQV_MBQM ? _mm512_set1_epi64((int64_t)1 << 30)
                                      : _mm512_sllv_epi64(one, _mm512_sub_epi64(e, one));
    }
}

/* tqv_rdbpot with e's mask and half mask precomputed */
static inline __m512i tqv_rdbpot_pre(__m512i x, __m512i e, __m512i mask, __m512i half) {
    const __m512i rem = _mm512_and_si512(x, mask);
    const __m512i thr = _mm512_add_epi64(half, _mm512_srli_epi64(x, 63));
    const __m512i q = _mm512_srav_epi64(x, e);
    return _mm512_mask_add_epi64(q, _mm512_cmpgt_epi64_mask(rem, thr), q, _mm512_set1_epi64(1));
}

/* tq_srdhm64 of a product ab = a * M already formed (no saturating case) */
static inline __m512i tqv_srdhm_product(__m512i ab) {
    const __m512i nudge = _mm512_mask_blend_epi64(_mm512_movepi64_mask(ab), _mm512_set1_epi64(1 << 30),
                                                  _mm512_set1_epi64(1 - (1 << 30)));
    const __m512i s = _mm512_add_epi64(ab, nudge);
    return _mm512_srai_epi64(
        _mm512_add_epi64(s, _mm512_and_si512(_mm512_srai_epi64(s, 63), _mm512_set1_epi64(0x7FFFFFFF))), 31);
}

/* sat8(requantize(x) + zp) of the even (p = 0) or odd lanes of acc, int64 results in qword lanes. */
static inline __m512i tqv_rq_half(const tqv_rq16 *q, __m512i acc, int p) {
    const __m512i prod = _mm512_add_epi64(_mm512_mul_epi32(p ? _mm512_srli_epi64(acc, 32) : acc, q->m[p]), q->bm[p]);
    __m512i v;
    if (q->how == TQV_REQUANT1)
        v = tqv_rdbpot_pre(prod, q->e[p], q->mask[p], q->half[p]);
    else if (q->how == TQV_MBQM1)
        v = _mm512_srav_epi64(_mm512_add_epi64(prod, q->half[p]), q->e[p]);
    else /* (acc + bias) * M << left == ((acc + bias) << left) * M modulo 2^64 */
        v = tqv_rdbpot_pre(tqv_srdhm_product(_mm512_sllv_epi64(prod, q->left[p])), q->e[p], q->mask[p], q->half[p]);
    v = _mm512_add_epi64(v, q->zp);
    return _mm512_min_epi64(_mm512_max_epi64(v, _mm512_set1_epi64(-128)), _mm512_set1_epi64(127));
}

/* The short forms (see tqv_rq16). */
static inline __m128i tqv_rq_apply_fast(const tqv_rq16 *q, __m512i acc) {
    __m512i pe = _mm512_add_epi64(_mm512_mul_epi32(acc, q->m[0]), q->bm[0]);
    __m512i po = _mm512_add_epi64(_mm512_mul_epi32(_mm512_srli_epi64(acc, 32), q->m[1]), q->bm[1]);
    __m512i x;
    if (q->how == TQV_MBQM) {
        const __m512i he = _mm512_srai_epi64(_mm512_add_epi64(pe, q->round[0]), 31);
        const __m512i ho = _mm512_srai_epi64(_mm512_add_epi64(po, q->round[1]), 31);
        const __m512i ve = _mm512_add_epi64(tqv_rdbpot_pre(he, q->e[0], q->mask[0], q->half[0]), q->zp);
        const __m512i vo = _mm512_add_epi64(tqv_rdbpot_pre(ho, q->e[1], q->mask[1], q->half[1]), q->zp);
        return _mm_unpacklo_epi8(_mm512_cvtsepi64_epi8(ve), _mm512_cvtsepi64_epi8(vo));
    }
    if (q->how == TQV_REQUANT1) { /* - [p < 0] */
        pe = _mm512_add_epi64(pe, _mm512_srai_epi64(pe, 63));
        po = _mm512_add_epi64(po, _mm512_srai_epi64(po, 63));
    }
    pe = _mm512_add_epi64(pe, q->round[0]);
    po = _mm512_add_epi64(po, q->round[1]);
    /* the high dwords: the even lanes' moved down, the odd lanes' in place */
    x = _mm512_srav_epi32(_mm512_mask_blend_epi32((__mmask16)0xAAAA, _mm512_srli_epi64(pe, 32), po), q->k32);
    if (q->how == TQV_REQUANT1) return _mm512_cvtsepi32_epi8(_mm512_add_epi32(x, q->zp32));
    return _mm256_cvtsepi16_epi8(_mm256_adds_epi16(_mm512_cvtsepi32_epi16(x), q->zp16));
}

/* The shortest forms, for REQUANT1 with shift <= -1, M >= 0, |bias| < 2^30 (as the fast form) and MBQM with
 * shift <= -1 (r = -shift >= 1), M >= 0, |bias| < 2^30: with the product p = (acc + bias) M = acc M + bias M, each
 * output is y >> (32 + k) for k = -1 - shift (so the high dword of y shifted by k), where
 *   REQUANT1 (e = 31 - shift = 32 + k): y = p + 2^(e-1) - [p < 0] (as the fast form);
 *   MBQM: SRDHM = h = floor((p + 2^30) / 2^31) (as the fast form) and RDBPOT(h, r) = floor((h + 2^(r-1) - [h < 0])
 *     / 2^r), so (floor((floor(x / a) + c) / b) = floor((x + ca) / ab) for integers x, c and a, b > 0)
 *     y = p + 2^30 + 2^(30+r) - [p < -2^30] 2^31 (h < 0 iff p + 2^30 < 0), shifted by 31 + r = 32 + k.
 * [p < t] is tested as acc M < t - bias M (exact int64 values), and the constants fold into one addend. Sizes:
 * |acc + bias| < 1.5 * 2^31 and M < 2^31 give |p| < 3 * 2^61 - 2^32, so |y| < 2^63 (the MBQM addend is at most
 * 2^30 + 2^61) and y >> 32 fits an int32; both forms' results stay below 1.5 * 2^30 in magnitude. MBQM adds zp in
 * 16-bit saturating lanes after clamping to int16: sat8(sat16(sat16(x) + zp)) = sat8(x + zp) needs |zp| <= 2^15 - 128
 * (a clamped x then still saturates the same way: 32767 + zp >= 127); REQUANT1 adds it in int32 (|zp| <= 2^29
 * cannot wrap). */
typedef struct {
    __m512i m[2], add[2], thr[2]; /* even / odd lanes: the multiplier, the addend, the threshold of the test */
    __m512i sub;                  /* what the test subtracts: 1 (REQUANT1) or 2^31 (MBQM) */
    __m512i k32;                  /* k as int32 lanes */
    __m512i zp32;
    __m256i zp16;
    int wide;                     /* MBQM: + zp in 16-bit saturating lanes */
} tqv_rqs;

/* Whether the shortest form applies to the lanes in use; if so, its constants in s. */
static inline int tqv_rqs_prepare(tqv_rqs *s, int how, __m512i bias, __m512i mult, __m512i shift, int32_t zp,
                                  __mmask16 lanes) {
    const __m512i one = _mm512_set1_epi64(1);
    int p;
    if ((how != TQV_REQUANT1 && how != TQV_MBQM) || _mm512_mask_cmpgt_epi32_mask(lanes, shift, _mm512_set1_epi32(-1)) ||
        _mm512_mask_cmplt_epi32_mask(lanes, mult, _mm512_setzero_si512()) ||
        _mm512_mask_cmpge_epu32_mask(lanes, _mm512_abs_epi32(bias), _mm512_set1_epi32(1 << 30)) ||
        (how == TQV_MBQM ? zp < -32640 || zp > 32640 : zp < -(1 << 29) || zp > (1 << 29)))
        return 0;
    shift = _mm512_mask_mov_epi32(_mm512_set1_epi32(-1), lanes, shift); /* lanes not in use: any valid shift */
    s->wide = how == TQV_MBQM;
    s->sub = how == TQV_MBQM ? _mm512_set1_epi64((int64_t)1 << 31) : one;
    s->k32 = _mm512_sub_epi32(_mm512_set1_epi32(-1), shift);
    s->zp32 = _mm512_set1_epi32(zp);
    s->zp16 = _mm256_set1_epi16((int16_t)zp);
    for (p = 0; p < 2; p++) {
        const __m512i b = p ? _mm512_srli_epi64(bias, 32) : bias, m = p ? _mm512_srli_epi64(mult, 32) : mult;
        const __m512i sh = p ? tqv_odd64(shift) : tqv_even64(shift), bm = _mm512_mul_epi32(b, m);
        s->m[p] = m;
        if (how == TQV_MBQM) {
            const __m512i h30 = _mm512_set1_epi64((int64_t)1 << 30);
            s->add[p] = _mm512_add_epi64(_mm512_add_epi64(bm, h30),
                                         _mm512_sllv_epi64(h30, _mm512_sub_epi64(_mm512_setzero_si512(), sh)));
            s->thr[p] = _mm512_sub_epi64(_mm512_set1_epi64(-((int64_t)1 << 30)), bm);
        } else {
            s->add[p] = _mm512_add_epi64(bm, _mm512_sllv_epi64(one, _mm512_sub_epi64(_mm512_set1_epi64(30), sh)));
            s->thr[p] = _mm512_sub_epi64(_mm512_setzero_si512(), bm);
        }
    }
    return 1;
}

/* The 16 output bytes of 16 accumulators in the shortest form; wide: s->wide (a constant where inlined). */
static inline __attribute__((always_inline)) __m128i tqv_rqs_apply_k(const tqv_rqs *s, __m512i acc, const int wide) {
    const __m512i pe = _mm512_mul_epi32(acc, s->m[0]), po = _mm512_mul_epi32(_mm512_srli_epi64(acc, 32), s->m[1]);
    const __m512i ye = _mm512_mask_sub_epi64(_mm512_add_epi64(pe, s->add[0]), _mm512_cmplt_epi64_mask(pe, s->thr[0]),
                                             _mm512_add_epi64(pe, s->add[0]), s->sub);
    const __m512i yo = _mm512_mask_sub_epi64(_mm512_add_epi64(po, s->add[1]), _mm512_cmplt_epi64_mask(po, s->thr[1]),
                                             _mm512_add_epi64(po, s->add[1]), s->sub);
    const __m512i x = _mm512_srav_epi32(_mm512_mask_blend_epi32((__mmask16)0xAAAA, _mm512_srli_epi64(ye, 32), yo),
                                        s->k32);
    if (!wide) return _mm512_cvtsepi32_epi8(_mm512_add_epi32(x, s->zp32));
    return _mm256_cvtsepi16_epi8(_mm256_adds_epi16(_mm512_cvtsepi32_epi16(x), s->zp16));
}

/* The 16 output bytes of 16 accumulators. */
static inline __m128i tqv_rq_apply(const tqv_rq16 *q, __m512i acc) {
    if (q->fast) return tqv_rq_apply_fast(q, acc);
    if (q->sat)
        return tqv_out16(acc, q->bias, q->mult, q->shift, q->how, _mm_cvtsi128_si32(_mm512_castsi512_si128(q->zp)));
    return _mm512_cvtepi32_epi8(_mm512_mask_blend_epi32((__mmask16)0xAAAA, tqv_rq_half(q, acc, 0),
                                                        _mm512_slli_epi64(tqv_rq_half(q, acc, 1), 32)));
}

#endif
