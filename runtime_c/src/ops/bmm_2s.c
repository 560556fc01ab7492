/* TSPTQ_BMM_2S (docs/integer-semantics.md; tsptq.intmodel.kernels.bmm_2s): attention x V with a two-scale or log2 probability
 * code. Each row of a is decoded once into scratch (N int32); the output row accumulates d_ij * (v_j - b_zp) in
 * chunks of TQ_BMM2S_CHUNK int32 accumulators on the stack. The SIMD paths skip zero weights (most of a log2 row)
 * and pair the rest for vpmaddwd when they fit an int16. With AVX-512 VNNI, a two-scale code is split into its fine
 * and coarse planes for the blocked products of vnni.h (V's columns packed). The Arm DSP and Helium (MVE) paths
 * transpose V's columns and run 2x2 blocks of dot products. */
#include <string.h>

#include "../fixedpoint.h"
#include "../kernels.h"
#include "dot.h"
#include "op_util.h"

#define TQ_BMM2S_CHUNK 256

static inline int32_t decode_prob(uint8_t q, int32_t kind, int32_t bits, int32_t m, int32_t signed_fine,
                                  int32_t log2_frac) {
    const int32_t code = q & ((1 << bits) - 1);
    if (kind == TQ_LOG2) return code <= log2_frac ? (int32_t)1 << (log2_frac - code) : 0;
    return tq_decode_two_scale(q, bits, m, signed_fine);
}

#if defined(TQ_SIMD_VNNI)
/* two_scale probabilities: a's rows as two planes (fine, coarse << m) are A, V's columns are B;
 * acc = sum_j d_j v_j - b_zp * sum_j d_j. */
typedef struct {
    tqv_gemm g;
    const uint8_t *a;
    int32_t bits, m, signed_fine, b_zp;
    tqv_sparse *sp; /* few coarse codes (most rows of a softmax's): the fine plane as A (vnni.h tqv_sparse), or NULL */
    tqv_requant q;
    int8_t *y;
} bmm2s_vnni_op;

static void bmm2s_vnni_rows(const tqv_gemm *g, tqv_tile *t) {
    const bmm2s_vnni_op *f = (const bmm2s_vnni_op *)(const void *)g;
    if (f->sp)
        tqv_sparse_rows(f->a, g->K, g->K, f->bits, f->signed_fine, f->sp, t);
    else
        tqv_plane_rows(f->a, g->K, g->K, f->bits, f->signed_fine, t);
}

static void bmm2s_vnni_emit(const tqv_gemm *g, tqv_tile *t, int32_t n0, int32_t nc, const int32_t colsum[TQV_NR]) {
    const bmm2s_vnni_op *f = (const bmm2s_vnni_op *)(const void *)g;
    int32_t acc[TQV_MR][TQV_NR], sum[TQV_MR], colterm[TQV_NR];
    (void)colsum;
    memset(colterm, 0, sizeof colterm);
    if (f->sp)
        tqv_sparse_combine(f->sp, t, f->m, acc, sum);
    else
        tqv_combine_planes(t, f->m, acc, sum);
    tqv_emit(acc, sum, t->nr, f->b_zp, colterm, n0, nc, &f->q, f->y + (ptrdiff_t)t->r0 * g->N + n0, g->N, t->rqc);
}

static int bmm2s_vnni(const uint8_t *a, const int8_t *b, int32_t batch, int32_t N, int32_t M, int32_t a_kind,
                      int32_t bits, int32_t m, int32_t signed_fine, int32_t b_zp, int32_t mult, int32_t shift,
                      int32_t out_zp, int8_t *y) {
    bmm2s_vnni_op f;
    tqv_sparse sp;
    int32_t t;
    if (a_kind != TQ_TWO_SCALE || bits < 2 || bits > 8 || m < 0 || m > 31 || !tqv_fits(N, 0) ||
        !tqv_shifts_ok(&shift, 1))
        return 0;
    memset(&f, 0, sizeof f);
    f.g.ldb = M;
    f.g.b_cols = 1;
    f.g.N = M;
    f.g.K = N;
    f.g.M = N;
    f.g.planes = 2;
    if (!tqv_amx_takes(N, 2) && tqv_sparse_fits(a, N, (int64_t)batch * N, N, bits)) {
        f.g.planes = 1;
        f.sp = &sp;
    }
    f.g.rows = bmm2s_vnni_rows;
    f.g.emit = bmm2s_vnni_emit;
    f.bits = bits;
    f.m = m;
    f.signed_fine = signed_fine;
    f.b_zp = b_zp;
    f.q.mult0 = mult;
    f.q.shift0 = shift;
    f.q.how = TQV_REQUANT1;
    f.q.zp = out_zp;
    for (t = 0; t < batch; t++) {
        f.a = a + (ptrdiff_t)t * N * N;
        f.g.b = b + (ptrdiff_t)t * N * M;
        f.y = y + (ptrdiff_t)t * N * M;
        if (f.sp)
            tqv_gemm_vnni(&f.g); /* emit reads the packed blocks: never on AMX tiles */
        else
            tqv_gemm_run(&f.g);
    }
    return 1;
}
#endif

#if defined(TQ_SIMD_DSP)
/* The Arm DSP path: V's columns are copied (transposed) into a stack buffer, TQ_BMM2S_VT bytes, as many at a time
 * as fit; two rows of a are decoded (a 256-entry table) into scratch as the int16 pairs of tq_mm2x2_s16s8, with
 * their sums; then two columns at a time get the four sums of the 2x2 kernel, sum_j d_j v_j, and
 * acc = sum_j d_j (v_j - b_zp) = sum_j d_j v_j - b_zp sum_j d_j, exact in wrapping 32-bit arithmetic because the
 * true value fits an int32 (prepare: N * max|d| * 255 <= TQ_ACC_LIMIT). Taken when every decoded value fits an
 * int16 (two_scale always; log2 only for a small log2_frac). */
#define TQ_BMM2S_VT 3072

#define TQ_BMM2S_DSP_CHUNK 128 /* columns per pass: two rows of int32 sums on the stack */

static void bmm2s_dsp_requant(const int32_t *sum, int32_t mc, int32_t dsum, int32_t b_zp, int32_t mult, int32_t shift,
                              int32_t out_zp, int fast, int8_t *dst) {
    const uint32_t corr = (uint32_t)b_zp * (uint32_t)dsum;
    int32_t c;
    if (fast) /* a loop of its own: no registers spent on the general form */
        for (c = 0; c < mc; c++)
            dst[c] = (int8_t)__ssat(tq_requant1_dsp((int32_t)((uint32_t)sum[c] - corr), mult, shift) + out_zp, 8);
    else
        for (c = 0; c < mc; c++)
            dst[c] = tq_sat8(tq_requant1((int32_t)((uint32_t)sum[c] - corr), mult, shift) + out_zp);
}

static int32_t bmm2s_dsp_decode(const uint8_t *ar, int32_t N, const int16_t *lut, int16_t *xy, int32_t r) {
    const int32_t n4 = N & ~3;
    int16_t *g = xy + 4 * r, *tail = xy + 2 * n4 + r * (N - n4);
    int32_t j, sum = 0;
    for (j = 0; j < n4; j += 4, g += 8) {
        const int32_t d0 = lut[ar[j]], d1 = lut[ar[j + 1]], d2 = lut[ar[j + 2]], d3 = lut[ar[j + 3]];
        g[0] = (int16_t)d0, g[1] = (int16_t)d2, g[2] = (int16_t)d1, g[3] = (int16_t)d3;
        sum += d0 + d1 + d2 + d3;
    }
    for (; j < N; j++) sum += *tail++ = lut[ar[j]];
    return sum;
}

/* The DSP and Helium paths' shape/parameter check and their 256-entry decode table (each code's int16 value); 0
 * when they don't apply (the scalar kernel then runs). */
static int bmm2s_decode_table(int32_t N, int32_t M, int32_t a_kind, int32_t bits, int32_t m, int32_t signed_fine,
                              int32_t log2_frac, int16_t lut[256]) {
    int32_t q;
    if (N < 1 || M < 1 || 2 * N > TQ_BMM2S_VT || bits < 2 || bits > 8 ||
        (a_kind != TQ_TWO_SCALE && a_kind != TQ_LOG2) || (a_kind == TQ_TWO_SCALE && (m < 0 || m > 31)) ||
        (a_kind == TQ_LOG2 && (log2_frac < 0 || log2_frac > 30)))
        return 0;
    for (q = 0; q < 256; q++) {
        const int32_t v = decode_prob((uint8_t)q, a_kind, bits, m, signed_fine, log2_frac);
        if (v < -32768 || v > 32767) return 0;
        lut[q] = (int16_t)v;
    }
    return 1;
}

static int bmm2s_dsp(const uint8_t *a, const int8_t *b, int32_t batch, int32_t N, int32_t M, int32_t a_kind,
                     int32_t bits, int32_t m, int32_t signed_fine, int32_t log2_frac, int32_t b_zp, int32_t mult,
                     int32_t shift, int32_t out_zp, int8_t *y, int32_t *scratch) {
    int32_t vt32[TQ_BMM2S_VT / 4]; /* int32: aligned */
    int8_t *vt = (int8_t *)(void *)vt32;
    int16_t lut[256], *xy = (int16_t *)(void *)scratch;
    const int fast = shift < 0 && shift >= -31 && mult >= 0;
    int32_t acc[2][TQ_BMM2S_DSP_CHUNK], t, i, j, c, c0, cc;
    if (!bmm2s_decode_table(N, M, a_kind, bits, m, signed_fine, log2_frac, lut)) return 0;
    cc = (TQ_BMM2S_VT / N) & ~1;
    if (cc > TQ_BMM2S_DSP_CHUNK) cc = TQ_BMM2S_DSP_CHUNK;
    for (t = 0; t < batch; t++) {
        const uint8_t *at = a + (ptrdiff_t)t * N * N;
        const int8_t *bt = b + (ptrdiff_t)t * N * M;
        int8_t *yt = y + (ptrdiff_t)t * N * M;
        for (c0 = 0; c0 < M; c0 += cc) {
            const int32_t mc = M - c0 < cc ? M - c0 : cc;
            for (j = 0; j < N; j++)
                for (c = 0; c < mc; c++) vt[(ptrdiff_t)c * N + j] = bt[(ptrdiff_t)j * M + c0 + c];
            for (i = 0; i < N; i += 2) {
                const int32_t two = i + 1 < N;
                const uint8_t *ai = at + (ptrdiff_t)i * N;
                int8_t *yi = yt + (ptrdiff_t)i * M + c0;
                const int32_t s0 = bmm2s_dsp_decode(ai, N, lut, xy, 0);
                const int32_t s1 = bmm2s_dsp_decode(two ? ai + N : ai, N, lut, xy, 1);
                tq_mm2xn_s16s8(xy, vt, N, N, mc, acc[0], acc[1]);
                bmm2s_dsp_requant(acc[0], mc, s0, b_zp, mult, shift, out_zp, fast, yi);
                if (two) bmm2s_dsp_requant(acc[1], mc, s1, b_zp, mult, shift, out_zp, fast, yi + M);
            }
        }
    }
    return 1;
}
#endif

#if defined(TQ_SIMD_MVE)
/* The Helium path, laid out as the DSP one: V's columns transposed into the stack buffer (eight per scatter), two rows
 * of a decoded into scratch as int16 rows (the 256-entry table, eight halfword gathers at a time, with their sums),
 * then 2x2 blocks of int16 x int8 VMLADAVA products (tq_mve_mm2xn_s16s8), requantized four at a time. */
static int bmm2s_mve(const uint8_t *a, const int8_t *b, int32_t batch, int32_t N, int32_t M, int32_t a_kind,
                     int32_t bits, int32_t m, int32_t signed_fine, int32_t log2_frac, int32_t b_zp, int32_t mult,
                     int32_t shift, int32_t out_zp, int8_t *y, int32_t *scratch) {
    int32_t vt32[TQ_BMM2S_VT / 4]; /* int32: aligned */
    int8_t *vt = (int8_t *)(void *)vt32;
    int16_t lut[256], *d0 = (int16_t *)(void *)scratch, *d1 = d0 + N; /* the 4 N bytes of scratch */
    const int fast = shift < 0 && shift >= -31 && mult >= 0;
    int32_t acc[2][TQ_MVE_NC], t, i, c0, cc, r;
    if (!bmm2s_decode_table(N, M, a_kind, bits, m, signed_fine, log2_frac, lut)) return 0;
    cc = (TQ_BMM2S_VT / N) & ~1;
    if (cc > TQ_MVE_NC) cc = TQ_MVE_NC;
    for (t = 0; t < batch; t++) {
        const uint8_t *at = a + (ptrdiff_t)t * N * N;
        const int8_t *bt = b + (ptrdiff_t)t * N * M;
        int8_t *yt = y + (ptrdiff_t)t * N * M;
        for (c0 = 0; c0 < M; c0 += cc) {
            const int32_t mc = M - c0 < cc ? M - c0 : cc;
            tq_mve_transpose_s8(bt + c0, M, N, mc, vt, N); /* N * 7 < 2^16: 2 N <= TQ_BMM2S_VT */
            for (i = 0; i < N; i += 2) {
                const int32_t two = i + 1 < N;
                const uint8_t *ai = at + (ptrdiff_t)i * N;
                int8_t *yi = yt + (ptrdiff_t)i * M + c0;
                const int32_t s0 = tq_mve_lut_s16(ai, N, lut, d0), s1 = tq_mve_lut_s16(two ? ai + N : ai, N, lut, d1);
                tq_mve_mm2xn_s16s8(d0, d1, vt, N, N, mc, acc);
                for (r = 0; r <= two; r++) {
                    /* acc = sum_j d_j v_j - b_zp sum_j d_j */
                    const int32_t corr = (int32_t)((uint32_t)b_zp * (uint32_t)(r ? s1 : s0));
                    if (!fast) {
                        bmm2s_dsp_requant(acc[r], mc, r ? s1 : s0, b_zp, mult, shift, out_zp, 0, yi + r * M);
                        continue;
                    }
                    tq_mve_requant1_row(acc[r], mc, corr, mult, shift, out_zp, yi + r * M);
                }
            }
        }
    }
    return 1;
}
#endif

void tq_bmm_2s(const uint8_t *a, const int8_t *b, int32_t batch, int32_t N, int32_t M, int32_t a_kind,
               int32_t bits, int32_t m, int32_t signed_fine, int32_t log2_frac, int32_t b_zp, int32_t mult,
               int32_t shift, int32_t out_zp, int8_t *y, int32_t *scratch) {
    int32_t t, i, j, c, m0, mc;
    int32_t acc[TQ_BMM2S_CHUNK];
#if defined(TQ_SIMD_VNNI)
    if (bmm2s_vnni(a, b, batch, N, M, a_kind, bits, m, signed_fine, b_zp, mult, shift, out_zp, y)) return;
#endif
#if defined(TQ_SIMD_MVE)
    if (tq_zp_ok(b_zp) && bmm2s_mve(a, b, batch, N, M, a_kind, bits, m, signed_fine, log2_frac, b_zp, mult, shift,
                                    out_zp, y, scratch))
        return;
#endif
#if defined(TQ_SIMD_DSP)
    if (tq_zp_ok(b_zp) && bmm2s_dsp(a, b, batch, N, M, a_kind, bits, m, signed_fine, log2_frac, b_zp, mult, shift,
                                    out_zp, y, scratch))
        return;
#endif
    for (t = 0; t < batch; t++) {
        const uint8_t *at = a + (ptrdiff_t)t * N * N;
        const int8_t *bt = b + (ptrdiff_t)t * N * M;
        int8_t *yt = y + (ptrdiff_t)t * N * M;
        for (i = 0; i < N; i++) {
            const uint8_t *ai = at + (ptrdiff_t)i * N;
            for (j = 0; j < N; j++) scratch[j] = decode_prob(ai[j], a_kind, bits, m, signed_fine, log2_frac);
            for (m0 = 0; m0 < M; m0 += TQ_BMM2S_CHUNK) {
                mc = M - m0 < TQ_BMM2S_CHUNK ? M - m0 : TQ_BMM2S_CHUNK;
                for (c = 0; c < mc; c++) acc[c] = 0;
#if TQ_SIMD
                if (tq_zp_ok(b_zp)) {
                    int32_t pend = -1;
                    for (j = 0; j < N; j++) {
                        const int32_t dj = scratch[j];
                        const int8_t *bj = bt + (ptrdiff_t)j * M + m0;
                        if (dj == 0) continue;
                        if (dj < -32768 || dj > 32767) {
                            tq_axpy_s8(acc, dj, bj, b_zp, mc);
                        } else if (pend < 0) {
                            pend = j;
                        } else {
                            tq_axpy2_s8(acc, scratch[pend], dj, bt + (ptrdiff_t)pend * M + m0, bj, b_zp, mc);
                            pend = -1;
                        }
                    }
                    if (pend >= 0) tq_axpy_s8(acc, scratch[pend], bt + (ptrdiff_t)pend * M + m0, b_zp, mc);
                } else
#endif
                {
                    for (j = 0; j < N; j++) tq_axpy_s8_ref(acc, scratch[j], bt + (ptrdiff_t)j * M + m0, b_zp, mc);
                }
                for (c = 0; c < mc; c++)
                    yt[(ptrdiff_t)i * M + m0 + c] = tq_sat8(tq_requant1(acc[c], mult, shift) + out_zp);
            }
        }
    }
}

/* ---- the op: TSPTQ_BMM_2S (op_table.h) --------------------------------------------------------------------------- */

enum { TQ_BMM_A_KIND = 0, TQ_BMM_BITS, TQ_BMM_M, TQ_BMM_SIGNED_FINE, TQ_BMM_LOG2_FRAC, TQ_BMM_B_ZP, TQ_BMM_MULT,
       TQ_BMM_SHIFT, TQ_BMM_OUT_ZP };
static const char *const bmm2s_keys[] = {"a_kind", "bits", "ratio_log2", "signed_fine", "log2_frac", "b_zp", "mult",
                                         "shift", "out_zp"};

static int bmm2s_prepare(tq_op_ctx *ctx) {
    tsptq_tensor *const *in = ctx->in, *out = ctx->out;
    const uint32_t k = ctx->k;
    int64_t *o = ctx->op->opt;
    int i;
    tsptq_tensor *a = in[0], *b = in[1];
    int R = a->rank;
    int64_t kind = o[TQ_BMM_A_KIND], N, maxd;
    if (!tq_is_byte(a) || b->type != TSPTQ_INT8 || out->type != TSPTQ_INT8 || R < 2 || b->rank != R ||
        out->rank != R)
        TQ_BAD(ctx, "op %u (TSPTQ_BMM_2S): operands do not fit", k);
    for (i = 0; i < R - 2; i++)
        if (b->shape[i] != a->shape[i] || out->shape[i] != a->shape[i])
            TQ_BAD(ctx, "op %u (TSPTQ_BMM_2S): batch dimensions differ", k);
    N = a->shape[R - 1];
    if (a->shape[R - 2] != N || b->shape[R - 2] != N || out->shape[R - 2] != N ||
        out->shape[R - 1] != b->shape[R - 1])
        TQ_BAD(ctx, "op %u (TSPTQ_BMM_2S): shapes do not fit (a must be (..., N, N), b (..., N, M))", k);
    if (kind != TQ_TWO_SCALE && kind != TQ_LOG2)
        TQ_REFUSE(ctx, TSPTQ_ERR_UNSUPPORTED_OP, "op %u (TSPTQ_BMM_2S): probability code kind %L", k, kind);
    if (!tq_in_range(o[TQ_BMM_BITS], 2, 8) || !tq_in_range(o[TQ_BMM_M], 0, 8) ||
        !tq_in_range(o[TQ_BMM_SIGNED_FINE], 0, 1) || !tq_in_range(o[TQ_BMM_LOG2_FRAC], 0, 30) ||
        !tq_in_range(o[TQ_BMM_B_ZP], -128, 127) || !tq_in_range(o[TQ_BMM_MULT], 0, TQ_ACC_LIMIT) ||
        !tq_in_range(o[TQ_BMM_SHIFT], -31, 31) || !tq_in_range(o[TQ_BMM_OUT_ZP], -128, 127))
        TQ_BADQ(ctx, "op %u (TSPTQ_BMM_2S): options out of range", k);
    maxd = kind == TQ_LOG2 ? (int64_t)1 << o[TQ_BMM_LOG2_FRAC] : (int64_t)127 << o[TQ_BMM_M];
    if (N * maxd * 255 > TQ_ACC_LIMIT) TQ_BAD(ctx, "op %u (TSPTQ_BMM_2S): the int32 accumulator could overflow", k);
    return 1;
}

/* Heads [h0, h1) with `scratch`: the thread pool's part (op_table.h: by heads, as a's rows are also its K and the
 * kernel takes whole heads; each part its own scratch) and, over every head with the op's arena scratch, the op. */
static void bmm2s_eval_part(tsptq_model *m, const tsptq_op *op, int64_t h0, int64_t h1, int32_t *scratch) {
    const tsptq_tensor *x = &m->tensors[op->inputs[0]], *y = &m->tensors[op->output];
    const int64_t *o = op->opt;
    const int64_t N = tq_last_dim(x), M = tq_last_dim(y);
    tq_bmm_2s(tq_ptr(m, op->inputs[0]) + h0 * N * N, (const int8_t *)tq_ptr(m, op->inputs[1]) + h0 * N * M,
              (int32_t)(h1 - h0), (int32_t)N, (int32_t)M, TQ_O32(o[TQ_BMM_A_KIND]), TQ_O32(o[TQ_BMM_BITS]),
              TQ_O32(o[TQ_BMM_M]), TQ_O32(o[TQ_BMM_SIGNED_FINE]), TQ_O32(o[TQ_BMM_LOG2_FRAC]), TQ_O32(o[TQ_BMM_B_ZP]),
              TQ_O32(o[TQ_BMM_MULT]), TQ_O32(o[TQ_BMM_SHIFT]), TQ_O32(o[TQ_BMM_OUT_ZP]),
              (int8_t *)tq_act(m, op->output) + h0 * N * M, scratch);
}

static void bmm2s_eval(tsptq_model *m, const tsptq_op *op) {
    bmm2s_eval_part(m, op, 0, tq_lead(&m->tensors[op->inputs[0]], 2), tq_scratch(m, op));
}

static int64_t bmm2s_units(const tsptq_model *m, const tsptq_op *op, int64_t *grain) {
    *grain = 1;
    return tq_lead(&m->tensors[op->inputs[0]], 2);
}

const tq_op_def TQ_OP_DEF(tq_bmm_2s, _op) = {
    .name = "TSPTQ_BMM_2S", .builtin_code = TQ_CUSTOM, .min_inputs = 2, .max_inputs = 2, .n_outputs = 1,
    .const_from = 2, .n_option_keys = TQ_COUNT_OF(bmm2s_keys), .option_keys = bmm2s_keys, .prepare = bmm2s_prepare,
    .scratch = tq_row_scratch, .eval = bmm2s_eval, .units = bmm2s_units, .eval_part = bmm2s_eval_part};
