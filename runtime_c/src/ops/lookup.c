/* TSPTQ_GELU_2S: a 256-entry table lookup (tsptq.intmodel.kernels.lookup). With AVX-512 (avx512vnni, amx), 16 codes
 * a step: the table as 64 dwords in four vectors, two vpermt2d by the dword index (code >> 2) and a blend by its
 * bit 5, the byte by a shift of 8 (code & 3); the int8 case indexes a copy of the table rotated by 128. The other
 * builds (AVX2 included: a byte gather there is no faster than the loads) run the plain loop. */
#include "../kernels.h"
#include "dot.h"
#include "op_util.h"

#if defined(TQ_SIMD_VNNI)
/* 16 bytes to p, lanes m (a plain store when all 16: the masked narrowing stores are slow) */
static inline void lookup_store16(void *p, __mmask16 m, __m128i v) {
    if (m == 0xFFFF)
        _mm_storeu_si128((__m128i *)p, v);
    else
        _mm_mask_storeu_epi8(p, m, v);
}

static void lookup_simd(const uint8_t *x, size_t n, const uint8_t *lut, uint8_t *y) {
    const __m512i t0 = _mm512_loadu_si512(lut), t1 = _mm512_loadu_si512(lut + 64), t2 = _mm512_loadu_si512(lut + 128),
                  t3 = _mm512_loadu_si512(lut + 192);
    const __m512i bit5 = _mm512_set1_epi32(32), three = _mm512_set1_epi32(3);
    size_t i;
    for (i = 0; i < n; i += 16) {
        const __mmask16 m = n - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - i)) - 1);
        const __m512i q = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(m, x + i));
        const __m512i j = _mm512_srli_epi32(q, 2);
        const __m512i lo = _mm512_permutex2var_epi32(t0, j, t1), hi = _mm512_permutex2var_epi32(t2, j, t3);
        const __m512i w = _mm512_mask_blend_epi32(_mm512_test_epi32_mask(j, bit5), lo, hi);
        const __m512i b = _mm512_srlv_epi32(w, _mm512_slli_epi32(_mm512_and_si512(q, three), 3));
        lookup_store16(y + i, m, _mm512_cvtepi32_epi8(b));
    }
}
#endif

void tq_lookup(const uint8_t *x, size_t n, int input_signed, const uint8_t *lut, uint8_t *y) {
    size_t i;
#if defined(TQ_SIMD_VNNI)
    if (input_signed) {
        uint8_t rot[256]; /* rot[u] = lut[u ^ 0x80]: int8 q indexes lut[q + 128], its byte u = q mod 256 */
        for (i = 0; i < 256; i++) rot[i] = lut[i ^ 0x80u];
        lookup_simd(x, n, rot, y);
    } else {
        lookup_simd(x, n, lut, y);
    }
    return;
#endif
    if (input_signed) {
        for (i = 0; i < n; i++) y[i] = lut[(uint8_t)(x[i] ^ 0x80u)]; /* int8 q + 128 */
    } else {
        for (i = 0; i < n; i++) y[i] = lut[x[i]];
    }
}

/* Plain loop: the level varies along the row, which the SIMD table above (one level in four vectors) does not. */
void tq_lookup_channels(const uint8_t *x, size_t rows, size_t channels, int input_signed, const uint8_t *lut,
                        const int8_t *in_shift, uint8_t *y) {
    const uint8_t flip = input_signed ? 0x80u : 0u; /* int8 q + 128 */
    size_t r, c;
    for (r = 0; r < rows; r++, x += channels, y += channels)
        for (c = 0; c < channels; c++) y[c] = lut[((size_t)(uint8_t)in_shift[c] << 8) + (uint8_t)(x[c] ^ flip)];
}

/* ---- the op: TSPTQ_GELU_2S (op_table.h) -------------------------------------------------------------------------- */

static int gelu_prepare(tq_op_ctx *ctx) {
    tsptq_tensor *const *in = ctx->in, *out = ctx->out;
    const uint32_t k = ctx->k;
    tsptq_tensor *x = in[0], *lut = in[1];
    int64_t levels = 1;
    if (!tq_is_byte(x) || lut->rank != 1 || !tq_is_byte(lut) || out->type != lut->type || !tq_same_shape(x, out) ||
        x->rank < 1)
        TQ_BAD(ctx, "op %u (TSPTQ_GELU_2S): needs a byte input, a byte table and an output of the table's type", k);
    if (ctx->op->n_inputs == 3) { /* in_shift: the per-channel input code's shift levels */
        const tsptq_tensor *ish = in[2];
        const int64_t D = x->shape[x->rank - 1];
        int64_t c;
        if (D < 1 || ish->type != TSPTQ_INT8 || ish->rank != 1 || ish->shape[0] != D)
            TQ_BAD(ctx, "op %u (TSPTQ_GELU_2S): in_shift must be int8 with one entry per input channel (%L)", k, D);
        for (c = 0; c < D; c++) {
            const int8_t s = ((const int8_t *)ish->data)[c];
            if (s < 0 || s > 7) TQ_BAD(ctx, "op %u (TSPTQ_GELU_2S): in_shift entries must be in 0..7", k);
            if (s + 1 > levels) levels = s + 1;
        }
        if (!tq_in_shift_agrees(ctx, x, ish, D)) return 0;
    } else if (x->n_scales > 1) {
        TQ_BAD(ctx, "op %u (TSPTQ_GELU_2S): a per-channel input code needs the in_shift input", k);
    }
    if (lut->shape[0] != 256 * levels)
        TQ_BAD(ctx, "op %u (TSPTQ_GELU_2S): the lookup table must have %L entries (256 per shift level)", k,
               256 * levels);
    return 1;
}

static void gelu_eval(tsptq_model *m, const tsptq_op *op) {
    const tsptq_tensor *x = &m->tensors[op->inputs[0]];
    if (op->n_inputs == 3) {
        const size_t channels = (size_t)x->shape[x->rank - 1];
        tq_lookup_channels(tq_ptr(m, op->inputs[0]), x->nbytes / channels, channels, x->type == TSPTQ_INT8,
                           tq_ptr(m, op->inputs[1]), (const int8_t *)tq_ptr(m, op->inputs[2]), tq_act(m, op->output));
        return;
    }
    tq_lookup(tq_ptr(m, op->inputs[0]), x->nbytes, x->type == TSPTQ_INT8, tq_ptr(m, op->inputs[1]),
              tq_act(m, op->output));
}

const tq_op_def TQ_OP_DEF(tq_lookup, _gelu_2s_op) = {
    .name = "TSPTQ_GELU_2S", .builtin_code = TQ_CUSTOM, .min_inputs = 2, .max_inputs = 3, .n_outputs = 1,
    .const_from = 1, .prepare = gelu_prepare, .eval = gelu_eval};
