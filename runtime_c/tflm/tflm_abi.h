/* tsptq TFLite Micro ops: the binary interface of ONE TFLite Micro build, declared by tsptq (no TFLM header is used).
 *
 * The build: the PyPI wheel tflite-micro==0.dev20261023182759 (tflite_micro.__version__
 * "0.dev20261023182759-g8f6596d"), Linux x86-64 (System V ABI), its extension module
 * tflite_micro/python/tflite_micro/_runtime.so. No TFLM headers exist for it offline, and the headers of other TFLM
 * sources do not match it (a build against them crashed). Everything below is a fact about that binary, read from
 * its disassembly (objdump -d) and its dynamic symbol table (nm -D), and most of it is checked again at run time by
 * tsptq_tflm_register (tflm_ops.c) and by tsptq.npu.tflm before any op runs. Another wheel version is refused by
 * tsptq.npu.tflm with one line: the offsets here may not hold there.
 *
 * Everything in this build's kernel interface lives in namespace tflite::micro (the slim TfLiteContext of TFLM, not
 * TFLite's C struct); only the layouts and the exported C++ functions named below are used.
 */
#ifndef TSPTQ_TFLM_ABI_H
#define TSPTQ_TFLM_ABI_H

#include <stddef.h>
#include <stdint.h>

/* TfLiteStatus: a C enum (int, 4 bytes); 0 is kTfLiteOk, 1 kTfLiteError. */
typedef int tflm_status;
enum { TFLM_OK = 0, TFLM_ERROR = 1 };

/* TfLiteType values used here. Checked at registration: TfLiteTypeGetName (exported,
 * _ZN6tflite5micro17TfLiteTypeGetNameENS0_10TfLiteTypeE) must name each of them as below. */
enum { TFLM_INT32 = 2, TFLM_UINT8 = 3, TFLM_INT64 = 4, TFLM_INT16 = 7, TFLM_INT8 = 9 };

/* TfLiteIntArray: int size, then size ints. Checked: tflite::micro::ElementCount(TfLiteIntArray const&) reads the
 * count at offset 0 and the dimensions from offset 4 (disassembly at 0xe76c0). */
typedef struct {
    int size;
    int data[];
} tflm_int_array;

/* TfLiteEvalTensor: data pointer at 0, dims pointer at 8, TfLiteType at 16 (24 bytes). Checked: GetTensorShape(
 * TfLiteEvalTensor const*) loads dims from offset 8 (0xdc5c1) and HaveSameShapes compares the pointers at offset 8
 * (0xdc590); the type at 16 is checked at run time by every prepare (the types of the file's tensors come back). */
typedef struct {
    void *data;
    tflm_int_array *dims;
    int type;
} tflm_eval_tensor;

/* TfLiteNode: inputs at 0, outputs at 8 (checked: GetEvalOutput loads node+8 and the index at +4 of that array,
 * 0xdc580), then intermediates, user_data (what init returned), builtin_data, custom_initial_data and its size.
 * tsptq reads only inputs, outputs and user_data; the custom options reach init as its buffer argument. */
typedef struct {
    tflm_int_array *inputs;
    tflm_int_array *outputs;
    tflm_int_array *intermediates;
    void *user_data;
    void *builtin_data;
    const void *custom_initial_data;
    int custom_initial_data_size;
} tflm_node;

/* TfLiteContext: one pointer, the MicroContext (checked: each exported accessor below dereferences the context once
 * and calls a virtual function of the object found there, e.g. MicroContextGetEvalTensor at 0xf2630:
 * mov (%rdi),%rdi; mov (%rdi),%rax; jmp *0x48(%rax)). Kernels never touch it; they pass it to the accessors. */
typedef struct {
    void *impl_;
} tflm_context;

/* TFLMRegistration, 56 bytes: five function pointers, builtin_code (int32) at 40, custom_name at 48. Checked:
 * MicroMutableOpResolver<200u>::FindOp(char const*) (0x55c80) walks the registrations from resolver+8 with a stride
 * of 0x38, compares the int at +0x28 with 32 (BuiltinOperator_CUSTOM) and strcmp's the pointer at +0x30. */
typedef struct {
    void *(*init)(tflm_context *context, const char *buffer, size_t length);
    void (*free)(tflm_context *context, void *buffer);
    tflm_status (*prepare)(tflm_context *context, tflm_node *node);
    tflm_status (*invoke)(tflm_context *context, tflm_node *node);
    void (*reset)(tflm_context *context, void *buffer);
    int32_t builtin_code;
    const char *custom_name;
} tflm_registration;

#define TFLM_BUILTIN_CUSTOM 32
#define TFLM_RESOLVER_CAPACITY 200

/* The resolver handed to a registerer: tflite::PythonOpsResolver, a MicroMutableOpResolver<200>: the vtable pointer,
 * registrations_[200] from offset 8, registrations_len_ (unsigned) at 0x2bc8. Checked: FindOp above reads the count
 * from 0x2bc8 (mov 0x2bc8(%rdi),%r13d); at run time the object's vtable pointer must be PythonOpsResolver's
 * (_ZTVN6tflite17PythonOpsResolverE + 16) and FindOp must find each registration where it was written. */
typedef struct {
    const void *vptr;
    tflm_registration registrations[TFLM_RESOLVER_CAPACITY];
    unsigned int registrations_len;
} tflm_resolver;

/* The exported accessors (mangled names, looked up with dlsym in _runtime.so). Each takes the context first. */
#define TFLM_SYM_GET_EVAL_TENSOR "_ZN6tflite5micro25MicroContextGetEvalTensorEPKNS0_13TfLiteContextEi"
#define TFLM_SYM_ALLOC_PERSISTENT "_ZN6tflite5micro36MicroContextAllocatePersistentBufferEPNS0_13TfLiteContextEm"
#define TFLM_SYM_REQUEST_SCRATCH "_ZN6tflite5micro39MicroContextRequestScratchBufferInArenaEPNS0_13TfLiteContextEmPi"
#define TFLM_SYM_GET_SCRATCH "_ZN6tflite5micro28MicroContextGetScratchBufferEPNS0_13TfLiteContextEi"
#define TFLM_SYM_REPORT_ERROR "_ZN6tflite5micro25MicroContextReportOpErrorEPNS0_13TfLiteContextEPKcz"
#define TFLM_SYM_TYPE_NAME "_ZN6tflite5micro17TfLiteTypeGetNameENS0_10TfLiteTypeE"
#define TFLM_SYM_FIND_OP "_ZNK6tflite5micro22MicroMutableOpResolverILj200EE6FindOpEPKc"
#define TFLM_SYM_RESOLVER_VTABLE "_ZTVN6tflite17PythonOpsResolverE"

/* The offset layout asserted at compile time (C99: a negative array size fails the build). */
typedef char tflm_check_registration_size[sizeof(tflm_registration) == 56 ? 1 : -1];
typedef char tflm_check_registration_code[offsetof(tflm_registration, builtin_code) == 40 ? 1 : -1];
typedef char tflm_check_registration_name[offsetof(tflm_registration, custom_name) == 48 ? 1 : -1];
typedef char tflm_check_resolver_list[offsetof(tflm_resolver, registrations) == 8 ? 1 : -1];
typedef char tflm_check_resolver_len[offsetof(tflm_resolver, registrations_len) == 0x2bc8 ? 1 : -1];
typedef char tflm_check_eval_tensor[sizeof(tflm_eval_tensor) == 24 ? 1 : -1];
typedef char tflm_check_node_user_data[offsetof(tflm_node, user_data) == 24 ? 1 : -1];

#endif
