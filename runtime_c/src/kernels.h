/* tsptq runtime: the kernel interface (internal). One source file per op in src/ops/, the math in
 * src/fixedpoint.h. Every kernel is the C form of the Python reference in toolchain/tsptq/intmodel/kernels.py and of
 * docs/integer-semantics.md, byte for byte. C99, no allocation, no libc beyond string.h/stdint.h.
 *
 * Conventions:
 * - Activations are row-major; "rows" = the product of all leading dimensions (batch included).
 * - Per-channel arrays have one entry per output channel (FC/conv) or per last-axis channel (ADD, LayerNorm).
 *   Where a kernel takes `n_params`, 1 means one value broadcast over all channels.
 * - Code bytes of two-scale/log2/sign-split tensors are uint8; affine codes are int8. Kernels that accept either
 *   take `const uint8_t *` and an `input_signed` flag, or are typed as documented below.
 * - `scratch` arguments point into the arena; the size each needs is given in its comment (bytes).
 */
#ifndef TSPTQ_KERNELS_H
#define TSPTQ_KERNELS_H

#include <stddef.h>
#include <stdint.h>

/* Code kinds (custom-op options in_kind / a_kind / out_kind). */
enum { TQ_UNIFORM = 0, TQ_CHANNEL_POW2 = 1, TQ_TWO_SCALE = 2, TQ_SIGN_SPLIT = 3, TQ_LOG2 = 4 };

/* --- builtins (TFLite's semantics) -------------------------------------------------------------------------- */

/* CONV_2D, kernel == stride == p, VALID: x (B,H,W,C) int8, w (O,p,p,C), bias (O), per-channel mult/shift (O).
 * Requantization: MBQM (two roundings). y (B,H/p,W/p,O). */
void tq_conv2d_patches(const int8_t *x, int32_t B, int32_t H, int32_t W, int32_t C, int32_t in_zp,
                       const int8_t *w, int32_t O, int32_t p, const int32_t *bias,
                       const int32_t *mult, const int32_t *shift, int32_t out_zp, int8_t *y);

/* FULLY_CONNECTED: x (rows, I) int8, w (O, I), bias (O) or NULL, mult/shift (n_params = O or 1).
 * per_channel != 0: MBQM1 (single rounding, half up); else MBQM. y (rows, O). */
void tq_fully_connected(const int8_t *x, int32_t rows, int32_t I, int32_t in_zp, const int8_t *w, int32_t O,
                        const int32_t *bias, const int32_t *mult, const int32_t *shift, int32_t n_params,
                        int per_channel, int32_t out_zp, int8_t *y);

/* The weights of FULLY_CONNECTED and TSPTQ_FC_2S (w: O rows of I int8) prepacked once for the host SIMD builds'
 * matrix products (AVX-512 VNNI, AMX: vnni.h tqv_prepack), which otherwise pack them on every call:
 * tq_fc_prepack_size is the bytes (64-bit), 0 where the build has no such product (the reference, AVX2 and Arm builds)
 * or I is beyond it; tq_fc_prepack writes them into dst (64-byte aligned). TSPTQ_FC_2S's depend on its input code
 * (the AVX-512 VNNI build appends a channel_pow2 code's shifted channels as columns). tq_fully_connected_pre /
 * tq_fc_2s_pre are the kernels reading them (pre: the prepack of this w, input code and shifts, or NULL), with the
 * same output bytes. */
uint64_t tq_fc_prepack_size(int32_t I, int32_t O);
void tq_fc_prepack(const int8_t *w, int32_t I, int32_t O, void *dst);
uint64_t tq_fc_2s_prepack_size(int32_t I, int32_t O, int32_t in_kind, const int8_t *in_shift);
void tq_fc_2s_prepack(const int8_t *w, int32_t I, int32_t O, int32_t in_kind, const int8_t *in_shift, void *dst);
void tq_fully_connected_pre(const int8_t *x, int32_t rows, int32_t I, int32_t in_zp, const int8_t *w, int32_t O,
                            const int32_t *bias, const int32_t *mult, const int32_t *shift, int32_t n_params,
                            int per_channel, int32_t out_zp, int8_t *y, const void *pre);
void tq_fc_2s_pre(const uint8_t *x, int32_t rows, int32_t I, int32_t in_kind, int32_t in_zp, const int8_t *in_shift,
                  int32_t bits, int32_t m, int32_t signed_fine, int32_t neg_mult, int32_t neg_shift, const int8_t *w,
                  int32_t O, const int32_t *bias, const int32_t *out_mult, const int32_t *out_shift, int32_t out_zp,
                  int8_t *y, int32_t *scratch, const void *pre);

/* BATCH_MATMUL: a (batch, N, K) int8, b (batch, K, M) or (batch, M, K) when adj_y; MBQM. y (batch, N, M). */
void tq_batch_matmul(const int8_t *a, const int8_t *b, int32_t batch, int32_t N, int32_t K, int32_t M, int adj_y,
                     int32_t a_zp, int32_t b_zp, int32_t mult, int32_t shift, int32_t out_zp, int8_t *y);

/* Rows [r0, r1) of a batch of matrix products (batch * N output rows of M, row 0 at y), each run of one matrix's
 * rows a tq_batch_matmul with matrix t's output code: mult[t % H], shift[t % H], out_zp[t % H]. BATCH_MATMUL's
 * thread part (H = 1: one code) and TSPTQ_BMM_HEADS's (q.k^T with one output code per head, adj_y: batch runs over
 * (..., H), b (batch, M, K)). */
void tq_bmm_heads(const int8_t *a, const int8_t *b, int64_t r0, int64_t r1, int32_t N, int32_t K, int32_t M,
                  int32_t H, int adj_y, int32_t a_zp, int32_t b_zp, const int32_t *mult, const int32_t *shift,
                  const int32_t *out_zp, int8_t *y);

/* ADD (builtin: n_params = 1) and TSPTQ_ADD_2S (n_params = C): params is (6, n_params) int32, rows
 * a_mult, a_shift, b_mult, b_shift, out_mult, out_shift; left shift 20. a, b, y (rows, C). */
void tq_add(const int8_t *a, const int8_t *b, int32_t rows, int32_t C, int32_t a_zp, int32_t b_zp,
            const int32_t *params, int32_t n_params, int32_t out_zp, int8_t *y);

/* TRANSPOSE of a rank <= 6 int8/uint8 tensor (byte moves). */
void tq_transpose(const uint8_t *x, const int32_t *shape, int32_t rank, const int32_t *perm, uint8_t *y);

/* CONCATENATION along `axis` of n inputs with equal dims elsewhere (byte moves); shapes[i] has `rank` entries.
 * Inputs whose leading (batch) dim is 1 while the output's is larger are broadcast (constants). */
void tq_concatenation(const uint8_t *const *xs, const int32_t *const *shapes, int32_t n, int32_t rank,
                      int32_t axis, uint8_t *y);

/* STRIDED_SLICE with positive strides, no masks (byte moves); begin/end/strides have `rank` entries. */
void tq_strided_slice(const uint8_t *x, const int32_t *shape, int32_t rank, const int32_t *begin,
                      const int32_t *end, const int32_t *strides, uint8_t *y);

/* --- TSPTQ custom ops ------------------------------------------------------------------------------------------ */

/* TSPTQ_LAYERNORM_2S over the last axis D (<= 4096: the int64 bounds in ops/layernorm_2s.c). */
void tq_layernorm_2s(const int8_t *x, int32_t rows, int32_t D, int32_t in_zp, const int8_t *in_shift,
                     const int32_t *gamma_mul, const int64_t *beta_bias, int64_t eps, int32_t out_zp,
                     int32_t out_shift, int8_t *y);
/* The same with an int16 input (TSPTQ_LAYERNORM_2S_I16 on the NPU variant's int16 residual stream): x_c = q_c, as
 * tq_layernorm_2s with in_zp 0 and every in_shift 0 (D <= 4096, |q_c| <= 2^15). */
void tq_layernorm_2s_x16(const int16_t *x, int32_t rows, int32_t D, const int32_t *gamma_mul,
                         const int64_t *beta_bias, int64_t eps, int32_t out_zp, int32_t out_shift, int8_t *y);

/* TSPTQ_SOFTMAX_2S over the last axis N (<= 2047). out_kind: TQ_UNIFORM (int8 bytes), TQ_TWO_SCALE, TQ_LOG2
 * (uint8 bytes). scratch: 4 * N bytes (the row's exp values). */
void tq_softmax_2s(const int8_t *x, int32_t rows, int32_t N, const int32_t *exp_lut, int32_t out_kind,
                   int32_t mult, int32_t shift, int32_t out_zp, int32_t bits, int32_t m, int32_t signed_fine,
                   uint8_t *y, int32_t *scratch);

/* TSPTQ_SOFTMAX_2S with one exp table per head: rows [r0, r1) of x (rows of N, row 0 at x and y), row r reading the
 * 256 entries of table (r / R) % L (x (..., L, R, N); L = 1: every row table 0, R unused), each run of one head's
 * rows a tq_softmax_2s call with its table. scratch: 4 * N bytes. */
void tq_softmax_2s_heads(const int8_t *x, int64_t r0, int64_t r1, int32_t N, int64_t R, int32_t L,
                         const int32_t *exp_lut, int32_t out_kind, int32_t mult, int32_t shift, int32_t out_zp,
                         int32_t bits, int32_t m, int32_t signed_fine, uint8_t *y, int32_t *scratch);

/* TSPTQ_GELU_2S: y[i] = lut[x[i] + 128] (input_signed) or lut[x[i]]. */
void tq_lookup(const uint8_t *x, size_t n, int input_signed, const uint8_t *lut, uint8_t *y);

/* TSPTQ_GELU_2S with in_shift (a per-channel power-of-two input code): x (rows, channels); channel c reads the
 * 256 entries of its shift level, y[r][c] = lut[256 * in_shift[c] + x[r][c] (+ 128 when input_signed)]. */
void tq_lookup_channels(const uint8_t *x, size_t rows, size_t channels, int input_signed, const uint8_t *lut,
                        const int8_t *in_shift, uint8_t *y);

/* TSPTQ_FC_2S: x (rows, I) codes (int8 for uniform/channel_pow2, uint8 for two_scale/sign_split),
 * w (O, I), bias (O), out_mult/out_shift (O), in_shift (I). Requantization: requant1 (single rounding, half away).
 * scratch: 4 * I bytes (the row's decoded input). */
void tq_fc_2s(const uint8_t *x, int32_t rows, int32_t I, int32_t in_kind, int32_t in_zp, const int8_t *in_shift,
              int32_t bits, int32_t m, int32_t signed_fine, int32_t neg_mult, int32_t neg_shift, const int8_t *w,
              int32_t O, const int32_t *bias, const int32_t *out_mult, const int32_t *out_shift, int32_t out_zp,
              int8_t *y, int32_t *scratch);

/* TSPTQ_BMM_2S: a (batch, N, N) uint8 codes (two_scale or log2), b (batch, N, M) int8 (V); requant1.
 * scratch: 4 * N bytes. */
void tq_bmm_2s(const uint8_t *a, const int8_t *b, int32_t batch, int32_t N, int32_t M, int32_t a_kind,
               int32_t bits, int32_t m, int32_t signed_fine, int32_t log2_frac, int32_t b_zp, int32_t mult,
               int32_t shift, int32_t out_zp, int8_t *y, int32_t *scratch);

#endif
