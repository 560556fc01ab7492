/* FULLY_CONNECTED (TFLite semantics, keep_num_dims): intkernels.fully_connected. */
#include "../fixedpoint.h"
#include "../kernels.h"
#include "dot.h"

static inline int8_t fc_out(int32_t dot, int32_t o, const int32_t *bias, const int32_t *mult, const int32_t *shift,
                            int32_t n_params, int per_channel, int32_t out_zp) {
    int32_t p = n_params == 1 ? 0 : o;
    int64_t acc = (int64_t)dot + (bias ? bias[o] : 0);
    int64_t v = per_channel ? tq_mbqm1(acc, mult[p], shift[p]) : tq_mbqm(acc, mult[p], shift[p]);
    return tq_sat8(v + out_zp);
}

void tq_fully_connected(const int8_t *x, int32_t rows, int32_t I, int32_t in_zp, const int8_t *w, int32_t O,
                        const int32_t *bias, const int32_t *mult, const int32_t *shift, int32_t n_params,
                        int per_channel, int32_t out_zp, int8_t *y) {
    int32_t r, o = 0;
#if TQ_SIMD
    /* blocks of 4 output channels (their weights stay in L1) against pairs of rows */
    if (tq_zp_ok(in_zp)) {
        for (; o + 4 <= O; o += 4) {
            const int8_t *wo = w + (ptrdiff_t)o * I;
            for (r = 0; r < rows; r += 2) {
                const int8_t *x0 = x + (ptrdiff_t)r * I, *x1 = r + 1 < rows ? x0 + I : x0;
                int32_t acc[2][4], k, rr;
                tq_dot_2x4(x0, x1, in_zp, wo, I, 0, I, acc);
                for (rr = 0; rr < 2 && r + rr < rows; rr++)
                    for (k = 0; k < 4; k++)
                        y[(ptrdiff_t)(r + rr) * O + o + k] =
                            fc_out(acc[rr][k], o + k, bias, mult, shift, n_params, per_channel, out_zp);
            }
        }
    }
#endif
    for (; o < O; o++)
        for (r = 0; r < rows; r++)
            y[(ptrdiff_t)r * O + o] = fc_out(tq_dot_s8_ref(x + (ptrdiff_t)r * I, in_zp, w + (ptrdiff_t)o * I, 0, I),
                                             o, bias, mult, shift, n_params, per_channel, out_zp);
}
