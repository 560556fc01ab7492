/* BATCH_MATMUL (TFLite semantics, adj_x = false): intkernels.batch_matmul. acc = sum_k (a - a_zp)(b - b_zp), MBQM.
 * adj_y (q k^T): both operands run along K, a dot product per output. Otherwise (probabilities x V) the output row
 * is accumulated as a sum of scaled rows of b, in chunks of TQ_BMM_CHUNK int32 accumulators on the stack. */
#include "../fixedpoint.h"
#include "../kernels.h"
#include "dot.h"

#define TQ_BMM_CHUNK 256

static inline int8_t bmm_out(int32_t acc, int32_t mult, int32_t shift, int32_t out_zp) {
    return tq_sat8(tq_mbqm(acc, mult, shift) + out_zp);
}

void tq_batch_matmul(const int8_t *a, const int8_t *b, int32_t batch, int32_t N, int32_t K, int32_t M, int adj_y,
                     int32_t a_zp, int32_t b_zp, int32_t mult, int32_t shift, int32_t out_zp, int8_t *y) {
    int32_t t, n, m, k;
    const int simd = TQ_SIMD && tq_zp_ok(a_zp) && tq_zp_ok(b_zp);
    for (t = 0; t < batch; t++) {
        const int8_t *at = a + (ptrdiff_t)t * N * K, *bt = b + (ptrdiff_t)t * K * M;
        int8_t *yt = y + (ptrdiff_t)t * N * M;
        if (adj_y) {
            m = 0;
            if (simd) {
                for (; m + 4 <= M; m += 4)
                    for (n = 0; n < N; n += 2) {
                        const int8_t *x0 = at + (ptrdiff_t)n * K, *x1 = n + 1 < N ? x0 + K : x0;
                        int32_t acc[2][4], j, r;
                        tq_dot_2x4(x0, x1, a_zp, bt + (ptrdiff_t)m * K, K, b_zp, K, acc);
                        for (r = 0; r < 2 && n + r < N; r++)
                            for (j = 0; j < 4; j++)
                                yt[(ptrdiff_t)(n + r) * M + m + j] = bmm_out(acc[r][j], mult, shift, out_zp);
                    }
            }
            for (; m < M; m++)
                for (n = 0; n < N; n++)
                    yt[(ptrdiff_t)n * M + m] = bmm_out(
                        tq_dot_s8_ref(at + (ptrdiff_t)n * K, a_zp, bt + (ptrdiff_t)m * K, b_zp, K), mult, shift, out_zp);
        } else {
            int32_t acc[TQ_BMM_CHUNK];
            int32_t m0, mc;
            for (n = 0; n < N; n++) {
                const int8_t *an = at + (ptrdiff_t)n * K;
                for (m0 = 0; m0 < M; m0 += TQ_BMM_CHUNK) {
                    mc = M - m0 < TQ_BMM_CHUNK ? M - m0 : TQ_BMM_CHUNK;
                    for (m = 0; m < mc; m++) acc[m] = 0;
                    k = 0;
                    if (simd)
                        for (; k + 2 <= K; k += 2)
                            tq_axpy2_s8(acc, (int32_t)an[k] - a_zp, (int32_t)an[k + 1] - a_zp,
                                        bt + (ptrdiff_t)k * M + m0, bt + (ptrdiff_t)(k + 1) * M + m0, b_zp, mc);
                    for (; k < K; k++) tq_axpy_s8_ref(acc, (int32_t)an[k] - a_zp, bt + (ptrdiff_t)k * M + m0, b_zp, mc);
                    for (m = 0; m < mc; m++) yt[(ptrdiff_t)n * M + m0 + m] = bmm_out(acc[m], mult, shift, out_zp);
                }
            }
        }
    }
}
