/* RESHAPE: no kernel. The planner gives the output of an activation the bytes of its input (TQ_OPF_ALIAS), so it
 * runs as nothing; the output of a constant input is a copy. Its definition lives here, outside src/ops/, whose
 * files also build the kernel library on their own with the kernels renamed (tests/test_c_kernels.py): an op file
 * there exports only names made from its kernel's (TQ_OP_DEF). */
#include <string.h>

#include "ops/op_util.h"

static int reshape_prepare(tq_op_ctx *ctx) {
    tsptq_tensor *const *in = ctx->in, *out = ctx->out;
    const uint32_t k = ctx->k;
    if (tq_numel(in[0]) != tq_numel(out) || in[0]->type != out->type)
        TQ_BAD(ctx, "op %u (RESHAPE): cannot reshape '%.*s' into '%.*s'", k, TNAME(in[0]), TNAME(out));
    return 1;
}

static void reshape_eval(tsptq_model *m, const tsptq_op *op) {
    const uint8_t *in = tq_ptr(m, op->inputs[0]);
    uint8_t *out = tq_act(m, op->output);
    if (m->tensors[op->output].root == op->output && out != in) memcpy(out, in, m->tensors[op->output].nbytes);
}

/* new_shape (ReshapeOptions) is informative: the output tensor's shape decides */
const tq_op_def tq_reshape_op = {
    .name = "RESHAPE", .builtin_code = 22, .options_type = 17 /* ReshapeOptions */, .min_inputs = 2, .max_inputs = 2,
    .n_outputs = 1, .const_from = 1, .flags = TQ_OPF_ANY_OUTPUT | TQ_OPF_ALIAS, .prepare = reshape_prepare,
    .eval = reshape_eval};
