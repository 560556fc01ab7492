/* TSPTQ_SOFTMAX_2S (docs/integer-semantics.md; intkernels.softmax_2s / encode_probability / encode_two_scale).
 * scratch: N int32 (the row's exp values). */
#include "../fixedpoint.h"
#include "../kernels.h"

#define TQ_EXP_FRAC_BITS 20
#define TQ_PROB_FRAC_BITS 30
#define TQ_TWO_SCALE_FRAC_BITS 16

/* V-2SF encoding of v (Q16 units of the fine step): the nearest representable value. */
static inline uint8_t encode_two_scale(int64_t v, int32_t bits, int32_t m, int32_t signed_fine) {
    const int64_t field_max = ((int64_t)1 << (bits - 1)) - 1;
    const int64_t lo = signed_fine ? -((int64_t)1 << (bits - 2)) : 0;
    const int64_t hi = signed_fine ? ((int64_t)1 << (bits - 2)) - 1 : field_max;
    const int64_t c0 = (hi >> m) + 1;
    int64_t fine = tq_clamp64(tq_rshift_round(v, TQ_TWO_SCALE_FRAC_BITS), lo, hi);
    int64_t coarse = tq_clamp64(tq_rshift_round(v, TQ_TWO_SCALE_FRAC_BITS + m), c0, field_max);
    if (tq_shl64(v, 1) >= tq_shl64(hi + tq_shl64(c0, m), TQ_TWO_SCALE_FRAC_BITS))
        return (uint8_t)(coarse | ((int64_t)1 << (bits - 1)));
    return (uint8_t)(fine & field_max);
}

/* round(-log2(p / 2^30)) for a Q30 probability, clamped; the zero code 2^bits - 1 for p == 0. */
static inline uint8_t encode_log2(int64_t p, int32_t bits) {
    const int64_t zero = ((int64_t)1 << bits) - 1;
    int k;
    int64_t q;
    if (p <= 0) return (uint8_t)zero;
    k = tq_bit_length64((uint64_t)p) - 1;
    q = TQ_PROB_FRAC_BITS - k - ((uint64_t)p * (uint64_t)p >= ((uint64_t)1 << (2 * k + 1)) ? 1 : 0);
    return (uint8_t)tq_clamp64(q, 0, zero);
}

void tq_softmax_2s(const int8_t *x, int32_t rows, int32_t N, const int32_t *exp_lut, int32_t out_kind,
                   int32_t mult, int32_t shift, int32_t out_zp, int32_t bits, int32_t m, int32_t signed_fine,
                   uint8_t *y, int32_t *scratch) {
    int32_t r, i;
    for (r = 0; r < rows; r++) {
        const int8_t *xr = x + (ptrdiff_t)r * N;
        uint8_t *yr = y + (ptrdiff_t)r * N;
        int32_t mx = -128;
        int64_t E = 0, recip;
        for (i = 0; i < N; i++)
            if (xr[i] > mx) mx = xr[i];
        for (i = 0; i < N; i++) {
            scratch[i] = exp_lut[mx - xr[i]];
            E += scratch[i];
        }
        /* 2^50 / E, floor (numpy's // gives 0 for a zero divisor) */
        if (E > 0)
            recip = ((int64_t)1 << (TQ_PROB_FRAC_BITS + TQ_EXP_FRAC_BITS)) / E;
        else if (E < 0)
            recip = -((((int64_t)1 << (TQ_PROB_FRAC_BITS + TQ_EXP_FRAC_BITS)) - E - 1) / -E);
        else
            recip = 0;
        for (i = 0; i < N; i++) {
            const int64_t p = tq_rshift_round((int64_t)scratch[i] * recip, TQ_EXP_FRAC_BITS); /* Q30 */
            if (out_kind == TQ_TWO_SCALE)
                yr[i] = encode_two_scale(tq_rshift_round(p * mult, shift), bits, m, signed_fine);
            else if (out_kind == TQ_LOG2)
                yr[i] = encode_log2(p, bits);
            else
                yr[i] = (uint8_t)tq_sat8(tq_rshift_round(p * mult, shift) + out_zp);
        }
    }
}
