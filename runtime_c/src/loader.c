/* tsptq runtime: the .tflite loader. Reads a tsptq file with the flatbuffer reader (flatbuffer.h), its custom
 * options and quantization details with the flexbuffer reader (flexbuffer.h) and its 8-byte 'tsptq_format' metadata
 * entry (the JSON 'tsptq' entry is for the Python tools: not parsed here), and makes the checks of
 * toolchain/tsptq/tflite/reader.py (mirrored by toolchain/tsptq/tflite/checks.py), plus
 * the preconditions the kernels rely on: shapes that fit, parameters in range, accumulators that cannot overflow.
 * Ops are resolved, read and checked through the op table (op_table.h): the per-op checks are the ops' own. Nothing
 * outside bytes[0..len) is touched, whatever the bytes hold. No allocation, no libc beyond string.h.
 */
#include <string.h>

#include "flatbuffer.h"
#include "flexbuffer.h"
#include "op_table.h"
#include "ops/op_util.h"
#include "runtime.h"

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

enum { BOP_CUSTOM = 32 }; /* TFLite BuiltinOperator CUSTOM */

static const char *type_name(int type) {
    static const char *const names[] = {"FLOAT32", "FLOAT16", "INT32", "UINT8", "INT64", "STRING", "BOOL", "INT16",
                                        "COMPLEX64", "INT8", "FLOAT64", "COMPLEX128", "UINT64", "RESOURCE", "VARIANT",
                                        "UINT32", "UINT16", "INT4", "BFLOAT16", "INT2", "UINT4"};
    return type >= 0 && type < (int)(sizeof names / sizeof names[0]) ? names[type] : "unknown";
}

/* ---- the model ------------------------------------------------------------------------------------------------ */

typedef struct {
    tq_fb_rd r;
    tsptq_model *m;
    tq_fb_vec buffers;
    tq_fb_tbl options;  /* the builtin options table of the op being loaded */
} ld;

/* Data of buffer `index` (len 0 if none). */
static int buffer_data(ld *L, uint32_t index, tq_fb_vec *data, const char *what) {
    tq_fb_tbl bt;
    data->start = data->len = 0;
    if (!tq_fb_vec_table(&L->r, &L->buffers, index, &bt, what)) return 0;
    if (!tq_fb_field_vec(&L->r, &bt, 0, 1, data, what)) return 0;
    /* Buffer.offset/size (external data of > 2 GB models) are not used by tsptq files */
    if (tq_fb_uint(&L->r, &bt, 1, 8, 0, what) > 1)
        return tq_fail(L->r.st, TSPTQ_ERR_UNSUPPORTED_OP, "buffer %u: external buffer data (offset/size) is not "
                                                          "supported", index), L->r.err = TSPTQ_ERR_UNSUPPORTED_OP, 0;
    return !L->r.err;
}

/* The 'tsptq_format' metadata entry (docs/integer-semantics.md, "The file's metadata"): 8 bytes, the magic "TQFM" and the
 * file's format version (u32, little endian). All the runtime needs from the metadata; the 'tsptq' JSON entry next to
 * it (method, calibration, two-scale descriptions, the same version) is only noticed, for the message of a file
 * written before the binary entry existed. */
static int load_metadata(ld *L, const tq_fb_tbl *model) {
    tq_fb_rd *r = &L->r;
    tq_fb_vec meta, name, data;
    uint32_t i, found = 0, json = 0, buf = 0;
    int64_t version;
    if (!tq_fb_field_vec(r, model, 6, 4, &meta, "the metadata list")) return 0;
    for (i = 0; i < meta.len && !found; i++) {
        tq_fb_tbl e;
        if (!tq_fb_vec_table(r, &meta, i, &e, "a metadata entry") ||
            !tq_fb_field_vec(r, &e, 0, 1, &name, "a metadata name"))
            return 0;
        if (tq_fb_str_eq(r, &name, "tsptq_format")) {
            found = 1;
            buf = (uint32_t)tq_fb_uint(r, &e, 1, 4, 0, "a metadata entry");
        } else if (tq_fb_str_eq(r, &name, "tsptq")) {
            json = 1;
        }
    }
    if (r->err) return 0;
    if (!found)
        return tq_fail(r->st, TSPTQ_ERR_INVALID_MODEL, json ? "no 'tsptq_format' metadata entry: written by an older "
                                                              "tsptq, re-export it"
                                                            : "no 'tsptq_format' metadata entry: not a file written "
                                                              "by tsptq export"), 0;
    if (buf >= L->buffers.len || !buffer_data(L, buf, &data, "the metadata buffer") || !data.len) {
        if (r->err) return 0;
        return tq_fail(r->st, TSPTQ_ERR_INVALID_MODEL, "the 'tsptq_format' metadata points to buffer %u, which does "
                                                       "not exist or is empty", buf), 0;
    }
    if (data.len < 8)
        return tq_fail(r->st, TSPTQ_ERR_INVALID_MODEL, "the 'tsptq_format' metadata holds %u bytes, expected 8",
                       data.len), 0;
    if (memcmp(r->b + data.start, "TQFM", 4) != 0)
        return tq_fail(r->st, TSPTQ_ERR_INVALID_MODEL, "the 'tsptq_format' metadata does not start with 'TQFM'"), 0;
    version = (int64_t)tq_le32(r->b + data.start + 4);
    if (version > TSPTQ_METADATA_VERSION)
        return tq_fail(r->st, TSPTQ_ERR_VERSION, "the file's tsptq format is version %L; this runtime reads up to "
                                                 "version %d: upgrade the runtime", version, TSPTQ_METADATA_VERSION), 0;
    if (version < 1)
        return tq_fail(r->st, TSPTQ_ERR_INVALID_MODEL, "unknown tsptq format version %L", version), 0;
    if (data.len != 8)
        return tq_fail(r->st, TSPTQ_ERR_INVALID_MODEL, "the 'tsptq_format' metadata holds %u bytes, expected 8",
                       data.len), 0;
    return 1;
}

static int load_quant(ld *L, uint32_t i, tsptq_tensor *t, const tq_fb_tbl *tt) {
    tq_fb_rd *r = &L->r;
    tq_fb_tbl q;
    tq_fb_vec scale, zp;
    uint32_t c;
    int64_t axis, details_type, lo, hi;
    t->has_quant = 0;
    if (!tq_fb_field_table(r, tt, 4, &q, "a tensor's quantization")) return !r->err;
    if (!tq_fb_field_vec(r, &q, 2, 4, &scale, "a quantization scale vector") ||
        !tq_fb_field_vec(r, &q, 3, 8, &zp, "a quantization zero point vector"))
        return 0;
    details_type = (int64_t)tq_fb_uint(r, &q, 4, 1, 0, "quantization details");
    axis = tq_fb_int(r, &q, 6, 4, 0, "quantized_dimension");
    if (r->err) return 0;
    if (!scale.len) return 1; /* no scales: not quantized (as the Python reader) */
    if (zp.len && zp.len != scale.len)
        return tq_fail(r->st, TSPTQ_ERR_BAD_QUANTIZATION, "tensor %u (%.*s): %u scales but %u zero points", i,
                       TNAME(t), scale.len, zp.len), 0;
    for (c = 0; c < scale.len; c++) {
        uint32_t bits = tq_le32(r->b + scale.start + 4 * c);
        /* finite and > 0: sign clear, exponent not all ones, not zero */
        if ((bits >> 31) || ((bits >> 23) & 0xFF) == 0xFF || bits == 0)
            return tq_fail(r->st, TSPTQ_ERR_BAD_QUANTIZATION, "tensor %u (%.*s): scale %u is not finite and > 0", i,
                           TNAME(t), c), 0;
    }
    lo = t->type == TSPTQ_UINT8 ? 0 : (t->type == TSPTQ_INT8 ? -128 : 0);
    hi = t->type == TSPTQ_UINT8 ? 255 : (t->type == TSPTQ_INT8 ? 127 : 0);
    for (c = 0; c < zp.len; c++) {
        int64_t z = tq_le_s(r->b + zp.start + 8 * (size_t)c, 8);
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
        tq_fb_tbl d;
        tq_fb_vec custom;
        tq_fxmap fm;
        if (tq_fb_field_table(r, &q, 5, &d, "quantization details")) {
            if (!tq_fb_field_vec(r, &d, 0, 1, &custom, "custom quantization bytes")) return 0;
            if (!tq_fx_map(r->b + custom.start, custom.len, &fm) || tq_fx_find(&fm, "kind") < 0)
                return tq_fail(r->st, TSPTQ_ERR_BAD_QUANTIZATION, "tensor %u (%.*s): custom quantization details "
                                                                  "unreadable or without a 'kind'", i, TNAME(t)), 0;
        }
        if (r->err) return 0;
    } else if (details_type != 0) {
        return tq_fail(r->st, TSPTQ_ERR_UNSUPPORTED_OP, "tensor %u (%.*s): quantization details type %L is not "
                                                        "supported", i, TNAME(t), details_type), 0;
    }
    t->has_quant = 1;
    t->scales = r->b + scale.start;
    t->zero_points = zp.len ? r->b + zp.start : NULL;
    t->n_scales = scale.len;
    t->quant_axis = (uint8_t)(scale.len > 1 ? axis : 0);
    return 1;
}

static int load_tensor(ld *L, uint32_t i, const tq_fb_tbl *tt) {
    tq_fb_rd *r = &L->r;
    tsptq_tensor *t = &L->m->tensors[i];
    tq_fb_vec shape, name, data;
    uint32_t d, esize, buf;
    int64_t type;
    uint64_t bytes = 1;
    memset(t, 0, sizeof *t);
    t->root = (int32_t)i;
    t->first = t->last = -1;
    if (!tq_fb_field_vec(r, tt, 3, 1, &name, "a tensor name") ||
        !tq_fb_field_vec(r, tt, 0, 4, &shape, "a tensor shape"))
        return 0;
    t->name = r->b + name.start;
    t->name_len = (uint16_t)(name.len > 0xFFFF ? 0xFFFF : name.len);
    type = (int64_t)tq_fb_uint(r, tt, 1, 1, 0, "a tensor type");
    buf = (uint32_t)tq_fb_uint(r, tt, 2, 4, 0, "a tensor buffer index");
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
        int32_t s = tq_fb_vec_i32(r, &shape, d);
        if (s <= 0 || s > TQ_MAX_DIM)
            return tq_fail(r->st, TSPTQ_ERR_INVALID_MODEL, "tensor %u (%.*s): invalid dimension %d", i, TNAME(t), s),
                   0;
        t->shape[d] = s;
        bytes *= (uint64_t)s;
        if (bytes > TQ_MAX_TENSOR_BYTES) break;
    }
    bytes *= esize;
    if (bytes > TQ_MAX_TENSOR_BYTES)
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

/* ---- ops: resolved, options read and checked through the op table (op_table.h) ------------------------------ */

#define OPFAIL(code, ...) (tq_fail(r->st, (code), __VA_ARGS__), 0)

/* "A, B, C": the names of the table's builtin (custom = 0) or custom (custom = 1) ops, in table order. */
static const char *op_names(char *buf, size_t cap, int custom) {
    size_t n = 0;
    uint32_t i;
    buf[0] = 0;
    for (i = 0; i < tq_op_count; i++) {
        const char *s = tq_op_table[i]->name;
        if ((tq_op_table[i]->builtin_code == TQ_CUSTOM) != custom) continue;
        if (n && n + 2 < cap) {
            buf[n++] = ',';
            buf[n++] = ' ';
        }
        while (*s && n + 1 < cap) buf[n++] = *s++;
        buf[n] = 0;
    }
    return buf;
}

/* Resolve an operator code to an op of the table (its index: tsptq_op.kind). */
static int op_kind(ld *L, uint32_t k, const tq_fb_tbl *code, int *kind) {
    tq_fb_rd *r = &L->r;
    int64_t dep = tq_fb_int(r, code, 0, 1, 0, "an operator code"), bc = tq_fb_int(r, code, 3, 4, 0, "an operator code");
    int64_t builtin = dep > bc ? dep : bc;
    char names[TSPTQ_MESSAGE_SIZE];
    uint32_t c;
    if (r->err) return 0;
    if (builtin == BOP_CUSTOM) {
        tq_fb_vec name;
        if (!tq_fb_field_vec(r, code, 1, 1, &name, "a custom op name")) return 0;
        for (c = 0; c < tq_op_count; c++)
            if (tq_op_table[c]->builtin_code == TQ_CUSTOM && tq_fb_str_eq(r, &name, tq_op_table[c]->name)) {
                *kind = (int)c;
                return 1;
            }
        return tq_fail(r->st, TSPTQ_ERR_UNSUPPORTED_OP, "op %u: custom op '%.*s' is not a tsptq op (known: %s)", k,
                       (int)(name.len > 48 ? 48 : name.len), (const char *)r->b + name.start,
                       op_names(names, sizeof names, 1)), 0;
    }
    for (c = 0; c < tq_op_count; c++)
        if (tq_op_table[c]->builtin_code != TQ_CUSTOM && tq_op_table[c]->builtin_code == builtin) {
            *kind = (int)c;
            return 1;
        }
    return tq_fail(r->st, TSPTQ_ERR_UNSUPPORTED_OP, "op %u: builtin %s (code %L) is not supported by the tsptq "
                                                    "runtime (supported: %s)", k,
                   builtin >= 0 && builtin < (int64_t)N_BUILTIN_NAMES ? builtin_names[builtin] : "unknown", builtin,
                   op_names(names, sizeof names, 0)), 0;
}

/* The context's services (tq_op_ctx): field `field` of the builtin options table, read errors. */
static int64_t ctx_option(tq_op_ctx *c, uint32_t field, uint32_t size, int64_t def, const char *what) {
    ld *L = (ld *)c->reader;
    return tq_fb_int(&L->r, &L->options, field, size, def, what);
}
static int ctx_read_failed(const tq_op_ctx *c) { return ((const ld *)c->reader)->r.err != 0; }

static void ctx_init(ld *L, uint32_t k, tsptq_op *op, tq_op_ctx *c) {
    tsptq_model *m = L->m;
    uint32_t i;
    memset(c, 0, sizeof *c);
    c->m = m;
    c->op = op;
    c->def = tq_op_table[op->kind];
    c->k = k;
    for (i = 0; i < op->n_inputs; i++) c->in[i] = &m->tensors[op->inputs[i]];
    c->out = &m->tensors[op->output];
    c->st = L->r.st;
    c->fail = tq_fail;
    c->option = ctx_option;
    c->read_failed = ctx_read_failed;
    c->reader = L;
}

/* Builtin options: the op's load_options (what the Python reader accepts, and stricter where the kernels need it);
 * without one, an options table must only be of the op's type. */
static int load_builtin_options(ld *L, tq_op_ctx *c, const tq_fb_tbl *ot) {
    tq_fb_rd *r = &L->r;
    c->options_type = (int64_t)tq_fb_uint(r, ot, 3, 1, 0, "builtin options");
    c->has_options = tq_fb_field_table(r, ot, 4, &L->options, "builtin options");
    if (r->err) return 0;
    return c->def->load_options ? c->def->load_options(c) : tq_expect_options(c);
}

/* Custom options: a flexbuffer map holding every key of the op's option_keys as an integer, in tsptq_op.opt order. */
static int load_custom_options(ld *L, tq_op_ctx *c, const tq_fb_tbl *ot) {
    tq_fb_rd *r = &L->r;
    tq_fb_vec opts;
    tq_fxmap fm;
    const tq_op_def *def = c->def;
    uint32_t f;
    if (!tq_fb_field_vec(r, ot, 5, 1, &opts, "custom options")) return 0;
    if (tq_fb_int(r, ot, 6, 1, 0, "custom options format") != 0)
        return r->err ? 0 : OPFAIL(TSPTQ_ERR_UNSUPPORTED_OP, "op %u (%s): custom options are not a flexbuffer", c->k,
                                   def->name);
    if (!tq_fx_map(r->b + opts.start, opts.len, &fm))
        return OPFAIL(TSPTQ_ERR_INVALID_MODEL, "op %u (%s): custom options are not a readable flexbuffer map", c->k,
                      def->name);
    for (f = 0; f < def->n_option_keys && f < TSPTQ_MAX_OPTIONS; f++) {
        int idx = tq_fx_find(&fm, def->option_keys[f]);
        if (idx < 0 || !tq_fx_int(&fm, idx, &c->op->opt[f]))
            return OPFAIL(TSPTQ_ERR_INVALID_MODEL, "op %u (%s): custom options miss the integer field %s", c->k,
                          def->name, def->option_keys[f]);
    }
    return 1;
}

/* What every op shares (the input count, an output that is not constant and is quantized, constant parameters, the
 * output shape of an elementwise op), then the op's own checks (its prepare). */
static int check_op(ld *L, tq_op_ctx *c) {
    tq_fb_rd *r = &L->r;
    const tq_op_def *def = c->def;
    tsptq_op *op = c->op;
    tsptq_tensor *out = c->out;
    uint32_t k = c->k;
    int i;
    if (op->n_inputs < def->min_inputs || op->n_inputs > def->max_inputs) {
        if (def->min_inputs == def->max_inputs)
            return OPFAIL(TSPTQ_ERR_INVALID_MODEL, "op %u (%s): %d inputs, expected %d", k, def->name, op->n_inputs,
                          def->min_inputs);
        return OPFAIL(TSPTQ_ERR_INVALID_MODEL, "op %u (%s): %d inputs, expected %d to %d", k, def->name,
                      op->n_inputs, def->min_inputs, def->max_inputs);
    }
    if (out->is_const)
        return OPFAIL(TSPTQ_ERR_INVALID_MODEL, "op %u (%s): writes into constant tensor '%.*s'", k, def->name,
                      TNAME(out));
    if (!out->has_quant && !(def->flags & TQ_OPF_ANY_OUTPUT))
        return OPFAIL(TSPTQ_ERR_INVALID_MODEL, "op %u (%s): output '%.*s' has no quantization parameters", k,
                      def->name, TNAME(out));
    for (i = def->const_from ? def->const_from : op->n_inputs; i < op->n_inputs; i++)
        if (!c->in[i]->is_const)
            return OPFAIL(TSPTQ_ERR_INVALID_MODEL, "op %u (%s): parameter tensor '%.*s' must be constant", k,
                          def->name, TNAME(c->in[i]));
    if ((def->flags & TQ_OPF_ELEMENTWISE) && !tq_same_shape(c->in[0], out))
        return OPFAIL(TSPTQ_ERR_INVALID_MODEL, "op %u (%s): the output's shape differs from the input's (an "
                                               "elementwise op)", k, def->name);
    return def->prepare ? def->prepare(c) : 1;
}

/* ---- schedule, lifetimes, aliases ----------------------------------------------------------------------------- */

/* No prepacked part: the kernels pack per call (the same bytes). */
static void drop_prepacked(tsptq_model *m) {
    uint32_t k;
    for (k = 0; k < m->n_ops; k++) m->ops[k].packed_offset = m->ops[k].packed_len = 0;
    m->prepacked_size = 0;
}

static int check_schedule(ld *L) {
    tq_fb_rd *r = &L->r;
    tsptq_model *m = L->m;
    tsptq_tensor *x = &m->tensors[m->input], *y = &m->tensors[m->output];
    uint32_t k, i;
    uint64_t total, packed_total;
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
                              k, tq_op_table[op->kind]->name, op->inputs[i], TNAME(t));
        }
        if (out->written)
            return OPFAIL(TSPTQ_ERR_INVALID_MODEL, "op %u (%s) writes tensor %d ('%.*s'), which is already written",
                          k, tq_op_table[op->kind]->name, op->output, TNAME(out));
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
        if ((tq_op_table[op->kind]->flags & TQ_OPF_ALIAS) && !m->tensors[op->inputs[0]].is_const)
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
    /* persistent multipliers, prepacked constants and scratch: 64-bit sums, each checked before it is stored in 32
     * bits */
    total = packed_total = 0;
    for (k = 0; k < m->n_ops; k++) {
        tsptq_op *op = &m->ops[k];
        uint64_t params = tq_op_persistent(m, op), scratch = tq_op_scratch(m, op), packed = tq_op_prepacked(m, op);
        if (params > TQ_MAX_TENSOR_BYTES || scratch > TQ_MAX_TENSOR_BYTES)
            return OPFAIL(TSPTQ_ERR_INVALID_MODEL, "op %u (%s): its parameters or scratch need more than 2 GB", k,
                          tq_op_table[op->kind]->name);
        if (packed > TQ_MAX_TENSOR_BYTES) packed = 0; /* optional (a speed-up): never a reason to refuse a model */
        op->params_offset = (uint32_t)total;
        op->params_len = (uint32_t)params;
        op->scratch_len = (uint32_t)scratch;
        op->packed_offset = (uint32_t)packed_total;
        op->packed_len = (uint32_t)packed;
        total += TQ_ALIGN_UP(params, TSPTQ_TENSOR_ALIGNMENT);
        packed_total += TQ_ALIGN_UP(packed, TQ_PACK_ALIGNMENT);
        if (total > TQ_MAX_TENSOR_BYTES) return OPFAIL(TSPTQ_ERR_INVALID_MODEL, "the model needs more than 2 GB");
    }
    m->persistent_size = (uint32_t)total;
    /* + the alignment of the region's start (planner.c) */
    if (packed_total > TQ_MAX_TENSOR_BYTES - TQ_PACK_ALIGNMENT) drop_prepacked(m);
    else m->prepacked_size = packed_total ? (uint32_t)(packed_total + TQ_PACK_ALIGNMENT) : 0;
    return 1;
}

static int load(ld *L, tsptq_model *m, const uint8_t *b, size_t len, tsptq_status *st) {
    tq_fb_rd *r = &L->r;
    tq_fb_tbl model, sub;
    tq_fb_vec subgraphs, codes, tensors, ops, gin, gout;
    uint32_t i, k;
    int64_t version;
    const uint16_t one = 1;
    if (*(const uint8_t *)&one != 1)
        return tq_fail(st, TSPTQ_ERR_UNSUPPORTED_OP, "this runtime reads weights in place and needs a little-endian "
                                                     "host");
    if (len < 8) return tq_fail(st, TSPTQ_ERR_CORRUPTED, "truncated file (%Z bytes): not a TFLite flatbuffer", len);
    if (memcmp(b + 4, "TFL3", 4) != 0)
        return tq_fail(st, TSPTQ_ERR_BAD_IDENTIFIER, "file identifier is not 'TFL3' (not a .tflite file)");
    if (len > TQ_MAX_TENSOR_BYTES) return tq_fail(st, TSPTQ_ERR_INVALID_MODEL, "file larger than 2 GB");
    if (((uintptr_t)b) % 8)
        return tq_fail(st, TSPTQ_ERR_ALIGNMENT, "the model bytes must start on an 8-byte boundary (16 recommended)");
    r->b = b;
    r->n = (uint32_t)len;
    r->st = st;
    r->err = 0;
    L->m = m;
    if (tq_le32(b) > r->n - 4)
        return tq_fail(st, TSPTQ_ERR_CORRUPTED, "corrupted or truncated file: the root table lies past the end");
    if (!tq_fb_open(r, tq_le32(b), &model, "the root table")) return r->err;
    version = (int64_t)tq_fb_uint(r, &model, 0, 4, 0, "the schema version");
    if (!r->err && version > TSPTQ_SCHEMA_VERSION)
        return tq_fail(st, TSPTQ_ERR_VERSION, "TFLite schema version %L is newer than this runtime reads (%d)", version,
                       TSPTQ_SCHEMA_VERSION);
    if (!tq_fb_field_vec(r, &model, 4, 4, &L->buffers, "the buffer list")) return r->err;
    if (!load_metadata(L, &model)) return r->err ? r->err : st->code;
    if (!tq_fb_field_vec(r, &model, 2, 4, &subgraphs, "the subgraph list")) return r->err;
    if (subgraphs.len != 1)
        return tq_fail(st, TSPTQ_ERR_INVALID_MODEL, "expected one subgraph, found %u", subgraphs.len);
    if (!tq_fb_vec_table(r, &subgraphs, 0, &sub, "the subgraph") ||
        !tq_fb_field_vec(r, &sub, 0, 4, &tensors, "the tensor list") ||
        !tq_fb_field_vec(r, &sub, 1, 4, &gin, "the graph inputs") ||
        !tq_fb_field_vec(r, &sub, 2, 4, &gout, "the graph outputs") ||
        !tq_fb_field_vec(r, &sub, 3, 4, &ops, "the operator list") ||
        !tq_fb_field_vec(r, &model, 1, 4, &codes, "the operator codes"))
        return r->err;
    if (tensors.len > TSPTQ_MAX_TENSORS)
        return tq_fail(st, TSPTQ_ERR_TOO_MANY, "the model has %u tensors; this build holds %d (raise "
                                               "TSPTQ_MAX_TENSORS)", tensors.len, TSPTQ_MAX_TENSORS);
    if (ops.len > TSPTQ_MAX_OPS)
        return tq_fail(st, TSPTQ_ERR_TOO_MANY, "the model has %u ops; this build holds %d (raise TSPTQ_MAX_OPS)",
                       ops.len, TSPTQ_MAX_OPS);
    m->n_tensors = tensors.len;
    for (i = 0; i < tensors.len; i++) {
        tq_fb_tbl tt;
        if (!tq_fb_vec_table(r, &tensors, i, &tt, "a tensor") || !load_tensor(L, i, &tt))
            return r->err ? r->err : st->code;
    }
    m->n_ops = ops.len;
    for (k = 0; k < ops.len; k++) {
        tq_fb_tbl ot, ct;
        tq_fb_vec oin, oout;
        tq_op_ctx ctx;
        tsptq_op *op = &m->ops[k];
        int kind = 0;
        uint32_t idx;
        memset(op, 0, sizeof *op);
        if (!tq_fb_vec_table(r, &ops, k, &ot, "an operator") ||
            !tq_fb_field_vec(r, &ot, 1, 4, &oin, "an operator's inputs") ||
            !tq_fb_field_vec(r, &ot, 2, 4, &oout, "an operator's outputs"))
            return r->err;
        idx = (uint32_t)tq_fb_uint(r, &ot, 0, 4, 0, "an opcode index");
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
            int32_t t = i < oin.len ? tq_fb_vec_i32(r, &oin, i) : tq_fb_vec_i32(r, &oout, 0);
            if (t < 0 || (uint32_t)t >= m->n_tensors)
                return tq_fail(st, TSPTQ_ERR_CORRUPTED, "corrupted file: op %u %s refers to tensor %d, but the graph "
                                                        "has %u tensors", k, i < oin.len ? "input" : "output", t,
                               m->n_tensors);
            if (i < oin.len) op->inputs[i] = t;
            else op->output = t;
        }
        if (!tq_fb_vec_table(r, &codes, idx, &ct, "an operator code") || !op_kind(L, k, &ct, &kind))
            return r->err ? r->err : st->code;
        op->kind = (uint8_t)kind;
        ctx_init(L, k, op, &ctx);
        if (!(ctx.def->builtin_code == TQ_CUSTOM ? load_custom_options(L, &ctx, &ot)
                                                 : load_builtin_options(L, &ctx, &ot)) ||
            !check_op(L, &ctx))
            return r->err ? r->err : st->code;
    }
    if (gin.len != 1 || gout.len != 1)
        return tq_fail(st, TSPTQ_ERR_INVALID_MODEL, "expected one input and one output, found %u and %u", gin.len,
                       gout.len);
    m->input = tq_fb_vec_i32(r, &gin, 0);
    m->output = tq_fb_vec_i32(r, &gout, 0);
    if (m->input < 0 || (uint32_t)m->input >= m->n_tensors || m->output < 0 || (uint32_t)m->output >= m->n_tensors)
        return tq_fail(st, TSPTQ_ERR_CORRUPTED, "corrupted file: graph input/output refers to a tensor out of range "
                                                "(%u tensors)", m->n_tensors);
    if (!check_schedule(L)) return st->code;
    if (!tq_plan(m) || (uint64_t)m->persistent_size + m->activation_size > TQ_MAX_ARENA)
        return tq_fail(st, TSPTQ_ERR_INVALID_MODEL, "the model needs an arena of more than 2 GB");
    /* the limit is every build's (and the Python reader's): the prepacked part comes on top only where it fits */
    if ((uint64_t)m->persistent_size + m->prepacked_size + m->activation_size > TQ_MAX_ARENA) drop_prepacked(m);
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
