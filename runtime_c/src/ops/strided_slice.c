/* STRIDED_SLICE with positive strides and no masks (byte moves). begin/end follow Python's slicing: negative values
 * count from the end, both are clamped to [0, dim]; output dim d has max(0, ceil((end_d - begin_d) / stride_d))
 * entries (the caller sizes y the same way). */
#include "../kernels.h"
#include "strided_copy.h"
#include "op_util.h"

static inline int32_t norm_index(int32_t v, int32_t dim) {
    if (v < 0) v += dim;
    return v < 0 ? 0 : (v > dim ? dim : v);
}

void tq_strided_slice(const uint8_t *x, const int32_t *shape, int32_t rank, const int32_t *begin,
                      const int32_t *end, const int32_t *strides, uint8_t *y) {
    ptrdiff_t xstride[6], ostride[6], oshape[6], base = 0;
    int32_t d;
    if (rank <= 0) {
        y[0] = x[0];
        return;
    }
    xstride[rank - 1] = 1;
    for (d = rank - 2; d >= 0; d--) xstride[d] = xstride[d + 1] * shape[d + 1];
    for (d = 0; d < rank; d++) {
        int32_t lo = norm_index(begin[d], shape[d]), hi = norm_index(end[d], shape[d]);
        base += lo * xstride[d];
        ostride[d] = strides[d] * xstride[d];
        oshape[d] = hi > lo ? (hi - lo + strides[d] - 1) / strides[d] : 0;
    }
    tq_strided_copy(x, base, ostride, oshape, rank, y);
}

/* ---- the op: STRIDED_SLICE (op_table.h) -------------------------------------------------------------------------- */

static int slice_load_options(tq_op_ctx *ctx) {
    uint32_t f;
    if (!tq_expect_options(ctx)) return 0;
    for (f = 0; ctx->has_options && f < 6; f++)
        if (ctx->option(ctx, f, f < 5 ? 4 : 1, 0, "StridedSliceOptions")) {
            if (ctx->read_failed(ctx)) return 0;
            TQ_REFUSE(ctx, TSPTQ_ERR_UNSUPPORTED_OP, "op %u (STRIDED_SLICE): masks and offset are not supported",
                      ctx->k);
        }
    return !ctx->read_failed(ctx);
}

static int slice_prepare(tq_op_ctx *ctx) {
    tsptq_op *op = ctx->op;
    tsptq_tensor *const *in = ctx->in, *out = ctx->out;
    const uint32_t k = ctx->k;
    int i;
    tsptq_tensor *x = in[0];
    if (!tq_is_byte(x) || out->type != x->type || out->rank != x->rank || x->rank < 1)
        TQ_BAD(ctx, "op %u (STRIDED_SLICE): only int8/uint8 tensors, same rank in and out", k);
    for (i = 1; i < 4; i++)
        if (in[i]->type != TSPTQ_INT32 || in[i]->rank != 1 || in[i]->shape[0] != x->rank)
            TQ_BAD(ctx, "op %u (STRIDED_SLICE): begin/end/strides need %d int32 entries", k, x->rank);
    op->vec[0][0] = 0;
    op->vec[1][0] = x->shape[0]; /* the batch axis is kept whole */
    op->vec[2][0] = 1;
    if (out->shape[0] != x->shape[0]) TQ_BAD(ctx, "op %u (STRIDED_SLICE): the batch axis must be kept whole", k);
    for (i = 1; i < x->rank; i++) {
        int64_t b = ((const int32_t *)in[1]->data)[i], e = ((const int32_t *)in[2]->data)[i],
                s = ((const int32_t *)in[3]->data)[i];
        if (s < 1 || b < 0 || b >= e || e > x->shape[i])
            TQ_REFUSE(ctx, TSPTQ_ERR_UNSUPPORTED_OP, "op %u (STRIDED_SLICE): only in-range slices with positive "
                                                    "strides are supported", k);
        if (out->shape[i] != (e - b + s - 1) / s) TQ_BAD(ctx, "op %u (STRIDED_SLICE): output shape does not fit", k);
        op->vec[0][i] = (int32_t)b;
        op->vec[1][i] = (int32_t)e;
        op->vec[2][i] = (int32_t)s;
    }
    return 1;
}

static void slice_eval(tsptq_model *m, const tsptq_op *op) {
    const tsptq_tensor *x = &m->tensors[op->inputs[0]];
    tq_strided_slice(tq_ptr(m, op->inputs[0]), x->shape, x->rank, op->vec[0], op->vec[1], op->vec[2],
                     tq_act(m, op->output));
}

const tq_op_def TQ_OP_DEF(tq_strided_slice, _op) = {
    .name = "STRIDED_SLICE", .builtin_code = 45, .options_type = 32 /* StridedSliceOptions */, .min_inputs = 4,
    .max_inputs = 4, .n_outputs = 1, .const_from = 1, .flags = TQ_OPF_ANY_OUTPUT, .load_options = slice_load_options,
    .prepare = slice_prepare, .eval = slice_eval};
