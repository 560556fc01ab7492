/* STRIDED_SLICE with positive strides and no masks (byte moves). begin/end follow Python's slicing: negative values
 * count from the end, both are clamped to [0, dim]; output dim d has max(0, ceil((end_d - begin_d) / stride_d))
 * entries (the caller sizes y the same way). */
#include <string.h>

#include "../kernels.h"

static inline int32_t norm_index(int32_t v, int32_t dim) {
    if (v < 0) v += dim;
    return v < 0 ? 0 : (v > dim ? dim : v);
}

void tq_strided_slice(const uint8_t *x, const int32_t *shape, int32_t rank, const int32_t *begin,
                      const int32_t *end, const int32_t *strides, uint8_t *y) {
    ptrdiff_t xstride[6], cnt[6], b[6], st[6], idx[6], total = 1, i, run;
    int32_t d, outer_rank;
    if (rank <= 0) {
        y[0] = x[0];
        return;
    }
    xstride[rank - 1] = 1;
    for (d = rank - 2; d >= 0; d--) xstride[d] = xstride[d + 1] * shape[d + 1];
    for (d = 0; d < rank; d++) {
        int32_t lo = norm_index(begin[d], shape[d]), hi = norm_index(end[d], shape[d]);
        b[d] = lo;
        st[d] = strides[d];
        cnt[d] = hi > lo ? (hi - lo + strides[d] - 1) / strides[d] : 0;
        total *= cnt[d];
        idx[d] = 0;
    }
    if (total == 0) return;
    run = 1;
    outer_rank = rank;
    if (st[rank - 1] == 1) {
        run = cnt[rank - 1];
        outer_rank = rank - 1;
    }
    for (i = 0; i < total; i += run) {
        ptrdiff_t off = 0;
        for (d = 0; d < rank; d++) off += (b[d] + idx[d] * st[d]) * xstride[d];
        if (run == 1)
            y[i] = x[off];
        else
            memcpy(y + i, x + off, (size_t)run);
        for (d = outer_rank - 1; d >= 0; d--) {
            if (++idx[d] < cnt[d]) break;
            idx[d] = 0;
        }
    }
}
