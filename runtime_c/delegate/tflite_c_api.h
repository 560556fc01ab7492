/* The few TFLite C structs the tsptq delegate touches, declared by hand (no registry package ships the TFLite C
 * headers). Pinned to two runtimes whose layouts of these structs are identical (64-bit Linux, not
 * TF_LITE_STATIC_MEMORY, not _WIN32):
 *  - ai-edge-litert 2.3.0, whose interpreter is TFLite "2.22.0-dev0" (string in libpywrap_litert_common.so); layouts
 *    copied from tensorflow/lite/core/c/common.h of that line;
 *  - tflite-runtime 2.14.0 (TFLite 2.14.0, the last tflite-runtime release), measured in its binary
 *    (_pywrap_tensorflow_interpreter_wrapper.so): the exported TfLiteDelegateCreate zeroes 56 bytes, TfLiteTensorReset /
 *    TfLiteTensorCopy use the TfLiteTensor offsets below (data 8, dims 16, params 24, allocation_type 32, bytes 40,
 *    allocation 48, name 56, buffer_handle 72, is_variable 77, quantization 80); at run time the interpreter's
 *    node/registration pairs are 168 bytes apart with the registration 80 bytes after its node (sizeof TfLiteNode 80,
 *    sizeof TfLiteRegistration 88, builtin RESHAPE with inplace_operator 5 at offset 80), and TfLiteContext has its
 *    function pointers at the same offsets as 2.22 (GetTensor and GetEvalTensor NULL, GetModelMetadata,
 *    AcquireSubgraphContext and ReleaseSubgraphContext at 176/184/192). runtime_c/delegate/README.md has the details.
 *
 * Only prefixes of TfLiteTensor / TfLiteNode / TfLiteContext are read, plus TfLiteRegistration and TfLiteDelegate in
 * full (those two are created here and handed to the runtime). delegate.c checks at run time that the runtime's
 * TfLiteTensor array has the stride declared here (TSPTQ_TFLITE_TENSOR_SIZE; context->GetTensor is NULL in both
 * runtimes, so context->tensors is indexed directly) and that every tensor's type, byte size and name agree with the
 * model file; any mismatch refuses the runtime with a message. */
#ifndef TSPTQ_TFLITE_C_API_H
#define TSPTQ_TFLITE_C_API_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TSPTQ_TFLITE_PINNED "ai-edge-litert 2.3.0 (TFLite 2.22.0-dev0) and tflite-runtime 2.14.0 (TFLite 2.14.0)"

typedef enum { kTfLiteOk = 0, kTfLiteError = 1, kTfLiteDelegateError = 2 } TfLiteStatus;
enum { kTfLiteBuiltinCustom = 32 };
enum { kTfLiteDelegateFlagsNone = 0, kTfLiteDelegateFlagsAllowDynamicTensors = 1 };
enum { kTfLiteMmapRo = 1 };

typedef struct TfLiteIntArray {
    int size;
    int data[];
} TfLiteIntArray;

typedef union TfLitePtrUnion {
    int32_t *i32;
    int8_t *int8;
    uint8_t *uint8;
    char *raw;
    const char *raw_const;
    void *data;
} TfLitePtrUnion;

typedef struct {
    float scale;
    int32_t zero_point;
} TfLiteQuantizationParams;

typedef struct {
    int type; /* TfLiteQuantizationType */
    void *params;
} TfLiteQuantization;

struct TfLiteDelegate;
struct TfLiteContext;
struct TfLiteRegistration;

typedef struct TfLiteTensor {
    int type;                       /* TfLiteType: 2 int32, 3 uint8, 4 int64, 9 int8 (same codes as the schema) */
    TfLitePtrUnion data;
    TfLiteIntArray *dims;
    TfLiteQuantizationParams params;
    int allocation_type;            /* TfLiteAllocationType */
    size_t bytes;
    const void *allocation;
    const char *name;
    struct TfLiteDelegate *delegate;
    int buffer_handle;
    bool data_is_stale;
    bool is_variable;
    TfLiteQuantization quantization;
    void *sparsity;
    const TfLiteIntArray *dims_signature;
} TfLiteTensor;
#define TSPTQ_TFLITE_TENSOR_SIZE 112 /* sizeof(TfLiteTensor) in both pinned runtimes (x86-64 / aarch64) */

typedef struct TfLiteNode {
    TfLiteIntArray *inputs;
    TfLiteIntArray *outputs;
    TfLiteIntArray *intermediates;
    TfLiteIntArray *temporaries;
    void *user_data;
    void *builtin_data;
    const void *custom_initial_data;
    int custom_initial_data_size;
    struct TfLiteDelegate *delegate;
    bool might_have_side_effect;
} TfLiteNode;

typedef struct TfLiteRegistration {
    void *(*init)(struct TfLiteContext *context, const char *buffer, size_t length);
    void (*free)(struct TfLiteContext *context, void *buffer);
    TfLiteStatus (*prepare)(struct TfLiteContext *context, TfLiteNode *node);
    TfLiteStatus (*invoke)(struct TfLiteContext *context, TfLiteNode *node);
    const char *(*profiling_string)(const struct TfLiteContext *context, const TfLiteNode *node);
    int32_t builtin_code;
    const char *custom_name;
    int version;
    void *registration_external; /* TfLiteOperator* */
    void *(*async_kernel)(struct TfLiteContext *context, TfLiteNode *node);
    uint64_t inplace_operator;
} TfLiteRegistration;

typedef struct TfLiteDelegateParams {
    struct TfLiteDelegate *delegate;
    TfLiteIntArray *nodes_to_replace;
    TfLiteIntArray *input_tensors;
    TfLiteIntArray *output_tensors;
} TfLiteDelegateParams;

typedef struct TfLiteContext {
    size_t tensors_size;
    TfLiteStatus (*GetExecutionPlan)(struct TfLiteContext *context, TfLiteIntArray **execution_plan);
    TfLiteTensor *tensors;
    void *impl_;
    TfLiteStatus (*ResizeTensor)(struct TfLiteContext *, TfLiteTensor *tensor, TfLiteIntArray *new_size);
    void (*ReportError)(struct TfLiteContext *, const char *msg, ...);
    TfLiteStatus (*AddTensors)(struct TfLiteContext *, int tensors_to_add, int *first_new_tensor_index);
    TfLiteStatus (*GetNodeAndRegistration)(struct TfLiteContext *, int node_index, TfLiteNode **node,
                                           TfLiteRegistration **registration);
    TfLiteStatus (*ReplaceNodeSubsetsWithDelegateKernels)(struct TfLiteContext *, TfLiteRegistration registration,
                                                          const TfLiteIntArray *nodes_to_replace,
                                                          struct TfLiteDelegate *delegate);
    int recommended_num_threads;
    void *(*GetExternalContext)(struct TfLiteContext *, int);
    void (*SetExternalContext)(struct TfLiteContext *, int, void *);
    bool allow_fp32_relax_to_fp16;
    void *profiler;
    void *(*AllocatePersistentBuffer)(struct TfLiteContext *ctx, size_t bytes);
    TfLiteStatus (*AllocateBufferForEval)(struct TfLiteContext *ctx, size_t bytes, void **ptr);
    TfLiteStatus (*RequestScratchBufferInArena)(struct TfLiteContext *ctx, size_t bytes, int *buffer_idx);
    void *(*GetScratchBuffer)(struct TfLiteContext *ctx, int buffer_idx);
    TfLiteStatus (*ResizeTensorExplicit)(struct TfLiteContext *ctx, TfLiteTensor *tensor, int dims,
                                         const int *shape);
    TfLiteStatus (*PreviewDelegatePartitioning)(struct TfLiteContext *context, const TfLiteIntArray *nodes_to_replace,
                                                TfLiteDelegateParams **partition_params_array, int *num_partitions);
    TfLiteTensor *(*GetTensor)(const struct TfLiteContext *context, int tensor_idx);
    /* GetEvalTensor, GetModelMetadata, AcquireSubgraphContext, ReleaseSubgraphContext follow (unused here) */
} TfLiteContext;

typedef struct TfLiteDelegate {
    void *data_;
    TfLiteStatus (*Prepare)(TfLiteContext *context, struct TfLiteDelegate *delegate);
    TfLiteStatus (*CopyFromBufferHandle)(TfLiteContext *context, struct TfLiteDelegate *delegate, int buffer_handle,
                                         TfLiteTensor *tensor);
    TfLiteStatus (*CopyToBufferHandle)(TfLiteContext *context, struct TfLiteDelegate *delegate, int buffer_handle,
                                       TfLiteTensor *tensor);
    void (*FreeBufferHandle)(TfLiteContext *context, struct TfLiteDelegate *delegate, int *handle);
    int64_t flags;
    void *opaque_delegate_builder; /* must stay NULL: the runtime would use it instead of Prepare */
} TfLiteDelegate;

#endif
