/* TRANSPOSE of a rank <= 6 tensor of bytes: y[i_0..i_{r-1}] = x[j] with j_{perm[d]} = i_d. The innermost run is a
 * memcpy when the last axis stays last. */
#include <string.h>

#include "../kernels.h"

void tq_transpose(const uint8_t *x, const int32_t *shape, int32_t rank, const int32_t *perm, uint8_t *y) {
    ptrdiff_t xstride[6], ostride[6], oshape[6], idx[6], total = 1, run, i;
    int32_t d, outer_rank;
    if (rank <= 0) {
        y[0] = x[0];
        return;
    }
    xstride[rank - 1] = 1;
    for (d = rank - 2; d >= 0; d--) xstride[d] = xstride[d + 1] * shape[d + 1];
    for (d = 0; d < rank; d++) {
        oshape[d] = shape[perm[d]];
        ostride[d] = xstride[perm[d]];
        total *= oshape[d];
        idx[d] = 0;
    }
    if (total == 0) return;
    /* contiguous inner run: the last output axis is the last input axis */
    run = 1;
    outer_rank = rank;
    if (perm[rank - 1] == rank - 1) {
        run = oshape[rank - 1];
        outer_rank = rank - 1;
    }
    for (i = 0; i < total; i += run) {
        ptrdiff_t off = 0;
        for (d = 0; d < outer_rank; d++) off += idx[d] * ostride[d];
        if (run == 1)
            y[i] = x[off];
        else
            memcpy(y + i, x + off, (size_t)run);
        for (d = outer_rank - 1; d >= 0; d--) {
            if (++idx[d] < oshape[d]) break;
            idx[d] = 0;
        }
    }
}
