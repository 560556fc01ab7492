/* CONV_2D with kernel == stride == p, VALID (the patch embedding): intkernels.conv2d_patches. Each of the p rows of a
 * patch is a contiguous run of p*C bytes in x and in w, so the patch dot product is p dot products, no im2col.
 * Requantization: MBQM (TFLite's two roundings), per output channel. */
#include "../fixedpoint.h"
#include "../kernels.h"
#include "dot.h"

static inline int8_t conv_out(int32_t acc, int32_t o, const int32_t *bias, const int32_t *mult, const int32_t *shift,
                              int32_t out_zp) {
    return tq_sat8(tq_mbqm((int64_t)acc + (bias ? bias[o] : 0), mult[o], shift[o]) + out_zp);
}

void tq_conv2d_patches(const int8_t *x, int32_t B, int32_t H, int32_t W, int32_t C, int32_t in_zp,
                       const int8_t *w, int32_t O, int32_t p, const int32_t *bias,
                       const int32_t *mult, const int32_t *shift, int32_t out_zp, int8_t *y) {
    const int32_t oh = H / p, ow = W / p, seg = p * C, ksize = p * p * C;
    const ptrdiff_t row = (ptrdiff_t)W * C;
    int32_t b, oy, ox, o, ky;
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
