/* TSPTQ_SOFTMAX_MASK_2S (custom; docs/integer-semantics.md; tsptq.intmodel.kernels.softmax_mask_2s): Swin's shifted
 * windows. x (B, W, H, N, N) int8 scores, exp_lut as TSPTQ_SOFTMAX_2S's, mask (W, N, N) int8 constant, 1 where the
 * pair takes part, 0 where it does not (every row keeps one at least: checked). Row (b, w, h, i) is TSPTQ_SOFTMAX_2S
 * over its kept pairs alone: they are gathered into the scratch, tq_softmax_2s runs on them (the same bytes, the same
 * SIMD paths), and scattered back; a masked pair gets the code of probability 0 (uniform: out_zp; two-scale: 0;
 * log2: the zero code 2^bits - 1). Scratch: 4 N bytes (tq_softmax_2s's) then 2 N (the gathered row and its codes). */
#include "op_util.h"

/* Exported for the kernel tests; no other file calls it. Rows [r0, r1) of x (counted over the whole tensor: row r's
 * mask row is ((r / (H N)) mod W, r mod N)), so that a part of the thread pool runs its own rows with the same code. */
void tq_softmax_mask_2s(const int8_t *x, int64_t r0, int64_t r1, int32_t W, int32_t H, int32_t N, const int8_t *mask,
                        const int32_t *exp_lut, int32_t out_kind, int32_t mult, int32_t shift, int32_t out_zp,
                        int32_t bits, int32_t m, int32_t signed_fine, uint8_t *y, int32_t *scratch);

void tq_softmax_mask_2s(const int8_t *x, int64_t r0, int64_t r1, int32_t W, int32_t H, int32_t N, const int8_t *mask,
                        const int32_t *exp_lut, int32_t out_kind, int32_t mult, int32_t shift, int32_t out_zp,
                        int32_t bits, int32_t m, int32_t signed_fine, uint8_t *y, int32_t *scratch) {
    int8_t *kept = (int8_t *)(void *)(scratch + N);
    uint8_t *codes = (uint8_t *)(void *)(kept + N);
    const uint8_t zero = out_kind == TQ_UNIFORM ? (uint8_t)tq_sat8(out_zp)
                         : out_kind == TQ_LOG2  ? (uint8_t)((1 << bits) - 1)
                                                : 0;
    int64_t r;
    int32_t j;
    for (r = r0; r < r1; r++) {
        const int8_t *xr = x + r * N;
        const int8_t *keep = mask + ((r / ((int64_t)H * N)) % W * N + r % N) * N;
        uint8_t *yr = y + r * N;
        int32_t n = 0, c = 0;
        for (j = 0; j < N; j++)
            if (keep[j]) kept[n++] = xr[j];
        tq_softmax_2s(kept, 1, n, exp_lut, out_kind, mult, shift, out_zp, bits, m, signed_fine, codes, scratch);
        for (j = 0; j < N; j++) yr[j] = keep[j] ? codes[c++] : zero;
    }
}

/* ---- the op (op_table.h): TSPTQ_SOFTMAX_2S's options ------------------------------------------------------------- */

enum { TQ_SMM_OUT_KIND = 0, TQ_SMM_MULT, TQ_SMM_SHIFT, TQ_SMM_OUT_ZP, TQ_SMM_BITS, TQ_SMM_M, TQ_SMM_SIGNED_FINE };
static const char *const softmax_mask_keys[] = {"out_kind", "mult", "shift", "out_zp", "bits", "ratio_log2",
                                                "signed_fine"};

static int softmax_mask_prepare(tq_op_ctx *ctx) {
    const tsptq_tensor *x = ctx->in[0], *lut = ctx->in[1], *mask = ctx->in[2], *y = ctx->out;
    const int64_t *o = ctx->op->opt, kind = o[TQ_SMM_OUT_KIND];
    const int32_t *e = (const int32_t *)(const void *)lut->data;
    const int8_t *mk = (const int8_t *)mask->data;
    int64_t N, rows, r, j;
    int i;
    if (x->type != TSPTQ_INT8 || x->rank != 5 || !tq_same_shape(x, y) || x->shape[3] != x->shape[4])
        TQ_BAD(ctx,
               "op %u (TSPTQ_SOFTMAX_MASK_2S): input must be int8 (batch, windows, heads, N, N), output of its shape",
               ctx->k);
    N = x->shape[4];
    if (N < 1 || N > 2047) TQ_BAD(ctx, "op %u (TSPTQ_SOFTMAX_MASK_2S): %L tokens, 1 to 2047", ctx->k, N);
    if (lut->rank != 1 || lut->shape[0] != 256 || lut->type != TSPTQ_INT32)
        TQ_BAD(ctx, "op %u (TSPTQ_SOFTMAX_MASK_2S): the lookup table must have 256 int32 entries", ctx->k);
    if (kind != TQ_UNIFORM && kind != TQ_TWO_SCALE && kind != TQ_LOG2)
        TQ_BAD(ctx, "op %u (TSPTQ_SOFTMAX_MASK_2S): output code kind %L", ctx->k, kind);
    if (y->type != (kind == TQ_UNIFORM ? TSPTQ_INT8 : TSPTQ_UINT8))
        TQ_BAD(ctx, "op %u (TSPTQ_SOFTMAX_MASK_2S): output dtype does not fit the code kind", ctx->k);
    if (e[0] != (1 << 20)) TQ_BAD(ctx, "op %u (TSPTQ_SOFTMAX_MASK_2S): exp table must start at 2^20", ctx->k);
    for (i = 0; i < 256; i++)
        if (!tq_in_range(e[i], 0, 1 << 20))
            TQ_BAD(ctx, "op %u (TSPTQ_SOFTMAX_MASK_2S): exp table entry %d out of range", ctx->k, i);
    if (!tq_in_range(o[TQ_SMM_MULT], 0, TQ_ACC_LIMIT) || !tq_in_range(o[TQ_SMM_SHIFT], 0, 62) ||
        !tq_in_range(o[TQ_SMM_OUT_ZP], -128, 127) || !tq_in_range(o[TQ_SMM_BITS], 2, 8) ||
        !tq_in_range(o[TQ_SMM_M], 0, 8) || !tq_in_range(o[TQ_SMM_SIGNED_FINE], 0, 1))
        TQ_BAD(ctx, "op %u (TSPTQ_SOFTMAX_MASK_2S): options out of range", ctx->k);
    if (mask->type != TSPTQ_INT8 || mask->rank != 3 || mask->shape[0] != x->shape[1] || mask->shape[1] != N ||
        mask->shape[2] != N)
        TQ_BAD(ctx, "op %u (TSPTQ_SOFTMAX_MASK_2S): the mask must be int8 (windows, N, N)", ctx->k);
    rows = (int64_t)mask->shape[0] * N;
    for (r = 0; r < rows * N; r++) /* every entry first, then the rows: the Python mirror's order */
        if (mk[r] != 0 && mk[r] != 1) TQ_BAD(ctx, "op %u (TSPTQ_SOFTMAX_MASK_2S): mask entries must be 0 or 1", ctx->k);
    for (r = 0; r < rows; r++) {
        int64_t kept = 0;
        for (j = 0; j < N; j++) kept += mk[r * N + j];
        if (!kept) TQ_BAD(ctx, "op %u (TSPTQ_SOFTMAX_MASK_2S): a mask row keeps no pair", ctx->k);
    }
    return 1;
}

static uint64_t softmax_mask_scratch(const tsptq_model *m, const tsptq_op *op) {
    return 6u * (uint64_t)(uint32_t)tq_last_dim(&m->tensors[op->inputs[0]]);
}

/* Rows [r0, r1) with `scratch` (softmax_mask_scratch's 6 N bytes): the thread pool's part (op_table.h: rows are
 * independent, each part its own scratch; 6 N <= 12282 bytes, within the default TSPTQ_THREAD_SCRATCH, and the
 * interpreter keeps an op whose scratch a worker's cannot hold on one thread) and, over every row with the arena
 * scratch, the op. */
static void softmax_mask_eval_part(tsptq_model *m, const tsptq_op *op, int64_t r0, int64_t r1, int32_t *scratch) {
    const tsptq_tensor *x = &m->tensors[op->inputs[0]];
    const int64_t *o = op->opt;
    tq_softmax_mask_2s((const int8_t *)tq_ptr(m, op->inputs[0]), r0, r1, x->shape[1], x->shape[2], x->shape[4],
                       (const int8_t *)tq_ptr(m, op->inputs[2]), tq_in32(m, op, 1), TQ_O32(o[TQ_SMM_OUT_KIND]),
                       TQ_O32(o[TQ_SMM_MULT]), TQ_O32(o[TQ_SMM_SHIFT]), TQ_O32(o[TQ_SMM_OUT_ZP]),
                       TQ_O32(o[TQ_SMM_BITS]), TQ_O32(o[TQ_SMM_M]), TQ_O32(o[TQ_SMM_SIGNED_FINE]),
                       tq_act(m, op->output), scratch);
}

static void softmax_mask_eval(tsptq_model *m, const tsptq_op *op) {
    softmax_mask_eval_part(m, op, 0, tq_rows(&m->tensors[op->inputs[0]]), tq_scratch(m, op));
}

static int64_t softmax_mask_units(const tsptq_model *m, const tsptq_op *op, int64_t *grain) {
    return tq_row_units(&m->tensors[op->inputs[0]], grain);
}

const tq_op_def TQ_OP_DEF(tq_softmax_mask_2s, _op) = {
    .name = "TSPTQ_SOFTMAX_MASK_2S", .builtin_code = TQ_CUSTOM, .min_inputs = 3, .max_inputs = 3, .n_outputs = 1,
    .const_from = 1, .n_option_keys = TQ_COUNT_OF(softmax_mask_keys), .option_keys = softmax_mask_keys,
    .prepare = softmax_mask_prepare, .scratch = softmax_mask_scratch, .eval = softmax_mask_eval,
    .units = softmax_mask_units, .eval_part = softmax_mask_eval_part};
