/* TSPTQ_TOKEN_MEAN (custom, int8): the mean of tokens first.. of x (B, T, D), per channel, in x's own code: the
 * head input of a model that reads the patch-token mean (DINOv2's linear classifiers: [class token, mean of the
 * patch tokens]). The output (B, 1, D) has x's quantization, so the mean of the codes is the code of the mean of the
 * values, per channel codes included (docs/integer-semantics.md, TSPTQ_TOKEN_MEAN):
 *   y[b, c] = zp + round_half_away(sum_{t >= first} (x[b, t, c] - zp) / (T - first)).
 * The Python reference is tsptq.intmodel.kernels.token_mean. */
#include "op_util.h"

/* |x - zp| <= 255: the int32 sum of at most 2^20 tokens cannot overflow */
#define TQ_TOKEN_MEAN_MAX_TOKENS (1 << 20)

/* Exported for the kernel tests (tests/test_c_kernels.py); no other file calls it. */
void tq_token_mean(const int8_t *x, int32_t B, int32_t T, int32_t D, int32_t first, int32_t zp, int8_t *y);

void tq_token_mean(const int8_t *x, int32_t B, int32_t T, int32_t D, int32_t first, int32_t zp, int8_t *y) {
    const int32_t n = T - first;
    int32_t b, t, c;
    for (b = 0; b < B; b++) {
        const int8_t *xb = x + (int64_t)b * T * D;
        int8_t *yb = y + (int64_t)b * D;
        for (c = 0; c < D; c++) {
            int32_t sum = 0, q;
            for (t = first; t < T; t++) sum += (int32_t)xb[(int64_t)t * D + c] - zp;
            q = ((sum < 0 ? -sum : sum) + n / 2) / n; /* half away from zero */
            yb[c] = (int8_t)(zp + (sum < 0 ? -q : q));
        }
    }
}

/* ---- the op (op_table.h): opt[] = first ---------------------------------------------------------------------- */

enum { TQ_TOKEN_MEAN_FIRST = 0 };
static const char *const token_mean_keys[] = {"first"};

static int token_mean_prepare(tq_op_ctx *ctx) {
    const tsptq_tensor *x = ctx->in[0], *y = ctx->out;
    const int64_t first = ctx->op->opt[TQ_TOKEN_MEAN_FIRST];
    uint32_t i;
    if (x->type != TSPTQ_INT8 || y->type != TSPTQ_INT8 || x->rank != 3 || y->rank != 3)
        TQ_BAD(ctx, "op %u (TSPTQ_TOKEN_MEAN): input and output must be 3-D int8 tensors (batch, tokens, channels)",
               ctx->k);
    if (y->shape[0] != x->shape[0] || y->shape[1] != 1 || y->shape[2] != x->shape[2])
        TQ_BAD(ctx, "op %u (TSPTQ_TOKEN_MEAN): output shape [%d, %d, %d] is not [%d, 1, %d]", ctx->k, y->shape[0],
               y->shape[1], y->shape[2], x->shape[0], x->shape[2]);
    if (!tq_in_range(first, 0, (int64_t)x->shape[1] - 1) || x->shape[1] > TQ_TOKEN_MEAN_MAX_TOKENS)
        TQ_BAD(ctx, "op %u (TSPTQ_TOKEN_MEAN): first token %L out of range for %d tokens (at most %d)", ctx->k, first,
               x->shape[1], TQ_TOKEN_MEAN_MAX_TOKENS);
    if (!x->has_quant || x->n_scales != y->n_scales || x->zero_point != y->zero_point ||
        x->quant_axis != y->quant_axis)
        TQ_BAD(ctx, "op %u (TSPTQ_TOKEN_MEAN): output must have the quantization of the input (the mean keeps the "
                     "input's code)", ctx->k);
    for (i = 0; i < x->n_scales; i++)
        if (tq_scale(x, i) != tq_scale(y, i))
            TQ_BAD(ctx, "op %u (TSPTQ_TOKEN_MEAN): output must have the quantization of the input (the mean keeps "
                         "the input's code)", ctx->k);
    return 1;
}

static void token_mean_eval(tsptq_model *m, const tsptq_op *op) {
    const tsptq_tensor *x = &m->tensors[op->inputs[0]];
    tq_token_mean((const int8_t *)tq_ptr(m, op->inputs[0]), x->shape[0], x->shape[1], x->shape[2],
                  TQ_O32(op->opt[TQ_TOKEN_MEAN_FIRST]), x->zero_point, (int8_t *)tq_act(m, op->output));
}

const tq_op_def TQ_OP_DEF(tq_token_mean, _op) = {
    .name = "TSPTQ_TOKEN_MEAN", .builtin_code = TQ_CUSTOM, .min_inputs = 1, .max_inputs = 1, .n_outputs = 1,
    .n_option_keys = TQ_COUNT_OF(token_mean_keys), .option_keys = token_mean_keys, .prepare = token_mean_prepare,
    .eval = token_mean_eval};
