/* TRANSPOSE of a rank <= 6 tensor of bytes: y[i_0..i_{r-1}] = x[j] with j_{perm[d]} = i_d. */
#include "../kernels.h"
#include "strided_copy.h"
#include "op_util.h"

void tq_transpose(const uint8_t *x, const int32_t *shape, int32_t rank, const int32_t *perm, uint8_t *y) {
    ptrdiff_t xstride[6], ostride[6], oshape[6];
    int32_t d;
    if (rank <= 0) {
        y[0] = x[0];
        return;
    }
    xstride[rank - 1] = 1;
    for (d = rank - 2; d >= 0; d--) xstride[d] = xstride[d + 1] * shape[d + 1];
    for (d = 0; d < rank; d++) {
        oshape[d] = shape[perm[d]];
        ostride[d] = xstride[perm[d]];
    }
    tq_strided_copy(x, 0, ostride, oshape, rank, y);
}

/* ---- the op: TRANSPOSE (op_table.h) ------------------------------------------------------------------------------ */

static int transpose_prepare(tq_op_ctx *ctx) {
    tsptq_op *op = ctx->op;
    tsptq_tensor *const *in = ctx->in, *out = ctx->out;
    const uint32_t k = ctx->k;
    int i;
    tsptq_tensor *x = in[0], *perm = in[1];
    uint32_t seen = 0;
    if (!tq_is_byte(x) || out->type != x->type || out->rank != x->rank)
        TQ_BAD(ctx, "op %u (TRANSPOSE): only int8/uint8 tensors, same rank in and out", k);
    if (perm->type != TSPTQ_INT32 || perm->rank != 1 || perm->shape[0] != x->rank)
        TQ_BAD(ctx, "op %u (TRANSPOSE): permutation does not fit rank %d", k, x->rank);
    for (i = 0; i < x->rank; i++) {
        int32_t p = ((const int32_t *)perm->data)[i];
        if (p < 0 || p >= x->rank || (seen >> p) & 1)
            TQ_BAD(ctx, "op %u (TRANSPOSE): permutation does not fit rank %d", k, x->rank);
        seen |= 1u << p;
        if (out->shape[i] != x->shape[p])
            TQ_BAD(ctx, "op %u (TRANSPOSE): output shape does not fit the permutation", k);
        op->vec[0][i] = p;
    }
    return 1;
}

static void transpose_eval(tsptq_model *m, const tsptq_op *op) {
    const tsptq_tensor *x = &m->tensors[op->inputs[0]];
    tq_transpose(tq_ptr(m, op->inputs[0]), x->shape, x->rank, op->vec[0], tq_act(m, op->output));
}

const tq_op_def TQ_OP_DEF(tq_transpose, _op) = {
    .name = "TRANSPOSE", .builtin_code = 39, .options_type = 26 /* TransposeOptions */, .min_inputs = 2,
    .max_inputs = 2, .n_outputs = 1, .const_from = 1, .flags = TQ_OPF_ANY_OUTPUT, .prepare = transpose_prepare,
    .eval = transpose_eval};
