/* RELU (builtin, int8): TFLite's ReLU (kernels/activations.cc: ReluPrepare, then ReluEval's QuantizedReluX with
 * act_min = 0, act_max = inf, the same kernel for every op resolver): the input requantized to the output's scale,
 * clamped below at the output zero point (docs/integer-semantics.md, RELU):
 *   (M, shift) = QuantizeMultiplier((double)(s_in / s_out)), the quotient of the two float32 scales taken in float32;
 *   y = clamp(z_out + MBQM(x - z_in, M, shift), max(-128, z_out), 127).
 * The Python reference is tsptq.intmodel.ops.relu_int8. */
#include <float.h>

#include "../fixedpoint.h"
#include "op_util.h"

/* The largest shift accepted: |x - z_in| <= 255, so x * 2^shift stays an int32 as in TFLite's MBQM. */
#define TQ_RELU_MAX_SHIFT 23

/* Exported for the kernel tests (tests/test_c_kernels.py); no other file calls it. */
void tq_relu(const int8_t *x, int32_t n, int32_t in_zp, int32_t mult, int32_t shift, int32_t out_zp, int8_t *y);

void tq_relu(const int8_t *x, int32_t n, int32_t in_zp, int32_t mult, int32_t shift, int32_t out_zp, int8_t *y) {
    const int64_t lo = out_zp > -128 ? out_zp : -128;
    int32_t i;
    for (i = 0; i < n; i++) y[i] = (int8_t)tq_clamp64(out_zp + tq_mbqm((int64_t)x[i] - in_zp, mult, shift), lo, 127);
}

/* ---- the op (op_table.h): opt[] = the multiplier and shift of ReluPrepare -------------------------------------- */

enum { TQ_RELU_MULT = 0, TQ_RELU_SHIFT };
static const char *const relu_slots[] = {"mult", "shift"};

static int relu_prepare(tq_op_ctx *ctx) {
    const tsptq_tensor *x = ctx->in[0], *y = ctx->out;
    float real;
    int32_t mult, shift;
    /* the output's shape (TQ_OPF_ELEMENTWISE) and quantization were checked by the loader */
    if (x->type != TSPTQ_INT8 || y->type != TSPTQ_INT8 || !x->has_quant || x->n_scales != 1 || y->n_scales != 1)
        TQ_BAD(ctx, "op %u (RELU): input and output must be int8 tensors quantized per tensor", ctx->k);
    real = tq_scale(x, 0) / tq_scale(y, 0); /* float / float, as TFLite: rounded to float32 before it is widened */
    mult = 0;
    shift = TQ_RELU_MAX_SHIFT + 1;
    if (real <= FLT_MAX) tq_quantize_multiplier((double)real, &mult, &shift); /* not for an infinite quotient */
    if (shift > TQ_RELU_MAX_SHIFT)
        TQ_BAD(ctx, "op %u (RELU): input scale / output scale out of range (its multiplier's shift must be at most "
                    "23)", ctx->k);
    ctx->op->opt[TQ_RELU_MULT] = mult;
    ctx->op->opt[TQ_RELU_SHIFT] = shift;
    return 1;
}

static void relu_eval(tsptq_model *m, const tsptq_op *op) {
    const tsptq_tensor *y = &m->tensors[op->output];
    tq_relu((const int8_t *)tq_ptr(m, op->inputs[0]), (int32_t)y->nbytes, m->tensors[op->inputs[0]].zero_point,
            TQ_O32(op->opt[TQ_RELU_MULT]), TQ_O32(op->opt[TQ_RELU_SHIFT]), y->zero_point,
            (int8_t *)tq_act(m, op->output));
}

const tq_op_def TQ_OP_DEF(tq_relu, _op) = {
    .name = "RELU", .builtin_code = 19, .min_inputs = 1, .max_inputs = 1, .n_outputs = 1,
    .flags = TQ_OPF_ELEMENTWISE, .n_option_keys = TQ_COUNT_OF(relu_slots), .option_keys = relu_slots,
    .prepare = relu_prepare, .eval = relu_eval};
