/* TSPTQ_BMM_BIAS (custom; docs/integer-semantics.md; tsptq.intmodel.kernels.bmm_bias): Swin's attention scores, q.k^T
 * plus the relative position bias, rounded once. a (..., N, K) int8, b (..., M, K) int8 (k, read transposed), bias
 * int32 constant with the output's trailing dims (heads, N, M), repeated over the leading ones (images, windows):
 *   acc = sum_k (a[i, k] - a_zp) (b[j, k] - b_zp)            int32: K * 255 * 255 << bias_shift < 2^31 (checked)
 *   t = (acc << bias_shift) + bias[output index mod |bias|]   |t| < 2^31 (checked with the bias's own values)
 *   y = sat8(rshift_round(t * mult, 31 - shift + bias_shift) + out_zp)   t * mult < 2^62
 * The bias is in units of the accumulator's unit / 2^bias_shift: finer than the q.k unit, so the one rounding is the
 * simulator's. The dot products are those of BATCH_MATMUL's adj_y case (batch_matmul.c): two rows of q (of one
 * batch) against four rows of k at a time (dot.h's tq_dot_2x4: AVX2 / AVX-512, NEON, the Arm DSP extension, or
 * portable C), and on the DSP extension (Cortex-M4/M7/M33/M55) the 2xN form of batch_matmul.c's DSP path (the two q
 * rows laid out once as int16 pairs, tq_mm2xn_s16s8) where K <= TQ_BB_DSP_K, with the rounding in 32-bit steps where
 * its shift allows (bb_row_dsp); the rest, and zero points outside [-128, 127], in scalar C. Every accumulator is the
 * exact int32 sum and every rounding the same function of it, so the bytes are the scalar code's. Split over the
 * thread pool by output rows (bmm_bias_units). */
#include "dot.h"
#include "op_util.h"

/* Exported for the kernel tests; no other file calls it. Rows [r0, r1) of the output, counted over every batch
 * (row r: batch r / N, row r % N of q), so that a part of the thread pool runs its own rows with the same code. */
void tq_bmm_bias(const int8_t *a, const int8_t *b, int32_t N, int32_t M, int32_t K, int64_t r0, int64_t r1,
                 int32_t a_zp, int32_t b_zp, const int32_t *bias, int64_t bias_len, int32_t bias_shift, int32_t mult,
                 int32_t shift, int32_t out_zp, int8_t *y);

/* y = sat8(rshift_round(((acc << bias_shift) + bias) * mult, n) + out_zp), n = 31 - shift + bias_shift */
static inline int8_t bb_out(int32_t acc, int32_t bias, int32_t bias_shift, int32_t mult, int n, int32_t out_zp) {
    const int64_t total = tq_shl64(acc, bias_shift) + bias;
    return tq_sat8(tq_rshift_round(total * mult, n) + out_zp);
}

#if defined(TQ_SIMD_DSP)
/* The DSP form (batch_matmul.c's bmm_dsp_adj_y): the two rows minus a_zp as the int16 pairs of tq_mm2x2_s16s8 in a
 * stack buffer, with their sums s; tq_mm2xn_s16s8 gives sum_k (a_k - a_zp) b_k for TQ_BB_DSP_CHUNK columns at a time,
 * and acc = that - b_zp s, exact in wrapping 32-bit arithmetic because the true value fits an int32 (prepare). */
#define TQ_BB_DSP_K 256
#define TQ_BB_DSP_CHUNK 64 /* columns per pass: two rows of int32 sums on the stack */

/* One row's mc outputs from the sums of tq_mm2xn_s16s8 (corr = b_zp s, wrapping). With K of 16 or 32 the rounding
 * costs more than the products: where 32 <= n <= 62 and mult >= 0 (fast), t = (acc << bias_shift) + bias is formed in
 * 32 bits (it fits an int32: prepare) and rounded by tq_requant1_dsp (dot.h: rdbpot64(t mult, n) as one SMLAL, for
 * -31 <= shift - bias_shift <= -1); otherwise bb_out's 64-bit form. */
static void bb_row_dsp(const int32_t *sum, int32_t mc, uint32_t corr, const int32_t *bias, int32_t bias_shift,
                       int32_t mult, int32_t shift, int32_t out_zp, int fast, int8_t *dst) {
    const int n = 31 - shift + bias_shift;
    int32_t c;
    if (fast) /* a loop of its own: no registers spent on the general form */
        for (c = 0; c < mc; c++) {
            const int32_t t = (int32_t)(((uint32_t)sum[c] - corr) << bias_shift) + bias[c];
            dst[c] = (int8_t)__ssat(tq_requant1_dsp(t, mult, shift - bias_shift) + out_zp, 8);
        }
    else
        for (c = 0; c < mc; c++)
            dst[c] = bb_out((int32_t)((uint32_t)sum[c] - corr), bias[c], bias_shift, mult, n, out_zp);
}
#endif

void tq_bmm_bias(const int8_t *a, const int8_t *b, int32_t N, int32_t M, int32_t K, int64_t r0, int64_t r1,
                 int32_t a_zp, int32_t b_zp, const int32_t *bias, int64_t bias_len, int32_t bias_shift, int32_t mult,
                 int32_t shift, int32_t out_zp, int8_t *y) {
    const int n = 31 - shift + bias_shift;
    const int simd = TQ_SIMD && tq_zp_ok(a_zp) && tq_zp_ok(b_zp);
    int64_t r = r0;
    int32_t j, c;
#if defined(TQ_SIMD_DSP)
    const int fast = n >= 32 && n <= 62 && mult >= 0;
    int32_t buf[TQ_BB_DSP_K]; /* 2 K int16, int32 for the alignment LDM needs */
    int16_t *xy = (int16_t *)(void *)buf;
    int32_t acc2[2][TQ_BB_DSP_CHUNK];
#endif
    while (r < r1) { /* one batch's rows [r, e) at a time: paired rows share its k */
        const int64_t t = r / N, e = (t + 1) * N < r1 ? (t + 1) * N : r1;
        const int8_t *bt = b + t * M * K;
        for (; r < e; r += 2) {
            /* rows r and r + 1 where both are in [r, e); else row r alone (passed twice, its twin written nowhere;
             * r then steps one past e, set back below). The bias's trailing dims end in (N, M): |bias| is a multiple
             * of M, so a row's M entries do not wrap. */
            const int two = r + 1 < e;
            const int8_t *x0 = a + r * K, *x1 = two ? x0 + K : x0;
            const int32_t *bias0 = bias + (r * M) % bias_len, *bias1 = two ? bias + ((r + 1) * M) % bias_len : bias0;
            int8_t *y0 = y + r * M, *y1 = y0 + M;
            j = 0;
#if defined(TQ_SIMD_DSP)
            if (simd && K <= TQ_BB_DSP_K) {
                const uint32_t c0 = (uint32_t)b_zp * (uint32_t)tq_pair_codes(x0, K, a_zp, xy, 0),
                               c1 = (uint32_t)b_zp * (uint32_t)tq_pair_codes(x1, K, a_zp, xy, 1);
                for (; j < M; j += TQ_BB_DSP_CHUNK) {
                    const int32_t mc = M - j < TQ_BB_DSP_CHUNK ? M - j : TQ_BB_DSP_CHUNK;
                    tq_mm2xn_s16s8(xy, bt + (ptrdiff_t)j * K, K, K, mc, acc2[0], acc2[1]);
                    bb_row_dsp(acc2[0], mc, c0, bias0 + j, bias_shift, mult, shift, out_zp, fast, y0 + j);
                    if (two) bb_row_dsp(acc2[1], mc, c1, bias1 + j, bias_shift, mult, shift, out_zp, fast, y1 + j);
                }
                continue;
            }
#endif
            if (simd)
                for (; j + 4 <= M; j += 4) {
                    int32_t acc[2][4];
                    tq_dot_2x4(x0, x1, a_zp, bt + (ptrdiff_t)j * K, K, b_zp, K, acc);
                    for (c = 0; c < 4; c++) y0[j + c] = bb_out(acc[0][c], bias0[j + c], bias_shift, mult, n, out_zp);
                    if (two)
                        for (c = 0; c < 4; c++)
                            y1[j + c] = bb_out(acc[1][c], bias1[j + c], bias_shift, mult, n, out_zp);
                }
            for (; j < M; j++) {
                const int8_t *bj = bt + (ptrdiff_t)j * K;
                y0[j] = bb_out(tq_dot_s8_ref(x0, a_zp, bj, b_zp, K), bias0[j], bias_shift, mult, n, out_zp);
                if (two) y1[j] = bb_out(tq_dot_s8_ref(x1, a_zp, bj, b_zp, K), bias1[j], bias_shift, mult, n, out_zp);
            }
        }
        r = e;
    }
}

/* ---- the op (op_table.h) -------------------------------------------------------------------------------------- */

enum { TQ_BB_A_ZP = 0, TQ_BB_B_ZP, TQ_BB_BIAS_SHIFT, TQ_BB_MULT, TQ_BB_SHIFT, TQ_BB_OUT_ZP };
static const char *const bmm_bias_keys[] = {"a_zp", "b_zp", "bias_shift", "mult", "shift", "out_zp"};

static int bmm_bias_prepare(tq_op_ctx *ctx) {
    const tsptq_tensor *a = ctx->in[0], *b = ctx->in[1], *bias = ctx->in[2], *y = ctx->out;
    const int64_t *o = ctx->op->opt;
    const int R = (int)a->rank, RB = (int)bias->rank;
    int64_t K, n, maxb = 0, i;
    int d;
    if (a->type != TSPTQ_INT8 || b->type != TSPTQ_INT8 || y->type != TSPTQ_INT8 || R < 2 || (int)b->rank != R ||
        (int)y->rank != R)
        TQ_BAD(ctx, "op %u (TSPTQ_BMM_BIAS): operands must be int8 tensors of one rank", ctx->k);
    for (d = 0; d < R - 2; d++)
        if (b->shape[d] != a->shape[d] || y->shape[d] != a->shape[d])
            TQ_BAD(ctx, "op %u (TSPTQ_BMM_BIAS): batch dimensions differ", ctx->k);
    K = a->shape[R - 1];
    if (b->shape[R - 1] != K || y->shape[R - 2] != a->shape[R - 2] || y->shape[R - 1] != b->shape[R - 2])
        TQ_BAD(ctx, "op %u (TSPTQ_BMM_BIAS): shapes do not fit (a (..., N, K), b (..., M, K), output (..., N, M))",
               ctx->k);
    if (bias->type != TSPTQ_INT32 || RB < 2 || RB > R - 1)
        TQ_BAD(ctx, "op %u (TSPTQ_BMM_BIAS): the bias must be int32 with the output's trailing dimensions", ctx->k);
    for (d = 0; d < RB; d++)
        if (bias->shape[d] != y->shape[R - RB + d])
            TQ_BAD(ctx, "op %u (TSPTQ_BMM_BIAS): the bias must be int32 with the output's trailing dimensions", ctx->k);
    if (!tq_in_range(o[TQ_BB_A_ZP], -128, 127) || !tq_in_range(o[TQ_BB_B_ZP], -128, 127) ||
        !tq_in_range(o[TQ_BB_OUT_ZP], -128, 127) || !tq_in_range(o[TQ_BB_BIAS_SHIFT], 0, 30) ||
        !tq_in_range(o[TQ_BB_MULT], 0, TQ_ACC_LIMIT) || !tq_in_range(o[TQ_BB_SHIFT], -31, 31) ||
        !tq_in_range(31 - o[TQ_BB_SHIFT] + o[TQ_BB_BIAS_SHIFT], 1, 62))
        TQ_BAD(ctx, "op %u (TSPTQ_BMM_BIAS): options out of range", ctx->k);
    n = tq_numel(bias);
    for (i = 0; i < n; i++) {
        const int64_t v = ((const int32_t *)(const void *)bias->data)[i];
        if ((v < 0 ? -v : v) > maxb) maxb = v < 0 ? -v : v;
    }
    if (K * 255 * 255 > (TQ_ACC_LIMIT >> o[TQ_BB_BIAS_SHIFT]) ||
        ((K * 255 * 255) << o[TQ_BB_BIAS_SHIFT]) + maxb > TQ_ACC_LIMIT)
        TQ_BAD(ctx, "op %u (TSPTQ_BMM_BIAS): the int32 accumulator could overflow", ctx->k);
    return 1;
}

/* Output rows [r0, r1) (batch * N of them) with no scratch: the thread pool's part (op_table.h) and, over every row,
 * the op. */
static void bmm_bias_eval_part(tsptq_model *m, const tsptq_op *op, int64_t r0, int64_t r1, int32_t *scratch) {
    const tsptq_tensor *a = &m->tensors[op->inputs[0]], *b = &m->tensors[op->inputs[1]],
                       *bias = &m->tensors[op->inputs[2]];
    const int64_t *o = op->opt;
    (void)scratch;
    tq_bmm_bias((const int8_t *)tq_ptr(m, op->inputs[0]), (const int8_t *)tq_ptr(m, op->inputs[1]),
                a->shape[a->rank - 2], b->shape[b->rank - 2], tq_last_dim(a), r0, r1, TQ_O32(o[TQ_BB_A_ZP]),
                TQ_O32(o[TQ_BB_B_ZP]), tq_in32(m, op, 2), tq_numel(bias), TQ_O32(o[TQ_BB_BIAS_SHIFT]),
                TQ_O32(o[TQ_BB_MULT]), TQ_O32(o[TQ_BB_SHIFT]), TQ_O32(o[TQ_BB_OUT_ZP]),
                (int8_t *)tq_act(m, op->output));
}

static int64_t bmm_bias_rows(const tsptq_model *m, const tsptq_op *op) {
    const tsptq_tensor *a = &m->tensors[op->inputs[0]];
    return (int64_t)tq_lead(a, 2) * a->shape[a->rank - 2];
}

static void bmm_bias_eval(tsptq_model *m, const tsptq_op *op) {
    bmm_bias_eval_part(m, op, 0, bmm_bias_rows(m, op), NULL);
}

/* The thread pool's split: output rows (independent: each reads its row of q, its batch's k and its bias row), in
 * grains of at least 4 TQ_PART_MIN_ELEMS multiply-adds (M K a row), so that scores too few to pay for the handover
 * stay on one thread. */
static int64_t bmm_bias_units(const tsptq_model *m, const tsptq_op *op, int64_t *grain) {
    const int64_t MK = (int64_t)m->tensors[op->inputs[1]].shape[m->tensors[op->inputs[1]].rank - 2] *
                       tq_last_dim(&m->tensors[op->inputs[0]]);
    *grain = MK > 0 ? (4 * TQ_PART_MIN_ELEMS + MK - 1) / MK : 1;
    return bmm_bias_rows(m, op);
}

const tq_op_def TQ_OP_DEF(tq_bmm_bias, _op) = {
    .name = "TSPTQ_BMM_BIAS", .builtin_code = TQ_CUSTOM, .min_inputs = 3, .max_inputs = 3, .n_outputs = 1,
    .const_from = 2, .n_option_keys = TQ_COUNT_OF(bmm_bias_keys), .option_keys = bmm_bias_keys,
    .prepare = bmm_bias_prepare, .eval = bmm_bias_eval, .units = bmm_bias_units,
    .eval_part = bmm_bias_eval_part};
