/* STRIDED_SLICE with positive strides and no masks (byte moves). begin/end follow Python's slicing: negative values
 * count from the end, both are clamped to [0, dim]; output dim d has max(0, ceil((end_d - begin_d) / stride_d))
 * entries (the caller sizes y the same way). */
#include "../kernels.h"
#include "strided_copy.h"

static inline int32_t norm_index(int32_t v, int32_t dim) {
    if (v < 0) v += dim;
    return v < 0 ? 0 : (v > dim ? dim : v);
}

void tq_strided_slice(const uint8_t *x, const int32_t *shape, int32_t rank, const int32_t *begin,
                      const int32_t *end, const int32_t *strides, uint8_t *y) {
    ptrdiff_t xstride[6], ostride[6], oshape[6], base = 0;
    int32_t d;
    if (rank <= 0) {
        y[0] = x[0];
        return;
    }
    xstride[rank - 1] = 1;
    for (d = rank - 2; d >= 0; d--) xstride[d] = xstride[d + 1] * shape[d + 1];
    for (d = 0; d < rank; d++) {
        int32_t lo = norm_index(begin[d], shape[d]), hi = norm_index(end[d], shape[d]);
        base += lo * xstride[d];
        ostride[d] = strides[d] * xstride[d];
        oshape[d] = hi > lo ? (hi - lo + strides[d] - 1) / strides[d] : 0;
    }
    tq_strided_copy(x, base, ostride, oshape, rank, y);
}
