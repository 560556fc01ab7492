/* TSPTQ_BMM_BIAS (custom; docs/integer-semantics.md; tsptq.intmodel.kernels.bmm_bias): Swin's attention scores, q.k^T
 * plus the relative position bias, rounded once. a (..., N, K) int8, b (..., M, K) int8 (k, read transposed), bias
 * int32 constant with the output's trailing dims (heads, N, M), repeated over the leading ones (images, windows):
 *   acc = sum_k (a[i, k] - a_zp) (b[j, k] - b_zp)            int32: K * 255 * 255 << bias_shift < 2^31 (checked)
 *   t = (acc << bias_shift) + bias[output index mod |bias|]   |t| < 2^31 (checked with the bias's own values)
 *   y = sat8(rshift_round(t * mult, 31 - shift + bias_shift) + out_zp)   t * mult < 2^62
 * The bias is in units of the accumulator's unit / 2^bias_shift: finer than the q.k unit, so the one rounding is the
 * simulator's. Portable scalar code (the scores of a window are small: N = w * w), split over the thread pool by
 * output rows (bmm_bias_units). */
#include "op_util.h"

/* Exported for the kernel tests; no other file calls it. Rows [r0, r1) of the output, counted over every batch
 * (row r: batch r / N, row r % N of q), so that a part of the thread pool runs its own rows with the same code. */
void tq_bmm_bias(const int8_t *a, const int8_t *b, int32_t N, int32_t M, int32_t K, int64_t r0, int64_t r1,
                 int32_t a_zp, int32_t b_zp, const int32_t *bias, int64_t bias_len, int32_t bias_shift, int32_t mult,
                 int32_t shift, int32_t out_zp, int8_t *y);

void tq_bmm_bias(const int8_t *a, const int8_t *b, int32_t N, int32_t M, int32_t K, int64_t r0, int64_t r1,
                 int32_t a_zp, int32_t b_zp, const int32_t *bias, int64_t bias_len, int32_t bias_shift, int32_t mult,
                 int32_t shift, int32_t out_zp, int8_t *y) {
    const int n = 31 - shift + bias_shift;
    int64_t r;
    int32_t j, k;
    for (r = r0; r < r1; r++) {
        const int8_t *ai = a + r * K, *bt = b + (r / N) * M * K;
        /* the bias's trailing dims end in (N, M): |bias| is a multiple of M, so a row's M entries do not wrap */
        const int32_t *br = bias + (r * M) % bias_len;
        int8_t *yr = y + r * M;
        for (j = 0; j < M; j++) {
            const int8_t *bj = bt + (int64_t)j * K;
            int32_t acc = 0;
            int64_t total;
            for (k = 0; k < K; k++) acc += ((int32_t)ai[k] - a_zp) * ((int32_t)bj[k] - b_zp);
            total = tq_shl64(acc, bias_shift) + br[j];
            yr[j] = tq_sat8(tq_rshift_round(total * mult, n) + out_zp);
        }
    }
}

/* ---- the op (op_table.h) -------------------------------------------------------------------------------------- */

enum { TQ_BB_A_ZP = 0, TQ_BB_B_ZP, TQ_BB_BIAS_SHIFT, TQ_BB_MULT, TQ_BB_SHIFT, TQ_BB_OUT_ZP };
static const char *const bmm_bias_keys[] = {"a_zp", "b_zp", "bias_shift", "mult", "shift", "out_zp"};

static int bmm_bias_prepare(tq_op_ctx *ctx) {
    const tsptq_tensor *a = ctx->in[0], *b = ctx->in[1], *bias = ctx->in[2], *y = ctx->out;
    const int64_t *o = ctx->op->opt;
    const int R = (int)a->rank, RB = (int)bias->rank;
    int64_t K, n, maxb = 0, i;
    int d;
    if (a->type != TSPTQ_INT8 || b->type != TSPTQ_INT8 || y->type != TSPTQ_INT8 || R < 2 || (int)b->rank != R ||
        (int)y->rank != R)
        TQ_BAD(ctx, "op %u (TSPTQ_BMM_BIAS): operands must be int8 tensors of one rank", ctx->k);
    for (d = 0; d < R - 2; d++)
        if (b->shape[d] != a->shape[d] || y->shape[d] != a->shape[d])
            TQ_BAD(ctx, "op %u (TSPTQ_BMM_BIAS): batch dimensions differ", ctx->k);
    K = a->shape[R - 1];
    if (b->shape[R - 1] != K || y->shape[R - 2] != a->shape[R - 2] || y->shape[R - 1] != b->shape[R - 2])
        TQ_BAD(ctx, "op %u (TSPTQ_BMM_BIAS): shapes do not fit (a (..., N, K), b (..., M, K), output (..., N, M))",
               ctx->k);
    if (bias->type != TSPTQ_INT32 || RB < 2 || RB > R - 1)
        TQ_BAD(ctx, "op %u (TSPTQ_BMM_BIAS): the bias must be int32 with the output's trailing dimensions", ctx->k);
    for (d = 0; d < RB; d++)
        if (bias->shape[d] != y->shape[R - RB + d])
            TQ_BAD(ctx, "op %u (TSPTQ_BMM_BIAS): the bias must be int32 with the output's trailing dimensions", ctx->k);
    if (!tq_in_range(o[TQ_BB_A_ZP], -128, 127) || !tq_in_range(o[TQ_BB_B_ZP], -128, 127) ||
        !tq_in_range(o[TQ_BB_OUT_ZP], -128, 127) || !tq_in_range(o[TQ_BB_BIAS_SHIFT], 0, 30) ||
        !tq_in_range(o[TQ_BB_MULT], 0, TQ_ACC_LIMIT) || !tq_in_range(o[TQ_BB_SHIFT], -31, 31) ||
        !tq_in_range(31 - o[TQ_BB_SHIFT] + o[TQ_BB_BIAS_SHIFT], 1, 62))
        TQ_BAD(ctx, "op %u (TSPTQ_BMM_BIAS): options out of range", ctx->k);
    n = tq_numel(bias);
    for (i = 0; i < n; i++) {
        const int64_t v = ((const int32_t *)(const void *)bias->data)[i];
        if ((v < 0 ? -v : v) > maxb) maxb = v < 0 ? -v : v;
    }
    if (K * 255 * 255 > (TQ_ACC_LIMIT >> o[TQ_BB_BIAS_SHIFT]) ||
        ((K * 255 * 255) << o[TQ_BB_BIAS_SHIFT]) + maxb > TQ_ACC_LIMIT)
        TQ_BAD(ctx, "op %u (TSPTQ_BMM_BIAS): the int32 accumulator could overflow", ctx->k);
    return 1;
}

/* Output rows [r0, r1) (batch * N of them) with no scratch: the thread pool's part (op_table.h) and, over every row,
 * the op. */
static void bmm_bias_eval_part(tsptq_model *m, const tsptq_op *op, int64_t r0, int64_t r1, int32_t *scratch) {
    const tsptq_tensor *a = &m->tensors[op->inputs[0]], *b = &m->tensors[op->inputs[1]],
                       *bias = &m->tensors[op->inputs[2]];
    const int64_t *o = op->opt;
    (void)scratch;
    tq_bmm_bias((const int8_t *)tq_ptr(m, op->inputs[0]), (const int8_t *)tq_ptr(m, op->inputs[1]),
                a->shape[a->rank - 2], b->shape[b->rank - 2], tq_last_dim(a), r0, r1, TQ_O32(o[TQ_BB_A_ZP]),
                TQ_O32(o[TQ_BB_B_ZP]), tq_in32(m, op, 2), tq_numel(bias), TQ_O32(o[TQ_BB_BIAS_SHIFT]),
                TQ_O32(o[TQ_BB_MULT]), TQ_O32(o[TQ_BB_SHIFT]), TQ_O32(o[TQ_BB_OUT_ZP]),
                (int8_t *)tq_act(m, op->output));
}

static int64_t bmm_bias_rows(const tsptq_model *m, const tsptq_op *op) {
    const tsptq_tensor *a = &m->tensors[op->inputs[0]];
    return (int64_t)tq_lead(a, 2) * a->shape[a->rank - 2];
}

static void bmm_bias_eval(tsptq_model *m, const tsptq_op *op) {
    bmm_bias_eval_part(m, op, 0, bmm_bias_rows(m, op), NULL);
}

/* The thread pool's split: output rows (independent: each reads its row of q, its batch's k and its bias row), in
 * grains of at least 4 TQ_PART_MIN_ELEMS multiply-adds (M K a row), so that scores too few to pay for the handover
 * stay on one thread. */
static int64_t bmm_bias_units(const tsptq_model *m, const tsptq_op *op, int64_t *grain) {
    const int64_t MK = (int64_t)m->tensors[op->inputs[1]].shape[m->tensors[op->inputs[1]].rank - 2] *
                       tq_last_dim(&m->tensors[op->inputs[0]]);
    *grain = MK > 0 ? (4 * TQ_PART_MIN_ELEMS + MK - 1) / MK : 1;
    return bmm_bias_rows(m, op);
}

const tq_op_def TQ_OP_DEF(tq_bmm_bias, _op) = {
    .name = "TSPTQ_BMM_BIAS", .builtin_code = TQ_CUSTOM, .min_inputs = 3, .max_inputs = 3, .n_outputs = 1,
    .const_from = 2, .n_option_keys = TQ_COUNT_OF(bmm_bias_keys), .option_keys = bmm_bias_keys,
    .prepare = bmm_bias_prepare, .eval = bmm_bias_eval, .units = bmm_bias_units,
    .eval_part = bmm_bias_eval_part};
