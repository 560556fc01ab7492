/* CONCATENATION along `axis` (byte moves). Inputs whose leading dim is 1 while the output's is larger are broadcast
 * along it (the class token constant concatenated to a batch of patch sequences). */
#include <string.h>

#include "../kernels.h"

void tq_concatenation(const uint8_t *const *xs, const int32_t *const *shapes, int32_t n, int32_t rank,
                      int32_t axis, uint8_t *y) {
    ptrdiff_t batch = 1, mid = 1, inner = 1, t, r, off = 0;
    int32_t i, d;
    if (n <= 0 || rank <= 0) return;
    if (axis < 0) axis += rank;
    for (i = 0; i < n; i++)
        if (shapes[i][0] > batch) batch = shapes[i][0];
    if (axis == 0) batch = 1; /* concatenation along the leading axis itself: no broadcast */
    for (d = 1; d < axis; d++) mid *= shapes[0][d];
    for (d = axis + 1; d < rank; d++) inner *= shapes[0][d];
    /* output outer index = (t, r) with t over the leading dim and r over dims 1..axis-1 */
    for (t = 0; t < batch; t++)
        for (r = 0; r < mid; r++)
            for (i = 0; i < n; i++) {
                const ptrdiff_t chunk = (ptrdiff_t)shapes[i][axis] * inner;
                const ptrdiff_t ti = (axis == 0 || shapes[i][0] == 1) ? 0 : t;
                if (axis == 0) {
                    ptrdiff_t total = chunk * mid; /* mid == 1 here: the whole input */
                    memcpy(y + off, xs[i], (size_t)total);
                    off += total;
                } else {
                    memcpy(y + off, xs[i] + (ti * mid + r) * chunk, (size_t)chunk);
                    off += chunk;
                }
            }
}
