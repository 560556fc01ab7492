/* BATCH_MATMUL (TFLite semantics, adj_x = false): tsptq.intmodel.kernels.batch_matmul. acc = sum_k (a - a_zp)(b - b_zp), MBQM.
 * adj_y (q k^T): both operands run along K, a dot product per output. Otherwise (probabilities x V) the output row
 * is accumulated as a sum of scaled rows of b, in chunks of TQ_BMM_CHUNK int32 accumulators on the stack. With
 * AVX-512 VNNI, both are the blocked products of vnni.h (b's rows or columns packed); with Helium (MVE), both are
 * int8 VMLADAVA products against b's rows or its transposed columns. */
#include <string.h>

#include "../fixedpoint.h"
#include "../kernels.h"
#include "dot.h"
#include "op_util.h"

#define TQ_BMM_CHUNK 256

static inline int8_t bmm_out(int32_t acc, int32_t mult, int32_t shift, int32_t out_zp) {
    return tq_sat8(tq_mbqm(acc, mult, shift) + out_zp);
}

#if defined(TQ_SIMD_VNNI)
/* acc = sum_k (a - a_zp)(b - b_zp) = sum_k a b - b_zp rowsum(a) - a_zp colsum(b) + K a_zp b_zp: a's rows are A,
 * b's rows (adj_y) or columns are B. */
typedef struct {
    tqv_gemm g;
    const int8_t *a;
    int32_t a_zp, b_zp;
    tqv_requant q;
    int8_t *y;
} bmm_vnni_op;

static void bmm_vnni_rows(const tqv_gemm *g, tqv_tile *t) {
    const bmm_vnni_op *f = (const bmm_vnni_op *)(const void *)g;
    tqv_matrix_rows(f->a, g->K, g->M, g->K, t);
}

static void bmm_vnni_emit(const tqv_gemm *g, tqv_tile *t, int32_t n0, int32_t nc, const int32_t colsum[TQV_NR]) {
    const bmm_vnni_op *f = (const bmm_vnni_op *)(const void *)g;
    const uint32_t kzz = (uint32_t)g->K * (uint32_t)f->a_zp * (uint32_t)f->b_zp;
    int32_t colterm[TQV_NR];
    tqv_colterm(colsum, (int32_t)(0u - (uint32_t)f->a_zp), (int32_t)kzz, colterm);
    tqv_emit(t->raw, t->rowsum, t->nr, (int32_t)((uint32_t)f->b_zp + 128u), colterm, n0, nc, &f->q,
             f->y + (ptrdiff_t)t->r0 * g->N + n0, g->N, t->rqc);
}

static int bmm_vnni(const int8_t *a, const int8_t *b, int32_t batch, int32_t N, int32_t K, int32_t M, int adj_y,
                    int32_t a_zp, int32_t b_zp, int32_t mult, int32_t shift, int32_t out_zp, int8_t *y) {
    bmm_vnni_op f;
    int32_t t;
    if (!tqv_fits(K, 0) || !tqv_shifts_ok(&shift, 1)) return 0;
    memset(&f, 0, sizeof f);
    f.g.ldb = adj_y ? K : M;
    f.g.b_cols = !adj_y;
    f.g.N = M;
    f.g.K = K;
    f.g.M = N;
    f.g.planes = 1;
    f.g.rows = bmm_vnni_rows;
    f.g.emit = bmm_vnni_emit;
    f.a_zp = a_zp;
    f.b_zp = b_zp;
    f.q.mult0 = mult;
    f.q.shift0 = shift;
    f.q.how = TQV_MBQM;
    f.q.zp = out_zp;
    for (t = 0; t < batch; t++) {
        f.a = a + (ptrdiff_t)t * N * K;
        f.g.b = b + (ptrdiff_t)t * K * M;
        f.y = y + (ptrdiff_t)t * N * M;
        tqv_gemm_run(&f.g);
    }
    return 1;
}
#endif

#if defined(TQ_SIMD_DSP)
/* The Arm DSP path of adj_y (q k^T): two rows of a, minus a_zp, are laid out as the int16 pairs of tq_mm2x2_s16s8 in
 * a stack buffer (K <= TQ_BMM_DSP_K), with their sums; two rows of b at a time get the four sums of the 2x2 kernel,
 * sum_k (a_k - a_zp) b_k, and acc = that - b_zp sum_k (a_k - a_zp), exact in wrapping 32-bit arithmetic because the
 * true value fits an int32 (prepare: K * 255 * 255 <= TQ_ACC_LIMIT). */
#define TQ_BMM_DSP_K 256

#define TQ_BMM_DSP_CHUNK 128 /* columns per pass: two rows of int32 sums on the stack */

static void bmm_dsp_requant(const int32_t *sum, int32_t mc, int32_t asum, int32_t b_zp, int32_t mult, int32_t shift,
                            int32_t out_zp, int fast, int8_t *dst) {
    const uint32_t corr = (uint32_t)b_zp * (uint32_t)asum;
    int32_t c;
    if (fast) /* a loop of its own: no registers spent on the general form */
        for (c = 0; c < mc; c++)
            dst[c] = (int8_t)__ssat(tq_mbqm_dsp((int32_t)((uint32_t)sum[c] - corr), mult, shift) + out_zp, 8);
    else
        for (c = 0; c < mc; c++) dst[c] = bmm_out((int32_t)((uint32_t)sum[c] - corr), mult, shift, out_zp);
}

static void bmm_dsp_adj_y(const int8_t *at, const int8_t *bt, int32_t N, int32_t K, int32_t M, int32_t a_zp,
                          int32_t b_zp, int32_t mult, int32_t shift, int32_t out_zp, int8_t *yt) {
    int32_t buf[TQ_BMM_DSP_K]; /* 2 K int16, int32 for the alignment LDM needs */
    int16_t *xy = (int16_t *)(void *)buf;
    const int fast = shift <= 0 && shift >= -31 && mult >= 0;
    int32_t acc[2][TQ_BMM_DSP_CHUNK], n, m;
    for (n = 0; n < N; n += 2) {
        const int32_t two = n + 1 < N;
        const int8_t *an = at + (ptrdiff_t)n * K;
        int8_t *yn = yt + (ptrdiff_t)n * M;
        const int32_t s0 = tq_pair_codes(an, K, a_zp, xy, 0), s1 = tq_pair_codes(two ? an + K : an, K, a_zp, xy, 1);
        for (m = 0; m < M; m += TQ_BMM_DSP_CHUNK) {
            const int32_t mc = M - m < TQ_BMM_DSP_CHUNK ? M - m : TQ_BMM_DSP_CHUNK;
            tq_mm2xn_s16s8(xy, bt + (ptrdiff_t)m * K, K, K, mc, acc[0], acc[1]);
            bmm_dsp_requant(acc[0], mc, s0, b_zp, mult, shift, out_zp, fast, yn + m);
            if (two) bmm_dsp_requant(acc[1], mc, s1, b_zp, mult, shift, out_zp, fast, yn + M + m);
        }
    }
}
#endif

#if defined(TQ_SIMD_MVE)
/* The Helium path: b's rows (adj_y) or its columns, transposed into a stack buffer (TQ_BMM_MVE_BT bytes, as many as
 * fit), in chunks of up to TQ_MVE_NC, against two rows of a at a time (tq_mve_mm2xn_s8 on the codes in place);
 * acc = sum_k a_k b_k - b_zp sum_k a_k - a_zp sum_k b_k + K a_zp b_zp, exact in wrapping 32-bit arithmetic (the true
 * value fits an int32: prepare's K * 255 * 255 <= TQ_ACC_LIMIT), requantized four at a time (tq_mve_mbqm). */
#define TQ_BMM_MVE_BT 4096

static void bmm_mve_cols(const int8_t *at, int32_t N, int32_t K, const int8_t *bk, int32_t mc, int32_t a_zp,
                         int32_t b_zp, int32_t mult, int32_t shift, int32_t out_zp, int8_t *yt, int32_t ldy) {
    const uint32_t kzz = (uint32_t)K * (uint32_t)a_zp * (uint32_t)b_zp;
    const int fast = shift <= 0 && shift >= -31 && mult >= 0;
    int32_t bc[TQ_MVE_NC], acc[2][TQ_MVE_NC], n, c, r;
    for (c = 0; c < mc; c++)
        bc[c] = (int32_t)(kzz - (uint32_t)a_zp * (uint32_t)tq_mve_sum_s8(bk + (ptrdiff_t)c * K, K));
    for (n = 0; n < N; n += 2) {
        const int32_t two = n + 1 < N;
        const int8_t *x0 = at + (ptrdiff_t)n * K, *x1 = two ? x0 + K : x0;
        tq_mve_mm2xn_s8(x0, x1, bk, K, K, mc, acc);
        for (r = 0; r <= two; r++) {
            /* acc + (K a_zp b_zp - a_zp sum_k b_k) - b_zp sum_k a_k */
            const int32_t corr = (int32_t)((uint32_t)b_zp * (uint32_t)tq_mve_sum_s8(r ? x1 : x0, K));
            int8_t *dst = yt + (ptrdiff_t)(n + r) * ldy;
            if (!fast) {
                for (c = 0; c < mc; c++) acc[r][c] = (int32_t)((uint32_t)acc[r][c] + (uint32_t)bc[c]);
                bmm_dsp_requant(acc[r], mc, tq_mve_sum_s8(r ? x1 : x0, K), b_zp, mult, shift, out_zp, 0, dst);
                continue;
            }
            for (c = 0; c < mc; c += 4) {
                const mve_pred16_t p = vctp32q((uint32_t)(mc - c));
                const int32x4_t v = vsubq_n_s32(vaddq_s32(vldrwq_z_s32(acc[r] + c, p), vldrwq_z_s32(bc + c, p)), corr);
                tq_mve_store8(dst + c, tq_mve_mbqm(v, mult, shift), out_zp, p);
            }
        }
    }
}

static int bmm_mve(const int8_t *a, const int8_t *b, int32_t batch, int32_t N, int32_t K, int32_t M, int adj_y,
                   int32_t a_zp, int32_t b_zp, int32_t mult, int32_t shift, int32_t out_zp, int8_t *y) {
    int8_t buf[TQ_BMM_MVE_BT];
    int32_t t, m0, cc = adj_y ? TQ_MVE_NC : TQ_BMM_MVE_BT / (K > 0 ? K : 1);
    if (K < 1 || cc < 1) return 0;
    if (cc > TQ_MVE_NC) cc = TQ_MVE_NC;
    for (t = 0; t < batch; t++) {
        const int8_t *at = a + (ptrdiff_t)t * N * K, *bt = b + (ptrdiff_t)t * K * M;
        int8_t *yt = y + (ptrdiff_t)t * N * M;
        for (m0 = 0; m0 < M; m0 += cc) {
            const int32_t mc = M - m0 < cc ? M - m0 : cc;
            const int8_t *bk = bt + (ptrdiff_t)m0 * K;
            if (!adj_y) { /* columns m0 .. m0 + mc of the (K, M) matrix as mc rows of length K */
                tq_mve_transpose_s8(bt + m0, M, K, mc, buf, K);
                bk = buf;
            }
            bmm_mve_cols(at, N, K, bk, mc, a_zp, b_zp, mult, shift, out_zp, yt + m0, M);
        }
    }
    return 1;
}
#endif

void tq_batch_matmul(const int8_t *a, const int8_t *b, int32_t batch, int32_t N, int32_t K, int32_t M, int adj_y,
                     int32_t a_zp, int32_t b_zp, int32_t mult, int32_t shift, int32_t out_zp, int8_t *y) {
    int32_t t, n, m, k;
    const int simd = TQ_SIMD && tq_zp_ok(a_zp) && tq_zp_ok(b_zp);
#if defined(TQ_SIMD_VNNI)
    if (bmm_vnni(a, b, batch, N, K, M, adj_y, a_zp, b_zp, mult, shift, out_zp, y)) return;
#endif
#if defined(TQ_SIMD_MVE)
    if (bmm_mve(a, b, batch, N, K, M, adj_y, a_zp, b_zp, mult, shift, out_zp, y)) return;
#endif
    for (t = 0; t < batch; t++) {
        const int8_t *at = a + (ptrdiff_t)t * N * K, *bt = b + (ptrdiff_t)t * K * M;
        int8_t *yt = y + (ptrdiff_t)t * N * M;
        if (adj_y) {
            m = 0;
#if defined(TQ_SIMD_DSP)
            if (simd && K <= TQ_BMM_DSP_K) {
                bmm_dsp_adj_y(at, bt, N, K, M, a_zp, b_zp, mult, shift, out_zp, yt);
                continue;
            }
#endif
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

/* ---- the op: BATCH_MATMUL (op_table.h) --------------------------------------------------------------------------- */

enum { TQ_BMMB_ADJ_Y = 0, TQ_BMMB_MULT, TQ_BMMB_SHIFT };
static const char *const bmm_slots[] = {"adj_y", "mult", "shift"};

static int bmm_load_options(tq_op_ctx *ctx) {
    if (!tq_expect_options(ctx)) return 0;
    if (ctx->has_options && ctx->option(ctx, 0, 1, 0, "BatchMatMulOptions")) {
        if (ctx->read_failed(ctx)) return 0;
        TQ_REFUSE(ctx, TSPTQ_ERR_UNSUPPORTED_OP, "op %u (BATCH_MATMUL): adj_x is not supported", ctx->k);
    }
    ctx->op->opt[TQ_BMMB_ADJ_Y] = ctx->has_options ? (ctx->option(ctx, 1, 1, 0, "BatchMatMulOptions") != 0) : 0;
    return !ctx->read_failed(ctx);
}

static int bmm_prepare(tq_op_ctx *ctx) {
    tsptq_tensor *const *in = ctx->in, *out = ctx->out;
    const uint32_t k = ctx->k;
    int64_t *o = ctx->op->opt;
    int i;
    tsptq_tensor *a = in[0], *b = in[1];
    int R = a->rank, adj = (int)o[TQ_BMMB_ADJ_Y];
    int32_t mu, sh;
    double real;
    float product;
    if (!a->has_quant || !b->has_quant || a->type != TSPTQ_INT8 || b->type != TSPTQ_INT8 ||
        out->type != TSPTQ_INT8)
        TQ_BAD(ctx, "op %u (BATCH_MATMUL): operands must be quantized int8 tensors", k);
    if (R < 2 || b->rank != R || out->rank != R) TQ_BAD(ctx, "op %u (BATCH_MATMUL): operand ranks do not fit", k);
    for (i = 0; i < R - 2; i++)
        if (b->shape[i] != a->shape[i] || out->shape[i] != a->shape[i])
            TQ_BAD(ctx, "op %u (BATCH_MATMUL): batch dimensions differ (broadcasting is not supported)", k);
    if (b->shape[R - (adj ? 1 : 2)] != a->shape[R - 1] || out->shape[R - 2] != a->shape[R - 2] ||
        out->shape[R - 1] != b->shape[R - (adj ? 2 : 1)])
        TQ_BAD(ctx, "op %u (BATCH_MATMUL): shapes do not fit", k);
    if ((int64_t)a->shape[R - 1] * 255 * 255 > TQ_ACC_LIMIT)
        TQ_BAD(ctx, "op %u (BATCH_MATMUL): the int32 accumulator could overflow", k);
    /* TFLite's BATCH_MATMUL multiplies the input scales in float (the assignment rounds to float), then divides
     * in double: tsptq.intmodel.kernels.bmm_multiplier. */
    product = tq_scale(a, 0) * tq_scale(b, 0);
    real = (double)product / (double)tq_scale(out, 0);
    tq_quantize_multiplier(real, &mu, &sh);
    if (mu < 0 || sh < -31 || sh > 31) TQ_BADQ(ctx, "op %u (BATCH_MATMUL): requantization multiplier out of range", k);
    o[TQ_BMMB_MULT] = mu;
    o[TQ_BMMB_SHIFT] = sh;
    return 1;
}

/* Units [u0, u1) of the rows of every head (batch * N): the thread pool's part (op_table.h) and, over every unit,
 * the op. Whole heads when they share
 * out evenly (each part packs only its own heads' b), else rows in the SIMD kernels' row blocks. */
static void bmm_eval_part(tsptq_model *m, const tsptq_op *op, int64_t u0, int64_t u1, int32_t *scratch) {
    const tsptq_tensor *x = &m->tensors[op->inputs[0]], *y = &m->tensors[op->output];
    const int64_t *o = op->opt;
    const int32_t mult = TQ_O32(o[TQ_BMMB_MULT]), shift = TQ_O32(o[TQ_BMMB_SHIFT]), out_zp = y->zero_point;
    (void)scratch;
    tq_bmm_heads((const int8_t *)tq_ptr(m, op->inputs[0]), (const int8_t *)tq_ptr(m, op->inputs[1]), u0, u1,
                 x->shape[x->rank - 2], tq_last_dim(x), tq_last_dim(y), 1, (int)o[TQ_BMMB_ADJ_Y], x->zero_point,
                 m->tensors[op->inputs[1]].zero_point, &mult, &shift, &out_zp, (int8_t *)tq_act(m, op->output));
}

static void bmm_eval(tsptq_model *m, const tsptq_op *op) { /* every head's rows, as one part */
    int64_t grain;
    bmm_eval_part(m, op, 0, tq_matrix_row_units(m, op, &grain), NULL);
}

const tq_op_def TQ_OP_DEF(tq_batch_matmul, _op) = {
    .name = "BATCH_MATMUL", .builtin_code = 126, .options_type = 101 /* BatchMatMulOptions */, .min_inputs = 2,
    .max_inputs = 2, .n_outputs = 1, .n_option_keys = TQ_COUNT_OF(bmm_slots), .option_keys = bmm_slots,
    .load_options = bmm_load_options, .prepare = bmm_prepare, .eval = bmm_eval, .units = tq_matrix_row_units,
    .eval_part = bmm_eval_part};
