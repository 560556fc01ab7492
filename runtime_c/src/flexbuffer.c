/* tsptq runtime: the flexbuffer map reader of flexbuffer.h. */
#include <string.h>

#include "flexbuffer.h"
#include "le.h"

static int fx_width_ok(uint64_t w) { return w == 1 || w == 2 || w == 4 || w == 8; }

int tq_fx_map(const uint8_t *b, uint32_t n, tq_fxmap *m) {
    uint32_t pw, bw, root, kv;
    uint64_t off, size, kw, koff, klen;
    memset(m, 0, sizeof *m);
    if (n < 3) return 0;
    pw = b[n - 1];
    if (!fx_width_ok(pw) || (uint32_t)b[n - 2] >> 2 != 9 /* MAP */ || n < 2 + pw) return 0;
    bw = 1u << (b[n - 2] & 3);
    root = n - 2 - pw;
    off = tq_le_u(b + root, pw);
    if (off > root || root - off < 3 * (uint64_t)bw) return 0;
    m->pos = (uint32_t)(root - off);
    size = tq_le_u(b + m->pos - bw, bw);
    kw = tq_le_u(b + m->pos - 2 * bw, bw);
    koff = tq_le_u(b + m->pos - 3 * bw, bw);
    if (!fx_width_ok(kw) || size > (n - m->pos) / (bw + 1) || koff > m->pos - 3 * bw) return 0;
    kv = (uint32_t)(m->pos - 3 * bw - koff);
    if (kv < kw || (uint64_t)kv + size * kw > n) return 0;
    klen = tq_le_u(b + kv - kw, (uint32_t)kw);
    if (klen != size) return 0;
    m->b = b;
    m->n = n;
    m->width = bw;
    m->size = (uint32_t)size;
    m->keys = kv;
    m->key_width = (uint32_t)kw;
    return 1;
}

int tq_fx_find(const tq_fxmap *m, const char *key) {
    uint32_t i, len = (uint32_t)strlen(key);
    for (i = 0; i < m->size; i++) {
        uint32_t e = m->keys + i * m->key_width;
        uint64_t off = tq_le_u(m->b + e, m->key_width);
        uint32_t kp;
        if (off > e) continue;
        kp = (uint32_t)(e - off);
        if (kp + (uint64_t)len + 1 > m->n) continue;
        if (memcmp(m->b + kp, key, len) == 0 && m->b[kp + len] == 0) return (int)i;
    }
    return -1;
}

int tq_fx_int(const tq_fxmap *m, int i, int64_t *out) {
    uint32_t vp = m->pos + (uint32_t)i * m->width;
    uint32_t packed = m->b[m->pos + m->size * m->width + (uint32_t)i];
    uint32_t type = packed >> 2, w = 1u << (packed & 3);
    uint64_t u;
    if (type == 1) { /* INT */
        *out = tq_le_s(m->b + vp, m->width);
        return 1;
    }
    if (type == 2 || type == 26) { /* UINT, BOOL */
        u = tq_le_u(m->b + vp, m->width);
        if (u >> 63) return 0;
        *out = (int64_t)u;
        return 1;
    }
    if (type == 6 || type == 7) { /* INDIRECT_INT, INDIRECT_UINT */
        uint64_t off = tq_le_u(m->b + vp, m->width);
        uint32_t tp;
        if (off > vp) return 0;
        tp = (uint32_t)(vp - off);
        if ((uint64_t)tp + w > m->n) return 0;
        if (type == 6) {
            *out = tq_le_s(m->b + tp, w);
        } else {
            u = tq_le_u(m->b + tp, w);
            if (u >> 63) return 0;
            *out = (int64_t)u;
        }
        return 1;
    }
    return 0;
}
