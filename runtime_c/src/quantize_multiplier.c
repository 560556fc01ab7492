/* TFLite's QuantizeMultiplier (tensorflow/lite/kernels/internal/quantization_util.cc), for the builtin ops whose
 * multipliers TFLite derives in Prepare from float32 scales: real = (double)s_in * (double)s_w / (double)s_out.
 * This file is the runtime's only use of libm (frexp); everything else is integer-only. The Python twin is
 * tsptq.intmodel.fixedpoint.quantize_multiplier. */
#include <math.h>

#include "fixedpoint.h"

void tq_quantize_multiplier(double real, int32_t *multiplier, int32_t *shift) {
    int e = 0;
    double q, a;
    int64_t q_fixed;
    if (real == 0.0) {
        *multiplier = 0;
        *shift = 0;
        return;
    }
    q = frexp(real, &e); /* real = q * 2^e, |q| in [0.5, 1) */
    a = (q < 0 ? -q : q) * 2147483648.0 + 0.5; /* exact: |q| * 2^31 < 2^31 leaves room for the half */
    q_fixed = (int64_t)a; /* truncation of a positive value = floor: round half away from zero */
    if (q < 0) q_fixed = -q_fixed;
    if (q_fixed == ((int64_t)1 << 31)) {
        q_fixed /= 2;
        e += 1;
    }
    if (e < -31) {
        q_fixed = 0;
        e = 0;
    }
    *multiplier = (int32_t)q_fixed;
    *shift = e;
}
