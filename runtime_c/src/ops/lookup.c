/* TSPTQ_GELU_2S: a 256-entry table lookup (tsptq.intmodel.kernels.lookup). */
#include "../kernels.h"
#include "op_util.h"

void tq_lookup(const uint8_t *x, size_t n, int input_signed, const uint8_t *lut, uint8_t *y) {
    size_t i;
    if (input_signed) {
        for (i = 0; i < n; i++) y[i] = lut[(uint8_t)(x[i] ^ 0x80u)]; /* int8 q + 128 */
    } else {
        for (i = 0; i < n; i++) y[i] = lut[x[i]];
    }
}

/* ---- the op: TSPTQ_GELU_2S (op_table.h) -------------------------------------------------------------------------- */

static int gelu_prepare(tq_op_ctx *ctx) {
    tsptq_tensor *const *in = ctx->in, *out = ctx->out;
    const uint32_t k = ctx->k;
    tsptq_tensor *x = in[0], *lut = in[1];
    if (!tq_is_byte(x) || lut->rank != 1 || lut->shape[0] != 256 || !tq_is_byte(lut) || out->type != lut->type ||
        !tq_same_shape(x, out))
        TQ_BAD(ctx, "op %u (TSPTQ_GELU_2S): needs a byte input, a 256-entry table and an output of the table's "
                    "type", k);
    return 1;
}

static void gelu_eval(tsptq_model *m, const tsptq_op *op) {
    const tsptq_tensor *x = &m->tensors[op->inputs[0]];
    tq_lookup(tq_ptr(m, op->inputs[0]), x->nbytes, x->type == TSPTQ_INT8, tq_ptr(m, op->inputs[1]),
              tq_act(m, op->output));
}

const tq_op_def TQ_OP_DEF(tq_lookup, _gelu_2s_op) = {
    .name = "TSPTQ_GELU_2S", .builtin_code = TQ_CUSTOM, .min_inputs = 2, .max_inputs = 2, .n_outputs = 1,
    .const_from = 1, .prepare = gelu_prepare, .eval = gelu_eval};
