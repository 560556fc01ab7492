/* The byte mover shared by TRANSPOSE and STRIDED_SLICE: y (row-major, dims oshape) gets x[base + sum_d i_d *
 * ostride_d]. When the innermost output axis is contiguous in x (ostride = 1) each innermost row is one copy; the
 * axis above it is walked by its stride in a tight loop, and the usual row lengths (a head's 16, 32 or 64 channels,
 * the attention layout's transposes) get fixed-size copies the compiler turns into a few vector moves. */
#ifndef TSPTQ_STRIDED_COPY_H
#define TSPTQ_STRIDED_COPY_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* n rows of `run` bytes: y, y + run, ... from x, x + stride, ... */
static inline void tq_copy_rows(const uint8_t *x, ptrdiff_t stride, ptrdiff_t n, ptrdiff_t run, uint8_t *y) {
    ptrdiff_t j;
#define TQ_COPY_ROWS_FIXED(len)                                                                                        \
    for (j = 0; j < n; j++) memcpy(y + j * (len), x + j * stride, (len));                                              \
    return
    switch (run) {
    case 16: TQ_COPY_ROWS_FIXED(16);
    case 32: TQ_COPY_ROWS_FIXED(32);
    case 64: TQ_COPY_ROWS_FIXED(64);
    default: break;
    }
#undef TQ_COPY_ROWS_FIXED
    if (run == 1)
        for (j = 0; j < n; j++) y[j] = x[j * stride];
    else
        for (j = 0; j < n; j++) memcpy(y + j * run, x + j * stride, (size_t)run);
}

static inline void tq_strided_copy(const uint8_t *x, ptrdiff_t base, const ptrdiff_t *ostride,
                                   const ptrdiff_t *oshape, int32_t rank, uint8_t *y) {
    ptrdiff_t idx[6], total = 1, run = 1, inner_n, inner_stride, i;
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
    if (outer_rank == 0) {
        memcpy(y, x + base, (size_t)run);
        return;
    }
    /* the innermost walked axis as one tq_copy_rows call; idx[] counts the axes above it */
    inner_n = oshape[outer_rank - 1];
    inner_stride = ostride[outer_rank - 1];
    for (i = 0; i < total; i += run * inner_n) {
        ptrdiff_t off = base;
        for (d = 0; d < outer_rank - 1; d++) off += idx[d] * ostride[d];
        tq_copy_rows(x + off, inner_stride, inner_n, run, y + i);
        for (d = outer_rank - 2; d >= 0; d--) {
            if (++idx[d] < oshape[d]) break;
            idx[d] = 0;
        }
    }
}

#endif
