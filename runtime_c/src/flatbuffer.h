/* tsptq runtime: a minimal, bounds-checked flatbuffer reader for the TFLite schema fields tsptq files use
 * (internal). Every offset, length and index is checked before it is read: nothing outside b[0..n) is touched,
 * whatever the bytes hold. The first out-of-bounds read records TSPTQ_ERR_CORRUPTED ("corrupted or truncated file:
 * <what> is out of bounds") in the reader's status; every later read is then a no-op returning 0 / the default. */
#ifndef TSPTQ_FLATBUFFER_H
#define TSPTQ_FLATBUFFER_H

#include <stdint.h>

#include "runtime.h"

typedef struct {
    const uint8_t *b;
    uint32_t n;
    tsptq_status *st;
    int err; /* first error's code (0: none) */
} tq_fb_rd;

typedef struct {
    uint32_t pos, vt, vtsize, objsize;
} tq_fb_tbl;

typedef struct {
    uint32_t start, len; /* elements at b[start ..) */
} tq_fb_vec;

/* Record a corrupted-file error about `what` (the first one only); returns 0. */
int tq_fb_corrupt(tq_fb_rd *r, const char *what);
/* Open the table at `pos` (its vtable checked); 0 on error. */
int tq_fb_open(tq_fb_rd *r, uint32_t pos, tq_fb_tbl *t, const char *what);
/* Position of field `id` (of `size` bytes) of table t, 0 when absent or on error. */
uint32_t tq_fb_pos(tq_fb_rd *r, const tq_fb_tbl *t, uint32_t id, uint32_t size, const char *what);
/* Scalar field `id` of `size` bytes, unsigned / sign-extended; `def` when absent or on error. */
uint64_t tq_fb_uint(tq_fb_rd *r, const tq_fb_tbl *t, uint32_t id, uint32_t size, uint64_t def, const char *what);
int64_t tq_fb_int(tq_fb_rd *r, const tq_fb_tbl *t, uint32_t id, uint32_t size, int64_t def, const char *what);
/* Vector field (elements of `esize` bytes); absent -> empty, returns 1; error -> 0. */
int tq_fb_field_vec(tq_fb_rd *r, const tq_fb_tbl *t, uint32_t id, uint32_t esize, tq_fb_vec *v, const char *what);
/* Sub-table field; absent -> 0 (out zeroed) with no error. */
int tq_fb_field_table(tq_fb_rd *r, const tq_fb_tbl *t, uint32_t id, tq_fb_tbl *out, const char *what);
/* Table i of a vector of tables; 0 if out of range or on error. */
int tq_fb_vec_table(tq_fb_rd *r, const tq_fb_vec *v, uint32_t i, tq_fb_tbl *out, const char *what);
/* Element i of an int32 vector (i < v->len: the vector's bounds were checked when it was read). */
int32_t tq_fb_vec_i32(tq_fb_rd *r, const tq_fb_vec *v, uint32_t i);
/* Whether a string (byte vector) equals a literal. */
int tq_fb_str_eq(tq_fb_rd *r, const tq_fb_vec *s, const char *lit);

#endif
