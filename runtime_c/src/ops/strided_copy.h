/* The byte mover shared by TRANSPOSE and STRIDED_SLICE: y (row-major, dims oshape) gets x[base + sum_d i_d *
 * ostride_d]. When the innermost output axis is contiguous in x (ostride = 1) each innermost row is one memcpy. */
#ifndef TSPTQ_STRIDED_COPY_H
#define TSPTQ_STRIDED_COPY_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

static inline void tq_strided_copy(const uint8_t *x, ptrdiff_t base, const ptrdiff_t *ostride,
                                   const ptrdiff_t *oshape, int32_t rank, uint8_t *y) {
    ptrdiff_t idx[6], total = 1, run = 1, i;
    int32_t d, outer_rank = rank;
    for (d = 0; d < rank; d++) {
        total *= oshape[d];
        idx[d] = 0;
    }
    if (total == 0) return;
    if (ostride[rank - 1] == 1) {
        run = oshape[rank - 1];
        outer_rank = rank - 1;
    }
    for (i = 0; i < total; i += run) {
        ptrdiff_t off = base;
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

#endif
