/* ADD (builtin, n_params = 1) and TSPTQ_ADD_2S (n_params = C): TFLite's int8 ADD with left_shift 20, per channel
 * parameters (rows a_mult, a_shift, b_mult, b_shift, out_mult, out_shift of a (6, n_params) table):
 * tsptq.intmodel.kernels.add. With AVX-512 (the avx512vnni build), 16 channels at a time in int64 lanes. */
#include "../fixedpoint.h"
#include "../kernels.h"
#include "dot.h"
#include "op_util.h"

#define TQ_ADD_LEFT_SHIFT 20

#if defined(TQ_SIMD_VNNI)
/* AVX-512: 16 channels at a time in two halves of 8 int64 lanes, the channels' parameters loaded once for all rows. */

/* One input's rescaled value: RDBPOT(SRDHM((code - zp) << 20, M), -shift), 8 lanes. */
static inline __m512i add_input8(__m512i code, __m512i zp, __m512i mult, __m512i right) {
    return tqv_rdbpot(tqv_srdhm(_mm512_slli_epi64(_mm512_sub_epi64(code, zp), TQ_ADD_LEFT_SHIFT), mult), right);
}

static int add_avx512(const int8_t *a, const int8_t *b, int32_t rows, int32_t C, int32_t a_zp, int32_t b_zp,
                      const int32_t *params, int32_t n_params, int32_t out_zp, int8_t *y) {
    const __m512i azp = _mm512_set1_epi64(a_zp), bzp = _mm512_set1_epi64(b_zp), zero = _mm512_setzero_si512();
    int32_t c0, r, h, i;
    for (i = 0; i < n_params; i++)
        if (params[n_params + i] < -62 || params[n_params + i] > 0 || params[3 * n_params + i] < -62 ||
            params[3 * n_params + i] > 0)
            return 0;
    if (!tqv_shifts_ok(params + 5 * (ptrdiff_t)n_params, n_params)) return 0;
    for (c0 = 0; c0 < C; c0 += 16) {
        const __mmask16 m = tqv_lanes(C - c0);
        __m512i prm[6][2]; /* a_mult, a_right, b_mult, b_right, out_mult, out_shift; low and high 8 channels */
        for (i = 0; i < 6; i++) {
            const __m512i v = tqv_param(n_params == 1 ? NULL : params + i * (ptrdiff_t)n_params + c0, m,
                                        params[i * (ptrdiff_t)n_params]);
            prm[i][0] = tqv_lo64(v);
            prm[i][1] = tqv_hi64(v);
        }
        for (h = 0; h < 2; h++) { /* the inputs' shifts are right shifts */
            prm[1][h] = _mm512_sub_epi64(zero, prm[1][h]);
            prm[3][h] = _mm512_sub_epi64(zero, prm[3][h]);
        }
        for (r = 0; r < rows; r++) {
            const ptrdiff_t at = (ptrdiff_t)r * C + c0;
            const __m512i av = _mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(m, a + at)),
                          bv = _mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(m, b + at));
            __m128i out[2];
            for (h = 0; h < 2; h++) {
                const __m512i sa = add_input8(h ? tqv_hi64(av) : tqv_lo64(av), azp, prm[0][h], prm[1][h]);
                const __m512i sb = add_input8(h ? tqv_hi64(bv) : tqv_lo64(bv), bzp, prm[2][h], prm[3][h]);
                out[h] = tqv_out8(_mm512_add_epi64(sa, sb), prm[4][h], prm[5][h], TQV_MBQM, out_zp);
            }
            _mm_mask_storeu_epi8(y + at, m, _mm_unpacklo_epi64(out[0], out[1]));
        }
    }
    return 1;
}
#endif

void tq_add(const int8_t *a, const int8_t *b, int32_t rows, int32_t C, int32_t a_zp, int32_t b_zp,
            const int32_t *params, int32_t n_params, int32_t out_zp, int8_t *y) {
    const int32_t *am = params, *ash = params + n_params, *bm = params + 2 * (ptrdiff_t)n_params,
                  *bsh = params + 3 * (ptrdiff_t)n_params, *om = params + 4 * (ptrdiff_t)n_params,
                  *osh = params + 5 * (ptrdiff_t)n_params;
    int32_t r, c;
#if defined(TQ_SIMD_VNNI)
    if (add_avx512(a, b, rows, C, a_zp, b_zp, params, n_params, out_zp, y)) return;
#endif
    for (r = 0; r < rows; r++) {
        const int8_t *ar = a + (ptrdiff_t)r * C, *br = b + (ptrdiff_t)r * C;
        int8_t *yr = y + (ptrdiff_t)r * C;
        for (c = 0; c < C; c++) {
            const int32_t p = n_params == 1 ? 0 : c;
            int64_t sa = tq_rdbpot64(tq_srdhm64(tq_shl64((int64_t)ar[c] - a_zp, TQ_ADD_LEFT_SHIFT), am[p]), -ash[p]);
            int64_t sb = tq_rdbpot64(tq_srdhm64(tq_shl64((int64_t)br[c] - b_zp, TQ_ADD_LEFT_SHIFT), bm[p]), -bsh[p]);
            yr[c] = tq_sat8(tq_mbqm(sa + sb, om[p], osh[p]) + out_zp);
        }
    }
}

/* ---- the ops: ADD and TSPTQ_ADD_2S (op_table.h) ------------------------------------------------------------------ */

/* ADD: opt[0..5] = a_mult, a_shift, b_mult, b_shift, out_mult, out_shift (the kernel's params, n_params = 1) */
static const char *const add_slots[] = {"a_mult", "a_shift", "b_mult", "b_shift", "out_mult", "out_shift"};

static int add_load_options(tq_op_ctx *ctx) {
    if (!tq_expect_options(ctx)) return 0;
    if (ctx->has_options && ctx->option(ctx, 0, 1, 0, "AddOptions")) {
        if (ctx->read_failed(ctx)) return 0;
        TQ_REFUSE(ctx, TSPTQ_ERR_UNSUPPORTED_OP, "op %u (ADD): fused activations are not supported", ctx->k);
    }
    return !ctx->read_failed(ctx);
}

static int add_prepare(tq_op_ctx *ctx) {
    tsptq_tensor *const *in = ctx->in, *out = ctx->out;
    const uint32_t k = ctx->k;
    int64_t *o = ctx->op->opt;
    int i;
    tsptq_tensor *a = in[0], *b = in[1];
    double sa, sb, so, twice;
    double reals[3];
    if (!a->has_quant || !b->has_quant || a->type != TSPTQ_INT8 || b->type != TSPTQ_INT8 || out->type != TSPTQ_INT8)
        TQ_BAD(ctx, "op %u (ADD): operands must be quantized int8 tensors", k);
    if (!tq_same_shape(a, out) || !tq_same_shape(b, out) || out->rank < 1)
        TQ_BAD(ctx, "op %u (ADD): operand shapes differ (broadcasting is not supported)", k);
    sa = tq_scale(a, 0);
    sb = tq_scale(b, 0);
    so = tq_scale(out, 0);
    twice = 2.0 * (sa > sb ? sa : sb);
    reals[0] = sa / twice;
    reals[1] = sb / twice;
    reals[2] = twice / ((double)(1 << 20) * so);
    for (i = 0; i < 3; i++) {
        int32_t mu, sh;
        tq_quantize_multiplier(reals[i], &mu, &sh);
        if (mu < 0 || sh < -31 || sh > (i < 2 ? 0 : 31))
            TQ_BADQ(ctx, "op %u (ADD): rescaling multiplier out of range", k);
        o[2 * i] = mu;
        o[2 * i + 1] = sh;
    }
    return 1;
}

static void add_eval(tsptq_model *m, const tsptq_op *op) {
    const tsptq_tensor *y = &m->tensors[op->output];
    int32_t params[6], i;
    for (i = 0; i < 6; i++) params[i] = TQ_O32(op->opt[i]);
    tq_add((const int8_t *)tq_ptr(m, op->inputs[0]), (const int8_t *)tq_ptr(m, op->inputs[1]), tq_rows(y),
           tq_last_dim(y), m->tensors[op->inputs[0]].zero_point, m->tensors[op->inputs[1]].zero_point, params, 1,
           y->zero_point, (int8_t *)tq_act(m, op->output));
}

const tq_op_def TQ_OP_DEF(tq_add, _op) = {
    .name = "ADD", .builtin_code = 0, .options_type = 11 /* AddOptions */, .min_inputs = 2, .max_inputs = 2,
    .n_outputs = 1, .n_option_keys = TQ_COUNT_OF(add_slots), .option_keys = add_slots,
    .load_options = add_load_options, .prepare = add_prepare, .eval = add_eval};

/* TSPTQ_ADD_2S: a, b, and the (6, C or 1) int32 parameter table of the kernel */
enum { TQ_ADD2S_A_ZP = 0, TQ_ADD2S_B_ZP, TQ_ADD2S_OUT_ZP };
static const char *const add2s_keys[] = {"a_zp", "b_zp", "out_zp"};

static int add2s_prepare(tq_op_ctx *ctx) {
    tsptq_tensor *const *in = ctx->in, *out = ctx->out;
    const uint32_t k = ctx->k;
    int64_t *o = ctx->op->opt;
    tsptq_tensor *a = in[0], *b = in[1], *p = in[2];
    int64_t C = out->rank ? out->shape[out->rank - 1] : 0, n, c;
    if (a->type != TSPTQ_INT8 || b->type != TSPTQ_INT8 || out->type != TSPTQ_INT8 || !tq_same_shape(a, out) ||
        !tq_same_shape(b, out) || C < 1)
        TQ_BAD(ctx, "op %u (TSPTQ_ADD_2S): operands must be int8 of the same shape", k);
    if (p->type != TSPTQ_INT32 || p->rank != 2 || p->shape[0] != 6 || (p->shape[1] != C && p->shape[1] != 1))
        TQ_BAD(ctx, "op %u (TSPTQ_ADD_2S): parameters must be int32 (6, %L)", k, C);
    n = p->shape[1];
    for (c = 0; c < n; c++) {
        const int32_t *pp = (const int32_t *)p->data;
        if (pp[c] < 0 || pp[2 * n + c] < 0 || pp[4 * n + c] < 0 || !tq_in_range(pp[n + c], -31, 0) ||
            !tq_in_range(pp[3 * n + c], -31, 0) || !tq_in_range(pp[5 * n + c], -31, 31))
            TQ_BADQ(ctx, "op %u (TSPTQ_ADD_2S): rescaling parameters of channel %L out of range", k, c);
    }
    if (!tq_in_range(o[TQ_ADD2S_A_ZP], -128, 127) || !tq_in_range(o[TQ_ADD2S_B_ZP], -128, 127) ||
        !tq_in_range(o[TQ_ADD2S_OUT_ZP], -128, 127))
        TQ_BADQ(ctx, "op %u (TSPTQ_ADD_2S): zero points out of range", k);
    return 1;
}

static void add2s_eval(tsptq_model *m, const tsptq_op *op) {
    const tsptq_tensor *y = &m->tensors[op->output], *p = &m->tensors[op->inputs[2]];
    const int64_t *o = op->opt;
    tq_add((const int8_t *)tq_ptr(m, op->inputs[0]), (const int8_t *)tq_ptr(m, op->inputs[1]), tq_rows(y),
           tq_last_dim(y), TQ_O32(o[TQ_ADD2S_A_ZP]), TQ_O32(o[TQ_ADD2S_B_ZP]), (const int32_t *)(const void *)p->data,
           p->shape[1], TQ_O32(o[TQ_ADD2S_OUT_ZP]), (int8_t *)tq_act(m, op->output));
}

const tq_op_def TQ_OP_DEF(tq_add, _2s_op) = {
    .name = "TSPTQ_ADD_2S", .builtin_code = TQ_CUSTOM, .min_inputs = 3, .max_inputs = 3, .n_outputs = 1,
    .const_from = 2, .n_option_keys = TQ_COUNT_OF(add2s_keys), .option_keys = add2s_keys, .prepare = add2s_prepare,
    .eval = add2s_eval};
