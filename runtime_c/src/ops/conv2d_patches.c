/* CONV_2D with kernel == stride == p, VALID (the patch embedding): intkernels.conv2d_patches. Each of the p rows of a
 * patch is a contiguous run of p*C bytes in x and in w, so the patch dot product is p dot products, no im2col.
 * Requantization: MBQM (TFLite's two roundings), per output channel. With AVX-512 VNNI, the patches are gathered
 * into rows (8 at a time) for the blocked products of vnni.h. */
#include <string.h>

#include "../fixedpoint.h"
#include "../kernels.h"
#include "dot.h"

static inline int8_t conv_out(int32_t acc, int32_t o, const int32_t *bias, const int32_t *mult, const int32_t *shift,
                              int32_t out_zp) {
    return tq_sat8(tq_mbqm((int64_t)acc + (bias ? bias[o] : 0), mult[o], shift[o]) + out_zp);
}

#if defined(TQ_SIMD_VNNI)
/* The patches, gathered into contiguous rows of p * p * C bytes, are A; the filters are B. */
typedef struct {
    tqv_gemm g;
    const int8_t *x;
    int32_t H, W, C, p, in_zp;
    tqv_requant q;
    int8_t *y;
} conv_vnni_op;

static void conv_vnni_rows(const tqv_gemm *g, tqv_tile *t) {
    const conv_vnni_op *f = (const conv_vnni_op *)(const void *)g;
    const int32_t oh = f->H / f->p, ow = f->W / f->p, seg = f->p * f->C, kpad = (g->K + 3) & ~3;
    int32_t r, ky;
    for (r = 0; r < TQV_MR; r++) {
        const int32_t patch = t->r0 + r, b = patch / (oh * ow), oy = patch / ow % oh, ox = patch % ow;
        int8_t *ar = t->buf[r];
        if (r >= t->nr) {
            t->a[r] = t->a[0];
            t->rowsum[r] = 0;
            continue;
        }
        for (ky = 0; ky < f->p; ky++)
            memcpy(ar + ky * seg, f->x + (((ptrdiff_t)b * f->H + oy * f->p + ky) * f->W + (ptrdiff_t)ox * f->p) * f->C,
                   (size_t)seg);
        memset(ar + g->K, 0, (size_t)(kpad - g->K));
        t->a[r] = ar;
        t->rowsum[r] = tqv_rowsum(ar, g->K);
    }
}

static void conv_vnni_emit(const tqv_gemm *g, tqv_tile *t, int32_t n0, int32_t nc, const int32_t colsum[TQV_NR]) {
    const conv_vnni_op *f = (const conv_vnni_op *)(const void *)g;
    int32_t colterm[TQV_NR];
    tqv_colterm(colsum, (int32_t)(0u - (uint32_t)f->in_zp), 0, colterm);
    tqv_emit(t->raw, t->rowsum, t->nr, 128, colterm, n0, nc, &f->q, f->y + (ptrdiff_t)t->r0 * g->N + n0, g->N);
}

static int conv_vnni(const int8_t *x, int32_t B, int32_t H, int32_t W, int32_t C, int32_t in_zp, const int8_t *w,
                     int32_t O, int32_t p, const int32_t *bias, const int32_t *mult, const int32_t *shift,
                     int32_t out_zp, int8_t *y) {
    conv_vnni_op f;
    if (!tqv_fits(p * p * C, 0) || !tqv_shifts_ok(shift, O)) return 0;
    memset(&f, 0, sizeof f);
    f.g.b = w;
    f.g.ldb = p * p * C;
    f.g.N = O;
    f.g.K = p * p * C;
    f.g.M = B * (H / p) * (W / p);
    f.g.planes = 1;
    f.g.rows = conv_vnni_rows;
    f.g.emit = conv_vnni_emit;
    f.x = x;
    f.H = H;
    f.W = W;
    f.C = C;
    f.p = p;
    f.in_zp = in_zp;
    f.q.bias = bias;
    f.q.mult = mult;
    f.q.shift = shift;
    f.q.how = TQV_MBQM;
    f.q.zp = out_zp;
    f.y = y;
    tqv_gemm_run(&f.g);
    return 1;
}
#endif

void tq_conv2d_patches(const int8_t *x, int32_t B, int32_t H, int32_t W, int32_t C, int32_t in_zp,
                       const int8_t *w, int32_t O, int32_t p, const int32_t *bias,
                       const int32_t *mult, const int32_t *shift, int32_t out_zp, int8_t *y) {
    const int32_t oh = H / p, ow = W / p, seg = p * C, ksize = p * p * C;
    const ptrdiff_t row = (ptrdiff_t)W * C;
    int32_t b, oy, ox, o, ky;
#if defined(TQ_SIMD_VNNI)
    if (conv_vnni(x, B, H, W, C, in_zp, w, O, p, bias, mult, shift, out_zp, y)) return;
#endif
    for (b = 0; b < B; b++)
        for (oy = 0; oy < oh; oy++) {
            const int8_t *xrow = x + ((ptrdiff_t)b * H + (ptrdiff_t)oy * p) * row;
            int8_t *yrow = y + ((ptrdiff_t)b * oh + oy) * (ptrdiff_t)ow * O;
#if TQ_SIMD
            if (tq_zp_ok(in_zp)) {
                /* two neighbouring patches against four output channels at a time */
                for (ox = 0; ox < ow; ox += 2) {
                    const int32_t two = ox + 1 < ow;
                    const int8_t *x0 = xrow + (ptrdiff_t)ox * seg, *x1 = two ? x0 + seg : x0;
                    for (o = 0; o + 4 <= O; o += 4) {
                        int32_t acc[2][4] = {{0, 0, 0, 0}, {0, 0, 0, 0}}, part[2][4], k;
                        for (ky = 0; ky < p; ky++) {
                            tq_dot_2x4(x0 + ky * row, x1 + ky * row, in_zp,
                                       w + (ptrdiff_t)o * ksize + (ptrdiff_t)ky * seg, ksize, 0, seg, part);
                            for (k = 0; k < 4; k++) {
                                acc[0][k] += part[0][k];
                                acc[1][k] += part[1][k];
                            }
                        }
                        for (k = 0; k < 4; k++) {
                            yrow[(ptrdiff_t)ox * O + o + k] = conv_out(acc[0][k], o + k, bias, mult, shift, out_zp);
                            if (two)
                                yrow[(ptrdiff_t)(ox + 1) * O + o + k] =
                                    conv_out(acc[1][k], o + k, bias, mult, shift, out_zp);
                        }
                    }
                    for (; o < O; o++) {
                        int32_t a0 = 0, a1 = 0;
                        for (ky = 0; ky < p; ky++) {
                            const int8_t *wk = w + (ptrdiff_t)o * ksize + (ptrdiff_t)ky * seg;
                            a0 += tq_dot_s8(x0 + ky * row, in_zp, wk, 0, seg);
                            if (two) a1 += tq_dot_s8(x1 + ky * row, in_zp, wk, 0, seg);
                        }
                        yrow[(ptrdiff_t)ox * O + o] = conv_out(a0, o, bias, mult, shift, out_zp);
                        if (two) yrow[(ptrdiff_t)(ox + 1) * O + o] = conv_out(a1, o, bias, mult, shift, out_zp);
                    }
                }
                continue;
            }
#endif
            for (ox = 0; ox < ow; ox++) {
                const int8_t *x0 = xrow + (ptrdiff_t)ox * seg;
                for (o = 0; o < O; o++) {
                    int32_t acc = 0;
                    for (ky = 0; ky < p; ky++)
                        acc += tq_dot_s8_ref(x0 + ky * row, in_zp, w + (ptrdiff_t)o * ksize + (ptrdiff_t)ky * seg, 0,
                                             seg);
                    yrow[(ptrdiff_t)ox * O + o] = conv_out(acc, o, bias, mult, shift, out_zp);
                }
            }
        }
}
