/* TSPTQ_LAYERNORM_2S (docs/integer-semantics.md; intkernels.layernorm_2s). Three passes over each row (sum, sum of
 * squared deviations, output): no scratch. 64-bit throughout (x_c, d_c are small, V and the products are not). */
#include "../fixedpoint.h"
#include "../kernels.h"

#define TQ_NORM_FRAC_BITS 24
#define TQ_SIGMA_EXTRA_BITS 20

void tq_layernorm_2s(const int8_t *x, int32_t rows, int32_t D, int32_t in_zp, const int8_t *in_shift,
                     const int32_t *gamma_mul, const int64_t *beta_bias, int64_t eps, int32_t out_zp,
                     int32_t out_shift, int8_t *y) {
    int32_t r, c;
    for (r = 0; r < rows; r++) {
        const int8_t *xr = x + (ptrdiff_t)r * D;
        int8_t *yr = y + (ptrdiff_t)r * D;
        int64_t S = 0, V = 0, sigma;
        uint64_t ss = 0;
        int e;
        for (c = 0; c < D; c++) S += tq_shl64((int64_t)xr[c] - in_zp, in_shift[c]);
        for (c = 0; c < D; c++) {
            int64_t d = (int64_t)D * tq_shl64((int64_t)xr[c] - in_zp, in_shift[c]) - S;
            ss += (uint64_t)(d * d);
        }
        V = (int64_t)(ss / (uint64_t)D) + eps; /* sum >= 0: floor division */
        e = (62 - tq_bit_length64((uint64_t)V)) / 2;
        e = e < 0 ? 0 : (e > TQ_SIGMA_EXTRA_BITS ? TQ_SIGMA_EXTRA_BITS : e);
        sigma = tq_isqrt64((uint64_t)tq_shl64(V, 2 * e));
        if (sigma < 1) sigma = 1;
        for (c = 0; c < D; c++) {
            int64_t d = (int64_t)D * tq_shl64((int64_t)xr[c] - in_zp, in_shift[c]) - S;
            int64_t nrm = tq_div_round(tq_shl64(d, TQ_NORM_FRAC_BITS + e), sigma);
            yr[c] = tq_sat8(tq_rshift_round(nrm * gamma_mul[c] + beta_bias[c], out_shift) + out_zp);
        }
    }
}
