/* TSPTQ_GELU_2S: a 256-entry table lookup (intkernels.lookup). */
#include "../kernels.h"

void tq_lookup(const uint8_t *x, size_t n, int input_signed, const uint8_t *lut, uint8_t *y) {
    size_t i;
    if (input_signed) {
        for (i = 0; i < n; i++) y[i] = lut[(uint8_t)(x[i] ^ 0x80u)]; /* int8 q + 128 */
    } else {
        for (i = 0; i < n; i++) y[i] = lut[x[i]];
    }
}
