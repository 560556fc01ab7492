/* ADD (builtin, n_params = 1) and TSPTQ_ADD_2S (n_params = C): TFLite's int8 ADD with left_shift 20, per channel
 * parameters (rows a_mult, a_shift, b_mult, b_shift, out_mult, out_shift of a (6, n_params) table):
 * tsptq.intmodel.kernels.add. On x86 (the avx2 build: 8 channels a vector; avx512vnni, amx: 16) in int32 lanes with
 * exact int64 products (add_simd, below); on Arm M-profile in int32 (add_mve: Helium, 4 channels a vector; add_dsp:
 * scalar 32x32 products); the scalar loop otherwise and for parameters outside their range (add_simd_ok). */
#include <string.h>

#include "../fixedpoint.h"
#include "../kernels.h"
#include "dot.h"
#include "op_util.h"

#define TQ_ADD_LEFT_SHIFT 20

#if defined(TQ_SIMD_AVX2) || defined(TQ_SIMD_DSP)
/* The x86 paths (AVX-512: 16 channels a vector, AVX2: 8) compute every rescaling below in the exact form
 *   RDBPOT(SRDHM(x, M), r) = ((2xM + K_r) >> 32 - s) >> r,   K_r = 2^31 + [r >= 1] 2^(31 + r),   s = [r >= 1][h < 0]
 * with h = SRDHM(x, M), for an int32 x (never INT32_MIN: no saturating case), 0 <= M < 2^31 and 0 <= r <= 31:
 * for M >= 0, SRDHM(x, M) = trunc((xM + nudge) / 2^31) = floor((xM + 2^30) / 2^31) = floor((2xM + 2^31) / 2^32)
 * (for xM < 0 truncation adds 2^31 - 1 before flooring, and 1 - 2^30 + 2^31 - 1 = 2^30); RDBPOT(h, r) =
 * floor((h + c) / 2^r) with c = 2^(r-1) - [h < 0] for r >= 1 and c = 0 for r = 0 (the rem > thr test of tq_rdbpot64
 * as one sum); floor(floor(y / 2^32) / 2^r) = floor(y / 2^(32 + r)), and subtracting 2^32 from y is subtracting 1
 * from floor(y / 2^32). h < 0 iff 2xM < -2^31.
 * Sizes: |q - zp| <= 255, so |2x| = |(q - zp) << 21| < 2^29 for an input, |2xM| < 2^60, 2xM + K_r < 2^63 and
 * (2xM + K_r) >> 32 fits an int32, as does every rescaled value: |sa|, |sb| <= 255 * 2^20, |sa + sb| < 2^29 (so
 * 2 (sa + sb) is the int32 x of the output rescaling), |out| < 2^29 (+ out_zp, |out_zp| <= 2^30, fits too).
 * An input's s is taken as [r >= 1][q < zp]: q >= zp gives x >= 0, h >= 0; q < zp gives xM <= 0, h <= 0, and where
 * h = 0 the s subtracted changes nothing ((2^(r-1) - 1) >> r = 0 = 2^(r-1) >> r). The output's s is tested on the
 * product. The zero point folds into K: 2xM + K_r = (q << 21) M + (K_r - (zp << 21) M).
 * Other parameters (left shifts, shifts below -31, negative multipliers, wide zero points) take the scalar loop. */
static int add_simd_ok(const int32_t *params, int32_t n_params, int32_t a_zp, int32_t b_zp, int32_t out_zp) {
    int32_t i, k;
    if (!tq_zp_ok(a_zp) || !tq_zp_ok(b_zp) || out_zp < -(1 << 30) || out_zp > (1 << 30)) return 0;
    for (i = 0; i < n_params; i++) {
        for (k = 0; k < 3; k++) {
            const int32_t mu = params[2 * k * (ptrdiff_t)n_params + i], sh = params[(2 * k + 1) * (ptrdiff_t)n_params + i];
            if (mu < 0 || sh < -31 || sh > 0) return 0;
        }
    }
    return 1;
}
#endif

#if defined(TQ_SIMD_AVX2)
/* One channel's constants of one rescaling (zp = 0 for the output's). */
static inline void add_rescale_consts(int32_t mult, int32_t shift, int32_t zp, int64_t *K, int32_t *r,
                                      int32_t *corr) {
    *r = -shift;
    *corr = *r >= 1;
    *K = ((int64_t)1 << 31) + (*r >= 1 ? (int64_t)1 << (31 + *r) : 0) - (int64_t)zp * ((int64_t)1 << 21) * mult;
}

/* The constants of rescaling k (0: a, 1: b, 2: the output, zp = 0) for the lanes of channels c0.. (the first n of
 * `lanes`; the rest repeat channel c0, as a per-tensor rescaling repeats its one channel). */
static inline void add_rescale_lanes(const int32_t *params, int32_t n_params, int32_t k, int32_t c0, int32_t n,
                                     int32_t zp, int32_t lanes, int32_t *mu, int64_t *K, int32_t *r, int32_t *corr,
                                     int64_t *C64) {
    int32_t i;
    for (i = 0; i < lanes; i++) {
        const ptrdiff_t c = n_params == 1 ? 0 : c0 + (i < n ? i : 0);
        mu[i] = params[2 * k * (ptrdiff_t)n_params + c];
        add_rescale_consts(mu[i], params[(2 * k + 1) * (ptrdiff_t)n_params + c], zp, &K[i], &r[i], &corr[i]);
        C64[i] = (int64_t)corr[i] << 32;
    }
}
#endif

#if defined(TQ_SIMD_VNNI)
/* AVX-512: 16 channels, their constants loaded once for all rows; int32 lanes, the products in even / odd int64
 * lanes. */
/* 16 bytes to p, lanes m (a plain store when all 16: the masked narrowing stores are slow) */
static inline void add_store16(void *p, __mmask16 m, __m128i v) {
    if (m == 0xFFFF)
        _mm_storeu_si128((__m128i *)p, v);
    else
        _mm_mask_storeu_epi8(p, m, v);
}

typedef struct {
    __m512i m[2], k[2], corr64[2]; /* even / odd channels: the multiplier (low dword), K, s as 2^32 (int64) */
    __m512i r, corr;               /* int32 lanes: r, [r >= 1] */
} add_rs16;

static inline __m512i add_even64(const int64_t *v) {
    return _mm512_permutex2var_epi64(_mm512_loadu_si512(v), _mm512_setr_epi64(0, 2, 4, 6, 8, 10, 12, 14),
                                     _mm512_loadu_si512(v + 8));
}
static inline __m512i add_odd64(const int64_t *v) {
    return _mm512_permutex2var_epi64(_mm512_loadu_si512(v), _mm512_setr_epi64(1, 3, 5, 7, 9, 11, 13, 15),
                                     _mm512_loadu_si512(v + 8));
}

/* Channels c0.. (the first n of 16) of rescaling k (0: a, 1: b, 2: the output, zp = 0). */
static inline void add_rs16_load(add_rs16 *rs, const int32_t *params, int32_t n_params, int32_t k, int32_t c0,
                                 int32_t n, int32_t zp) {
    int64_t K[16], C64[16];
    int32_t mu[16], r[16], corr[16];
    add_rescale_lanes(params, n_params, k, c0, n, zp, 16, mu, K, r, corr, C64);
    rs->m[0] = _mm512_loadu_si512(mu); /* even channels sit in the low dwords already */
    rs->m[1] = _mm512_srli_epi64(rs->m[0], 32);
    rs->k[0] = add_even64(K);
    rs->k[1] = add_odd64(K);
    rs->corr64[0] = add_even64(C64);
    rs->corr64[1] = add_odd64(C64);
    rs->r = _mm512_loadu_si512(r);
    rs->corr = _mm512_loadu_si512(corr);
}

/* An input's rescaled value: q << 21 is 2x with the zero point folded into K; h < 0 iff q < zp. */
static inline __m512i add_input16(const add_rs16 *rs, __m512i q, __m512i zp) {
    const __m512i x2 = _mm512_slli_epi32(q, 21);
    const __m512i se = _mm512_add_epi64(_mm512_mul_epi32(x2, rs->m[0]), rs->k[0]);
    const __m512i so = _mm512_add_epi64(_mm512_mul_epi32(_mm512_srli_epi64(x2, 32), rs->m[1]), rs->k[1]);
    const __m512i hi = _mm512_mask_shuffle_epi32(so, 0x5555, se, _MM_PERM_DDBB); /* the high dwords */
    return _mm512_srav_epi32(_mm512_mask_sub_epi32(hi, _mm512_cmplt_epi32_mask(q, zp), hi, rs->corr), rs->r);
}

/* The output rescaling of sa + sb (int32 lanes); h < 0 tested on the products. */
static inline __m512i add_output16(const add_rs16 *rs, __m512i sum) {
    const __m512i x2 = _mm512_slli_epi32(sum, 1), lim = _mm512_set1_epi64(-((int64_t)1 << 31));
    const __m512i pe = _mm512_mul_epi32(x2, rs->m[0]), po = _mm512_mul_epi32(_mm512_srli_epi64(x2, 32), rs->m[1]);
    __m512i se = _mm512_add_epi64(pe, rs->k[0]), so = _mm512_add_epi64(po, rs->k[1]);
    se = _mm512_mask_sub_epi64(se, _mm512_cmplt_epi64_mask(pe, lim), se, rs->corr64[0]);
    so = _mm512_mask_sub_epi64(so, _mm512_cmplt_epi64_mask(po, lim), so, rs->corr64[1]);
    return _mm512_srav_epi32(_mm512_mask_shuffle_epi32(so, 0x5555, se, _MM_PERM_DDBB), rs->r);
}

/* Whether rescaling k of channels c0.. (n of them) is M = 2^30, shift 0 in every lane: the rescaling of the input with
 * the larger scale (its real multiplier 1/2) in TFLite's ADD, per channel in ADD_2S. Then SRDHM(x 2^20, 2^30) =
 * x 2^19 exactly (x 2^50 is a multiple of 2^31, the nudge of size below 2^30 rounds back to it either way) and RDBPOT
 * by 0 keeps it: the input's rescaled value is (q - zp) << 19. */
static int add_unit16(const int32_t *params, int32_t n_params, int32_t k, int32_t c0, int32_t n) {
    int32_t i;
    for (i = 0; i < (n_params == 1 ? 1 : n); i++) {
        const ptrdiff_t c = n_params == 1 ? 0 : c0 + i;
        if (params[2 * k * (ptrdiff_t)n_params + c] != (1 << 30) || params[(2 * k + 1) * (ptrdiff_t)n_params + c] != 0)
            return 0;
    }
    return 1;
}

/* The rows of channels c0.. (lanes m); UA, UB: add_unit16 of a, b (constants where inlined). */
static inline __attribute__((always_inline)) void add_rows16(const int8_t *a, const int8_t *b, int32_t rows, int32_t C,
                                                             int32_t c0, __mmask16 m, __m512i za, __m512i zb,
                                                             __m512i zo, const add_rs16 *ra, const add_rs16 *rb,
                                                             const add_rs16 *ro, int8_t *y, const int UA, const int UB) {
    int32_t r;
    for (r = 0; r < rows; r++) {
        const ptrdiff_t at = (ptrdiff_t)r * C + c0;
        const __m512i qa = _mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(m, a + at)),
                      qb = _mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(m, b + at));
        const __m512i sa = UA ? _mm512_slli_epi32(_mm512_sub_epi32(qa, za), 19) : add_input16(ra, qa, za);
        const __m512i sb = UB ? _mm512_slli_epi32(_mm512_sub_epi32(qb, zb), 19) : add_input16(rb, qb, zb);
        add_store16(y + at, m, _mm512_cvtsepi32_epi8(_mm512_add_epi32(add_output16(ro, _mm512_add_epi32(sa, sb)), zo)));
    }
}

static void add_simd(const int8_t *a, const int8_t *b, int32_t rows, int32_t C, int32_t a_zp, int32_t b_zp,
                     const int32_t *params, int32_t n_params, int32_t out_zp, int8_t *y) {
    const __m512i za = _mm512_set1_epi32(a_zp), zb = _mm512_set1_epi32(b_zp), zo = _mm512_set1_epi32(out_zp);
    int32_t c0;
    for (c0 = 0; c0 < C; c0 += 16) {
        const int32_t n = C - c0 < 16 ? C - c0 : 16;
        const __mmask16 m = tqv_lanes(n);
        const int ua = add_unit16(params, n_params, 0, c0, n), ub = add_unit16(params, n_params, 1, c0, n);
        add_rs16 ra, rb, ro;
        memset(&ra, 0, sizeof ra); /* an input with unit rescaling (add_unit16) does not read its constants */
        memset(&rb, 0, sizeof rb);
        if (!ua) add_rs16_load(&ra, params, n_params, 0, c0, n, a_zp);
        if (!ub) add_rs16_load(&rb, params, n_params, 1, c0, n, b_zp);
        add_rs16_load(&ro, params, n_params, 2, c0, n, 0);
        if (ua && ub)
            add_rows16(a, b, rows, C, c0, m, za, zb, zo, &ra, &rb, &ro, y, 1, 1);
        else if (ua)
            add_rows16(a, b, rows, C, c0, m, za, zb, zo, &ra, &rb, &ro, y, 1, 0);
        else if (ub)
            add_rows16(a, b, rows, C, c0, m, za, zb, zo, &ra, &rb, &ro, y, 0, 1);
        else
            add_rows16(a, b, rows, C, c0, m, za, zb, zo, &ra, &rb, &ro, y, 0, 0);
    }
}
#elif defined(TQ_SIMD_AVX2)
/* AVX2: the same, 8 channels a vector. */
typedef struct {
    __m256i m[2], k[2], corr64[2];
    __m256i r, corr;
} add_rs8;

static inline __m256i add_even64(const int64_t *v) { return _mm256_setr_epi64x(v[0], v[2], v[4], v[6]); }
static inline __m256i add_odd64(const int64_t *v) { return _mm256_setr_epi64x(v[1], v[3], v[5], v[7]); }

static inline void add_rs8_load(add_rs8 *rs, const int32_t *params, int32_t n_params, int32_t k, int32_t c0,
                                int32_t n, int32_t zp) {
    int64_t K[8], C64[8];
    int32_t mu[8], r[8], corr[8];
    add_rescale_lanes(params, n_params, k, c0, n, zp, 8, mu, K, r, corr, C64);
    rs->m[0] = _mm256_loadu_si256((const __m256i *)(const void *)mu);
    rs->m[1] = _mm256_srli_epi64(rs->m[0], 32);
    rs->k[0] = add_even64(K);
    rs->k[1] = add_odd64(K);
    rs->corr64[0] = add_even64(C64);
    rs->corr64[1] = add_odd64(C64);
    rs->r = _mm256_loadu_si256((const __m256i *)(const void *)r);
    rs->corr = _mm256_loadu_si256((const __m256i *)(const void *)corr);
}

/* the high dwords of the even and odd int64 lanes, in channel order */
static inline __m256i add_hi8(__m256i se, __m256i so) { return _mm256_blend_epi32(_mm256_srli_epi64(se, 32), so, 0xAA); }

static inline __m256i add_input8(const add_rs8 *rs, __m256i q, __m256i zp) {
    const __m256i x2 = _mm256_slli_epi32(q, 21);
    const __m256i se = _mm256_add_epi64(_mm256_mul_epi32(x2, rs->m[0]), rs->k[0]);
    const __m256i so = _mm256_add_epi64(_mm256_mul_epi32(_mm256_srli_epi64(x2, 32), rs->m[1]), rs->k[1]);
    const __m256i s = _mm256_and_si256(_mm256_cmpgt_epi32(zp, q), rs->corr);
    return _mm256_srav_epi32(_mm256_sub_epi32(add_hi8(se, so), s), rs->r);
}

static inline __m256i add_output8(const add_rs8 *rs, __m256i sum) {
    const __m256i x2 = _mm256_slli_epi32(sum, 1), lim = _mm256_set1_epi64x(-((int64_t)1 << 31));
    const __m256i pe = _mm256_mul_epi32(x2, rs->m[0]), po = _mm256_mul_epi32(_mm256_srli_epi64(x2, 32), rs->m[1]);
    const __m256i se = _mm256_sub_epi64(_mm256_add_epi64(pe, rs->k[0]),
                                        _mm256_and_si256(_mm256_cmpgt_epi64(lim, pe), rs->corr64[0]));
    const __m256i so = _mm256_sub_epi64(_mm256_add_epi64(po, rs->k[1]),
                                        _mm256_and_si256(_mm256_cmpgt_epi64(lim, po), rs->corr64[1]));
    return _mm256_srav_epi32(add_hi8(se, so), rs->r);
}

/* 8 int32 -> 8 int8, saturating (through int16: the same as saturating at once) */
static inline __m128i add_narrow8(__m256i v) {
    const __m256i b = _mm256_packs_epi16(_mm256_packs_epi32(v, v), _mm256_setzero_si256());
    return _mm_unpacklo_epi32(_mm256_castsi256_si128(b), _mm256_extracti128_si256(b, 1));
}

static void add_simd(const int8_t *a, const int8_t *b, int32_t rows, int32_t C, int32_t a_zp, int32_t b_zp,
                     const int32_t *params, int32_t n_params, int32_t out_zp, int8_t *y) {
    const __m256i za = _mm256_set1_epi32(a_zp), zb = _mm256_set1_epi32(b_zp), zo = _mm256_set1_epi32(out_zp);
    int32_t c0, r;
    for (c0 = 0; c0 < C; c0 += 8) {
        const int32_t n = C - c0 < 8 ? C - c0 : 8;
        add_rs8 ra, rb, ro;
        add_rs8_load(&ra, params, n_params, 0, c0, n, a_zp);
        add_rs8_load(&rb, params, n_params, 1, c0, n, b_zp);
        add_rs8_load(&ro, params, n_params, 2, c0, n, 0);
        for (r = 0; r < rows; r++) {
            const ptrdiff_t at = (ptrdiff_t)r * C + c0;
            int8_t ta[8] = {0}, tb[8] = {0}, ty[8];
            __m128i o;
            __m256i sa, sb;
            if (n < 8) { /* the tail */
                memcpy(ta, a + at, (size_t)n);
                memcpy(tb, b + at, (size_t)n);
            }
            sa = add_input8(&ra, _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(const void *)(n < 8 ? ta : a + at))), za);
            sb = add_input8(&rb, _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(const void *)(n < 8 ? tb : b + at))), zb);
            o = add_narrow8(_mm256_add_epi32(add_output8(&ro, _mm256_add_epi32(sa, sb)), zo));
            if (n < 8) {
                _mm_storel_epi64((__m128i *)(void *)ty, o);
                memcpy(y + at, ty, (size_t)n);
            } else {
                _mm_storel_epi64((__m128i *)(void *)(y + at), o);
            }
        }
    }
}
#endif

#if defined(TQ_SIMD_MVE)
/* Helium: the same three rescalings in int32 lanes, in add_simd_ok's range (0 <= M < 2^31, -31 <= shift <= 0, every
 * x and result an int32 as above). SRDHM(x, M) = floor((xM + 2^30) / 2^31) (above) = VQRDMULH(x, M), which
 * saturates only for x = M = INT32_MIN; RDBPOT(h, r) = VRSHL(h - s, -r) with s = [r >= 1][h < 0] (VRSHL rounds half
 * up; one less for a negative h makes it half away from zero: tq_mve_mbqm, with the shift per lane). s is the sign
 * bit of h & shift (shift < 0 iff r >= 1). */
static inline int32x4_t add_mve_rescale(int32x4_t x, int32x4_t m, int32x4_t sh) {
    const int32x4_t h = vqrdmulhq_s32(x, m);
    return vrshlq_s32(vaddq_s32(h, vshrq_n_s32(vandq_s32(h, sh), 31)), sh);
}

/* The outputs (before out_zp) of four elements of a, b (the lanes of p), the parameters per lane */
static inline __attribute__((always_inline)) int32x4_t add_mve4(const int8_t *a, const int8_t *b, mve_pred16_t p,
                                                                int32_t a_zp, int32_t b_zp, int32x4_t am,
                                                                int32x4_t ash, int32x4_t bm, int32x4_t bsh,
                                                                int32x4_t om, int32x4_t osh) {
    const int32x4_t xa = vshlq_n_s32(vsubq_n_s32(vldrbq_z_s32(a, p), a_zp), TQ_ADD_LEFT_SHIFT);
    const int32x4_t xb = vshlq_n_s32(vsubq_n_s32(vldrbq_z_s32(b, p), b_zp), TQ_ADD_LEFT_SHIFT);
    return add_mve_rescale(vaddq_s32(add_mve_rescale(xa, am, ash), add_mve_rescale(xb, bm, bsh)), om, osh);
}

/* dst[j] = sat8(v_j + zp) for the lanes of p: two saturating narrowings (int32 -> int16 -> int8, the same as one)
 * leave each lane's byte at the bottom of its word, where VSTRB.32 takes it (the other bytes are not stored) */
static inline void add_mve_store8(int8_t *dst, int32x4_t v, int32_t zp, mve_pred16_t p) {
    const int16x8_t h = vqmovnbq_s32(vuninitializedq_s16(), vaddq_n_s32(v, zp));
    vstrbq_p_s32(dst, vreinterpretq_s32_s8(vqmovnbq_s16(vuninitializedq_s8(), h)), p);
}

static void add_mve(const int8_t *a, const int8_t *b, int32_t rows, int32_t C, int32_t a_zp, int32_t b_zp,
                    const int32_t *params, int32_t n_params, int32_t out_zp, int8_t *y) {
    int32_t r, c;
    if (n_params == 1) { /* one set of parameters: the rows as one run of rows * C elements */
        const int32x4_t am = vdupq_n_s32(params[0]), ash = vdupq_n_s32(params[1]), bm = vdupq_n_s32(params[2]),
                        bsh = vdupq_n_s32(params[3]), om = vdupq_n_s32(params[4]), osh = vdupq_n_s32(params[5]);
        const int32_t n = rows * C;
        for (c = 0; c < n; c += 4) {
            const mve_pred16_t p = vctp32q((uint32_t)(n - c));
            add_mve_store8(y + c, add_mve4(a + c, b + c, p, a_zp, b_zp, am, ash, bm, bsh, om, osh), out_zp, p);
        }
        return;
    }
    for (r = 0; r < rows; r++) {
        const ptrdiff_t at = (ptrdiff_t)r * C;
        for (c = 0; c < C; c += 4) {
            const mve_pred16_t p = vctp32q((uint32_t)(C - c));
            const int32_t *pc = params + c; /* lanes past C: M = 0, shift 0 (discarded) */
            const ptrdiff_t np = n_params;
            const int32x4_t v = add_mve4(a + at + c, b + at + c, p, a_zp, b_zp, vldrwq_z_s32(pc, p),
                                         vldrwq_z_s32(pc + np, p), vldrwq_z_s32(pc + 2 * np, p),
                                         vldrwq_z_s32(pc + 3 * np, p), vldrwq_z_s32(pc + 4 * np, p),
                                         vldrwq_z_s32(pc + 5 * np, p));
            add_mve_store8(y + at + c, v, out_zp, p);
        }
    }
}
#elif defined(TQ_SIMD_DSP)
/* Cortex-M4 and the like (DSP, no MVE): one channel at a time in int32, in add_simd_ok's range. With x2 = 2x (an int32:
 * |2x| < 2^30 for every rescaling, above), SRDHM(x, M) = floor((x2 M + 2^31) / 2^32) (above): the high word of one
 * 32x32 product (SMULL) plus 2^31; RDBPOT(h, r) = (h - s + 2^(r-1)) >> r for r >= 1 (h for r = 0), s = [r >= 1][h < 0]
 * the sign bit of h & shift; |h| < 2^30 keeps the sum an int32. */
static inline int32_t add_dsp_rescale(int32_t x2, int32_t m, int32_t sh) {
    const int32_t h = (int32_t)(((int64_t)x2 * m + ((int64_t)1 << 31)) >> 32), r = -sh;
    return (h + ((h & sh) >> 31) + (int32_t)((1u << r) >> 1)) >> r;
}

static void add_dsp(const int8_t *a, const int8_t *b, int32_t rows, int32_t C, int32_t a_zp, int32_t b_zp,
                    const int32_t *params, int32_t n_params, int32_t out_zp, int8_t *y) {
    const int32_t n = n_params == 1 ? rows * C : C, reps = n_params == 1 ? 1 : rows, step = n_params == 1 ? 0 : 1;
    int32_t r, c;
    for (r = 0; r < reps; r++) {
        const int32_t *pc = params;
        const ptrdiff_t at = (ptrdiff_t)r * C;
        for (c = 0; c < n; c++, pc += step) {
            const int32_t sa = add_dsp_rescale((int32_t)((uint32_t)(a[at + c] - a_zp) << (TQ_ADD_LEFT_SHIFT + 1)),
                                               pc[0], pc[n_params]);
            const int32_t sb = add_dsp_rescale((int32_t)((uint32_t)(b[at + c] - b_zp) << (TQ_ADD_LEFT_SHIFT + 1)),
                                               pc[2 * n_params], pc[3 * n_params]);
            y[at + c] = tq_sat8(add_dsp_rescale(2 * (sa + sb), pc[4 * n_params], pc[5 * n_params]) + out_zp);
        }
    }
}
#endif

void tq_add(const int8_t *a, const int8_t *b, int32_t rows, int32_t C, int32_t a_zp, int32_t b_zp,
            const int32_t *params, int32_t n_params, int32_t out_zp, int8_t *y) {
    const int32_t *am = params, *ash = params + n_params, *bm = params + 2 * (ptrdiff_t)n_params,
                  *bsh = params + 3 * (ptrdiff_t)n_params, *om = params + 4 * (ptrdiff_t)n_params,
                  *osh = params + 5 * (ptrdiff_t)n_params;
    int32_t r, c;
#if defined(TQ_SIMD_AVX2)
    if (add_simd_ok(params, n_params, a_zp, b_zp, out_zp)) {
        add_simd(a, b, rows, C, a_zp, b_zp, params, n_params, out_zp, y);
        return;
    }
#elif defined(TQ_SIMD_MVE)
    if (add_simd_ok(params, n_params, a_zp, b_zp, out_zp)) {
        add_mve(a, b, rows, C, a_zp, b_zp, params, n_params, out_zp, y);
        return;
    }
#elif defined(TQ_SIMD_DSP)
    if (add_simd_ok(params, n_params, a_zp, b_zp, out_zp)) {
        add_dsp(a, b, rows, C, a_zp, b_zp, params, n_params, out_zp, y);
        return;
    }
#endif
    for (r = 0; r < rows; r++) {
        const int8_t *ar = a + (ptrdiff_t)r * C, *br = b + (ptrdiff_t)r * C;
        int8_t *yr = y + (ptrdiff_t)r * C;
        for (c = 0; c < C; c++) {
            const int32_t p = n_params == 1 ? 0 : c;
            int64_t sa = tq_rdbpot64(tq_srdhm64(tq_shl64((int64_t)ar[c] - a_zp, TQ_ADD_LEFT_SHIFT), am[p]), -ash[p]);
            int64_t sb = tq_rdbpot64(tq_srdhm64(tq_shl64((int64_t)br[c] - b_zp, TQ_ADD_LEFT_SHIFT), bm[p]), -bsh[p]);
            yr[c] = tq_sat8(tq_mbqm(sa + sb, om[p], osh[p]) + out_zp);
        }
    }
}

/* ---- the ops: ADD and TSPTQ_ADD_2S (op_table.h) ------------------------------------------------------------------ */

/* ADD: opt[0..5] = a_mult, a_shift, b_mult, b_shift, out_mult, out_shift (the kernel's params, n_params = 1) */
static const char *const add_slots[] = {"a_mult", "a_shift", "b_mult", "b_shift", "out_mult", "out_shift"};

static int add_load_options(tq_op_ctx *ctx) {
    if (!tq_expect_options(ctx)) return 0;
    if (ctx->has_options && ctx->option(ctx, 0, 1, 0, "AddOptions")) {
        if (ctx->read_failed(ctx)) return 0;
        TQ_REFUSE(ctx, TSPTQ_ERR_UNSUPPORTED_OP, "op %u (ADD): fused activations are not supported", ctx->k);
    }
    return !ctx->read_failed(ctx);
}

static int add_prepare(tq_op_ctx *ctx) {
    tsptq_tensor *const *in = ctx->in, *out = ctx->out;
    const uint32_t k = ctx->k;
    int64_t *o = ctx->op->opt;
    int i;
    tsptq_tensor *a = in[0], *b = in[1];
    double sa, sb, so, twice;
    double reals[3];
    if (!a->has_quant || !b->has_quant || a->type != TSPTQ_INT8 || b->type != TSPTQ_INT8 || out->type != TSPTQ_INT8)
        TQ_BAD(ctx, "op %u (ADD): operands must be quantized int8 tensors", k);
    if (!tq_same_shape(a, out) || !tq_same_shape(b, out) || out->rank < 1)
        TQ_BAD(ctx, "op %u (ADD): operand shapes differ (broadcasting is not supported)", k);
    sa = tq_scale(a, 0);
    sb = tq_scale(b, 0);
    so = tq_scale(out, 0);
    twice = 2.0 * (sa > sb ? sa : sb);
    reals[0] = sa / twice;
    reals[1] = sb / twice;
    reals[2] = twice / ((double)(1 << 20) * so);
    for (i = 0; i < 3; i++) {
        int32_t mu, sh;
        tq_quantize_multiplier(reals[i], &mu, &sh);
        if (mu < 0 || sh < -31 || sh > (i < 2 ? 0 : 31))
            TQ_BADQ(ctx, "op %u (ADD): rescaling multiplier out of range", k);
        o[2 * i] = mu;
        o[2 * i + 1] = sh;
    }
    return 1;
}

/* Rows [r0, r1): the thread pool's part (op_table.h) and, over every row, the op (the parameter table is per
 * channel, the same for every row). */
static void add_eval_part(tsptq_model *m, const tsptq_op *op, int64_t r0, int64_t r1, int32_t *scratch) {
    const tsptq_tensor *y = &m->tensors[op->output];
    const int64_t C = tq_last_dim(y);
    int32_t params[6], i;
    (void)scratch;
    for (i = 0; i < 6; i++) params[i] = TQ_O32(op->opt[i]);
    tq_add((const int8_t *)tq_ptr(m, op->inputs[0]) + r0 * C, (const int8_t *)tq_ptr(m, op->inputs[1]) + r0 * C,
           (int32_t)(r1 - r0), (int32_t)C, m->tensors[op->inputs[0]].zero_point,
           m->tensors[op->inputs[1]].zero_point, params, 1, y->zero_point, (int8_t *)tq_act(m, op->output) + r0 * C);
}
static void add_eval(tsptq_model *m, const tsptq_op *op) {
    add_eval_part(m, op, 0, tq_rows(&m->tensors[op->output]), NULL);
}
static int64_t add_units(const tsptq_model *m, const tsptq_op *op, int64_t *grain) {
    return tq_row_units(&m->tensors[op->output], grain);
}

const tq_op_def TQ_OP_DEF(tq_add, _op) = {
    .name = "ADD", .builtin_code = 0, .options_type = 11 /* AddOptions */, .min_inputs = 2, .max_inputs = 2,
    .n_outputs = 1, .n_option_keys = TQ_COUNT_OF(add_slots), .option_keys = add_slots,
    .load_options = add_load_options, .prepare = add_prepare, .eval = add_eval, .units = add_units,
    .eval_part = add_eval_part};

/* TSPTQ_ADD_2S: a, b, and the (6, C or 1) int32 parameter table of the kernel */
enum { TQ_ADD2S_A_ZP = 0, TQ_ADD2S_B_ZP, TQ_ADD2S_OUT_ZP };
static const char *const add2s_keys[] = {"a_zp", "b_zp", "out_zp"};

static int add2s_prepare(tq_op_ctx *ctx) {
    tsptq_tensor *const *in = ctx->in, *out = ctx->out;
    const uint32_t k = ctx->k;
    int64_t *o = ctx->op->opt;
    tsptq_tensor *a = in[0], *b = in[1], *p = in[2];
    int64_t C = out->rank ? out->shape[out->rank - 1] : 0, n, c;
    if (a->type != TSPTQ_INT8 || b->type != TSPTQ_INT8 || out->type != TSPTQ_INT8 || !tq_same_shape(a, out) ||
        !tq_same_shape(b, out) || C < 1)
        TQ_BAD(ctx, "op %u (TSPTQ_ADD_2S): operands must be int8 of the same shape", k);
    if (p->type != TSPTQ_INT32 || p->rank != 2 || p->shape[0] != 6 || (p->shape[1] != C && p->shape[1] != 1))
        TQ_BAD(ctx, "op %u (TSPTQ_ADD_2S): parameters must be int32 (6, %L)", k, C);
    n = p->shape[1];
    for (c = 0; c < n; c++) {
        const int32_t *pp = (const int32_t *)p->data;
        if (pp[c] < 0 || pp[2 * n + c] < 0 || pp[4 * n + c] < 0 || !tq_in_range(pp[n + c], -31, 0) ||
            !tq_in_range(pp[3 * n + c], -31, 0) || !tq_in_range(pp[5 * n + c], -31, 31))
            TQ_BADQ(ctx, "op %u (TSPTQ_ADD_2S): rescaling parameters of channel %L out of range", k, c);
    }
    if (!tq_in_range(o[TQ_ADD2S_A_ZP], -128, 127) || !tq_in_range(o[TQ_ADD2S_B_ZP], -128, 127) ||
        !tq_in_range(o[TQ_ADD2S_OUT_ZP], -128, 127))
        TQ_BADQ(ctx, "op %u (TSPTQ_ADD_2S): zero points out of range", k);
    return 1;
}

static void add2s_eval_part(tsptq_model *m, const tsptq_op *op, int64_t r0, int64_t r1, int32_t *scratch) {
    const tsptq_tensor *y = &m->tensors[op->output], *p = &m->tensors[op->inputs[2]];
    const int64_t *o = op->opt, C = tq_last_dim(y);
    (void)scratch;
    tq_add((const int8_t *)tq_ptr(m, op->inputs[0]) + r0 * C, (const int8_t *)tq_ptr(m, op->inputs[1]) + r0 * C,
           (int32_t)(r1 - r0), (int32_t)C, TQ_O32(o[TQ_ADD2S_A_ZP]), TQ_O32(o[TQ_ADD2S_B_ZP]),
           (const int32_t *)(const void *)p->data, p->shape[1], TQ_O32(o[TQ_ADD2S_OUT_ZP]),
           (int8_t *)tq_act(m, op->output) + r0 * C);
}

static void add2s_eval(tsptq_model *m, const tsptq_op *op) {
    add2s_eval_part(m, op, 0, tq_rows(&m->tensors[op->output]), NULL);
}

const tq_op_def TQ_OP_DEF(tq_add, _2s_op) = {
    .name = "TSPTQ_ADD_2S", .builtin_code = TQ_CUSTOM, .min_inputs = 3, .max_inputs = 3, .n_outputs = 1,
    .const_from = 2, .n_option_keys = TQ_COUNT_OF(add2s_keys), .option_keys = add2s_keys, .prepare = add2s_prepare,
    .eval = add2s_eval, .units = add_units, .eval_part = add2s_eval_part};
