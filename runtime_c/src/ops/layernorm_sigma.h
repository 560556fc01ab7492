/* The standard deviation of a LayerNorm row in fixed point (docs/integer-semantics.md; tsptq.intmodel.kernels
 * layernorm_sigma), written once for TSPTQ_LAYERNORM_2S (layernorm_2s.c) and the NPU variant's TSPTQ_LN_RSTD
 * (runtime_c/tflm/variant_kernels.h). From a row's S = sum x_c and sq = sum x_c^2 (D values):
 *   V = D sq - S^2 + eps (>= 0: D sq >= S^2), e = clamp((62 - bit_length(V)) / 2, 0, TQ_SIGMA_EXTRA_BITS),
 *   sigma = max(1, isqrt(V << 2e)),
 * the extra fraction bits e keeping V << 2e below 2^63. The callers' bounds keep V itself below 2^63. */
#ifndef TSPTQ_LAYERNORM_SIGMA_H
#define TSPTQ_LAYERNORM_SIGMA_H

#include <stdint.h>

#include "../fixedpoint.h"

#define TQ_SIGMA_EXTRA_BITS 20 /* kernels.py SIGMA_EXTRA_BITS */

static inline int64_t tq_ln_sigma(int64_t S, int64_t sq, int32_t D, int64_t eps, int *e_out) {
    const int64_t V = (int64_t)D * sq - S * S + eps;
    int e = (62 - tq_bit_length64((uint64_t)V)) / 2;
    int64_t sigma;
    e = e < 0 ? 0 : (e > TQ_SIGMA_EXTRA_BITS ? TQ_SIGMA_EXTRA_BITS : e);
    sigma = tq_isqrt64((uint64_t)tq_shl64(V, 2 * e));
    *e_out = e;
    return sigma < 1 ? 1 : sigma;
}

#endif
