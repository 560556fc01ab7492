/* CONV_2D with kernel == stride == p, VALID (the patch embedding): tsptq.intmodel.kernels.conv2d_patches. Each of the p rows of a
 * patch is a contiguous run of p*C bytes in x and in w, so the patch dot product is p dot products, no im2col.
 * Requantization: MBQM (TFLite's two roundings), per output channel. With AVX-512 VNNI, the patches are gathered
 * into rows (8 at a time) for the blocked products of vnni.h. */
#include <string.h>

#include "../fixedpoint.h"
#include "../kernels.h"
#include "dot.h"
#include "op_util.h"

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
    const int32_t oh = f->H / f->p, ow = f->W / f->p, seg = f->p * f->C, kpad = tqv_kspan(g->K);
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
    tqv_emit(t->raw, t->rowsum, t->nr, 128, colterm, n0, nc, &f->q, f->y + (ptrdiff_t)t->r0 * g->N + n0, g->N, t->rqc);
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

#if defined(TQ_SIMD_DSP)
/* The Arm DSP path: two neighbouring patches, minus in_zp, are gathered into a stack buffer as the int16 pairs of
 * tq_mm2x2_s16s8 (p * p * C <= TQ_CONV_DSP_K); two output channels at a time get the four sums of the 2x2 kernel,
 * then the requantization (bias added in int64 by the reference: the 32-bit form only without overflow). */
#define TQ_CONV_DSP_K 768
#define TQ_CONV_DSP_CHUNK 64 /* output channels per pass: two rows of int32 sums on the stack */

static void conv_dsp_requant(const int32_t *acc, int32_t o0, int32_t oc, const int32_t *bias, const int32_t *mult,
                             const int32_t *shift, int32_t out_zp, int fast, int8_t *dst) {
    int32_t c, s;
    for (c = 0; c < oc; c++) {
        const int32_t o = o0 + c;
        if (fast && !__builtin_add_overflow(acc[c], bias ? bias[o] : 0, &s))
            dst[c] = (int8_t)__ssat(tq_mbqm_dsp(s, mult[o], shift[o]) + out_zp, 8);
        else
            dst[c] = conv_out(acc[c], o, bias, mult, shift, out_zp);
    }
}

static int conv_dsp(const int8_t *x, int32_t B, int32_t H, int32_t W, int32_t C, int32_t in_zp, const int8_t *w,
                    int32_t O, int32_t p, const int32_t *bias, const int32_t *mult, const int32_t *shift,
                    int32_t out_zp, int8_t *y) {
    const int32_t oh = H / p, ow = W / p, seg = p * C, ksize = p * p * C;
    const ptrdiff_t row = (ptrdiff_t)W * C;
    int32_t buf[TQ_CONV_DSP_K], acc[2][TQ_CONV_DSP_CHUNK], b, oy, ox, o, k, r;
    int16_t *xy = (int16_t *)(void *)buf;
    int fast = 1;
    if (!tq_zp_ok(in_zp) || ksize > TQ_CONV_DSP_K) return 0;
    for (o = 0; o < O; o++)
        if (shift[o] > 0 || shift[o] < -31 || mult[o] < 0) fast = 0;
    for (b = 0; b < B; b++)
        for (oy = 0; oy < oh; oy++) {
            const int8_t *xrow = x + ((ptrdiff_t)b * H + (ptrdiff_t)oy * p) * row;
            int8_t *yrow = y + ((ptrdiff_t)b * oh + oy) * (ptrdiff_t)ow * O;
            for (ox = 0; ox < ow; ox += 2) {
                const int32_t two = ox + 1 < ow;
                for (r = 0; r < 2; r++) {
                    const int8_t *patch = xrow + (ptrdiff_t)(r && two ? ox + 1 : ox) * seg;
                    for (k = 0; k < ksize; k++)
                        xy[tq_pair_pos(ksize, r, k)] = (int16_t)(patch[(k / seg) * row + k % seg] - in_zp);
                }
                for (o = 0; o < O; o += TQ_CONV_DSP_CHUNK) {
                    const int32_t oc = O - o < TQ_CONV_DSP_CHUNK ? O - o : TQ_CONV_DSP_CHUNK;
                    tq_mm2xn_s16s8(xy, w + (ptrdiff_t)o * ksize, ksize, ksize, oc, acc[0], acc[1]);
                    conv_dsp_requant(acc[0], o, oc, bias, mult, shift, out_zp, fast, yrow + (ptrdiff_t)ox * O + o);
                    if (two)
                        conv_dsp_requant(acc[1], o, oc, bias, mult, shift, out_zp, fast,
                                         yrow + (ptrdiff_t)(ox + 1) * O + o);
                }
            }
        }
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
#if defined(TQ_SIMD_DSP)
    if (conv_dsp(x, B, H, W, C, in_zp, w, O, p, bias, mult, shift, out_zp, y)) return;
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

/* ---- the op: CONV_2D (op_table.h) -------------------------------------------------------------------------------- */

enum { TQ_CONV_STRIDE = 0 };
static const char *const conv_slots[] = {"stride"};

/* Only the patch embedding: VALID padding, equal strides (the kernel size, checked by prepare), no activation or
 * dilation. */
static int conv_load_options(tq_op_ctx *ctx) {
    int64_t pad, sw, sh, act, dw, dh;
    if (!ctx->has_options || ctx->options_type != ctx->def->options_type)
        TQ_REFUSE(ctx, TSPTQ_ERR_UNSUPPORTED_OP, "op %u (CONV_2D): only VALID padding with equal strides (the patch "
                                                 "embedding)", ctx->k);
    pad = ctx->option(ctx, 0, 1, 0, "Conv2DOptions");
    sw = ctx->option(ctx, 1, 4, 0, "Conv2DOptions");
    sh = ctx->option(ctx, 2, 4, 0, "Conv2DOptions");
    act = ctx->option(ctx, 3, 1, 0, "Conv2DOptions");
    dw = ctx->option(ctx, 4, 4, 1, "Conv2DOptions");
    dh = ctx->option(ctx, 5, 4, 1, "Conv2DOptions");
    if (ctx->read_failed(ctx)) return 0;
    if (pad != 1 || sw != sh || sh < 1 || sh > TQ_MAX_DIM)
        TQ_REFUSE(ctx, TSPTQ_ERR_UNSUPPORTED_OP, "op %u (CONV_2D): only VALID padding with equal strides (the patch "
                                                 "embedding)", ctx->k);
    if (act != 0 || dw != 1 || dh != 1)
        TQ_REFUSE(ctx, TSPTQ_ERR_UNSUPPORTED_OP, "op %u (CONV_2D): fused activations and dilation are not supported",
                  ctx->k);
    ctx->op->opt[TQ_CONV_STRIDE] = sh;
    return 1;
}

static int conv_prepare(tq_op_ctx *ctx) {
    tsptq_model *m = ctx->m;
    tsptq_op *op = ctx->op;
    tsptq_tensor *const *in = ctx->in, *out = ctx->out;
    const uint32_t k = ctx->k;
    int64_t *o = op->opt;
    tsptq_tensor *x = in[0], *w = in[1], *b = in[2];
    int64_t p = o[TQ_CONV_STRIDE], O;
    uint32_t c;
    if (!tq_const_of(w, TSPTQ_INT8) || !w->has_quant || !tq_const_of(b, TSPTQ_INT32))
        TQ_BAD(ctx, "op %u (CONV_2D): needs constant int8 weights and int32 bias", k);
    if (!x->has_quant || x->type != TSPTQ_INT8)
        TQ_BAD(ctx, "op %u (CONV_2D): input must be a quantized int8 tensor", k);
    O = w->shape[0];
    if (x->rank != 4 || w->rank != 4 || out->rank != 4 || out->type != TSPTQ_INT8 || w->shape[1] != p ||
        w->shape[2] != p || w->shape[3] != x->shape[3] || b->rank != 1 || b->shape[0] != O ||
        out->shape[0] != x->shape[0] || out->shape[1] != x->shape[1] / p || out->shape[2] != x->shape[2] / p ||
        out->shape[3] != O)
        TQ_BAD(ctx, "op %u (CONV_2D): only the patch embedding (kernel == stride, VALID, NHWC int8) fits; shapes do "
                    "not", k);
    if (w->n_scales != 1 && w->n_scales != (uint32_t)O)
        TQ_BAD(ctx, "op %u (CONV_2D): weights need 1 or %L scales", k, O);
    for (c = 0; c < (uint32_t)O; c++) {
        int32_t mu, sh;
        if (!tq_builtin_multiplier(m, op, c, &mu, &sh))
            TQ_BADQ(ctx, "op %u (CONV_2D): requantization multiplier of channel %u out of range", k, c);
    }
    if (!tq_acc_fits(w, O, (int64_t)p * p * x->shape[3], 255, 0, 0))
        TQ_BAD(ctx, "op %u (CONV_2D): the int32 accumulator could overflow", k);
    return 1;
}

/* per output channel: a (mult, shift) pair */
static uint64_t conv_persistent(const tsptq_model *m, const tsptq_op *op) {
    return 8u * (uint64_t)(uint32_t)m->tensors[op->inputs[1]].shape[0];
}

static void conv_multiplier(const tsptq_model *m, const tsptq_op *op, uint32_t c, int32_t *mult, int32_t *shift) {
    tq_builtin_multiplier(m, op, c, mult, shift);
}

static void conv_eval(tsptq_model *m, const tsptq_op *op) {
    const tsptq_tensor *x = &m->tensors[op->inputs[0]], *w = &m->tensors[op->inputs[1]];
    const int32_t *mult = tq_params(m, op);
    tq_conv2d_patches((const int8_t *)tq_ptr(m, op->inputs[0]), x->shape[0], x->shape[1], x->shape[2], x->shape[3],
                      x->zero_point, (const int8_t *)tq_ptr(m, op->inputs[1]), w->shape[0],
                      TQ_O32(op->opt[TQ_CONV_STRIDE]), tq_in32(m, op, 2), mult, mult + w->shape[0],
                      m->tensors[op->output].zero_point, (int8_t *)tq_act(m, op->output));
}

const tq_op_def TQ_OP_DEF(tq_conv2d_patches, _op) = {
    .name = "CONV_2D", .builtin_code = 3, .options_type = 1 /* Conv2DOptions */, .min_inputs = 3, .max_inputs = 3,
    .n_outputs = 1, .n_option_keys = TQ_COUNT_OF(conv_slots), .option_keys = conv_slots,
    .load_options = conv_load_options, .prepare = conv_prepare, .persistent = conv_persistent,
    .multiplier = conv_multiplier, .eval = conv_eval};
