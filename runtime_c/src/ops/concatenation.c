/* CONCATENATION along `axis` (byte moves). Inputs whose leading dim is 1 while the output's is larger are broadcast
 * along it (the class token constant concatenated to a batch of patch sequences). */
#include <string.h>

#include "../kernels.h"
#include "op_util.h"

void tq_concatenation(const uint8_t *const *xs, const int32_t *const *shapes, int32_t n, int32_t rank,
                      int32_t axis, uint8_t *y) {
    ptrdiff_t batch = 1, mid = 1, inner = 1, t, r, off = 0;
    int32_t i, d;
    if (n <= 0 || rank <= 0) return;
    if (axis < 0) axis += rank;
    for (i = 0; i < n; i++)
        if (shapes[i][0] > batch) batch = shapes[i][0];
    if (axis == 0) batch = 1; /* concatenation along the leading axis itself: no broadcast */
    for (d = 1; d < axis; d++) mid *= shapes[0][d];
    for (d = axis + 1; d < rank; d++) inner *= shapes[0][d];
    /* output outer index = (t, r) with t over the leading dim and r over dims 1..axis-1 */
    for (t = 0; t < batch; t++)
        for (r = 0; r < mid; r++)
            for (i = 0; i < n; i++) {
                const ptrdiff_t chunk = (ptrdiff_t)shapes[i][axis] * inner;
                const ptrdiff_t ti = (axis == 0 || shapes[i][0] == 1) ? 0 : t;
                if (axis == 0) {
                    ptrdiff_t total = chunk * mid; /* mid == 1 here: the whole input */
                    memcpy(y + off, xs[i], (size_t)total);
                    off += total;
                } else {
                    memcpy(y + off, xs[i] + (ti * mid + r) * chunk, (size_t)chunk);
                    off += chunk;
                }
            }
}

/* ---- the op: CONCATENATION (op_table.h) -------------------------------------------------------------------------- */

enum { TQ_CAT_AXIS = 0 }; /* >= 0 after prepare */
static const char *const concat_slots[] = {"axis"};

static int concat_load_options(tq_op_ctx *ctx) {
    if (!tq_expect_options(ctx)) return 0;
    ctx->op->opt[TQ_CAT_AXIS] = ctx->has_options ? ctx->option(ctx, 0, 4, 0, "ConcatenationOptions") : 0;
    if (ctx->has_options && ctx->option(ctx, 1, 1, 0, "ConcatenationOptions")) {
        if (ctx->read_failed(ctx)) return 0;
        TQ_REFUSE(ctx, TSPTQ_ERR_UNSUPPORTED_OP, "op %u (CONCATENATION): fused activations are not supported",
                  ctx->k);
    }
    return !ctx->read_failed(ctx);
}

static int concat_prepare(tq_op_ctx *ctx) {
    tsptq_op *op = ctx->op;
    tsptq_tensor *const *in = ctx->in, *out = ctx->out;
    const uint32_t k = ctx->k;
    int64_t *o = op->opt;
    int i;
    int R = out->rank, d;
    int64_t axis = o[TQ_CAT_AXIS], total = 0;
    if (axis < 0) axis += R;
    if (R < 1 || axis < 0 || axis >= R)
        TQ_BAD(ctx, "op %u (CONCATENATION): axis %L does not fit rank %d", k, o[TQ_CAT_AXIS], R);
    o[TQ_CAT_AXIS] = axis;
    if (!tq_is_byte(out)) TQ_BAD(ctx, "op %u (CONCATENATION): only int8/uint8 tensors", k);
    for (i = 0; i < op->n_inputs; i++) {
        if (in[i]->type != out->type || in[i]->rank != R) TQ_BAD(ctx, "op %u (CONCATENATION): inputs do not fit", k);
        for (d = 0; d < R; d++)
            if (d != axis && in[i]->shape[d] != out->shape[d] && !(d == 0 && in[i]->shape[0] == 1))
                TQ_BAD(ctx, "op %u (CONCATENATION): input shapes do not fit", k);
        total += in[i]->shape[axis];
    }
    if (total != out->shape[axis]) TQ_BAD(ctx, "op %u (CONCATENATION): output shape does not fit", k);
    if (axis != 0) {
        int32_t batch = 1;
        for (i = 0; i < op->n_inputs; i++)
            if (in[i]->shape[0] > batch) batch = in[i]->shape[0];
        if (batch != out->shape[0]) TQ_BAD(ctx, "op %u (CONCATENATION): output batch does not fit", k);
    }
    return 1;
}

static void concat_eval(tsptq_model *m, const tsptq_op *op) {
    const uint8_t *xs[TSPTQ_MAX_OP_INPUTS];
    const int32_t *shapes[TSPTQ_MAX_OP_INPUTS];
    int i;
    for (i = 0; i < op->n_inputs; i++) {
        xs[i] = tq_ptr(m, op->inputs[i]);
        shapes[i] = m->tensors[op->inputs[i]].shape;
    }
    tq_concatenation(xs, shapes, op->n_inputs, m->tensors[op->output].rank, TQ_O32(op->opt[TQ_CAT_AXIS]),
                     tq_act(m, op->output));
}

const tq_op_def TQ_OP_DEF(tq_concatenation, _op) = {
    .name = "CONCATENATION", .builtin_code = 2, .options_type = 10 /* ConcatenationOptions */, .min_inputs = 2,
    .max_inputs = 2, .n_outputs = 1, .n_option_keys = TQ_COUNT_OF(concat_slots), .option_keys = concat_slots,
    .load_options = concat_load_options, .prepare = concat_prepare, .eval = concat_eval};
