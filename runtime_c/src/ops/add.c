/* ADD (builtin, n_params = 1) and TSPTQ_ADD_2S (n_params = C): TFLite's int8 ADD with left_shift 20, per channel
 * parameters (rows a_mult, a_shift, b_mult, b_shift, out_mult, out_shift of a (6, n_params) table):
 * intkernels.add. With AVX-512 (the avx512vnni build), 16 channels at a time in int64 lanes. */
#include "../fixedpoint.h"
#include "../kernels.h"
#include "dot.h"

#define TQ_ADD_LEFT_SHIFT 20

#if defined(TQ_SIMD_VNNI)
/* AVX-512: 16 channels at a time in two halves of 8 int64 lanes, the channels' parameters loaded once for all rows. */

/* One input's rescaled value: RDBPOT(SRDHM((code - zp) << 20, M), -shift), 8 lanes. */
static inline __m512i add_input8(__m512i code, __m512i zp, __m512i mult, __m512i right) {
    return tqv_rdbpot(tqv_srdhm(_mm512_slli_epi64(_mm512_sub_epi64(code, zp), TQ_ADD_LEFT_SHIFT), mult), right);
}

static int add_avx512(const int8_t *a, const int8_t *b, int32_t rows, int32_t C, int32_t a_zp, int32_t b_zp,
                      const int32_t *params, int32_t n_params, int32_t out_zp, int8_t *y) {
    const __m512i azp = _mm512_set1_epi64(a_zp), bzp = _mm512_set1_epi64(b_zp), zero = _mm512_setzero_si512();
    int32_t c0, r, h, i;
    for (i = 0; i < n_params; i++)
        if (params[n_params + i] < -62 || params[n_params + i] > 0 || params[3 * n_params + i] < -62 ||
            params[3 * n_params + i] > 0)
            return 0;
    if (!tqv_shifts_ok(params + 5 * (ptrdiff_t)n_params, n_params)) return 0;
    for (c0 = 0; c0 < C; c0 += 16) {
        const __mmask16 m = tqv_lanes(C - c0);
        __m512i prm[6][2]; /* a_mult, a_right, b_mult, b_right, out_mult, out_shift; low and high 8 channels */
        for (i = 0; i < 6; i++) {
            const __m512i v = tqv_param(n_params == 1 ? NULL : params + i * (ptrdiff_t)n_params + c0, m,
                                        params[i * (ptrdiff_t)n_params]);
            prm[i][0] = tqv_lo64(v);
            prm[i][1] = tqv_hi64(v);
        }
        for (h = 0; h < 2; h++) { /* the inputs' shifts are right shifts */
            prm[1][h] = _mm512_sub_epi64(zero, prm[1][h]);
            prm[3][h] = _mm512_sub_epi64(zero, prm[3][h]);
        }
        for (r = 0; r < rows; r++) {
            const ptrdiff_t at = (ptrdiff_t)r * C + c0;
            const __m512i av = _mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(m, a + at)),
                          bv = _mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(m, b + at));
            __m128i out[2];
            for (h = 0; h < 2; h++) {
                const __m512i sa = add_input8(h ? tqv_hi64(av) : tqv_lo64(av), azp, prm[0][h], prm[1][h]);
                const __m512i sb = add_input8(h ? tqv_hi64(bv) : tqv_lo64(bv), bzp, prm[2][h], prm[3][h]);
                out[h] = tqv_out8(_mm512_add_epi64(sa, sb), prm[4][h], prm[5][h], TQV_MBQM, out_zp);
            }
            _mm_mask_storeu_epi8(y + at, m, _mm_unpacklo_epi64(out[0], out[1]));
        }
    }
    return 1;
}
#endif

void tq_add(const int8_t *a, const int8_t *b, int32_t rows, int32_t C, int32_t a_zp, int32_t b_zp,
            const int32_t *params, int32_t n_params, int32_t out_zp, int8_t *y) {
    const int32_t *am = params, *ash = params + n_params, *bm = params + 2 * (ptrdiff_t)n_params,
                  *bsh = params + 3 * (ptrdiff_t)n_params, *om = params + 4 * (ptrdiff_t)n_params,
                  *osh = params + 5 * (ptrdiff_t)n_params;
    int32_t r, c;
#if defined(TQ_SIMD_VNNI)
    if (add_avx512(a, b, rows, C, a_zp, b_zp, params, n_params, out_zp, y)) return;
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
