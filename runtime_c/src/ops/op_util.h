/* tsptq runtime: what the op files share for their definitions (internal): the checks' helpers, the tensors' bytes at
 * run time, and how an op file names its definition. Header-only (static inline), so that the op files link without
 * the loader (the kernel library, tests/test_c_kernels.py). */
#ifndef TSPTQ_OP_UTIL_H
#define TSPTQ_OP_UTIL_H

#include <stdint.h>
#include <string.h>

#include "../fixedpoint.h"
#include "../kernels.h"
#include "../op_table.h"

/* The name of an op definition is made from the name of the kernel it runs: TQ_OP_DEF(tq_add, _op) is tq_add_op.
 * A build that renames the kernels (the Arm check of tests/test_c_kernels.py links a reference build made with
 * -Dtq_add=ref_add ... next to the SIMD build) so renames the definitions with them, and the two builds link. */
#define TQ_OP_DEF(kernel, suffix) TQ_OP_DEF_(kernel, suffix)
#define TQ_OP_DEF_(kernel, suffix) kernel##suffix

#define TQ_COUNT_OF(a) ((uint8_t)(sizeof(a) / sizeof((a)[0])))

/* ---- checks (prepare) ------------------------------------------------------------------------------------------ */

/* Refuse the op: fill the status, return 0 from the prepare/load_options function. */
#define TQ_REFUSE(c, code, ...) return ((c)->fail((c)->st, (code), __VA_ARGS__), 0)
#define TQ_BAD(c, ...) TQ_REFUSE(c, TSPTQ_ERR_INVALID_MODEL, __VA_ARGS__)
#define TQ_BADQ(c, ...) TQ_REFUSE(c, TSPTQ_ERR_BAD_QUANTIZATION, __VA_ARGS__)

/* Builtins' load_options: an options table, if there is one, must be of the definition's options_type. */
static inline int tq_expect_options(tq_op_ctx *c) {
    if (c->has_options && c->options_type != c->def->options_type)
        return c->fail(c->st, TSPTQ_ERR_INVALID_MODEL, "op %u (%s): builtin options of type %L, expected %d", c->k,
                       c->def->name, c->options_type, (int)c->def->options_type), 0;
    return 1;
}

static inline int64_t tq_numel(const tsptq_tensor *t) {
    int64_t n = 1;
    uint32_t i;
    for (i = 0; i < t->rank; i++) n *= t->shape[i];
    return n;
}

static inline int tq_same_shape(const tsptq_tensor *a, const tsptq_tensor *b) {
    uint32_t i;
    if (a->rank != b->rank) return 0;
    for (i = 0; i < a->rank; i++)
        if (a->shape[i] != b->shape[i]) return 0;
    return 1;
}

static inline int tq_in_range(int64_t v, int64_t lo, int64_t hi) { return v >= lo && v <= hi; }

static inline int tq_is_byte(const tsptq_tensor *t) { return t->type == TSPTQ_INT8 || t->type == TSPTQ_UINT8; }

static inline int tq_const_of(const tsptq_tensor *t, int type) { return t->is_const && t->type == type; }

/* Largest |decoded operand| of a code kind (docs/integer-semantics.md). */
static inline int64_t tq_max_operand(int64_t kind, int64_t m, int32_t shift) {
    if (kind == TQ_UNIFORM) return 255;
    if (kind == TQ_CHANNEL_POW2) return (int64_t)255 << shift;
    if (kind == TQ_TWO_SCALE) return (int64_t)127 << m;
    return 127; /* sign-split fields (each half summed on its own) */
}

/* The int32 accumulator of w (O, I) rows against operands bounded by maxd (per input, or the scalar when
 * in_shift is NULL) cannot overflow: sum_i maxd_i * |w[o, i]| < 2^31 for every o. */
static inline int tq_acc_fits(const tsptq_tensor *w, int64_t O, int64_t I, int64_t maxd, int64_t kind,
                              const int8_t *in_shift) {
    int64_t o, i;
    for (o = 0; o < O; o++) {
        const int8_t *wo = (const int8_t *)w->data + o * I;
        int64_t s = 0;
        for (i = 0; i < I; i++) {
            int64_t a = wo[i] < 0 ? -(int64_t)wo[i] : wo[i];
            s += a * (in_shift ? tq_max_operand(kind, 0, in_shift[i]) : maxd);
        }
        if (s > TQ_ACC_LIMIT) return 0;
    }
    return 1;
}

/* One source of truth per two-scale tensor (docs/integer-semantics.md): the in_shift input of TSPTQ_FC_2S /
 * TSPTQ_LAYERNORM_2S (int8 (D), each in 0..7: checked before) is a copy of the shifts that the scale vector of the
 * op's input x holds, and must agree with it. A per-tensor x (one scale, or none) needs every in_shift 0; per-channel
 * scales lie along x's last axis, D of them, and are base * 2^in_shift[c] for one base: scale[c] * 2^(7 - in_shift[c])
 * is the same for every c (exact in double). Mirrored by tsptq.tflite.checks (_in_shift_problem). */
static inline int tq_in_shift_agrees(tq_op_ctx *ctx, const tsptq_tensor *x, const tsptq_tensor *ish, int64_t D) {
    const int8_t *sh = (const int8_t *)ish->data;
    double base = 0.0;
    int64_t c;
    if (x->n_scales <= 1) {
        for (c = 0; c < D; c++)
            if (sh[c] != 0)
                TQ_BADQ(ctx, "op %u (%s): input '%.*s' has a per-tensor code, but in_shift shifts its channel %L",
                        ctx->k, ctx->def->name, TNAME(x), c);
        return 1;
    }
    if ((int64_t)x->n_scales != D || x->quant_axis + 1 != x->rank)
        TQ_BADQ(ctx, "op %u (%s): input '%.*s' has %u scales, not one per channel of its last axis", ctx->k,
                ctx->def->name, TNAME(x), x->n_scales);
    for (c = 0; c < D; c++) {
        const double v = (double)tq_scale(x, (uint32_t)c) * (double)(1 << (7 - sh[c]));
        if (c == 0) base = v;
        else if (v != base)
            TQ_BADQ(ctx, "op %u (%s): in_shift disagrees with the scales of input '%.*s' at channel %L", ctx->k,
                    ctx->def->name, TNAME(x), c);
    }
    return 1;
}

/* The multiplier of CONV_2D / FULLY_CONNECTED channel c (TFLite's Prepare: input scale * weight scale c / output
 * scale, in double); 0 if out of range. */
static inline int tq_builtin_multiplier(const tsptq_model *m, const tsptq_op *op, uint32_t c, int32_t *mult,
                                        int32_t *shift) {
    const tsptq_tensor *x = &m->tensors[op->inputs[0]], *w = &m->tensors[op->inputs[1]],
                       *y = &m->tensors[op->output];
    double real = (double)tq_scale(x, 0) * (double)tq_scale(w, c) / (double)tq_scale(y, 0);
    tq_quantize_multiplier(real, mult, shift);
    return *mult >= 0 && *shift >= -31 && *shift <= 31;
}

/* ---- run time (eval) ------------------------------------------------------------------------------------------- */

/* The bytes of tensor i: activations in the arena (shared with the tensor's alias root), constants in the model. */
static inline uint8_t *tq_act(const tsptq_model *m, int32_t i) {
    return m->activations + m->tensors[m->tensors[i].root].arena_offset;
}
static inline const uint8_t *tq_ptr(const tsptq_model *m, int32_t i) {
    return m->tensors[i].is_const ? m->tensors[i].data : tq_act(m, i);
}
/* Input i of op as int32 / int64 values. */
static inline const int32_t *tq_in32(const tsptq_model *m, const tsptq_op *op, int i) {
    return (const int32_t *)(const void *)tq_ptr(m, op->inputs[i]);
}
static inline const int64_t *tq_in64(const tsptq_model *m, const tsptq_op *op, int i) {
    return (const int64_t *)(const void *)tq_ptr(m, op->inputs[i]);
}
/* The op's persistent (mult, shift) pairs: n multipliers, then n shifts. */
static inline const int32_t *tq_params(const tsptq_model *m, const tsptq_op *op) {
    return (const int32_t *)(const void *)(m->params + op->params_offset);
}
/* The op's prepacked bytes (op_table.h `prepack`), or NULL: none in this build, or an arena without them
 * (tsptq_prepare_with_params). */
static inline const void *tq_prepacked(const tsptq_model *m, const tsptq_op *op) {
    return m->packed && op->packed_len ? m->packed + op->packed_offset : NULL;
}
/* The op's scratch in the arena. */
static inline int32_t *tq_scratch(const tsptq_model *m, const tsptq_op *op) {
    return (int32_t *)(void *)(m->activations + op->scratch_offset);
}
static inline int32_t tq_last_dim(const tsptq_tensor *t) { return t->shape[t->rank - 1]; }
/* Product of all dims but the last (the kernels' "rows"). */
static inline int32_t tq_rows(const tsptq_tensor *t) {
    return (int32_t)(t->nbytes / tq_type_size(t->type) / tq_last_dim(t));
}
/* Product of all dims but the last `drop`. */
static inline int32_t tq_lead(const tsptq_tensor *t, int drop) {
    int32_t n = 1, i;
    for (i = 0; i < (int32_t)t->rank - drop; i++) n *= t->shape[i];
    return n;
}
/* 4 * the last dim of the op's first input: the row scratch of SOFTMAX_2S, FC_2S, BMM_2S. Sizes in 64 bits: a
 * dimension is < 2^24. */
static inline uint64_t tq_row_scratch(const tsptq_model *m, const tsptq_op *op) {
    const tsptq_tensor *x = &m->tensors[op->inputs[0]];
    return x->rank ? 4u * (uint64_t)(uint32_t)x->shape[x->rank - 1] : 0;
}

#define TQ_O32(v) ((int32_t)(v))

/* The thread pool's split of a row-wise op (op_table.h units/eval_part): rows of x in grains of at least
 * TQ_PART_MIN_ELEMS elements, so that an op too small to pay for the handover stays on one thread. */
#define TQ_PART_MIN_ELEMS 4096
static inline int64_t tq_row_units(const tsptq_tensor *x, int64_t *grain) {
    const int64_t len = tq_last_dim(x) > 0 ? tq_last_dim(x) : 1;
    *grain = (TQ_PART_MIN_ELEMS + len - 1) / len;
    return tq_rows(x);
}

/* The thread pool's units of a batch of matrix products (BATCH_MATMUL, TSPTQ_BMM_HEADS): the output rows of every
 * matrix (batch * N, input 0 is (..., N, K)); whole matrices when they share out evenly over the threads (each part
 * then packs only its own matrices' b), else rows in the SIMD kernels' row blocks of 16. */
static inline int64_t tq_matrix_row_units(const tsptq_model *m, const tsptq_op *op, int64_t *grain) {
    const tsptq_tensor *x = &m->tensors[op->inputs[0]];
    const int64_t batch = tq_lead(x, 2), N = x->shape[x->rank - 2];
    *grain = m->threads > 1 && batch % m->threads == 0 ? N : 16;
    return batch * N;
}

#endif
