/* FULLY_CONNECTED (TFLite semantics, keep_num_dims): tsptq.intmodel.kernels.fully_connected. With AVX-512 VNNI, the blocked
 * products of vnni.h; with Helium (MVE), 2x2 blocks of int8 VMLADAVA products; otherwise dot products over blocks of
 * 4 output channels and 2 rows. */
#include <string.h>

#include "../fixedpoint.h"
#include "../kernels.h"
#include "dot.h"
#include "op_util.h"

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
    tqv_emit(t->raw, t->rowsum, t->nr, 128, colterm, n0, nc, &f->q, f->y + (ptrdiff_t)t->r0 * g->N + n0, g->N, t->rqc);
}

static int fc_vnni(const int8_t *x, int32_t rows, int32_t I, int32_t in_zp, const int8_t *w, int32_t O,
                   const int32_t *bias, const int32_t *mult, const int32_t *shift, int32_t n_params, int per_channel,
                   int32_t out_zp, int8_t *y, const void *pre) {
    fc_vnni_op f;
    if (!tqv_fits(I, 0) || !tqv_shifts_ok(shift, n_params)) return 0;
    memset(&f, 0, sizeof f);
    f.g.b = w;
    f.g.ldb = I;
    f.g.N = O;
    f.g.K = I;
    f.g.M = rows;
    f.g.planes = 1;
    f.g.pre = (const uint8_t *)pre;
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

#if defined(TQ_SIMD_MVE)
/* Helium: two rows against up to TQ_MVE_NC output channels per pass, two channels at a time (tq_mve_mm2xn_s8
 * on the codes in place, 16 products per VMLADAVA), sum_i (x_i - in_zp) w_i = sum_i x_i w_i - in_zp sum_i w_i with
 * the weight sums taken once per chunk; exact in wrapping 32-bit arithmetic, as the true value fits an int32
 * (prepare's accumulator bound). */
static void fc_mve(const int8_t *x, int32_t rows, int32_t I, int32_t in_zp, const int8_t *w, int32_t O,
                   const int32_t *bias, const int32_t *mult, const int32_t *shift, int32_t n_params, int per_channel,
                   int32_t out_zp, int8_t *y) {
    int32_t zsum[TQ_MVE_NC], acc[2][TQ_MVE_NC], o0, r, c, rr;
    for (o0 = 0; o0 < O; o0 += TQ_MVE_NC) {
        const int32_t oc = O - o0 < TQ_MVE_NC ? O - o0 : TQ_MVE_NC;
        const int8_t *wc = w + (ptrdiff_t)o0 * I;
        for (c = 0; c < oc; c++)
            zsum[c] = (int32_t)((uint32_t)in_zp * (uint32_t)tq_mve_sum_s8(wc + (ptrdiff_t)c * I, I));
        for (r = 0; r < rows; r += 2) {
            const int8_t *x0 = x + (ptrdiff_t)r * I, *x1 = r + 1 < rows ? x0 + I : x0;
            tq_mve_mm2xn_s8(x0, x1, wc, I, I, oc, acc);
            for (rr = 0; rr < 2 && r + rr < rows; rr++)
                for (c = 0; c < oc; c++)
                    y[(ptrdiff_t)(r + rr) * O + o0 + c] = fc_out((int32_t)((uint32_t)acc[rr][c] - (uint32_t)zsum[c]),
                                                                 o0 + c, bias, mult, shift, n_params, per_channel,
                                                                 out_zp);
        }
    }
}
#endif

uint64_t tq_fc_prepack_size(int32_t I, int32_t O) {
#if defined(TQ_SIMD_VNNI)
    return tqv_prepack_size(I, 0, O);
#else
    (void)I, (void)O;
    return 0;
#endif
}

void tq_fc_prepack(const int8_t *w, int32_t I, int32_t O, void *dst) {
#if defined(TQ_SIMD_VNNI)
    if (tqv_prepack_size(I, 0, O)) tqv_prepack(w, I, NULL, 0, O, (uint8_t *)dst);
#else
    (void)w, (void)I, (void)O, (void)dst;
#endif
}

void tq_fully_connected(const int8_t *x, int32_t rows, int32_t I, int32_t in_zp, const int8_t *w, int32_t O,
                        const int32_t *bias, const int32_t *mult, const int32_t *shift, int32_t n_params,
                        int per_channel, int32_t out_zp, int8_t *y) {
    tq_fully_connected_pre(x, rows, I, in_zp, w, O, bias, mult, shift, n_params, per_channel, out_zp, y, NULL);
}

void tq_fully_connected_pre(const int8_t *x, int32_t rows, int32_t I, int32_t in_zp, const int8_t *w, int32_t O,
                            const int32_t *bias, const int32_t *mult, const int32_t *shift, int32_t n_params,
                            int per_channel, int32_t out_zp, int8_t *y, const void *pre) {
    int32_t r, o = 0;
#if defined(TQ_SIMD_VNNI)
    if (fc_vnni(x, rows, I, in_zp, w, O, bias, mult, shift, n_params, per_channel, out_zp, y, pre)) return;
#else
    (void)pre;
#endif
#if defined(TQ_SIMD_MVE)
    fc_mve(x, rows, I, in_zp, w, O, bias, mult, shift, n_params, per_channel, out_zp, y);
    return;
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

/* ---- the op: FULLY_CONNECTED (op_table.h) ------------------------------------------------------------------------ */

enum { TQ_FCB_N_PARAMS = 0, TQ_FCB_PER_CHANNEL };
static const char *const fc_slots[] = {"n_params", "per_channel"};

static int fc_load_options(tq_op_ctx *ctx) {
    if (!tq_expect_options(ctx)) return 0;
    if (ctx->has_options && (ctx->option(ctx, 0, 1, 0, "FullyConnectedOptions") ||
                             ctx->option(ctx, 1, 1, 0, "FullyConnectedOptions"))) {
        if (ctx->read_failed(ctx)) return 0;
        TQ_REFUSE(ctx, TSPTQ_ERR_UNSUPPORTED_OP, "op %u (FULLY_CONNECTED): fused activations and shuffled weights are "
                                                 "not supported", ctx->k);
    }
    return !ctx->read_failed(ctx);
}

static int fc_prepare(tq_op_ctx *ctx) {
    tsptq_model *m = ctx->m;
    tsptq_op *op = ctx->op;
    tsptq_tensor *const *in = ctx->in, *out = ctx->out;
    const uint32_t k = ctx->k;
    int64_t *o = op->opt;
    tsptq_tensor *x = in[0], *w = in[1], *b = in[2];
    int64_t I, O;
    uint32_t c;
    if (!tq_const_of(w, TSPTQ_INT8) || !w->has_quant || !tq_const_of(b, TSPTQ_INT32))
        TQ_BAD(ctx, "op %u (FULLY_CONNECTED): needs constant int8 weights and int32 bias", k);
    if (!x->has_quant || x->type != TSPTQ_INT8)
        TQ_BAD(ctx, "op %u (FULLY_CONNECTED): input must be a quantized int8 tensor", k);
    if (w->rank != 2 || x->rank < 1 || out->rank < 1 || out->type != TSPTQ_INT8)
        TQ_BAD(ctx, "op %u (FULLY_CONNECTED): shapes do not fit", k);
    I = w->shape[1];
    O = w->shape[0];
    if (x->shape[x->rank - 1] != I || out->shape[out->rank - 1] != O || b->rank != 1 || b->shape[0] != O ||
        tq_numel(x) / I != tq_numel(out) / O)
        TQ_BAD(ctx, "op %u (FULLY_CONNECTED): shapes do not fit", k);
    if (w->n_scales != 1 && w->n_scales != (uint32_t)O)
        TQ_BAD(ctx, "op %u (FULLY_CONNECTED): weights need 1 or %L scales", k, O);
    for (c = 0; c < w->n_scales; c++) {
        int32_t mu, sh;
        if (!tq_builtin_multiplier(m, op, c, &mu, &sh) || (w->n_scales > 1 && sh > 30))
            TQ_BADQ(ctx, "op %u (FULLY_CONNECTED): requantization multiplier of channel %u out of range", k, c);
    }
    o[TQ_FCB_N_PARAMS] = w->n_scales;
    o[TQ_FCB_PER_CHANNEL] = w->n_scales > 1;
    if (!tq_acc_fits(w, O, I, 255, 0, 0))
        TQ_BAD(ctx, "op %u (FULLY_CONNECTED): the int32 accumulator could overflow", k);
    return 1;
}

/* per weight scale (1 or per output channel): a (mult, shift) pair */
static uint64_t fc_persistent(const tsptq_model *m, const tsptq_op *op) {
    return 8u * (uint64_t)m->tensors[op->inputs[1]].n_scales;
}

static void fc_multiplier(const tsptq_model *m, const tsptq_op *op, uint32_t c, int32_t *mult, int32_t *shift) {
    tq_builtin_multiplier(m, op, c, mult, shift);
}

/* the weights as the host SIMD builds' products read them (tq_fc_prepack; none in other builds) */
static uint64_t fc_prepacked(const tsptq_model *m, const tsptq_op *op) {
    const tsptq_tensor *w = &m->tensors[op->inputs[1]];
    return tq_fc_prepack_size(w->shape[1], w->shape[0]);
}

static void fc_prepack(const tsptq_model *m, const tsptq_op *op, uint8_t *dst) {
    const tsptq_tensor *w = &m->tensors[op->inputs[1]];
    tq_fc_prepack((const int8_t *)w->data, w->shape[1], w->shape[0], dst);
}

/* The thread pool's split (op_table.h): by rows, in TQ_FC_ROW_GRAIN blocks (dot.h); over every row, the op. */

static void fc_eval_part(tsptq_model *m, const tsptq_op *op, int64_t r0, int64_t r1, int32_t *scratch) {
    const tsptq_tensor *x = &m->tensors[op->inputs[0]], *w = &m->tensors[op->inputs[1]];
    const int32_t *mult = tq_params(m, op);
    const int32_t n = TQ_O32(op->opt[TQ_FCB_N_PARAMS]), I = tq_last_dim(x), O = w->shape[0];
    (void)scratch;
    tq_fully_connected_pre((const int8_t *)tq_ptr(m, op->inputs[0]) + r0 * I, (int32_t)(r1 - r0), I, x->zero_point,
                           (const int8_t *)tq_ptr(m, op->inputs[1]), O, tq_in32(m, op, 2), mult, mult + n, n,
                           (int)op->opt[TQ_FCB_PER_CHANNEL], m->tensors[op->output].zero_point,
                           (int8_t *)tq_act(m, op->output) + r0 * O, tq_prepacked(m, op));
}

static void fc_eval(tsptq_model *m, const tsptq_op *op) {
    fc_eval_part(m, op, 0, tq_rows(&m->tensors[op->inputs[0]]), NULL);
}

static int64_t fc_units(const tsptq_model *m, const tsptq_op *op, int64_t *grain) {
    *grain = TQ_FC_ROW_GRAIN;
    return tq_rows(&m->tensors[op->inputs[0]]);
}

const tq_op_def TQ_OP_DEF(tq_fully_connected, _op) = {
    .name = "FULLY_CONNECTED", .builtin_code = 9, .options_type = 8 /* FullyConnectedOptions */, .min_inputs = 3,
    .max_inputs = 3, .n_outputs = 1, .n_option_keys = TQ_COUNT_OF(fc_slots), .option_keys = fc_slots,
    .load_options = fc_load_options, .prepare = fc_prepare, .persistent = fc_persistent,
    .multiplier = fc_multiplier, .prepacked = fc_prepacked, .prepack = fc_prepack, .eval = fc_eval, .units = fc_units,
    .eval_part = fc_eval_part};
