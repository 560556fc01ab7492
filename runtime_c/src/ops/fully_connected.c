/* FULLY_CONNECTED (TFLite semantics, keep_num_dims): intkernels.fully_connected. With AVX-512 VNNI, the blocked
 * products of vnni.h; otherwise dot products over blocks of 4 output channels and 2 rows. */
#include <string.h>

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

#if defined(TQ_SIMD_VNNI)
/* y = requant(x w^T - in_zp * colsum(w) + bias): the rows of x are A, the rows of w are B. */
typedef struct {
    tqv_gemm g;
    const int8_t *x;
    int32_t in_zp;
    tqv_requant q;
    int8_t *y;
} fc_vnni_op;

static void fc_vnni_rows(const tqv_gemm *g, tqv_tile *t) {
    const fc_vnni_op *f = (const fc_vnni_op *)(const void *)g;
    tqv_matrix_rows(f->x, g->K, g->M, g->K, t);
}

static void fc_vnni_emit(const tqv_gemm *g, tqv_tile *t, int32_t n0, int32_t nc, const int32_t colsum[TQV_NR]) {
    const fc_vnni_op *f = (const fc_vnni_op *)(const void *)g;
    int32_t colterm[TQV_NR];
    tqv_colterm(colsum, (int32_t)(0u - (uint32_t)f->in_zp), 0, colterm);
    tqv_emit(t->raw, t->rowsum, t->nr, 128, colterm, n0, nc, &f->q, f->y + (ptrdiff_t)t->r0 * g->N + n0, g->N);
}

static int fc_vnni(const int8_t *x, int32_t rows, int32_t I, int32_t in_zp, const int8_t *w, int32_t O,
                   const int32_t *bias, const int32_t *mult, const int32_t *shift, int32_t n_params, int per_channel,
                   int32_t out_zp, int8_t *y) {
    fc_vnni_op f;
    if (!tqv_fits(I, 0) || !tqv_shifts_ok(shift, n_params)) return 0;
    memset(&f, 0, sizeof f);
    f.g.b = w;
    f.g.ldb = I;
    f.g.N = O;
    f.g.K = I;
    f.g.M = rows;
    f.g.planes = 1;
    f.g.rows = fc_vnni_rows;
    f.g.emit = fc_vnni_emit;
    f.x = x;
    f.in_zp = in_zp;
    f.q.bias = bias;
    f.q.mult = n_params == 1 ? NULL : mult;
    f.q.shift = n_params == 1 ? NULL : shift;
    f.q.mult0 = mult[0];
    f.q.shift0 = shift[0];
    f.q.how = per_channel ? TQV_MBQM1 : TQV_MBQM;
    f.q.zp = out_zp;
    f.y = y;
    tqv_gemm_run(&f.g);
    return 1;
}
#endif

void tq_fully_connected(const int8_t *x, int32_t rows, int32_t I, int32_t in_zp, const int8_t *w, int32_t O,
                        const int32_t *bias, const int32_t *mult, const int32_t *shift, int32_t n_params,
                        int per_channel, int32_t out_zp, int8_t *y) {
    int32_t r, o = 0;
#if defined(TQ_SIMD_VNNI)
    if (fc_vnni(x, rows, I, in_zp, w, O, bias, mult, shift, n_params, per_channel, out_zp, y)) return;
#endif
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
