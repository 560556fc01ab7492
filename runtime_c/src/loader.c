/* tsptq runtime: the .tflite loader. A minimal flatbuffer reader for the TFLite schema fields tsptq files use, a
 * minimal flexbuffer map reader for the custom ops' integer options, and the checks of toolchain/tflite_import.py
 * (plus the preconditions the kernels rely on: shapes that fit, parameters in range, accumulators that cannot
 * overflow). Every offset, length and index is checked before it is read: nothing outside bytes[0..len) is touched,
 * whatever the bytes hold. No allocation, no libc beyond string.h.
 */
#include <string.h>

#include "fixedpoint.h"
#include "kernels.h"
#include "runtime.h"

const char *const tq_op_names[TQ_OP_COUNT] = {
    "CONV_2D", "RESHAPE", "CONCATENATION", "ADD", "FULLY_CONNECTED", "TRANSPOSE", "BATCH_MATMUL", "STRIDED_SLICE",
    "TSPTQ_LAYERNORM_2S", "TSPTQ_SOFTMAX_2S", "TSPTQ_GELU_2S", "TSPTQ_FC_2S", "TSPTQ_BMM_2S", "TSPTQ_ADD_2S"};

/* TFLite BuiltinOperator names by code (for the "unsupported op" message). */
static const char *const builtin_names[] = {
    "ADD", "AVERAGE_POOL_2D", "CONCATENATION", "CONV_2D", "DEPTHWISE_CONV_2D", "DEPTH_TO_SPACE", "DEQUANTIZE",
    "EMBEDDING_LOOKUP", "FLOOR", "FULLY_CONNECTED", "HASHTABLE_LOOKUP", "L2_NORMALIZATION", "L2_POOL_2D",
    "LOCAL_RESPONSE_NORMALIZATION", "LOGISTIC", "LSH_PROJECTION", "LSTM", "MAX_POOL_2D", "MUL", "RELU",
    "RELU_N1_TO_1", "RELU6", "RESHAPE", "RESIZE_BILINEAR", "RNN", "SOFTMAX", "SPACE_TO_DEPTH", "SVDF", "TANH",
    "CONCAT_EMBEDDINGS", "SKIP_GRAM", "CALL", "CUSTOM", "EMBEDDING_LOOKUP_SPARSE", "PAD",
    "UNIDIRECTIONAL_SEQUENCE_RNN", "GATHER", "BATCH_TO_SPACE_ND", "SPACE_TO_BATCH_ND", "TRANSPOSE", "MEAN", "SUB",
    "DIV", "SQUEEZE", "UNIDIRECTIONAL_SEQUENCE_LSTM", "STRIDED_SLICE", "BIDIRECTIONAL_SEQUENCE_RNN", "EXP",
    "TOPK_V2", "SPLIT", "LOG_SOFTMAX", "DELEGATE", "BIDIRECTIONAL_SEQUENCE_LSTM", "CAST", "PRELU", "MAXIMUM",
    "ARG_MAX", "MINIMUM", "LESS", "NEG", "PADV2", "GREATER", "GREATER_EQUAL", "LESS_EQUAL", "SELECT", "SLICE", "SIN",
    "TRANSPOSE_CONV", "SPARSE_TO_DENSE", "TILE", "EXPAND_DIMS", "EQUAL", "NOT_EQUAL", "LOG", "SUM", "SQRT", "RSQRT",
    "SHAPE", "POW", "ARG_MIN", "FAKE_QUANT", "REDUCE_PROD", "REDUCE_MAX", "PACK", "LOGICAL_OR", "ONE_HOT",
    "LOGICAL_AND", "LOGICAL_NOT", "UNPACK", "REDUCE_MIN", "FLOOR_DIV", "REDUCE_ANY", "SQUARE", "ZEROS_LIKE", "FILL",
    "FLOOR_MOD", "RANGE", "RESIZE_NEAREST_NEIGHBOR", "LEAKY_RELU", "SQUARED_DIFFERENCE", "MIRROR_PAD", "ABS",
    "SPLIT_V", "UNIQUE", "CEIL", "REVERSE_V2", "ADD_N", "GATHER_ND", "COS", "WHERE", "RANK", "ELU",
    "REVERSE_SEQUENCE", "MATRIX_DIAG", "QUANTIZE", "MATRIX_SET_DIAG", "ROUND", "HARD_SWISH", "IF", "WHILE",
    "NON_MAX_SUPPRESSION_V4", "NON_MAX_SUPPRESSION_V5", "SCATTER_ND", "SELECT_V2", "DENSIFY", "SEGMENT_SUM",
    "BATCH_MATMUL", "PLACEHOLDER_FOR_GREATER_OP_CODES", "CUMSUM", "CALL_ONCE", "BROADCAST_TO", "RFFT2D", "CONV_3D",
    "IMAG", "REAL", "COMPLEX_ABS", "HASHTABLE", "HASHTABLE_FIND", "HASHTABLE_IMPORT", "HASHTABLE_SIZE", "REDUCE_ALL",
    "CONV_3D_TRANSPOSE", "VAR_HANDLE", "READ_VARIABLE", "ASSIGN_VARIABLE", "BROADCAST_ARGS",
    "RANDOM_STANDARD_NORMAL", "BUCKETIZE", "RANDOM_UNIFORM", "MULTINOMIAL", "GELU", "DYNAMIC_UPDATE_SLICE",
    "RELU_0_TO_1", "UNSORTED_SEGMENT_PROD", "UNSORTED_SEGMENT_MAX", "UNSORTED_SEGMENT_SUM", "ATAN2",
    "UNSORTED_SEGMENT_MIN", "SIGN", "BITCAST", "BITWISE_XOR", "RIGHT_SHIFT", "STABLEHLO_LOGISTIC", "STABLEHLO_ADD",
    "STABLEHLO_DIVIDE", "STABLEHLO_MULTIPLY", "STABLEHLO_MAXIMUM", "STABLEHLO_RESHAPE", "STABLEHLO_CLAMP",
    "STABLEHLO_CONCATENATE", "STABLEHLO_BROADCAST_IN_DIM", "STABLEHLO_CONVOLUTION", "STABLEHLO_SLICE",
    "STABLEHLO_CUSTOM_CALL", "STABLEHLO_REDUCE", "STABLEHLO_ABS", "STABLEHLO_AND", "STABLEHLO_COSINE",
    "STABLEHLO_EXPONENTIAL", "STABLEHLO_FLOOR", "STABLEHLO_LOG", "STABLEHLO_MINIMUM", "STABLEHLO_NEGATE",
    "STABLEHLO_OR", "STABLEHLO_POWER", "STABLEHLO_REMAINDER", "STABLEHLO_RSQRT", "STABLEHLO_SELECT",
    "STABLEHLO_SUBTRACT", "STABLEHLO_TANH", "STABLEHLO_SCATTER", "STABLEHLO_COMPARE", "STABLEHLO_CONVERT",
    "STABLEHLO_DYNAMIC_SLICE", "STABLEHLO_DYNAMIC_UPDATE_SLICE", "STABLEHLO_PAD", "STABLEHLO_IOTA",
    "STABLEHLO_DOT_GENERAL", "STABLEHLO_REDUCE_WINDOW", "STABLEHLO_SORT", "STABLEHLO_WHILE", "STABLEHLO_GATHER",
    "STABLEHLO_TRANSPOSE", "DILATE", "STABLEHLO_RNG_BIT_GENERATOR", "REDUCE_WINDOW", "STABLEHLO_COMPOSITE",
    "STABLEHLO_SHIFT_LEFT", "STABLEHLO_CBRT", "STABLEHLO_CASE",};

#define N_BUILTIN_NAMES (sizeof builtin_names / sizeof builtin_names[0])

/* TFLite codes used here. */
enum { BOP_ADD = 0, BOP_CONCATENATION = 2, BOP_CONV_2D = 3, BOP_FULLY_CONNECTED = 9, BOP_RESHAPE = 22,
       BOP_CUSTOM = 32, BOP_TRANSPOSE = 39, BOP_STRIDED_SLICE = 45, BOP_BATCH_MATMUL = 126 };
enum { BOPT_CONV2D = 1, BOPT_FULLY_CONNECTED = 8, BOPT_CONCATENATION = 10, BOPT_ADD = 11, BOPT_RESHAPE = 17,
       BOPT_TRANSPOSE = 26, BOPT_STRIDED_SLICE = 32, BOPT_BATCH_MATMUL = 101 };
#define MAX_DIM (1 << 24)
#define MAX_TENSOR_BYTES 0x7FFFFFF0u
#define ACC_LIMIT 2147483647LL

static const char *const custom_names[6] = {"TSPTQ_LAYERNORM_2S", "TSPTQ_SOFTMAX_2S", "TSPTQ_GELU_2S",
                                            "TSPTQ_FC_2S", "TSPTQ_BMM_2S", "TSPTQ_ADD_2S"};
/* Each custom op's integer options (toolchain/intmodel.py CUSTOM_OPTIONS), in tsptq_op.opt order. */
static const char *const custom_keys[6][TSPTQ_MAX_OPTIONS] = {
    {"in_zp", "eps", "out_zp", "out_shift"},
    {"out_kind", "mult", "shift", "out_zp", "bits", "ratio_log2", "signed_fine"},
    {0},
    {"in_kind", "in_zp", "bits", "ratio_log2", "signed_fine", "neg_mult", "neg_shift", "out_zp"},
    {"a_kind", "bits", "ratio_log2", "signed_fine", "log2_frac", "b_zp", "mult", "shift", "out_zp"},
    {"a_zp", "b_zp", "out_zp"}};
static const int custom_inputs[6] = {4, 2, 2, 6, 2, 3};
/* builtins, in tq op kind order */
static const int builtin_inputs[8] = {3, 2, 2, 2, 3, 2, 2, 4};

/* ---- status messages ------------------------------------------------------------------------------------------ */

static size_t put_str(char *out, size_t cap, size_t n, const char *s, size_t len) {
    size_t i;
    for (i = 0; i < len && s[i]; i++)
        if (n + 1 < cap) out[n++] = (s[i] >= 32 && s[i] < 127) ? s[i] : '?';
    return n;
}

static size_t put_u64(char *out, size_t cap, size_t n, uint64_t v, int neg) {
    char tmp[24];
    int k = 0;
    if (neg && n + 1 < cap) out[n++] = '-';
    do {
        tmp[k++] = (char)('0' + (int)(v % 10));
        v /= 10;
    } while (v);
    while (k--)
        if (n + 1 < cap) out[n++] = tmp[k];
    return n;
}

static size_t put_i64(char *out, size_t cap, size_t n, int64_t v) {
    return v < 0 ? put_u64(out, cap, n, (uint64_t)0 - (uint64_t)v, 1) : put_u64(out, cap, n, (uint64_t)v, 0);
}

int tq_vformat(char *out, size_t cap, const char *fmt, va_list ap) {
    size_t n = 0;
    if (!out || !cap) return 0;
    for (; *fmt; fmt++) {
        if (*fmt != '%') {
            if (n + 1 < cap) out[n++] = *fmt;
            continue;
        }
        fmt++;
        if (*fmt == 's') {
            const char *s = va_arg(ap, const char *);
            n = put_str(out, cap, n, s ? s : "(null)", (size_t)-1);
        } else if (fmt[0] == '.' && fmt[1] == '*' && fmt[2] == 's') {
            int len = va_arg(ap, int);
            const char *s = va_arg(ap, const char *);
            fmt += 2;
            if (s && len > 0) n = put_str(out, cap, n, s, (size_t)len);
        } else if (*fmt == 'd') {
            n = put_i64(out, cap, n, va_arg(ap, int));
        } else if (*fmt == 'u') {
            n = put_u64(out, cap, n, va_arg(ap, unsigned), 0);
        } else if (*fmt == 'L') {
            n = put_i64(out, cap, n, va_arg(ap, int64_t));
        } else if (*fmt == 'Z') {
            n = put_u64(out, cap, n, (uint64_t)va_arg(ap, size_t), 0);
        } else if (*fmt == '%') {
            if (n + 1 < cap) out[n++] = '%';
        } else {
            break;
        }
    }
    out[n] = 0;
    return (int)n;
}

int tq_fail(tsptq_status *st, int code, const char *fmt, ...) {
    if (st) {
        va_list ap;
        va_start(ap, fmt);
        st->code = code;
        tq_vformat(st->message, sizeof st->message, fmt, ap);
        va_end(ap);
    }
    return code;
}

void tq_ok(tsptq_status *st) {
    if (st) {
        st->code = TSPTQ_OK;
        st->message[0] = 0;
    }
}

const char *tsptq_error_name(int code) {
    static const char *const names[] = {
        "TSPTQ_OK", "TSPTQ_ERR_ARGUMENT", "TSPTQ_ERR_BAD_IDENTIFIER", "TSPTQ_ERR_CORRUPTED", "TSPTQ_ERR_INVALID_MODEL",
        "TSPTQ_ERR_UNSUPPORTED_OP", "TSPTQ_ERR_BAD_QUANTIZATION", "TSPTQ_ERR_VERSION", "TSPTQ_ERR_TOO_MANY",
        "TSPTQ_ERR_ALIGNMENT", "TSPTQ_ERR_ARENA_TOO_SMALL", "TSPTQ_ERR_INPUT_SIZE", "TSPTQ_ERR_OUTPUT_SIZE"};
    return code >= 0 && code < (int)(sizeof names / sizeof names[0]) ? names[code] : "TSPTQ_ERR_UNKNOWN";
}

const char *tsptq_version(void) { return TSPTQ_VERSION_STRING; }

/* ---- little-endian reads -------------------------------------------------------------------------------------- */

static uint32_t le16(const uint8_t *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8; }
static uint32_t le32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t le_u(const uint8_t *p, uint32_t w) { /* w in 1, 2, 4, 8 */
    uint64_t v = 0;
    uint32_t i;
    for (i = 0; i < w; i++) v |= (uint64_t)p[i] << (8 * i);
    return v;
}
static int64_t le_s(const uint8_t *p, uint32_t w) {
    uint64_t v = le_u(p, w);
    if (w < 8 && (v >> (8 * w - 1)) & 1) v |= ~(uint64_t)0 << (8 * w);
    return (v >> 63) ? -(int64_t)(~v) - 1 : (int64_t)v;
}
static int32_t s32(uint32_t v) { return (v >> 31) ? -(int32_t)(~v) - 1 : (int32_t)v; }

float tq_scale(const tsptq_tensor *t, uint32_t i) {
    uint32_t bits;
    float f;
    if (!t->scales || !t->n_scales) return 0.0f;
    if (i >= t->n_scales) i = 0;
    bits = le32(t->scales + 4 * (size_t)i);
    memcpy(&f, &bits, sizeof f);
    return f;
}

uint32_t tq_type_size(int type) {
    switch (type) {
    case TSPTQ_INT8: case TSPTQ_UINT8: return 1;
    case TSPTQ_INT32: return 4;
    case TSPTQ_INT64: return 8;
    default: return 0;
    }
}

static const char *type_name(int type) {
    static const char *const names[] = {"FLOAT32", "FLOAT16", "INT32", "UINT8", "INT64", "STRING", "BOOL", "INT16",
                                        "COMPLEX64", "INT8", "FLOAT64", "COMPLEX128", "UINT64", "RESOURCE", "VARIANT",
                                        "UINT32", "UINT16", "INT4", "BFLOAT16", "INT2", "UINT4"};
    return type >= 0 && type < (int)(sizeof names / sizeof names[0]) ? names[type] : "unknown";
}

/* ---- flatbuffer reader ---------------------------------------------------------------------------------------- */

typedef struct {
    const uint8_t *b;
    uint32_t n;
    tsptq_status *st;
    int err; /* first error's code (0: none) */
} rd;

typedef struct {
    uint32_t pos, vt, vtsize, objsize;
} tbl;

typedef struct {
    uint32_t start, len; /* elements at b[start ..) */
} vec;

static int corrupt(rd *r, const char *what) {
    if (!r->err) r->err = tq_fail(r->st, TSPTQ_ERR_CORRUPTED, "corrupted or truncated file: %s is out of bounds "
                                                              "(file of %u bytes)", what, r->n);
    return 0;
}

static int tbl_open(rd *r, uint32_t pos, tbl *t, const char *what) {
    int64_t vt;
    memset(t, 0, sizeof *t);
    if (r->err) return 0;
    if (pos > r->n - 4 || (pos & 3)) return corrupt(r, what);
    vt = (int64_t)pos - (int64_t)s32(le32(r->b + pos));
    if (vt < 0 || vt > (int64_t)r->n - 4 || (vt & 1)) return corrupt(r, what);
    t->pos = pos;
    t->vt = (uint32_t)vt;
    t->vtsize = le16(r->b + t->vt);
    t->objsize = le16(r->b + t->vt + 2);
    if (t->vtsize < 4 || (t->vtsize & 1) || t->vt + t->vtsize > r->n || t->objsize < 4 || t->objsize > r->n - pos) {
        memset(t, 0, sizeof *t);
        return corrupt(r, what);
    }
    return 1;
}

/* Position of field `id` (of `size` bytes) of table t, 0 when absent or on error. */
static uint32_t fpos(rd *r, const tbl *t, uint32_t id, uint32_t size, const char *what) {
    uint32_t slot = 4 + 2 * id, fo;
    if (r->err || !t->vtsize || slot + 2 > t->vtsize) return 0;
    fo = le16(r->b + t->vt + slot);
    if (!fo) return 0;
    if (fo < 4 || fo + size > t->objsize) {
        corrupt(r, what);
        return 0;
    }
    return t->pos + fo;
}

static uint64_t f_uint(rd *r, const tbl *t, uint32_t id, uint32_t size, uint64_t def, const char *what) {
    uint32_t p = fpos(r, t, id, size, what);
    return p ? le_u(r->b + p, size) : def;
}
static int64_t f_int(rd *r, const tbl *t, uint32_t id, uint32_t size, int64_t def, const char *what) {
    uint32_t p = fpos(r, t, id, size, what);
    return p ? le_s(r->b + p, size) : def;
}

/* Follow the uoffset at position p. */
static int deref(rd *r, uint32_t p, uint32_t *target, const char *what) {
    uint64_t tgt = (uint64_t)p + le32(r->b + p);
    if (tgt > (uint64_t)r->n - 4) return corrupt(r, what);
    *target = (uint32_t)tgt;
    return 1;
}

/* Vector field (elements of `esize` bytes); absent -> empty, returns 1; error -> 0. */
static int f_vec(rd *r, const tbl *t, uint32_t id, uint32_t esize, vec *v, const char *what) {
    uint32_t p = fpos(r, t, id, 4, what), tgt;
    v->start = v->len = 0;
    if (r->err) return 0;
    if (!p) return 1;
    if (!deref(r, p, &tgt, what)) return 0;
    v->len = le32(r->b + tgt);
    v->start = tgt + 4;
    if ((uint64_t)v->len * esize > (uint64_t)(r->n - v->start)) {
        v->len = 0;
        return corrupt(r, what);
    }
    return 1;
}

/* Sub-table field; absent -> 0 (t zeroed) with no error. */
static int f_table(rd *r, const tbl *t, uint32_t id, tbl *out, const char *what) {
    uint32_t p = fpos(r, t, id, 4, what), tgt;
    memset(out, 0, sizeof *out);
    if (!p || !deref(r, p, &tgt, what)) return 0;
    return tbl_open(r, tgt, out, what);
}

static int vec_table(rd *r, const vec *v, uint32_t i, tbl *out, const char *what) {
    uint32_t tgt;
    memset(out, 0, sizeof *out);
    if (r->err || i >= v->len) return 0;
    if (!deref(r, v->start + 4 * i, &tgt, what)) return 0;
    return tbl_open(r, tgt, out, what);
}

static int32_t vec_i32(rd *r, const vec *v, uint32_t i) { return s32(le32(r->b + v->start + 4 * (size_t)i)); }

static int str_eq(rd *r, const vec *s, const char *lit) {
    size_t n = strlen(lit);
    return s->len == n && memcmp(r->b + s->start, lit, n) == 0;
}

/* ---- flexbuffer map reader (custom options, quantization details) -------------------------------------------- */

typedef struct {
    const uint8_t *b;
    uint32_t n, pos, width, size, keys, key_width;
} fxmap;

static int fx_width_ok(uint64_t w) { return w == 1 || w == 2 || w == 4 || w == 8; }

/* Open the root of a flexbuffer as a map. */
static int fx_map(const uint8_t *b, uint32_t n, fxmap *m) {
    uint32_t pw, bw, root, kv;
    uint64_t off, size, kw, koff, klen;
    memset(m, 0, sizeof *m);
    if (n < 3) return 0;
    pw = b[n - 1];
    if (!fx_width_ok(pw) || (uint32_t)b[n - 2] >> 2 != 9 /* MAP */ || n < 2 + pw) return 0;
    bw = 1u << (b[n - 2] & 3);
    root = n - 2 - pw;
    off = le_u(b + root, pw);
    if (off > root || root - off < 3 * (uint64_t)bw) return 0;
    m->pos = (uint32_t)(root - off);
    size = le_u(b + m->pos - bw, bw);
    kw = le_u(b + m->pos - 2 * bw, bw);
    koff = le_u(b + m->pos - 3 * bw, bw);
    if (!fx_width_ok(kw) || size > (n - m->pos) / (bw + 1) || koff > m->pos - 3 * bw) return 0;
    kv = (uint32_t)(m->pos - 3 * bw - koff);
    if (kv < kw || (uint64_t)kv + size * kw > n) return 0;
    klen = le_u(b + kv - kw, (uint32_t)kw);
    if (klen != size) return 0;
    m->b = b;
    m->n = n;
    m->width = bw;
    m->size = (uint32_t)size;
    m->keys = kv;
    m->key_width = (uint32_t)kw;
    return 1;
}

/* Index of key in the map, -1 if absent (or unreadable). */
static int fx_find(const fxmap *m, const char *key) {
    uint32_t i, len = (uint32_t)strlen(key);
    for (i = 0; i < m->size; i++) {
        uint32_t e = m->keys + i * m->key_width;
        uint64_t off = le_u(m->b + e, m->key_width);
        uint32_t kp;
        if (off > e) continue;
        kp = (uint32_t)(e - off);
        if (kp + (uint64_t)len + 1 > m->n) continue;
        if (memcmp(m->b + kp, key, len) == 0 && m->b[kp + len] == 0) return (int)i;
    }
    return -1;
}

/* Integer value i (INT, UINT, BOOL, INDIRECT_INT/UINT); 0 if it is not an integer. */
static int fx_int(const fxmap *m, int i, int64_t *out) {
    uint32_t vp = m->pos + (uint32_t)i * m->width;
    uint32_t packed = m->b[m->pos + m->size * m->width + (uint32_t)i];
    uint32_t type = packed >> 2, w = 1u << (packed & 3);
    uint64_t u;
    if (type == 1) { /* INT */
        *out = le_s(m->b + vp, m->width);
        return 1;
    }
    if (type == 2 || type == 26) { /* UINT, BOOL */
        u = le_u(m->b + vp, m->width);
        if (u >> 63) return 0;
        *out = (int64_t)u;
        return 1;
    }
    if (type == 6 || type == 7) { /* INDIRECT_INT, INDIRECT_UINT */
        uint64_t off = le_u(m->b + vp, m->width);
        uint32_t tp;
        if (off > vp) return 0;
        tp = (uint32_t)(vp - off);
        if ((uint64_t)tp + w > m->n) return 0;
        if (type == 6) {
            *out = le_s(m->b + tp, w);
        } else {
            u = le_u(m->b + tp, w);
            if (u >> 63) return 0;
            *out = (int64_t)u;
        }
        return 1;
    }
    return 0;
}

/* ---- the 'tsptq' metadata JSON: only as far as the top-level "format" and "version" ------------------------- */

typedef struct {
    const uint8_t *s;
    uint32_t n, i;
} js;

static void js_ws(js *j) {
    while (j->i < j->n && (j->s[j->i] == ' ' || j->s[j->i] == '\t' || j->s[j->i] == '\n' || j->s[j->i] == '\r'))
        j->i++;
}

/* A string at j->i: returns 1 and its raw bytes [*a, *b) (escapes left as they are). */
static int js_string(js *j, uint32_t *a, uint32_t *b) {
    if (j->i >= j->n || j->s[j->i] != '"') return 0;
    *a = ++j->i;
    while (j->i < j->n && j->s[j->i] != '"') j->i += (j->s[j->i] == '\\') ? 2 : 1;
    if (j->i >= j->n) return 0;
    *b = j->i++;
    return 1;
}

/* Skip one value (iteratively: nesting depth is a counter, no recursion). */
static int js_skip(js *j) {
    uint32_t depth = 0, a, b;
    do {
        js_ws(j);
        if (j->i >= j->n) return 0;
        switch (j->s[j->i]) {
        case '"':
            if (!js_string(j, &a, &b)) return 0;
            break;
        case '{': case '[':
            depth++;
            j->i++;
            continue;
        case '}': case ']':
            if (!depth) return 0;
            depth--;
            j->i++;
            break;
        case ',': case ':':
            if (!depth) return 0;
            j->i++;
            continue;
        default: /* number or literal */
            if (!((j->s[j->i] >= '0' && j->s[j->i] <= '9') || j->s[j->i] == '-' || j->s[j->i] == 't' ||
                  j->s[j->i] == 'f' || j->s[j->i] == 'n'))
                return 0;
            while (j->i < j->n && j->s[j->i] != ',' && j->s[j->i] != '}' && j->s[j->i] != ']' && j->s[j->i] != ' ' &&
                   j->s[j->i] != '\n' && j->s[j->i] != '\t' && j->s[j->i] != '\r' && j->s[j->i] != ':')
                j->i++;
        }
    } while (depth);
    return 1;
}

/* 1: found format == "tsptq" and an integer version (*version, saturated to +-2^62); 0: not there / not JSON. */
static int js_meta(const uint8_t *s, uint32_t n, int64_t *version) {
    js j;
    int has_format = 0, has_version = 0;
    uint32_t a, b;
    j.s = s;
    j.n = n;
    j.i = 0;
    js_ws(&j);
    if (j.i >= n || s[j.i] != '{') return 0;
    j.i++;
    js_ws(&j);
    if (j.i < n && s[j.i] == '}') return 0;
    for (;;) {
        js_ws(&j);
        if (!js_string(&j, &a, &b)) return 0;
        js_ws(&j);
        if (j.i >= n || s[j.i] != ':') return 0;
        j.i++;
        js_ws(&j);
        if (b - a == 7 && memcmp(s + a, "version", 7) == 0) {
            int neg = 0;
            int64_t v = 0;
            uint32_t digits = 0;
            has_version = 0;
            if (j.i < n && s[j.i] == '-') {
                neg = 1;
                j.i++;
            }
            while (j.i < n && s[j.i] >= '0' && s[j.i] <= '9') {
                if (v < ((int64_t)1 << 62) / 10) v = v * 10 + (s[j.i] - '0');
                else v = (int64_t)1 << 62;
                j.i++;
                digits++;
            }
            if (!digits) {
                if (!js_skip(&j)) return 0; /* not a number: no integer version */
            } else if (j.i < n && (s[j.i] == '.' || s[j.i] == 'e' || s[j.i] == 'E')) {
                if (!js_skip(&j)) return 0; /* a float: not an integer version */
            } else {
                has_version = 1;
                *version = neg ? -v : v;
            }
        } else if (b - a == 6 && memcmp(s + a, "format", 6) == 0) {
            uint32_t c, d;
            if (j.i < n && s[j.i] == '"') {
                if (!js_string(&j, &c, &d)) return 0;
                has_format = (d - c == 5 && memcmp(s + c, "tsptq", 5) == 0);
            } else {
                has_format = 0;
                if (!js_skip(&j)) return 0;
            }
        } else if (!js_skip(&j)) {
            return 0;
        }
        js_ws(&j);
        if (j.i >= n) return 0;
        if (s[j.i] == ',') {
            j.i++;
            continue;
        }
        if (s[j.i] == '}') break;
        return 0;
    }
    return has_format && has_version;
}

/* ---- the model ------------------------------------------------------------------------------------------------ */

typedef struct {
    rd r;
    tsptq_model *m;
    vec buffers;
    vec meta; /* the 'tsptq' metadata JSON */
} ld;

#define TNAME(t) (int)((t)->name_len > 64 ? 64 : (t)->name_len), (const char *)(t)->name

static int64_t numel(const tsptq_tensor *t) {
    int64_t n = 1;
    uint32_t i;
    for (i = 0; i < t->rank; i++) n *= t->shape[i];
    return n;
}

static int same_shape(const tsptq_tensor *a, const tsptq_tensor *b) {
    uint32_t i;
    if (a->rank != b->rank) return 0;
    for (i = 0; i < a->rank; i++)
        if (a->shape[i] != b->shape[i]) return 0;
    return 1;
}

/* Data of buffer `index` (len 0 if none). */
static int buffer_data(ld *L, uint32_t index, vec *data, const char *what) {
    tbl bt;
    data->start = data->len = 0;
    if (!vec_table(&L->r, &L->buffers, index, &bt, what)) return 0;
    if (!f_vec(&L->r, &bt, 0, 1, data, what)) return 0;
    /* Buffer.offset/size (external data of > 2 GB models) are not used by tsptq files */
    if (f_uint(&L->r, &bt, 1, 8, 0, what) > 1)
        return tq_fail(L->r.st, TSPTQ_ERR_UNSUPPORTED_OP, "buffer %u: external buffer data (offset/size) is not "
                                                          "supported", index), L->r.err = TSPTQ_ERR_UNSUPPORTED_OP, 0;
    return !L->r.err;
}

static int load_metadata(ld *L, const tbl *model) {
    rd *r = &L->r;
    vec meta, name, data;
    uint32_t i, found = 0, buf = 0;
    int64_t version = 0;
    if (!f_vec(r, model, 6, 4, &meta, "the metadata list")) return 0;
    for (i = 0; i < meta.len && !found; i++) {
        tbl e;
        if (!vec_table(r, &meta, i, &e, "a metadata entry") || !f_vec(r, &e, 0, 1, &name, "a metadata name"))
            return 0;
        if (str_eq(r, &name, "tsptq")) {
            found = 1;
            buf = (uint32_t)f_uint(r, &e, 1, 4, 0, "a metadata entry");
        }
    }
    if (r->err) return 0;
    if (!found)
        return tq_fail(r->st, TSPTQ_ERR_INVALID_MODEL, "no 'tsptq' metadata: not a file written by tsptq export"), 0;
    if (buf >= L->buffers.len || !buffer_data(L, buf, &data, "the metadata buffer") || !data.len) {
        if (r->err) return 0;
        return tq_fail(r->st, TSPTQ_ERR_INVALID_MODEL, "the 'tsptq' metadata points to buffer %u, which does not "
                                                       "exist or is empty", buf), 0;
    }
    L->meta = data;
    if (!js_meta(r->b + data.start, data.len, &version))
        return tq_fail(r->st, TSPTQ_ERR_INVALID_MODEL, "the 'tsptq' metadata has no format/version fields (or is "
                                                       "not a JSON object)"), 0;
    if (version > TSPTQ_METADATA_VERSION)
        return tq_fail(r->st, TSPTQ_ERR_VERSION, "the file's tsptq metadata is version %L; this runtime reads up to "
                                                 "version %d: upgrade the runtime", version, TSPTQ_METADATA_VERSION), 0;
    if (version < 1)
        return tq_fail(r->st, TSPTQ_ERR_INVALID_MODEL, "unknown tsptq metadata version %L", version), 0;
    return 1;
}

static int load_quant(ld *L, uint32_t i, tsptq_tensor *t, const tbl *tt) {
    rd *r = &L->r;
    tbl q;
    vec scale, zp;
    uint32_t c;
    int64_t axis, details_type, lo, hi;
    t->has_quant = 0;
    if (!f_table(r, tt, 4, &q, "a tensor's quantization")) return !r->err;
    if (!f_vec(r, &q, 2, 4, &scale, "a quantization scale vector") ||
        !f_vec(r, &q, 3, 8, &zp, "a quantization zero point vector"))
        return 0;
    details_type = (int64_t)f_uint(r, &q, 4, 1, 0, "quantization details");
    axis = f_int(r, &q, 6, 4, 0, "quantized_dimension");
    if (r->err) return 0;
    if (!scale.len) return 1; /* no scales: not quantized (as the Python reader) */
    if (zp.len && zp.len != scale.len)
        return tq_fail(r->st, TSPTQ_ERR_BAD_QUANTIZATION, "tensor %u (%.*s): %u scales but %u zero points", i,
                       TNAME(t), scale.len, zp.len), 0;
    for (c = 0; c < scale.len; c++) {
        uint32_t bits = le32(r->b + scale.start + 4 * c);
        /* finite and > 0: sign clear, exponent not all ones, not zero */
        if ((bits >> 31) || ((bits >> 23) & 0xFF) == 0xFF || bits == 0)
            return tq_fail(r->st, TSPTQ_ERR_BAD_QUANTIZATION, "tensor %u (%.*s): scale %u is not finite and > 0", i,
                           TNAME(t), c), 0;
    }
    lo = t->type == TSPTQ_UINT8 ? 0 : (t->type == TSPTQ_INT8 ? -128 : 0);
    hi = t->type == TSPTQ_UINT8 ? 255 : (t->type == TSPTQ_INT8 ? 127 : 0);
    for (c = 0; c < zp.len; c++) {
        int64_t z = le_s(r->b + zp.start + 8 * (size_t)c, 8);
        int ok = z >= lo && z <= hi;
        if (!ok)
            return tq_fail(r->st, TSPTQ_ERR_BAD_QUANTIZATION, "tensor %u (%.*s): zero point %L out of range for %s",
                           i, TNAME(t), z, type_name(t->type)), 0;
        if (c == 0) t->zero_point = (int32_t)z;
    }
    if (scale.len > 1 && (axis < 0 || axis >= t->rank || t->shape[axis] != (int32_t)scale.len))
        return tq_fail(r->st, TSPTQ_ERR_BAD_QUANTIZATION, "tensor %u (%.*s): %u per-channel scales do not match axis "
                                                          "%L of its shape", i, TNAME(t), scale.len, axis), 0;
    if (details_type == 1) { /* CustomQuantization: a flexbuffer map with a 'kind' */
        tbl d;
        vec custom;
        fxmap fm;
        if (f_table(r, &q, 5, &d, "quantization details")) {
            if (!f_vec(r, &d, 0, 1, &custom, "custom quantization bytes")) return 0;
            if (!fx_map(r->b + custom.start, custom.len, &fm) || fx_find(&fm, "kind") < 0)
                return tq_fail(r->st, TSPTQ_ERR_BAD_QUANTIZATION, "tensor %u (%.*s): custom quantization details "
                                                                  "unreadable or without a 'kind'", i, TNAME(t)), 0;
            t->has_details = 1;
        }
        if (r->err) return 0;
    } else if (details_type != 0) {
        return tq_fail(r->st, TSPTQ_ERR_UNSUPPORTED_OP, "tensor %u (%.*s): quantization details type %L is not "
                                                        "supported", i, TNAME(t), details_type), 0;
    }
    t->has_quant = 1;
    t->scales = r->b + scale.start;
    t->n_scales = scale.len;
    return 1;
}

static int load_tensor(ld *L, uint32_t i, const tbl *tt) {
    rd *r = &L->r;
    tsptq_tensor *t = &L->m->tensors[i];
    vec shape, name, data;
    uint32_t d, esize, buf;
    int64_t type;
    uint64_t bytes = 1;
    memset(t, 0, sizeof *t);
    t->root = (int32_t)i;
    t->first = t->last = -1;
    if (!f_vec(r, tt, 3, 1, &name, "a tensor name") || !f_vec(r, tt, 0, 4, &shape, "a tensor shape")) return 0;
    t->name = r->b + name.start;
    t->name_len = (uint16_t)(name.len > 0xFFFF ? 0xFFFF : name.len);
    type = (int64_t)f_uint(r, tt, 1, 1, 0, "a tensor type");
    buf = (uint32_t)f_uint(r, tt, 2, 4, 0, "a tensor buffer index");
    if (r->err) return 0;
    esize = tq_type_size((int)type);
    if (!esize)
        return tq_fail(r->st, TSPTQ_ERR_UNSUPPORTED_OP, "tensor %u (%.*s): dtype %s is not used by tsptq models", i,
                       TNAME(t), type_name((int)type)), 0;
    t->type = (uint8_t)type;
    if (shape.len > TSPTQ_MAX_RANK)
        return tq_fail(r->st, TSPTQ_ERR_INVALID_MODEL, "tensor %u (%.*s): rank %u is more than %d", i, TNAME(t),
                       shape.len, TSPTQ_MAX_RANK), 0;
    t->rank = (uint8_t)shape.len;
    for (d = 0; d < shape.len; d++) {
        int32_t s = vec_i32(r, &shape, d);
        if (s <= 0 || s > MAX_DIM)
            return tq_fail(r->st, TSPTQ_ERR_INVALID_MODEL, "tensor %u (%.*s): invalid dimension %d", i, TNAME(t), s),
                   0;
        t->shape[d] = s;
        bytes *= (uint64_t)s;
        if (bytes > MAX_TENSOR_BYTES) break;
    }
    bytes *= esize;
    if (bytes > MAX_TENSOR_BYTES)
        return tq_fail(r->st, TSPTQ_ERR_INVALID_MODEL, "tensor %u (%.*s): more than 2 GB", i, TNAME(t)), 0;
    t->nbytes = (uint32_t)bytes;
    if (buf >= (L->buffers.len ? L->buffers.len : 1))
        return tq_fail(r->st, TSPTQ_ERR_CORRUPTED, "corrupted file: tensor %u (%.*s) refers to buffer %u, but the "
                                                   "file has %u buffers", i, TNAME(t), buf, L->buffers.len), 0;
    if (buf) {
        if (!buffer_data(L, buf, &data, "a tensor's buffer")) return 0;
        if (data.len) {
            if (data.len != t->nbytes)
                return tq_fail(r->st, TSPTQ_ERR_INVALID_MODEL, "tensor %u (%.*s): buffer holds %u bytes, its shape "
                                                               "needs %u", i, TNAME(t), data.len, t->nbytes), 0;
            t->data = r->b + data.start;
            t->is_const = 1;
            if (((uintptr_t)t->data) % esize)
                return tq_fail(r->st, TSPTQ_ERR_ALIGNMENT, "tensor %u (%.*s): its data is not %u-byte aligned in "
                                                           "memory: load the model from an 8-byte (or 16-byte) "
                                                           "aligned buffer", i, TNAME(t), esize), 0;
        }
    }
    return load_quant(L, i, t, tt);
}

/* Resolve an operator code to a tq op kind. */
static int op_kind(ld *L, uint32_t k, const tbl *code, int *kind) {
    rd *r = &L->r;
    int64_t dep = f_int(r, code, 0, 1, 0, "an operator code"), bc = f_int(r, code, 3, 4, 0, "an operator code");
    int64_t builtin = dep > bc ? dep : bc;
    int c;
    if (r->err) return 0;
    if (builtin == BOP_CUSTOM) {
        vec name;
        if (!f_vec(r, code, 1, 1, &name, "a custom op name")) return 0;
        for (c = 0; c < 6; c++)
            if (str_eq(r, &name, custom_names[c])) {
                *kind = TQ_OP_LAYERNORM_2S + c;
                return 1;
            }
        return tq_fail(r->st, TSPTQ_ERR_UNSUPPORTED_OP, "op %u: custom op '%.*s' is not a tsptq op (known: "
                                                        "TSPTQ_LAYERNORM_2S, TSPTQ_SOFTMAX_2S, TSPTQ_GELU_2S, "
                                                        "TSPTQ_FC_2S, TSPTQ_BMM_2S, TSPTQ_ADD_2S)", k,
                       (int)(name.len > 48 ? 48 : name.len), (const char *)r->b + name.start), 0;
    }
    switch (builtin) {
    case BOP_CONV_2D: *kind = TQ_OP_CONV_2D; return 1;
    case BOP_RESHAPE: *kind = TQ_OP_RESHAPE; return 1;
    case BOP_CONCATENATION: *kind = TQ_OP_CONCATENATION; return 1;
    case BOP_ADD: *kind = TQ_OP_ADD; return 1;
    case BOP_FULLY_CONNECTED: *kind = TQ_OP_FULLY_CONNECTED; return 1;
    case BOP_TRANSPOSE: *kind = TQ_OP_TRANSPOSE; return 1;
    case BOP_BATCH_MATMUL: *kind = TQ_OP_BATCH_MATMUL; return 1;
    case BOP_STRIDED_SLICE: *kind = TQ_OP_STRIDED_SLICE; return 1;
    default:
        return tq_fail(r->st, TSPTQ_ERR_UNSUPPORTED_OP, "op %u: builtin %s (code %L) is not supported by the tsptq "
                                                        "runtime (supported: CONV_2D, FULLY_CONNECTED, BATCH_MATMUL, "
                                                        "ADD, RESHAPE, TRANSPOSE, CONCATENATION, STRIDED_SLICE)", k,
                       builtin >= 0 && builtin < (int64_t)N_BUILTIN_NAMES ? builtin_names[builtin] : "unknown",
                       builtin), 0;
    }
}

#define OPFAIL(code, ...) (tq_fail(r->st, (code), __VA_ARGS__), 0)

/* Builtin options: what the Python reader accepts, and stricter where the kernels need it. */
static int load_builtin_options(ld *L, uint32_t k, tsptq_op *op, const tbl *ot) {
    rd *r = &L->r;
    int64_t type = (int64_t)f_uint(r, ot, 3, 1, 0, "builtin options");
    tbl o;
    int has = f_table(r, ot, 4, &o, "builtin options");
    const char *name = tq_op_names[op->kind];
    if (r->err) return 0;
#define EXPECT_TYPE(t)                                                                                              \
    if (has && type != (t))                                                                                         \
        return OPFAIL(TSPTQ_ERR_INVALID_MODEL, "op %u (%s): builtin options of type %L, expected %d", k, name, type, \
                      (t));
    switch (op->kind) {
    case TQ_OP_CONV_2D: {
        int64_t pad, sw, sh, act, dw, dh;
        if (!has || type != BOPT_CONV2D)
            return OPFAIL(TSPTQ_ERR_UNSUPPORTED_OP, "op %u (CONV_2D): only VALID padding with equal strides (the "
                                                    "patch embedding)", k);
        pad = f_int(r, &o, 0, 1, 0, "Conv2DOptions");
        sw = f_int(r, &o, 1, 4, 0, "Conv2DOptions");
        sh = f_int(r, &o, 2, 4, 0, "Conv2DOptions");
        act = f_int(r, &o, 3, 1, 0, "Conv2DOptions");
        dw = f_int(r, &o, 4, 4, 1, "Conv2DOptions");
        dh = f_int(r, &o, 5, 4, 1, "Conv2DOptions");
        if (r->err) return 0;
        if (pad != 1 || sw != sh || sh < 1 || sh > MAX_DIM)
            return OPFAIL(TSPTQ_ERR_UNSUPPORTED_OP, "op %u (CONV_2D): only VALID padding with equal strides (the "
                                                    "patch embedding)", k);
        if (act != 0 || dw != 1 || dh != 1)
            return OPFAIL(TSPTQ_ERR_UNSUPPORTED_OP, "op %u (CONV_2D): fused activations and dilation are not "
                                                    "supported", k);
        op->opt[TQ_CONV_STRIDE] = sh;
        return 1;
    }
    case TQ_OP_FULLY_CONNECTED:
        EXPECT_TYPE(BOPT_FULLY_CONNECTED);
        if (has && (f_int(r, &o, 0, 1, 0, "FullyConnectedOptions") || f_int(r, &o, 1, 1, 0, "FullyConnectedOptions")))
            return r->err ? 0 : OPFAIL(TSPTQ_ERR_UNSUPPORTED_OP, "op %u (FULLY_CONNECTED): fused activations and "
                                                                 "shuffled weights are not supported", k);
        return !r->err;
    case TQ_OP_BATCH_MATMUL:
        EXPECT_TYPE(BOPT_BATCH_MATMUL);
        if (has && f_int(r, &o, 0, 1, 0, "BatchMatMulOptions"))
            return r->err ? 0 : OPFAIL(TSPTQ_ERR_UNSUPPORTED_OP, "op %u (BATCH_MATMUL): adj_x is not supported", k);
        op->opt[TQ_BMMB_ADJ_Y] = has ? (f_int(r, &o, 1, 1, 0, "BatchMatMulOptions") != 0) : 0;
        return !r->err;
    case TQ_OP_CONCATENATION:
        EXPECT_TYPE(BOPT_CONCATENATION);
        op->opt[TQ_CAT_AXIS] = has ? f_int(r, &o, 0, 4, 0, "ConcatenationOptions") : 0;
        if (has && f_int(r, &o, 1, 1, 0, "ConcatenationOptions"))
            return r->err ? 0 : OPFAIL(TSPTQ_ERR_UNSUPPORTED_OP, "op %u (CONCATENATION): fused activations are not "
                                                                 "supported", k);
        return !r->err;
    case TQ_OP_ADD:
        EXPECT_TYPE(BOPT_ADD);
        if (has && f_int(r, &o, 0, 1, 0, "AddOptions"))
            return r->err ? 0 : OPFAIL(TSPTQ_ERR_UNSUPPORTED_OP, "op %u (ADD): fused activations are not supported", k);
        return !r->err;
    case TQ_OP_STRIDED_SLICE: {
        uint32_t f;
        EXPECT_TYPE(BOPT_STRIDED_SLICE);
        for (f = 0; has && f < 6; f++)
            if (f_int(r, &o, f, f < 5 ? 4 : 1, 0, "StridedSliceOptions"))
                return r->err ? 0 : OPFAIL(TSPTQ_ERR_UNSUPPORTED_OP, "op %u (STRIDED_SLICE): masks and offset are "
                                                                     "not supported", k);
        return !r->err;
    }
    case TQ_OP_RESHAPE:
        EXPECT_TYPE(BOPT_RESHAPE);
        return 1; /* new_shape is informative: the output tensor's shape decides */
    case TQ_OP_TRANSPOSE:
        EXPECT_TYPE(BOPT_TRANSPOSE);
        return 1;
    default:
        return 1;
    }
#undef EXPECT_TYPE
}

static int load_custom_options(ld *L, uint32_t k, tsptq_op *op, const tbl *ot) {
    rd *r = &L->r;
    vec opts;
    fxmap fm;
    int c = op->kind - TQ_OP_LAYERNORM_2S, f;
    const char *name = tq_op_names[op->kind];
    if (!f_vec(r, ot, 5, 1, &opts, "custom options")) return 0;
    if (f_int(r, ot, 6, 1, 0, "custom options format") != 0)
        return r->err ? 0 : OPFAIL(TSPTQ_ERR_UNSUPPORTED_OP, "op %u (%s): custom options are not a flexbuffer", k,
                                   name);
    if (!fx_map(r->b + opts.start, opts.len, &fm))
        return OPFAIL(TSPTQ_ERR_INVALID_MODEL, "op %u (%s): custom options are not a readable flexbuffer map", k,
                      name);
    for (f = 0; f < TSPTQ_MAX_OPTIONS && custom_keys[c][f]; f++) {
        int idx = fx_find(&fm, custom_keys[c][f]);
        if (idx < 0 || !fx_int(&fm, idx, &op->opt[f]))
            return OPFAIL(TSPTQ_ERR_INVALID_MODEL, "op %u (%s): custom options miss the integer field %s", k, name,
                          custom_keys[c][f]);
    }
    return 1;
}

/* ---- per-op checks -------------------------------------------------------------------------------------------- */

int tq_builtin_multiplier(const tsptq_model *m, const tsptq_op *op, uint32_t c, int32_t *mult, int32_t *shift) {
    const tsptq_tensor *x = &m->tensors[op->inputs[0]], *w = &m->tensors[op->inputs[1]],
                       *y = &m->tensors[op->output];
    double real = (double)tq_scale(x, 0) * (double)tq_scale(w, c) / (double)tq_scale(y, 0);
    tq_quantize_multiplier(real, mult, shift);
    return *mult >= 0 && *shift >= -31 && *shift <= 31;
}

static int in_range(int64_t v, int64_t lo, int64_t hi) { return v >= lo && v <= hi; }

/* Largest |decoded operand| of a code kind (docs/integer-semantics.md). */
static int64_t max_operand(int64_t kind, int64_t m, int32_t shift) {
    if (kind == TQ_UNIFORM) return 255;
    if (kind == TQ_CHANNEL_POW2) return (int64_t)255 << shift;
    if (kind == TQ_TWO_SCALE) return (int64_t)127 << m;
    return 127; /* sign-split fields (each half summed on its own) */
}

/* The int32 accumulator of w (O, I) rows against operands bounded by maxd (per input, or the scalar when
 * in_shift is NULL) cannot overflow: sum_i maxd_i * |w[o, i]| < 2^31 for every o. */
static int acc_fits(const tsptq_tensor *w, int64_t O, int64_t I, int64_t maxd, int64_t kind, const int8_t *in_shift) {
    int64_t o, i;
    for (o = 0; o < O; o++) {
        const int8_t *wo = (const int8_t *)w->data + o * I;
        int64_t s = 0;
        for (i = 0; i < I; i++) {
            int64_t a = wo[i] < 0 ? -(int64_t)wo[i] : wo[i];
            s += a * (in_shift ? max_operand(kind, 0, in_shift[i]) : maxd);
        }
        if (s > ACC_LIMIT) return 0;
    }
    return 1;
}

static int is_byte(const tsptq_tensor *t) { return t->type == TSPTQ_INT8 || t->type == TSPTQ_UINT8; }

static int const_of(const tsptq_tensor *t, int type) { return t->is_const && t->type == type; }

static int check_op(ld *L, uint32_t k, tsptq_op *op) {
    rd *r = &L->r;
    tsptq_model *m = L->m;
    tsptq_tensor *in[TSPTQ_MAX_OP_INPUTS], *out = &m->tensors[op->output];
    const char *name = tq_op_names[op->kind];
    int need = op->kind >= TQ_OP_LAYERNORM_2S ? custom_inputs[op->kind - TQ_OP_LAYERNORM_2S]
                                              : builtin_inputs[op->kind];
    int i, first_param;
    int64_t *o = op->opt;
    for (i = 0; i < op->n_inputs; i++) in[i] = &m->tensors[op->inputs[i]];
    if (op->n_inputs != need)
        return OPFAIL(TSPTQ_ERR_INVALID_MODEL, "op %u (%s): %d inputs, expected %d", k, name, op->n_inputs, need);
    if (out->is_const)
        return OPFAIL(TSPTQ_ERR_INVALID_MODEL, "op %u (%s): writes into constant tensor '%.*s'", k, name, TNAME(out));
    if (!out->has_quant && op->kind != TQ_OP_RESHAPE && op->kind != TQ_OP_TRANSPOSE &&
        op->kind != TQ_OP_STRIDED_SLICE)
        return OPFAIL(TSPTQ_ERR_INVALID_MODEL, "op %u (%s): output '%.*s' has no quantization parameters", k, name,
                      TNAME(out));
    first_param = (op->kind == TQ_OP_BMM_2S || op->kind == TQ_OP_ADD_2S) ? 2 : 1;
    if (op->kind == TQ_OP_TRANSPOSE || op->kind == TQ_OP_STRIDED_SLICE || op->kind == TQ_OP_RESHAPE ||
        op->kind >= TQ_OP_LAYERNORM_2S)
        for (i = first_param; i < op->n_inputs; i++)
            if (!in[i]->is_const)
                return OPFAIL(TSPTQ_ERR_INVALID_MODEL, "op %u (%s): parameter tensor '%.*s' must be constant", k,
                              name, TNAME(in[i]));
#define BAD(...) return OPFAIL(TSPTQ_ERR_INVALID_MODEL, __VA_ARGS__)
#define BADQ(...) return OPFAIL(TSPTQ_ERR_BAD_QUANTIZATION, __VA_ARGS__)
    switch (op->kind) {
    case TQ_OP_CONV_2D: {
        tsptq_tensor *x = in[0], *w = in[1], *b = in[2];
        int64_t p = o[TQ_CONV_STRIDE], O;
        uint32_t c;
        if (!const_of(w, TSPTQ_INT8) || !w->has_quant || !const_of(b, TSPTQ_INT32))
            BAD("op %u (CONV_2D): needs constant int8 weights and int32 bias", k);
        if (!x->has_quant || x->type != TSPTQ_INT8) BAD("op %u (CONV_2D): input must be a quantized int8 tensor", k);
        O = w->shape[0];
        if (x->rank != 4 || w->rank != 4 || out->rank != 4 || out->type != TSPTQ_INT8 || w->shape[1] != p ||
            w->shape[2] != p || w->shape[3] != x->shape[3] || b->rank != 1 || b->shape[0] != O ||
            out->shape[0] != x->shape[0] || out->shape[1] != x->shape[1] / p || out->shape[2] != x->shape[2] / p ||
            out->shape[3] != O)
            BAD("op %u (CONV_2D): only the patch embedding (kernel == stride, VALID, NHWC int8) fits; shapes do not", k);
        if (w->n_scales != 1 && w->n_scales != (uint32_t)O) BAD("op %u (CONV_2D): weights need 1 or %L scales", k, O);
        for (c = 0; c < (uint32_t)O; c++) {
            int32_t mu, sh;
            if (!tq_builtin_multiplier(m, op, c, &mu, &sh))
                BADQ("op %u (CONV_2D): requantization multiplier of channel %u out of range", k, c);
        }
        if (!acc_fits(w, O, (int64_t)p * p * x->shape[3], 255, 0, 0))
            BAD("op %u (CONV_2D): the int32 accumulator could overflow", k);
        return 1;
    }
    case TQ_OP_FULLY_CONNECTED: {
        tsptq_tensor *x = in[0], *w = in[1], *b = in[2];
        int64_t I, O;
        uint32_t c;
        if (!const_of(w, TSPTQ_INT8) || !w->has_quant || !const_of(b, TSPTQ_INT32))
            BAD("op %u (FULLY_CONNECTED): needs constant int8 weights and int32 bias", k);
        if (!x->has_quant || x->type != TSPTQ_INT8)
            BAD("op %u (FULLY_CONNECTED): input must be a quantized int8 tensor", k);
        if (w->rank != 2 || x->rank < 1 || out->rank < 1 || out->type != TSPTQ_INT8) BAD("op %u (FULLY_CONNECTED): "
                                                                                         "shapes do not fit", k);
        I = w->shape[1];
        O = w->shape[0];
        if (x->shape[x->rank - 1] != I || out->shape[out->rank - 1] != O || b->rank != 1 || b->shape[0] != O ||
            numel(x) / I != numel(out) / O)
            BAD("op %u (FULLY_CONNECTED): shapes do not fit", k);
        if (w->n_scales != 1 && w->n_scales != (uint32_t)O)
            BAD("op %u (FULLY_CONNECTED): weights need 1 or %L scales", k, O);
        for (c = 0; c < w->n_scales; c++) {
            int32_t mu, sh;
            if (!tq_builtin_multiplier(m, op, c, &mu, &sh) || (w->n_scales > 1 && sh > 30))
                BADQ("op %u (FULLY_CONNECTED): requantization multiplier of channel %u out of range", k, c);
        }
        o[TQ_FCB_N_PARAMS] = w->n_scales;
        o[TQ_FCB_PER_CHANNEL] = w->n_scales > 1;
        if (!acc_fits(w, O, I, 255, 0, 0)) BAD("op %u (FULLY_CONNECTED): the int32 accumulator could overflow", k);
        return 1;
    }
    case TQ_OP_BATCH_MATMUL: {
        tsptq_tensor *a = in[0], *b = in[1];
        int R = a->rank, adj = (int)o[TQ_BMMB_ADJ_Y];
        int32_t mu, sh;
        double real;
        float product;
        if (!a->has_quant || !b->has_quant || a->type != TSPTQ_INT8 || b->type != TSPTQ_INT8 ||
            out->type != TSPTQ_INT8)
            BAD("op %u (BATCH_MATMUL): operands must be quantized int8 tensors", k);
        if (R < 2 || b->rank != R || out->rank != R) BAD("op %u (BATCH_MATMUL): operand ranks do not fit", k);
        for (i = 0; i < R - 2; i++)
            if (b->shape[i] != a->shape[i] || out->shape[i] != a->shape[i])
                BAD("op %u (BATCH_MATMUL): batch dimensions differ (broadcasting is not supported)", k);
        if (b->shape[R - (adj ? 1 : 2)] != a->shape[R - 1] || out->shape[R - 2] != a->shape[R - 2] ||
            out->shape[R - 1] != b->shape[R - (adj ? 2 : 1)])
            BAD("op %u (BATCH_MATMUL): shapes do not fit", k);
        if ((int64_t)a->shape[R - 1] * 255 * 255 > ACC_LIMIT)
            BAD("op %u (BATCH_MATMUL): the int32 accumulator could overflow", k);
        /* TFLite's BATCH_MATMUL multiplies the input scales in float (the assignment rounds to float), then divides
         * in double: tsptq.intkernels.bmm_multiplier. */
        product = tq_scale(a, 0) * tq_scale(b, 0);
        real = (double)product / (double)tq_scale(out, 0);
        tq_quantize_multiplier(real, &mu, &sh);
        if (mu < 0 || sh < -31 || sh > 31) BADQ("op %u (BATCH_MATMUL): requantization multiplier out of range", k);
        o[TQ_BMMB_MULT] = mu;
        o[TQ_BMMB_SHIFT] = sh;
        return 1;
    }
    case TQ_OP_ADD: {
        tsptq_tensor *a = in[0], *b = in[1];
        double sa, sb, so, twice;
        double reals[3];
        if (!a->has_quant || !b->has_quant || a->type != TSPTQ_INT8 || b->type != TSPTQ_INT8 || out->type != TSPTQ_INT8)
            BAD("op %u (ADD): operands must be quantized int8 tensors", k);
        if (!same_shape(a, out) || !same_shape(b, out) || out->rank < 1)
            BAD("op %u (ADD): operand shapes differ (broadcasting is not supported)", k);
        sa = tq_scale(a, 0);
        sb = tq_scale(b, 0);
        so = tq_scale(out, 0);
        twice = 2.0 * (sa > sb ? sa : sb);
        reals[0] = sa / twice;
        reals[1] = sb / twice;
        reals[2] = twice / ((double)(1 << 20) * so);
        for (i = 0; i < 3; i++) {
            int32_t mu, sh;
            tq_quantize_multiplier(reals[i], &mu, &sh);
            if (mu < 0 || sh < -31 || sh > (i < 2 ? 0 : 31)) BADQ("op %u (ADD): rescaling multiplier out of range", k);
            o[2 * i] = mu;
            o[2 * i + 1] = sh;
        }
        return 1;
    }
    case TQ_OP_RESHAPE:
        if (numel(in[0]) != numel(out) || in[0]->type != out->type)
            BAD("op %u (RESHAPE): cannot reshape '%.*s' into '%.*s'", k, TNAME(in[0]), TNAME(out));
        return 1;
    case TQ_OP_TRANSPOSE: {
        tsptq_tensor *x = in[0], *perm = in[1];
        uint32_t seen = 0;
        if (!is_byte(x) || out->type != x->type || out->rank != x->rank)
            BAD("op %u (TRANSPOSE): only int8/uint8 tensors, same rank in and out", k);
        if (perm->type != TSPTQ_INT32 || perm->rank != 1 || perm->shape[0] != x->rank)
            BAD("op %u (TRANSPOSE): permutation does not fit rank %d", k, x->rank);
        for (i = 0; i < x->rank; i++) {
            int32_t p = ((const int32_t *)perm->data)[i];
            if (p < 0 || p >= x->rank || (seen >> p) & 1)
                BAD("op %u (TRANSPOSE): permutation does not fit rank %d", k, x->rank);
            seen |= 1u << p;
            if (out->shape[i] != x->shape[p]) BAD("op %u (TRANSPOSE): output shape does not fit the permutation", k);
            op->vec[0][i] = p;
        }
        return 1;
    }
    case TQ_OP_CONCATENATION: {
        int R = out->rank, d;
        int64_t axis = o[TQ_CAT_AXIS], total = 0;
        if (axis < 0) axis += R;
        if (R < 1 || axis < 0 || axis >= R) BAD("op %u (CONCATENATION): axis %L does not fit rank %d", k,
                                                o[TQ_CAT_AXIS], R);
        o[TQ_CAT_AXIS] = axis;
        if (!is_byte(out)) BAD("op %u (CONCATENATION): only int8/uint8 tensors", k);
        for (i = 0; i < op->n_inputs; i++) {
            if (in[i]->type != out->type || in[i]->rank != R) BAD("op %u (CONCATENATION): inputs do not fit", k);
            for (d = 0; d < R; d++)
                if (d != axis && in[i]->shape[d] != out->shape[d] && !(d == 0 && in[i]->shape[0] == 1))
                    BAD("op %u (CONCATENATION): input shapes do not fit", k);
            total += in[i]->shape[axis];
        }
        if (total != out->shape[axis]) BAD("op %u (CONCATENATION): output shape does not fit", k);
        if (axis != 0) {
            int32_t batch = 1;
            for (i = 0; i < op->n_inputs; i++)
                if (in[i]->shape[0] > batch) batch = in[i]->shape[0];
            if (batch != out->shape[0]) BAD("op %u (CONCATENATION): output batch does not fit", k);
        }
        return 1;
    }
    case TQ_OP_STRIDED_SLICE: {
        tsptq_tensor *x = in[0];
        if (!is_byte(x) || out->type != x->type || out->rank != x->rank || x->rank < 1)
            BAD("op %u (STRIDED_SLICE): only int8/uint8 tensors, same rank in and out", k);
        for (i = 1; i < 4; i++)
            if (in[i]->type != TSPTQ_INT32 || in[i]->rank != 1 || in[i]->shape[0] != x->rank)
                BAD("op %u (STRIDED_SLICE): begin/end/strides need %d int32 entries", k, x->rank);
        op->vec[0][0] = 0;
        op->vec[1][0] = x->shape[0]; /* the batch axis is kept whole */
        op->vec[2][0] = 1;
        if (out->shape[0] != x->shape[0]) BAD("op %u (STRIDED_SLICE): the batch axis must be kept whole", k);
        for (i = 1; i < x->rank; i++) {
            int64_t b = ((const int32_t *)in[1]->data)[i], e = ((const int32_t *)in[2]->data)[i],
                    s = ((const int32_t *)in[3]->data)[i];
            if (s < 1 || b < 0 || b >= e || e > x->shape[i])
                return OPFAIL(TSPTQ_ERR_UNSUPPORTED_OP, "op %u (STRIDED_SLICE): only in-range slices with positive "
                                                        "strides are supported", k);
            if (out->shape[i] != (e - b + s - 1) / s) BAD("op %u (STRIDED_SLICE): output shape does not fit", k);
            op->vec[0][i] = (int32_t)b;
            op->vec[1][i] = (int32_t)e;
            op->vec[2][i] = (int32_t)s;
        }
        return 1;
    }
    case TQ_OP_LAYERNORM_2S: {
        tsptq_tensor *x = in[0];
        int64_t D = x->rank ? x->shape[x->rank - 1] : 0, c;
        if (x->type != TSPTQ_INT8 || out->type != TSPTQ_INT8 || !same_shape(x, out) || D < 1)
            BAD("op %u (TSPTQ_LAYERNORM_2S): input and output must be int8 of the same shape", k);
        if (D > 1024) BAD("op %u (TSPTQ_LAYERNORM_2S): %L channels, at most 1024", k, D);
        for (i = 1; i < 4; i++)
            if (in[i]->rank != 1 || in[i]->shape[0] != D)
                BAD("op %u (TSPTQ_LAYERNORM_2S): per-channel parameters must have %L entries", k, D);
        if (in[1]->type != TSPTQ_INT8 || in[2]->type != TSPTQ_INT32 || in[3]->type != TSPTQ_INT64)
            BAD("op %u (TSPTQ_LAYERNORM_2S): parameters must be int8, int32 and int64", k);
        for (c = 0; c < D; c++) {
            int64_t bb = ((const int64_t *)in[3]->data)[c];
            if (!in_range(((const int8_t *)in[1]->data)[c], 0, 7) || !in_range(bb, -((int64_t)1 << 62),
                                                                                (int64_t)1 << 62))
                BADQ("op %u (TSPTQ_LAYERNORM_2S): channel shift or beta out of range", k);
        }
        if (!in_range(o[TQ_LN_IN_ZP], -128, 127) || !in_range(o[TQ_LN_OUT_ZP], -128, 127) ||
            !in_range(o[TQ_LN_EPS], 0, (int64_t)1 << 62) || !in_range(o[TQ_LN_OUT_SHIFT], 0, 62))
            BADQ("op %u (TSPTQ_LAYERNORM_2S): options out of range", k);
        return 1;
    }
    case TQ_OP_SOFTMAX_2S: {
        tsptq_tensor *x = in[0], *lut = in[1];
        int64_t N = x->rank ? x->shape[x->rank - 1] : 0, kind = o[TQ_SM_OUT_KIND];
        if (x->type != TSPTQ_INT8 || !same_shape(x, out) || N < 1)
            BAD("op %u (TSPTQ_SOFTMAX_2S): input must be int8, output of the same shape", k);
        if (N > 2047) BAD("op %u (TSPTQ_SOFTMAX_2S): %L tokens, at most 2047", k, N);
        if (lut->rank != 1 || lut->shape[0] != 256 || lut->type != TSPTQ_INT32)
            BAD("op %u (TSPTQ_SOFTMAX_2S): the lookup table must have 256 int32 entries", k);
        if (kind != TQ_UNIFORM && kind != TQ_TWO_SCALE && kind != TQ_LOG2)
            return OPFAIL(TSPTQ_ERR_UNSUPPORTED_OP, "op %u (TSPTQ_SOFTMAX_2S): output code kind %L", k, kind);
        if (out->type != (kind == TQ_UNIFORM ? TSPTQ_INT8 : TSPTQ_UINT8))
            BAD("op %u (TSPTQ_SOFTMAX_2S): output dtype does not fit the code kind", k);
        if (((const int32_t *)lut->data)[0] != (1 << 20)) BADQ("op %u (TSPTQ_SOFTMAX_2S): exp table must start at 2^20", k);
        for (i = 0; i < 256; i++)
            if (!in_range(((const int32_t *)lut->data)[i], 0, 1 << 20))
                BADQ("op %u (TSPTQ_SOFTMAX_2S): exp table entry %d out of range", k, i);
        if (!in_range(o[TQ_SM_MULT], 0, ACC_LIMIT) || !in_range(o[TQ_SM_SHIFT], 0, 62) ||
            !in_range(o[TQ_SM_OUT_ZP], -128, 127) || !in_range(o[TQ_SM_BITS], 2, 8) || !in_range(o[TQ_SM_M], 0, 8) ||
            !in_range(o[TQ_SM_SIGNED_FINE], 0, 1))
            BADQ("op %u (TSPTQ_SOFTMAX_2S): options out of range", k);
        return 1;
    }
    case TQ_OP_GELU_2S: {
        tsptq_tensor *x = in[0], *lut = in[1];
        if (!is_byte(x) || lut->rank != 1 || lut->shape[0] != 256 || !is_byte(lut) || out->type != lut->type ||
            !same_shape(x, out))
            BAD("op %u (TSPTQ_GELU_2S): needs a byte input, a 256-entry table and an output of the table's type", k);
        return 1;
    }
    case TQ_OP_FC_2S: {
        tsptq_tensor *x = in[0], *w = in[1], *b = in[2], *mu = in[3], *sh = in[4], *ish = in[5];
        int64_t I = x->rank ? x->shape[x->rank - 1] : 0, O = w->shape[0], kind = o[TQ_FC_IN_KIND], c;
        if (!is_byte(x) || w->type != TSPTQ_INT8 || w->rank != 2 || w->shape[1] != I || out->type != TSPTQ_INT8 ||
            out->rank < 1 || out->shape[out->rank - 1] != O || numel(x) / (I ? I : 1) != numel(out) / O)
            BAD("op %u (TSPTQ_FC_2S): shapes do not fit", k);
        if (b->type != TSPTQ_INT32 || mu->type != TSPTQ_INT32 || sh->type != TSPTQ_INT32 || ish->type != TSPTQ_INT8 ||
            b->rank != 1 || mu->rank != 1 || sh->rank != 1 || ish->rank != 1 || b->shape[0] != O ||
            mu->shape[0] != O || sh->shape[0] != O || ish->shape[0] != I)
            BAD("op %u (TSPTQ_FC_2S): parameter tensors do not fit", k);
        if (kind < TQ_UNIFORM || kind > TQ_SIGN_SPLIT)
            return OPFAIL(TSPTQ_ERR_UNSUPPORTED_OP, "op %u (TSPTQ_FC_2S): input code kind %L", k, kind);
        if (kind <= TQ_CHANNEL_POW2 && x->type != TSPTQ_INT8)
            BAD("op %u (TSPTQ_FC_2S): an affine input code must be int8", k);
        if (!in_range(o[TQ_FC_IN_ZP], -128, 127) || !in_range(o[TQ_FC_BITS], 2, 8) || !in_range(o[TQ_FC_M], 0, 8) ||
            !in_range(o[TQ_FC_SIGNED_FINE], 0, 1) || !in_range(o[TQ_FC_NEG_MULT], 0, ACC_LIMIT) ||
            !in_range(o[TQ_FC_NEG_SHIFT], -31, 31) || !in_range(o[TQ_FC_OUT_ZP], -128, 127))
            BADQ("op %u (TSPTQ_FC_2S): options out of range", k);
        for (c = 0; c < O; c++)
            if (((const int32_t *)mu->data)[c] < 0 || !in_range(((const int32_t *)sh->data)[c], -31, 31))
                BADQ("op %u (TSPTQ_FC_2S): output multiplier of channel %L out of range", k, c);
        for (c = 0; c < I; c++)
            if (!in_range(((const int8_t *)ish->data)[c], 0, 7))
                BADQ("op %u (TSPTQ_FC_2S): input channel shift out of range", k);
        if (!acc_fits(w, O, I, max_operand(kind, o[TQ_FC_M], 0), kind,
                      kind == TQ_CHANNEL_POW2 ? (const int8_t *)ish->data : 0))
            BAD("op %u (TSPTQ_FC_2S): the int32 accumulator could overflow", k);
        return 1;
    }
    case TQ_OP_BMM_2S: {
        tsptq_tensor *a = in[0], *b = in[1];
        int R = a->rank;
        int64_t kind = o[TQ_BMM_A_KIND], N, maxd;
        if (!is_byte(a) || b->type != TSPTQ_INT8 || out->type != TSPTQ_INT8 || R < 2 || b->rank != R ||
            out->rank != R)
            BAD("op %u (TSPTQ_BMM_2S): operands do not fit", k);
        for (i = 0; i < R - 2; i++)
            if (b->shape[i] != a->shape[i] || out->shape[i] != a->shape[i])
                BAD("op %u (TSPTQ_BMM_2S): batch dimensions differ", k);
        N = a->shape[R - 1];
        if (a->shape[R - 2] != N || b->shape[R - 2] != N || out->shape[R - 2] != N ||
            out->shape[R - 1] != b->shape[R - 1])
            BAD("op %u (TSPTQ_BMM_2S): shapes do not fit (a must be (..., N, N), b (..., N, M))", k);
        if (kind != TQ_TWO_SCALE && kind != TQ_LOG2)
            return OPFAIL(TSPTQ_ERR_UNSUPPORTED_OP, "op %u (TSPTQ_BMM_2S): probability code kind %L", k, kind);
        if (!in_range(o[TQ_BMM_BITS], 2, 8) || !in_range(o[TQ_BMM_M], 0, 8) ||
            !in_range(o[TQ_BMM_SIGNED_FINE], 0, 1) || !in_range(o[TQ_BMM_LOG2_FRAC], 0, 30) ||
            !in_range(o[TQ_BMM_B_ZP], -128, 127) || !in_range(o[TQ_BMM_MULT], 0, ACC_LIMIT) ||
            !in_range(o[TQ_BMM_SHIFT], -31, 31) || !in_range(o[TQ_BMM_OUT_ZP], -128, 127))
            BADQ("op %u (TSPTQ_BMM_2S): options out of range", k);
        maxd = kind == TQ_LOG2 ? (int64_t)1 << o[TQ_BMM_LOG2_FRAC] : (int64_t)127 << o[TQ_BMM_M];
        if (N * maxd * 255 > ACC_LIMIT) BAD("op %u (TSPTQ_BMM_2S): the int32 accumulator could overflow", k);
        return 1;
    }
    case TQ_OP_ADD_2S: {
        tsptq_tensor *a = in[0], *b = in[1], *p = in[2];
        int64_t C = out->rank ? out->shape[out->rank - 1] : 0, n, c;
        if (a->type != TSPTQ_INT8 || b->type != TSPTQ_INT8 || out->type != TSPTQ_INT8 || !same_shape(a, out) ||
            !same_shape(b, out) || C < 1)
            BAD("op %u (TSPTQ_ADD_2S): operands must be int8 of the same shape", k);
        if (p->type != TSPTQ_INT32 || p->rank != 2 || p->shape[0] != 6 || (p->shape[1] != C && p->shape[1] != 1))
            BAD("op %u (TSPTQ_ADD_2S): parameters must be int32 (6, %L)", k, C);
        n = p->shape[1];
        for (c = 0; c < n; c++) {
            const int32_t *pp = (const int32_t *)p->data;
            if (pp[c] < 0 || pp[2 * n + c] < 0 || pp[4 * n + c] < 0 || !in_range(pp[n + c], -31, 0) ||
                !in_range(pp[3 * n + c], -31, 0) || !in_range(pp[5 * n + c], -31, 31))
                BADQ("op %u (TSPTQ_ADD_2S): rescaling parameters of channel %L out of range", k, c);
        }
        if (!in_range(o[TQ_ADD2S_A_ZP], -128, 127) || !in_range(o[TQ_ADD2S_B_ZP], -128, 127) ||
            !in_range(o[TQ_ADD2S_OUT_ZP], -128, 127))
            BADQ("op %u (TSPTQ_ADD_2S): zero points out of range", k);
        return 1;
    }
    default:
        return OPFAIL(TSPTQ_ERR_UNSUPPORTED_OP, "op %u: unknown kind", k);
    }
#undef BAD
#undef BADQ
}

/* The metadata's "two_scale" map names exactly the tensors that carry custom quantization details (the Python
 * reader also compares the descriptions field by field; the C runtime does not use them). */
static int check_two_scale(ld *L) {
    rd *r = &L->r;
    tsptq_model *m = L->m;
    js j;
    uint32_t a, b, i, n_keys = 0, n_details = 0, value = 0;
    int found = 0;
    j.s = r->b + L->meta.start;
    j.n = L->meta.len;
    j.i = 0;
    for (i = 0; i < m->n_tensors; i++) n_details += m->tensors[i].has_details;
    /* find the top-level "two_scale" value (the metadata was parsed once already: it is an object) */
    js_ws(&j);
    j.i++;
    for (;;) {
        js_ws(&j);
        if (!js_string(&j, &a, &b)) break;
        js_ws(&j);
        if (j.i >= j.n || j.s[j.i] != ':') break;
        j.i++;
        js_ws(&j);
        if (b - a == 9 && memcmp(j.s + a, "two_scale", 9) == 0) {
            found = 1;
            value = j.i;
        }
        if (!js_skip(&j)) break;
        js_ws(&j);
        if (j.i >= j.n || j.s[j.i] != ',') break;
        j.i++;
    }
    if (found) {
        j.i = value;
        if (j.i >= j.n || j.s[j.i] != '{')
            return OPFAIL(TSPTQ_ERR_INVALID_MODEL, "the 'tsptq' metadata's two_scale entry is not a map");
        j.i++;
        js_ws(&j);
        if (j.i < j.n && j.s[j.i] == '}') j.i++;
        else
            for (;;) {
                int match = 0;
                js_ws(&j);
                if (!js_string(&j, &a, &b)) return OPFAIL(TSPTQ_ERR_INVALID_MODEL, "unreadable two_scale metadata");
                for (i = 0; i < m->n_tensors && !match; i++) {
                    const tsptq_tensor *t = &m->tensors[i];
                    match = t->has_details && t->name_len == b - a && memcmp(t->name, j.s + a, b - a) == 0;
                }
                if (!match)
                    return OPFAIL(TSPTQ_ERR_INVALID_MODEL, "metadata describes two-scale tensor '%.*s', which the graph "
                                                           "does not have (or has as a plain affine tensor)",
                                  (int)(b - a > 64 ? 64 : b - a), (const char *)j.s + a);
                n_keys++;
                js_ws(&j);
                if (j.i >= j.n || j.s[j.i] != ':') return OPFAIL(TSPTQ_ERR_INVALID_MODEL, "unreadable two_scale metadata");
                j.i++;
                if (!js_skip(&j)) return OPFAIL(TSPTQ_ERR_INVALID_MODEL, "unreadable two_scale metadata");
                js_ws(&j);
                if (j.i < j.n && j.s[j.i] == ',') {
                    j.i++;
                    continue;
                }
                if (j.i < j.n && j.s[j.i] == '}') break;
                return OPFAIL(TSPTQ_ERR_INVALID_MODEL, "unreadable two_scale metadata");
            }
    }
    if (n_keys != n_details)
        return OPFAIL(TSPTQ_ERR_INVALID_MODEL, "%u tensors have a two-scale code but the metadata describes %u",
                      n_details, n_keys);
    return 1;
}

/* ---- schedule, lifetimes, aliases ----------------------------------------------------------------------------- */

static int check_schedule(ld *L) {
    rd *r = &L->r;
    tsptq_model *m = L->m;
    tsptq_tensor *x = &m->tensors[m->input], *y = &m->tensors[m->output];
    uint32_t k, i;
    uint64_t total;
    if (x->is_const || x->type != TSPTQ_INT8 || !x->has_quant || x->rank != 4)
        return OPFAIL(TSPTQ_ERR_INVALID_MODEL, "the graph input must be a quantized int8 NHWC image");
    x->written = 1;
    x->first = 0;
    for (k = 0; k < m->n_ops; k++) {
        tsptq_op *op = &m->ops[k];
        tsptq_tensor *out = &m->tensors[op->output];
        for (i = 0; i < op->n_inputs; i++) {
            tsptq_tensor *t = &m->tensors[op->inputs[i]];
            if (!t->is_const && !t->written)
                return OPFAIL(TSPTQ_ERR_INVALID_MODEL, "op %u (%s) reads tensor %d ('%.*s') before any op writes it",
                              k, tq_op_names[op->kind], op->inputs[i], TNAME(t));
        }
        if (out->written)
            return OPFAIL(TSPTQ_ERR_INVALID_MODEL, "op %u (%s) writes tensor %d ('%.*s'), which is already written",
                          k, tq_op_names[op->kind], op->output, TNAME(out));
        out->written = 1;
        out->first = (int32_t)k;
    }
    if (y->is_const || !y->written || m->output == m->input)
        return OPFAIL(TSPTQ_ERR_INVALID_MODEL, "no op writes the graph output");
    /* last reads */
    for (k = 0; k < m->n_ops; k++)
        for (i = 0; i < m->ops[k].n_inputs; i++) m->tensors[m->ops[k].inputs[i]].last = (int32_t)k;
    /* a RESHAPE of an activation shares its input's bytes: one buffer (the root's) lives as long as any of them */
    for (k = 0; k < m->n_ops; k++) {
        tsptq_op *op = &m->ops[k];
        if (op->kind == TQ_OP_RESHAPE && !m->tensors[op->inputs[0]].is_const)
            m->tensors[op->output].root = m->tensors[op->inputs[0]].root;
    }
    for (i = 0; i < m->n_tensors; i++) {
        tsptq_tensor *t = &m->tensors[i];
        if (t->is_const || !t->written) continue;
        if (t->last < t->first) t->last = t->first;
        if ((int32_t)i == m->output) t->last = (int32_t)m->n_ops - 1;
        if (t->root != (int32_t)i) {
            tsptq_tensor *root = &m->tensors[t->root];
            if (t->last > root->last) root->last = t->last;
        }
    }
    /* persistent multipliers and scratch: 64-bit sums, each checked before it is stored in 32 bits */
    total = 0;
    for (k = 0; k < m->n_ops; k++) {
        tsptq_op *op = &m->ops[k];
        uint64_t params = tq_op_persistent(m, op), scratch = tq_op_scratch(m, op);
        if (params > MAX_TENSOR_BYTES || scratch > MAX_TENSOR_BYTES)
            return OPFAIL(TSPTQ_ERR_INVALID_MODEL, "op %u (%s): its parameters or scratch need more than 2 GB", k,
                          tq_op_names[op->kind]);
        op->params_offset = (uint32_t)total;
        op->params_len = (uint32_t)params;
        op->scratch_len = (uint32_t)scratch;
        total += TQ_ALIGN_UP(params, TSPTQ_TENSOR_ALIGNMENT);
        if (total > MAX_TENSOR_BYTES) return OPFAIL(TSPTQ_ERR_INVALID_MODEL, "the model needs more than 2 GB");
    }
    m->persistent_size = (uint32_t)total;
    return 1;
}

static int load(ld *L, tsptq_model *m, const uint8_t *b, size_t len, tsptq_status *st) {
    rd *r = &L->r;
    tbl model, sub;
    vec subgraphs, codes, tensors, ops, gin, gout;
    uint32_t i, k;
    int64_t version;
    const uint16_t one = 1;
    if (*(const uint8_t *)&one != 1)
        return tq_fail(st, TSPTQ_ERR_UNSUPPORTED_OP, "this runtime reads weights in place and needs a little-endian "
                                                     "host");
    if (len < 8) return tq_fail(st, TSPTQ_ERR_CORRUPTED, "truncated file (%Z bytes): not a TFLite flatbuffer", len);
    if (memcmp(b + 4, "TFL3", 4) != 0)
        return tq_fail(st, TSPTQ_ERR_BAD_IDENTIFIER, "file identifier is not 'TFL3' (not a .tflite file)");
    if (len > MAX_TENSOR_BYTES) return tq_fail(st, TSPTQ_ERR_INVALID_MODEL, "file larger than 2 GB");
    if (((uintptr_t)b) % 8)
        return tq_fail(st, TSPTQ_ERR_ALIGNMENT, "the model bytes must start on an 8-byte boundary (16 recommended)");
    r->b = b;
    r->n = (uint32_t)len;
    r->st = st;
    r->err = 0;
    L->m = m;
    if (le32(b) > r->n - 4)
        return tq_fail(st, TSPTQ_ERR_CORRUPTED, "corrupted or truncated file: the root table lies past the end");
    if (!tbl_open(r, le32(b), &model, "the root table")) return r->err;
    version = (int64_t)f_uint(r, &model, 0, 4, 0, "the schema version");
    if (!r->err && version > TSPTQ_SCHEMA_VERSION)
        return tq_fail(st, TSPTQ_ERR_VERSION, "TFLite schema version %L is newer than this runtime reads (%d)", version,
                       TSPTQ_SCHEMA_VERSION);
    if (!f_vec(r, &model, 4, 4, &L->buffers, "the buffer list")) return r->err;
    if (!load_metadata(L, &model)) return r->err ? r->err : st->code;
    if (!f_vec(r, &model, 2, 4, &subgraphs, "the subgraph list")) return r->err;
    if (subgraphs.len != 1)
        return tq_fail(st, TSPTQ_ERR_INVALID_MODEL, "expected one subgraph, found %u", subgraphs.len);
    if (!vec_table(r, &subgraphs, 0, &sub, "the subgraph") || !f_vec(r, &sub, 0, 4, &tensors, "the tensor list") ||
        !f_vec(r, &sub, 1, 4, &gin, "the graph inputs") || !f_vec(r, &sub, 2, 4, &gout, "the graph outputs") ||
        !f_vec(r, &sub, 3, 4, &ops, "the operator list") || !f_vec(r, &model, 1, 4, &codes, "the operator codes"))
        return r->err;
    if (tensors.len > TSPTQ_MAX_TENSORS)
        return tq_fail(st, TSPTQ_ERR_TOO_MANY, "the model has %u tensors; this build holds %d (raise "
                                               "TSPTQ_MAX_TENSORS)", tensors.len, TSPTQ_MAX_TENSORS);
    if (ops.len > TSPTQ_MAX_OPS)
        return tq_fail(st, TSPTQ_ERR_TOO_MANY, "the model has %u ops; this build holds %d (raise TSPTQ_MAX_OPS)",
                       ops.len, TSPTQ_MAX_OPS);
    m->n_tensors = tensors.len;
    for (i = 0; i < tensors.len; i++) {
        tbl tt;
        if (!vec_table(r, &tensors, i, &tt, "a tensor") || !load_tensor(L, i, &tt)) return r->err ? r->err : st->code;
    }
    if (!check_two_scale(L)) return st->code;
    m->n_ops = ops.len;
    for (k = 0; k < ops.len; k++) {
        tbl ot, ct;
        vec oin, oout;
        tsptq_op *op = &m->ops[k];
        int kind = 0;
        uint32_t idx;
        memset(op, 0, sizeof *op);
        if (!vec_table(r, &ops, k, &ot, "an operator") || !f_vec(r, &ot, 1, 4, &oin, "an operator's inputs") ||
            !f_vec(r, &ot, 2, 4, &oout, "an operator's outputs"))
            return r->err;
        idx = (uint32_t)f_uint(r, &ot, 0, 4, 0, "an opcode index");
        if (r->err) return r->err;
        if (idx >= codes.len)
            return tq_fail(st, TSPTQ_ERR_CORRUPTED, "corrupted file: op %u: opcode index %u out of range (%u codes)", k,
                           idx, codes.len);
        if (oout.len != 1) return tq_fail(st, TSPTQ_ERR_UNSUPPORTED_OP, "op %u: %u outputs, tsptq ops have one", k,
                                          oout.len);
        if (oin.len > TSPTQ_MAX_OP_INPUTS)
            return tq_fail(st, TSPTQ_ERR_INVALID_MODEL, "op %u: %u inputs, at most %d", k, oin.len,
                           TSPTQ_MAX_OP_INPUTS);
        op->n_inputs = (uint8_t)oin.len;
        for (i = 0; i < oin.len + 1; i++) {
            int32_t t = i < oin.len ? vec_i32(r, &oin, i) : vec_i32(r, &oout, 0);
            if (t < 0 || (uint32_t)t >= m->n_tensors)
                return tq_fail(st, TSPTQ_ERR_CORRUPTED, "corrupted file: op %u %s refers to tensor %d, but the graph "
                                                        "has %u tensors", k, i < oin.len ? "input" : "output", t,
                               m->n_tensors);
            if (i < oin.len) op->inputs[i] = t;
            else op->output = t;
        }
        if (!vec_table(r, &codes, idx, &ct, "an operator code") || !op_kind(L, k, &ct, &kind))
            return r->err ? r->err : st->code;
        op->kind = (uint8_t)kind;
        if (!(kind >= TQ_OP_LAYERNORM_2S ? load_custom_options(L, k, op, &ot) : load_builtin_options(L, k, op, &ot)) ||
            !check_op(L, k, op))
            return r->err ? r->err : st->code;
    }
    if (gin.len != 1 || gout.len != 1)
        return tq_fail(st, TSPTQ_ERR_INVALID_MODEL, "expected one input and one output, found %u and %u", gin.len,
                       gout.len);
    m->input = vec_i32(r, &gin, 0);
    m->output = vec_i32(r, &gout, 0);
    if (m->input < 0 || (uint32_t)m->input >= m->n_tensors || m->output < 0 || (uint32_t)m->output >= m->n_tensors)
        return tq_fail(st, TSPTQ_ERR_CORRUPTED, "corrupted file: graph input/output refers to a tensor out of range "
                                                "(%u tensors)", m->n_tensors);
    if (!check_schedule(L)) return st->code;
    if (!tq_plan(m) || (uint64_t)m->persistent_size + m->activation_size > TQ_MAX_ARENA)
        return tq_fail(st, TSPTQ_ERR_INVALID_MODEL, "the model needs an arena of more than 2 GB");
    return TSPTQ_OK;
}

int tsptq_load(tsptq_model *m, const void *bytes, size_t len, tsptq_status *st) {
    ld L;
    tsptq_status local;
    int rc;
    if (!st) st = &local;
    tq_ok(st);
    if (!m || !bytes) return tq_fail(st, TSPTQ_ERR_ARGUMENT, "tsptq_load: model and bytes must not be NULL");
    memset(m, 0, offsetof(tsptq_model, tensors));
    rc = load(&L, m, (const uint8_t *)bytes, len, st);
    if (rc != TSPTQ_OK) {
        if (st->code == TSPTQ_OK) tq_fail(st, rc, "invalid model");
        memset(m, 0, offsetof(tsptq_model, tensors));
        return st->code;
    }
    m->bytes = (const uint8_t *)bytes;
    m->len = len;
    m->loaded = 1;
    tq_ok(st);
    return TSPTQ_OK;
}
