/* tsptq runtime: the flatbuffer reader of flatbuffer.h. */
#include <string.h>

#include "flatbuffer.h"

int tq_fb_corrupt(tq_fb_rd *r, const char *what) {
    if (!r->err) r->err = tq_fail(r->st, TSPTQ_ERR_CORRUPTED, "corrupted or truncated file: %s is out of bounds "
                                                              "(file of %u bytes)", what, r->n);
    return 0;
}

int tq_fb_open(tq_fb_rd *r, uint32_t pos, tq_fb_tbl *t, const char *what) {
    int64_t vt;
    memset(t, 0, sizeof *t);
    if (r->err) return 0;
    if (pos > r->n - 4 || (pos & 3)) return tq_fb_corrupt(r, what);
    vt = (int64_t)pos - (int64_t)tq_s32(tq_le32(r->b + pos));
    if (vt < 0 || vt > (int64_t)r->n - 4 || (vt & 1)) return tq_fb_corrupt(r, what);
    t->pos = pos;
    t->vt = (uint32_t)vt;
    t->vtsize = tq_le16(r->b + t->vt);
    t->objsize = tq_le16(r->b + t->vt + 2);
    if (t->vtsize < 4 || (t->vtsize & 1) || t->vt + t->vtsize > r->n || t->objsize < 4 || t->objsize > r->n - pos) {
        memset(t, 0, sizeof *t);
        return tq_fb_corrupt(r, what);
    }
    return 1;
}

/* Position of field `id` (of `size` bytes) of table t, 0 when absent or on error. */
uint32_t tq_fb_pos(tq_fb_rd *r, const tq_fb_tbl *t, uint32_t id, uint32_t size, const char *what) {
    uint32_t slot = 4 + 2 * id, fo;
    if (r->err || !t->vtsize || slot + 2 > t->vtsize) return 0;
    fo = tq_le16(r->b + t->vt + slot);
    if (!fo) return 0;
    if (fo < 4 || fo + size > t->objsize) {
        tq_fb_corrupt(r, what);
        return 0;
    }
    return t->pos + fo;
}

uint64_t tq_fb_uint(tq_fb_rd *r, const tq_fb_tbl *t, uint32_t id, uint32_t size, uint64_t def, const char *what) {
    uint32_t p = tq_fb_pos(r, t, id, size, what);
    return p ? tq_le_u(r->b + p, size) : def;
}
int64_t tq_fb_int(tq_fb_rd *r, const tq_fb_tbl *t, uint32_t id, uint32_t size, int64_t def, const char *what) {
    uint32_t p = tq_fb_pos(r, t, id, size, what);
    return p ? tq_le_s(r->b + p, size) : def;
}

/* Follow the uoffset at position p. */
static int deref(tq_fb_rd *r, uint32_t p, uint32_t *target, const char *what) {
    uint64_t tgt = (uint64_t)p + tq_le32(r->b + p);
    if (tgt > (uint64_t)r->n - 4) return tq_fb_corrupt(r, what);
    *target = (uint32_t)tgt;
    return 1;
}

/* Vector field (elements of `esize` bytes); absent -> empty, returns 1; error -> 0. */
int tq_fb_field_vec(tq_fb_rd *r, const tq_fb_tbl *t, uint32_t id, uint32_t esize, tq_fb_vec *v, const char *what) {
    uint32_t p = tq_fb_pos(r, t, id, 4, what), tgt;
    v->start = v->len = 0;
    if (r->err) return 0;
    if (!p) return 1;
    if (!deref(r, p, &tgt, what)) return 0;
    v->len = tq_le32(r->b + tgt);
    v->start = tgt + 4;
    if ((uint64_t)v->len * esize > (uint64_t)(r->n - v->start)) {
        v->len = 0;
        return tq_fb_corrupt(r, what);
    }
    return 1;
}

/* Sub-table field; absent -> 0 (t zeroed) with no error. */
int tq_fb_field_table(tq_fb_rd *r, const tq_fb_tbl *t, uint32_t id, tq_fb_tbl *out, const char *what) {
    uint32_t p = tq_fb_pos(r, t, id, 4, what), tgt;
    memset(out, 0, sizeof *out);
    if (!p || !deref(r, p, &tgt, what)) return 0;
    return tq_fb_open(r, tgt, out, what);
}

int tq_fb_vec_table(tq_fb_rd *r, const tq_fb_vec *v, uint32_t i, tq_fb_tbl *out, const char *what) {
    uint32_t tgt;
    memset(out, 0, sizeof *out);
    if (r->err || i >= v->len) return 0;
    if (!deref(r, v->start + 4 * i, &tgt, what)) return 0;
    return tq_fb_open(r, tgt, out, what);
}

int32_t tq_fb_vec_i32(tq_fb_rd *r, const tq_fb_vec *v, uint32_t i) {
    return tq_s32(tq_le32(r->b + v->start + 4 * (size_t)i));
}

int tq_fb_str_eq(tq_fb_rd *r, const tq_fb_vec *s, const char *lit) {
    size_t n = strlen(lit);
    return s->len == n && memcmp(r->b + s->start, lit, n) == 0;
}
