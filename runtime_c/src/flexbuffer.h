/* tsptq runtime: a minimal, bounds-checked flexbuffer map reader (internal): the root map of a custom op's options
 * and of a tensor's custom quantization details, integer values only. Nothing outside b[0..n) is read. */
#ifndef TSPTQ_FLEXBUFFER_H
#define TSPTQ_FLEXBUFFER_H

#include <stdint.h>

typedef struct {
    const uint8_t *b;
    uint32_t n, pos, width, size, keys, key_width;
} tq_fxmap;

/* Open the root of a flexbuffer as a map; 0 if it is not a readable map. */
int tq_fx_map(const uint8_t *b, uint32_t n, tq_fxmap *m);
/* Index of key in the map, -1 if absent (or unreadable). */
int tq_fx_find(const tq_fxmap *m, const char *key);
/* Integer value i (INT, UINT, BOOL, INDIRECT_INT/UINT); 0 if it is not an integer. */
int tq_fx_int(const tq_fxmap *m, int i, int64_t *out);

#endif
