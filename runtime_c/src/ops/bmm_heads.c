/* TSPTQ_BMM_HEADS (custom; docs/integer-semantics.md; tsptq.intmodel.kernels.bmm_heads): q.k^T with one output code
 * per head (a per-head scores code, tsptq-heads). a (..., H, N, K) int8 and b (..., H, M, K) int8 (k, read
 * transposed), each quantized per tensor; the output (..., H, N, M) int8 has one scale and zero point per head along
 * its heads axis (rank - 3). Head h is BATCH_MATMUL (adj_y) with its own multiplier, made as bmm_prepare makes it
 * (the float32 product of the input scales over head h's output scale, in double), so each run of one head's rows
 * is a tq_batch_matmul call and every SIMD path of it (VNNI, DSP, MVE) is this op's too. Persistent: (mult, shift)
 * per head; scratch: the heads' output zero points as int32 (the tensor keeps them as int64 in the file). Split over
 * the thread pool by rows like BATCH_MATMUL. */
#include "op_util.h"

void tq_bmm_heads(const int8_t *a, const int8_t *b, int64_t r0, int64_t r1, int32_t N, int32_t K, int32_t M,
                  int32_t H, int adj_y, int32_t a_zp, int32_t b_zp, const int32_t *mult, const int32_t *shift,
                  const int32_t *out_zp, int8_t *y) {
    while (r0 < r1) { /* matrix t's rows [i0, i1) at a time: matrix t takes code t % H */
        const int64_t t = r0 / N, i0 = r0 % N, i1 = (r1 - t * N < N) ? r1 - t * N : N;
        const int32_t h = (int32_t)(t % H);
        tq_batch_matmul(a + (t * N + i0) * K, b + t * M * K, 1, (int32_t)(i1 - i0), K, M, adj_y, a_zp, b_zp, mult[h],
                        shift[h], out_zp[h], y + (t * N + i0) * M);
        r0 = t * N + i1;
    }
}

/* ---- the op (op_table.h) -------------------------------------------------------------------------------------- */

static int32_t heads_of(const tsptq_model *m, const tsptq_op *op) {
    const tsptq_tensor *a = &m->tensors[op->inputs[0]];
    return a->shape[a->rank - 3];
}

/* Head h's multiplier: TFLite's BATCH_MATMUL Prepare (ops/batch_matmul.c bmm_prepare) with head h's output scale. */
static int heads_multiplier(const tsptq_tensor *a, const tsptq_tensor *b, const tsptq_tensor *y, uint32_t h,
                            int32_t *mult, int32_t *shift) {
    const float product = tq_scale(a, 0) * tq_scale(b, 0); /* rounded to float, as TFLite's */
    tq_quantize_multiplier((double)product / (double)tq_scale(y, h), mult, shift);
    return *mult >= 0 && *shift >= -31 && *shift <= 31;
}

static int bmm_heads_prepare(tq_op_ctx *ctx) {
    const tsptq_tensor *a = ctx->in[0], *b = ctx->in[1], *y = ctx->out;
    const uint32_t k = ctx->k;
    const int R = (int)a->rank;
    int64_t H, N, K;
    int32_t mu, sh;
    uint32_t h;
    int d;
    if (!a->has_quant || !b->has_quant || !y->has_quant || a->type != TSPTQ_INT8 || b->type != TSPTQ_INT8 ||
        y->type != TSPTQ_INT8)
        TQ_BAD(ctx, "op %u (TSPTQ_BMM_HEADS): operands must be quantized int8 tensors", k);
    if (R < 3 || (int)b->rank != R || (int)y->rank != R)
        TQ_BAD(ctx, "op %u (TSPTQ_BMM_HEADS): operand ranks do not fit (a (..., H, N, K): at least 3 dimensions)", k);
    for (d = 0; d < R - 2; d++)
        if (b->shape[d] != a->shape[d] || y->shape[d] != a->shape[d])
            TQ_BAD(ctx, "op %u (TSPTQ_BMM_HEADS): batch dimensions differ (broadcasting is not supported)", k);
    H = a->shape[R - 3];
    N = a->shape[R - 2];
    K = a->shape[R - 1];
    if (b->shape[R - 1] != K || y->shape[R - 2] != N || y->shape[R - 1] != b->shape[R - 2])
        TQ_BAD(ctx, "op %u (TSPTQ_BMM_HEADS): shapes do not fit (a (..., H, N, K), b (..., H, M, K), output "
                    "(..., H, N, M))", k);
    if (a->n_scales != 1 || b->n_scales != 1)
        TQ_BADQ(ctx, "op %u (TSPTQ_BMM_HEADS): the inputs must be quantized per tensor", k);
    /* the zero points: one per scale, each in int8's range (the loader's checks of every tensor) */
    if ((int64_t)y->n_scales != H || (H > 1 && (int)y->quant_axis != R - 3))
        TQ_BADQ(ctx, "op %u (TSPTQ_BMM_HEADS): the output needs %L scales along its heads axis (%d)", k, H, R - 3);
    if (K * 255 * 255 > TQ_ACC_LIMIT) TQ_BAD(ctx, "op %u (TSPTQ_BMM_HEADS): the int32 accumulator could overflow", k);
    for (h = 0; h < (uint32_t)H; h++)
        if (!heads_multiplier(a, b, y, h, &mu, &sh))
            TQ_BADQ(ctx, "op %u (TSPTQ_BMM_HEADS): requantization multiplier of head %u out of range", k, h);
    return 1;
}

/* per head: a (mult, shift) pair */
static uint64_t bmm_heads_persistent(const tsptq_model *m, const tsptq_op *op) {
    return 8u * (uint64_t)(uint32_t)heads_of(m, op);
}

static void bmm_heads_multiplier(const tsptq_model *m, const tsptq_op *op, uint32_t c, int32_t *mult,
                                 int32_t *shift) {
    heads_multiplier(&m->tensors[op->inputs[0]], &m->tensors[op->inputs[1]], &m->tensors[op->output], c, mult, shift);
}

static uint64_t bmm_heads_scratch(const tsptq_model *m, const tsptq_op *op) {
    return 4u * (uint64_t)(uint32_t)heads_of(m, op);
}

/* Rows [u0, u1) of every head (batch * N of them), `scratch` this part's own: the thread pool's part and, over every
 * row, the op. */
static void bmm_heads_eval_part(tsptq_model *m, const tsptq_op *op, int64_t u0, int64_t u1, int32_t *scratch) {
    const tsptq_tensor *a = &m->tensors[op->inputs[0]], *b = &m->tensors[op->inputs[1]], *y = &m->tensors[op->output];
    const int32_t H = heads_of(m, op), *p = tq_params(m, op);
    int32_t h;
    for (h = 0; h < H; h++) scratch[h] = tq_zero_point(y, (uint32_t)h);
    tq_bmm_heads((const int8_t *)tq_ptr(m, op->inputs[0]), (const int8_t *)tq_ptr(m, op->inputs[1]), u0, u1,
                 a->shape[a->rank - 2], tq_last_dim(a), b->shape[b->rank - 2], H, 1, a->zero_point, b->zero_point, p,
                 p + H, scratch, (int8_t *)tq_act(m, op->output));
}

static void bmm_heads_eval(tsptq_model *m, const tsptq_op *op) {
    int64_t grain;
    bmm_heads_eval_part(m, op, 0, tq_matrix_row_units(m, op, &grain), tq_scratch(m, op));
}

const tq_op_def TQ_OP_DEF(tq_bmm_heads, _op) = {
    .name = "TSPTQ_BMM_HEADS", .builtin_code = TQ_CUSTOM, .min_inputs = 2, .max_inputs = 2, .n_outputs = 1,
    .prepare = bmm_heads_prepare, .scratch = bmm_heads_scratch, .persistent = bmm_heads_persistent,
    .multiplier = bmm_heads_multiplier, .eval = bmm_heads_eval, .units = tq_matrix_row_units,
    .eval_part = bmm_heads_eval_part};
