/* tsptq NPU variant: the variant-only arithmetic of its CPU custom ops (docs/integer-semantics.md "The NPU variant";
 * toolchain/tsptq/intmodel/kernels.py), written once. tflm_ops.c's Eval functions run these around the C runtime's
 * kernels (tq_layernorm_2s, tq_add) or as the whole op, and benchmarks/npu_cpu_steps.c times the same functions on the
 * Cortex-M55. C99, static inline, plain pointers and sizes (the caller checks the shapes and the option ranges, as
 * tflm_ops.c's prepare functions do), no allocation, no libc. */
#ifndef TSPTQ_VARIANT_KERNELS_H
#define TSPTQ_VARIANT_KERNELS_H

#include <stdint.h>

#include "fixedpoint.h"

/* TSPTQ_LAYERNORM_2S_I16 after tq_layernorm_2s: its int8 code y (rows, D) decoded to int16,
 * out = (y_c - out_zp) << out_shift_c (docs/integer-semantics.md "The NPU variant", LayerNorm outputs). */
static inline void tq_layernorm_2s_i16_tail(const int8_t *y, int64_t rows, int32_t D, int32_t out_zp,
                                            const int8_t *out_shift, int16_t *out) {
    int64_t r;
    int32_t j;
    for (r = 0; r < rows; r++, y += D, out += D)
        for (j = 0; j < D; j++) out[j] = (int16_t)tq_shl64((int64_t)y[j] - out_zp, out_shift[j]);
}

/* TSPTQ_ADD_2S_I16 before tq_add: the int16 branch b (n values) saturated into its int8 code, sat8(b + b_zp)
 * (docs/integer-semantics.md "The NPU variant", TSPTQ_ADD_2S_I16). */
static inline void tq_add_2s_i16_code(const int16_t *b, int64_t n, int32_t b_zp, int8_t *code) {
    int64_t i;
    for (i = 0; i < n; i++) code[i] = tq_sat8((int64_t)b[i] + b_zp);
}

/* TSPTQ_GELU_2S with an int16 table (the V-2SF decode of each entry): out = table[q + 128] for int8 codes
 * (input_signed), table[q] for uint8 ones (docs/integer-semantics.md "The NPU variant", GELU outputs). */
static inline void tq_lookup_i16(const uint8_t *x, int64_t n, int input_signed, const int16_t *table, int16_t *out) {
    const uint8_t flip = input_signed ? 0x80u : 0u; /* int8 q + 128 */
    int64_t i;
    for (i = 0; i < n; i++) out[i] = table[(uint8_t)(x[i] ^ flip)];
}

/* TSPTQ_PLANE_2S: one plane of n V-2SF codes of `bits` bits; plane 0 the fine value where flag = 0 (else 0), plane 1
 * the coarse field where flag = 1 (else 0), so that d = fine + (coarse << m) (docs/integer-semantics.md "The NPU
 * variant", P x V with a V-2SF P). */
static inline void tq_plane_2s(const uint8_t *x, int64_t n, int32_t plane, int32_t bits, int32_t signed_fine,
                               int8_t *y) {
    int64_t i;
    for (i = 0; i < n; i++) {
        uint32_t code = x[i] & ((1u << bits) - 1u), flag = code >> (bits - 1);
        int64_t v = 0;
        if (plane == 0 && !flag) v = tq_decode_two_scale(code, bits, 0, signed_fine);
        else if (plane == 1 && flag) v = (int64_t)(code & ((1u << (bits - 1)) - 1u));
        y[i] = (int8_t)v;
    }
}

/* TSPTQ_PV_SUM_2S: acc = fine + (coarse << m) - b_zp * sum_j d_j (d the decoded row of P's code), then
 * sat8(requant1(acc, mult, shift) + out_zp): TSPTQ_BMM_2S's accumulator and bytes. code (rows, N); fine, coarse and
 * y (rows, M) (docs/integer-semantics.md "The NPU variant", P x V with a V-2SF P). */
static inline void tq_pv_sum_2s(const int32_t *fine, const int32_t *coarse, const uint8_t *code, int64_t rows,
                                int32_t N, int32_t M, int32_t bits, int32_t m, int32_t signed_fine, int32_t b_zp,
                                int32_t mult, int32_t shift, int32_t out_zp, int8_t *y) {
    int64_t r;
    int32_t j;
    for (r = 0; r < rows; r++) {
        int64_t dsum = 0;
        for (j = 0; j < N; j++) dsum += tq_decode_two_scale(code[r * N + j], bits, m, signed_fine);
        for (j = 0; j < M; j++) {
            int64_t k = r * M + j;
            int64_t acc = (int64_t)fine[k] + tq_shl64(coarse[k], m) - (int64_t)b_zp * dsum;
            y[k] = tq_sat8(tq_requant1(acc, mult, shift) + out_zp);
        }
    }
}

/* TSPTQ_TOKEN_MEAN_I16: x int16 (B, T, D), y int16 (B, D): the mean of tokens first..T-1 per channel, rounded half
 * away from zero onto the channel's step 2^shift_c, saturated to int16 (docs/integer-semantics.md "The NPU variant",
 * the patch-token mean of a token+avg head). */
static inline void tq_token_mean_i16(const int16_t *x, int64_t B, int32_t T, int32_t D, int32_t first,
                                     const int8_t *shift, int16_t *y) {
    int64_t b;
    int32_t t, j;
    for (b = 0; b < B; b++)
        for (j = 0; j < D; j++) {
            int64_t sum = 0;
            for (t = first; t < T; t++) sum += x[(b * T + t) * D + j];
            y[b * D + j] = (int16_t)tq_clamp64(
                tq_shl64(tq_div_round(sum, (int64_t)(T - first) << shift[j]), shift[j]), -32768, 32767);
        }
}

#endif
