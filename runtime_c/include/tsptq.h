/* tsptq: a portable C99 runtime for fully integer-quantized ViTs exported by `tsptq export` (TFLite-schema .tflite).
 *
 * The one public header. No dynamic allocation: the caller owns every byte the runtime touches.
 *
 *   static tsptq_model model;              // fixed-size: TSPTQ_MAX_TENSORS / TSPTQ_MAX_OPS below
 *   tsptq_status st;
 *   if (tsptq_load(&model, bytes, len, &st) != TSPTQ_OK) { puts(st.message); ... }
 *   size_t need = tsptq_arena_size(&model);  // known right after loading, before anything runs
 *   ... static uint8_t arena[...] (8-byte aligned) of at least `need` bytes ...
 *   tsptq_prepare(&model, arena, sizeof arena, &st);
 *   tsptq_invoke(&model, input, tsptq_input_bytes(&model), output, tsptq_output_bytes(&model), &st);
 *
 * Zero copy: constant tensors (weights, tables) are read in place from `bytes`, which must stay valid and unchanged
 * for the model's whole life. Tensors wider than one byte are read through typed pointers, so `bytes` must be
 * aligned (the exporter aligns every buffer to 16 bytes inside the file: an 8-byte aligned `bytes` is enough);
 * a misaligned buffer is rejected with TSPTQ_ERR_ALIGNMENT, never read unaligned.
 *
 * Every function returns a tsptq_error code and, when `status` is not NULL, fills it with the code and a readable
 * message. Nothing is read outside `bytes[0..len)`, whatever they hold.
 */
#ifndef TSPTQ_H
#define TSPTQ_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define TSPTQ_VERSION_MAJOR 0
#define TSPTQ_VERSION_MINOR 2
#define TSPTQ_VERSION_PATCH 0
#define TSPTQ_VERSION_STRING "0.2.0"
/* Newest version of a tsptq file this runtime reads (the u32 in its 'tsptq_format' metadata entry, which the 'tsptq'
 * JSON entry repeats for the Python tools), and the TFLite schema version. */
#define TSPTQ_METADATA_VERSION 1
#define TSPTQ_SCHEMA_VERSION 3

/* Capacity of a tsptq_model (set them before including this header, for every file that includes it, e.g. with -D:
 * the bare-metal targets do, in their target.toml). The defaults: 4096 / 2048 on an OS (Linux, Unix, macOS, Windows:
 * host and Raspberry Pi builds: ~800 KiB of tsptq_model, room for a Swin-B), 1024 / 512 elsewhere (bare metal,
 * ~190 KiB). A model with more is refused with TSPTQ_ERR_TOO_MANY, naming the build's limit. */
#if defined(__linux__) || defined(__unix__) || defined(__APPLE__) || defined(_WIN32)
#define TSPTQ_HOSTED_BUILD 1
#else
#define TSPTQ_HOSTED_BUILD 0
#endif
#ifndef TSPTQ_MAX_TENSORS
#define TSPTQ_MAX_TENSORS (TSPTQ_HOSTED_BUILD ? 4096 : 1024)
#endif
#ifndef TSPTQ_MAX_OPS
#define TSPTQ_MAX_OPS (TSPTQ_HOSTED_BUILD ? 2048 : 512)
#endif
/* Threads (the static pool of src/threads.c): TSPTQ_THREADS=1 builds it (POSIX threads: Linux hosts and boards,
 * link with -pthread); 0 (the default: bare metal, any C99 compiler) leaves it out, and the runtime is single-threaded
 * with no reference to pthreads. TSPTQ_MAX_THREADS bounds tsptq_set_threads (the caller's thread included). */
#ifndef TSPTQ_THREADS
#define TSPTQ_THREADS 0
#endif
#ifndef TSPTQ_MAX_THREADS
#define TSPTQ_MAX_THREADS 8
#endif
#define TSPTQ_MAX_RANK 6
#define TSPTQ_MAX_OP_INPUTS 6
#define TSPTQ_MAX_OPTIONS 10
#define TSPTQ_MESSAGE_SIZE 256
/* Alignment the arena must have (bytes), and of every tensor inside it. */
#define TSPTQ_ARENA_ALIGNMENT 8
#define TSPTQ_TENSOR_ALIGNMENT 16

typedef enum {
    TSPTQ_OK = 0,
    TSPTQ_ERR_ARGUMENT = 1,           /* a NULL pointer, or a call out of order (invoke before prepare) */
    TSPTQ_ERR_BAD_IDENTIFIER = 2,     /* not a .tflite flatbuffer (identifier is not "TFL3") */
    TSPTQ_ERR_CORRUPTED = 3,          /* truncated or corrupted: an offset, length or index points outside the file */
    TSPTQ_ERR_INVALID_MODEL = 4,      /* well-formed but inconsistent: shapes, dtypes, options, schedule, metadata */
    TSPTQ_ERR_UNSUPPORTED_OP = 5,     /* an op, dtype or option the runtime does not implement (the message names it) */
    TSPTQ_ERR_BAD_QUANTIZATION = 6,   /* scales not finite/positive, zero points or multipliers out of range */
    TSPTQ_ERR_VERSION = 7,            /* metadata (or schema) version newer than this runtime reads */
    TSPTQ_ERR_TOO_MANY = 8,           /* more tensors/ops than TSPTQ_MAX_TENSORS/TSPTQ_MAX_OPS */
    TSPTQ_ERR_ALIGNMENT = 9,          /* model bytes or arena not aligned enough */
    TSPTQ_ERR_ARENA_TOO_SMALL = 10,   /* the message names the size needed */
    TSPTQ_ERR_INPUT_SIZE = 11,        /* wrong input length (the message names the expected one) */
    TSPTQ_ERR_OUTPUT_SIZE = 12        /* wrong output buffer length */
} tsptq_error;

typedef struct {
    int code; /* a tsptq_error */
    char message[TSPTQ_MESSAGE_SIZE];
} tsptq_status;

/* Element types (TFLite TensorType values). */
enum { TSPTQ_INT32 = 2, TSPTQ_UINT8 = 3, TSPTQ_INT64 = 4, TSPTQ_INT8 = 9 };

/* ---- internals: the caller allocates these; read them only through the functions below ---------------------- */
typedef struct {
    const uint8_t *data;      /* constant tensors: the bytes inside the model buffer; NULL for activations */
    const uint8_t *scales;    /* float32 scale vector inside the model buffer (little endian), NULL if unquantized */
    const uint8_t *zero_points; /* int64 zero points inside the model buffer (little endian, n_scales of them), NULL
                                 * when the file gives none (all 0) */
    const uint8_t *name;      /* inside the model buffer (not NUL-terminated) */
    uint32_t nbytes;
    uint32_t n_scales;
    uint32_t arena_offset;    /* activations: offset of the tensor's bytes in the activation region */
    int32_t shape[TSPTQ_MAX_RANK];
    int32_t zero_point;       /* first zero point */
    int32_t root;             /* the tensor whose arena bytes this one shares (a RESHAPE aliases its input) */
    int32_t first, last;      /* lifetime over the schedule (activations) */
    uint16_t name_len;
    uint8_t rank, type, has_quant, is_const, written, quant_axis; /* quant_axis: of per-channel scales */
} tsptq_tensor;

typedef struct {
    int64_t opt[TSPTQ_MAX_OPTIONS];      /* integer options (custom options, builtin parameters) */
    int32_t vec[3][TSPTQ_MAX_RANK];      /* TRANSPOSE perm; STRIDED_SLICE begin/end/strides */
    int32_t inputs[TSPTQ_MAX_OP_INPUTS];
    int32_t output;
    uint32_t params_offset, params_len; /* persistent per-channel multipliers (bytes in the persistent region) */
    uint32_t scratch_offset, scratch_len; /* short-lived scratch (bytes in the activation region) */
    uint32_t packed_offset, packed_len;   /* prepacked constants (bytes in the prepacked region; 0: none) */
    uint8_t kind, n_inputs;              /* kind: the index of the op in the op table (tsptq_op_info) */
} tsptq_op;

/* A monotonic counter for per-op profiling: DWT->CYCCNT or SysTick on a board, a clock on a host. */
typedef uint32_t (*tsptq_clock_fn)(void);

typedef struct {
    const uint8_t *bytes;
    size_t len;
    uint32_t n_tensors, n_ops;
    int32_t input, output;
    uint32_t persistent_size;   /* precomputed multipliers, at the arena's start */
    uint32_t prepacked_size;    /* prepacked constants (host SIMD builds' FC weights), after them; 0 elsewhere */
    uint32_t activation_size;   /* the planned activation region (tensors + scratch), after it */
    uint32_t lower_bound;       /* max over the schedule of the live tensors' + scratch bytes (unaligned) */
    uint8_t *arena;
    size_t arena_len;
    const uint8_t *params;      /* the persistent multipliers: in the arena, or the caller's constant copy */
    uint8_t *activations;       /* the activation region */
    uint8_t *packed;            /* the prepacked region (64-byte aligned), or NULL: the kernels pack per call */
    int loaded, prepared;
    tsptq_clock_fn clock;       /* per-op profiling (tsptq_set_profiler); NULL: off */
    uint32_t *op_ticks;
    uint32_t threads;           /* tsptq_set_threads; 0 (after tsptq_load) means 1 */
    tsptq_tensor tensors[TSPTQ_MAX_TENSORS];
    tsptq_op ops[TSPTQ_MAX_OPS];
    /* planner workspace */
    int32_t plan_order[TSPTQ_MAX_TENSORS + TSPTQ_MAX_OPS];
    int32_t plan_live[TSPTQ_MAX_TENSORS + TSPTQ_MAX_OPS];
} tsptq_model;

/* ---- API ----------------------------------------------------------------------------------------------------- */

/* Parse and validate `bytes` (a tsptq .tflite file), plan the arena. Zero copy: `bytes` must outlive `model`. */
int tsptq_load(tsptq_model *model, const void *bytes, size_t len, tsptq_status *status);

/* Arena bytes tsptq_prepare needs (persistent multipliers + prepacked constants + activation plan); 0 if the model is
 * not loaded. */
size_t tsptq_arena_size(const tsptq_model *model);
/* The three parts, and the lower bound of the activation part (the largest total of simultaneously live tensors).
 * The prepacked part is the FC weights as the host SIMD builds' matrix products read them (AVX-512 VNNI, AMX),
 * made once by tsptq_prepare instead of on every invoke; 0 in every other build (reference, AVX2, Arm). */
size_t tsptq_persistent_size(const tsptq_model *model);
size_t tsptq_prepacked_size(const tsptq_model *model);
size_t tsptq_activation_size(const tsptq_model *model);
size_t tsptq_activation_lower_bound(const tsptq_model *model);

/* Bind the arena (TSPTQ_ARENA_ALIGNMENT-aligned) and precompute multipliers. tsptq_arena_size bytes hold the
 * prepacked constants too; an arena of only tsptq_persistent_size + tsptq_activation_size bytes runs without them
 * (the same output bytes, the kernels packing per call); a smaller one is refused (TSPTQ_ERR_ARENA_TOO_SMALL). */
int tsptq_prepare(tsptq_model *model, void *arena, size_t arena_len, tsptq_status *status);

/* The same with the multipliers supplied precomputed (`params`, exactly tsptq_persistent_size bytes, e.g. a const
 * array in flash written by `tsptq emit-c`): the arena then needs only tsptq_activation_size bytes. The params are
 * checked against the model once (TSPTQ_ERR_BAD_QUANTIZATION if they do not match). An arena of at least
 * tsptq_prepacked_size + tsptq_activation_size bytes holds the prepacked constants too, at its start; a smaller one
 * runs without them (the same bytes, the kernels packing per call). */
int tsptq_prepare_with_params(tsptq_model *model, const void *params, size_t params_len, void *arena,
                              size_t arena_len, tsptq_status *status);

/* Run one image: `input` holds the int8 NHWC input codes (tsptq_input_bytes bytes), `output` receives the output
 * codes (tsptq_output_bytes bytes). */
int tsptq_invoke(tsptq_model *model, const void *input, size_t input_len, void *output, size_t output_len,
                 tsptq_status *status);

/* Per-op profiling: while set, every tsptq_invoke adds each op's clock() difference to ticks[k] (the caller
 * zeroes the array; it has tsptq_num_ops entries). clock = NULL turns it off. The ticks are in the clock's unit. */
void tsptq_set_profiler(tsptq_model *model, tsptq_clock_fn clock, uint32_t *ticks);
/* The op's name ("FULLY_CONNECTED", "TSPTQ_SOFTMAX_2S", ...) for reports; NULL for k out of range. */
const char *tsptq_op_name(const tsptq_model *model, size_t k);

/* Threads: tsptq_invoke splits the matrix products (FULLY_CONNECTED, TSPTQ_FC_2S: rows; BATCH_MATMUL,
 * TSPTQ_BMM_2S: heads and rows) and the row-wise ops over n threads, the caller's and n - 1 workers of a process-wide
 * static pool (started here, the first time a count needs them; they wait for work between invokes and never exit).
 * Rows are independent, so the output bytes do not depend on n. Call it after tsptq_load (which resets the count to
 * 1). TSPTQ_ERR_ARGUMENT for n < 1, n > tsptq_max_threads(), or when a worker cannot be started. Two models may be
 * invoked at once from two threads: the pool runs one op at a time, and the other runs its op on its own thread. */
int tsptq_set_threads(tsptq_model *model, int n, tsptq_status *status);
int tsptq_threads(const tsptq_model *model);   /* the count in use (1 when not loaded) */
int tsptq_max_threads(void);                   /* TSPTQ_MAX_THREADS, or 1 in a build without TSPTQ_THREADS */

/* Input/output description. `shape` receives up to TSPTQ_MAX_RANK dims; the return value is the rank (0 if not
 * loaded). */
int tsptq_input_shape(const tsptq_model *model, int32_t *shape);
int tsptq_output_shape(const tsptq_model *model, int32_t *shape);
size_t tsptq_input_bytes(const tsptq_model *model);
size_t tsptq_output_bytes(const tsptq_model *model);
int tsptq_input_type(const tsptq_model *model);   /* TSPTQ_INT8 ... */
int tsptq_output_type(const tsptq_model *model);
/* First scale and zero point (real = scale * (q - zero_point)); returns 0 when the tensor is not quantized. */
int tsptq_input_quantization(const tsptq_model *model, float *scale, int32_t *zero_point);
int tsptq_output_quantization(const tsptq_model *model, float *scale, int32_t *zero_point);

size_t tsptq_num_tensors(const tsptq_model *model);
/* Read access to tensor `index` (the file's tensor index) after tsptq_prepare, as TFLite's interpreter gives it:
 * constants in the model buffer, activations in the arena. The arena is shared, so after tsptq_invoke an activation
 * still holds this image's value only if nothing planned after it reused its bytes: the outputs and the inputs of
 * the last op always do (`tsptq eval --engine c` reads the head's input, the final-norm class token, this way).
 * NULL (and *nbytes = 0) when the model is not prepared or the index is out of range. */
const void *tsptq_tensor_data(const tsptq_model *model, size_t index, size_t *nbytes);
size_t tsptq_num_ops(const tsptq_model *model);
/* The runtime's op table: the ops this build runs, in a fixed order (the one of the Python toolchain's table).
 * tsptq_op_info fills `out` for op i < tsptq_op_table_size() and returns TSPTQ_OK (TSPTQ_ERR_ARGUMENT otherwise).
 * Every pointer in it is to static data. For bindings (Python's ctypes): the fields in this order, each with its
 * natural alignment and no packing; on a 64-bit host name at offset 0, builtin_code at 8, min_inputs 12,
 * max_inputs 16, n_outputs 20, n_option_keys 24, option_keys at 32, elementwise at 40, 48 bytes in all. */
typedef struct {
    const char *name;               /* TFLite builtin name ("FULLY_CONNECTED") or custom code ("TSPTQ_FC_2S") */
    int32_t builtin_code;           /* TFLite BuiltinOperator code; -1 for a custom op */
    uint32_t min_inputs, max_inputs, n_outputs;
    uint32_t n_option_keys;
    /* the op's integer options in the order the runtime holds them: custom ops' flexbuffer keys (all required);
     * builtins: the names of the values the runtime derives from the options and the tensors. NULL when none. */
    const char *const *option_keys;
    uint32_t elementwise;           /* 1: the output has the shape of input 0 (the loader checks it), else 0 */
} tsptq_op_info_t;
uint32_t tsptq_op_table_size(void);
int tsptq_op_info(uint32_t i, tsptq_op_info_t *out);

/* Short name of a tsptq_error code ("TSPTQ_ERR_CORRUPTED"). */
const char *tsptq_error_name(int code);
const char *tsptq_version(void);
/* sizeof(tsptq_model) of this build (for bindings that allocate it, e.g. Python's ctypes). */
size_t tsptq_model_size(void);

#ifdef __cplusplus
}
#endif

#endif
