/* TRANSPOSE of a rank <= 6 tensor of bytes: y[i_0..i_{r-1}] = x[j] with j_{perm[d]} = i_d. */
#include "../kernels.h"
#include "strided_copy.h"

void tq_transpose(const uint8_t *x, const int32_t *shape, int32_t rank, const int32_t *perm, uint8_t *y) {
    ptrdiff_t xstride[6], ostride[6], oshape[6];
    int32_t d;
    if (rank <= 0) {
        y[0] = x[0];
        return;
    }
    xstride[rank - 1] = 1;
    for (d = rank - 2; d >= 0; d--) xstride[d] = xstride[d + 1] * shape[d + 1];
    for (d = 0; d < rank; d++) {
        oshape[d] = shape[perm[d]];
        ostride[d] = xstride[perm[d]];
    }
    tq_strided_copy(x, 0, ostride, oshape, rank, y);
}
