/* tsptq runtime: little-endian reads of the model bytes (internal; header-only, so that the op files link alone). */
#ifndef TSPTQ_LE_H
#define TSPTQ_LE_H

#include <stdint.h>

static inline uint32_t tq_le16(const uint8_t *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8; }
static inline uint32_t tq_le32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
/* Unsigned / sign-extended value of w bytes (w in 1, 2, 4, 8). */
static inline uint64_t tq_le_u(const uint8_t *p, uint32_t w) {
    uint64_t v = 0;
    uint32_t i;
    for (i = 0; i < w; i++) v |= (uint64_t)p[i] << (8 * i);
    return v;
}
static inline int64_t tq_le_s(const uint8_t *p, uint32_t w) {
    uint64_t v = tq_le_u(p, w);
    if (w < 8 && (v >> (8 * w - 1)) & 1) v |= ~(uint64_t)0 << (8 * w);
    return (v >> 63) ? -(int64_t)(~v) - 1 : (int64_t)v;
}
static inline int32_t tq_s32(uint32_t v) { return (v >> 31) ? -(int32_t)(~v) - 1 : (int32_t)v; }

#endif
