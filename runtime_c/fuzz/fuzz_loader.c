/* libFuzzer target of the tsptq loader: load + prepare + one invoke (on an input of the right size) of whatever
 * bytes the fuzzer makes, starting from valid exported models (the seed corpus). Any crash, out-of-bounds access
 * or undefined behaviour is a bug: the runtime must reject bad files with an error code.
 *
 *   clang -std=c99 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
 *         -Iruntime_c/include -Iruntime_c/src runtime_c/fuzz/fuzz_loader.c runtime_c/src/... -lm -o fuzz_loader
 *   ./fuzz_loader -max_total_time=20 -max_len=2000000 CORPUS_DIR SEED_DIR runtime_c/fuzz/corpus
 *
 * runtime_c/fuzz/corpus/ holds files that once broke something (see fuzz_device.c, the device program's target;
 * tests/crafted_models.py writes them).
 *
 * The arena and the input are heap buffers of exactly the sizes the model asks for, so ASan sees any access past
 * them. Models whose arena would exceed 16 MB (input/output 4 MB) are loaded and planned but not run: every such
 * run maps a fresh large block, and ASan's shadow and quarantine for thousands of them outgrow libFuzzer's 2 GB RSS
 * limit (an out-of-memory stop of the harness, not a leak: the live heap stays ~30 MB).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tsptq.h"

static tsptq_model model;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    tsptq_status st;
    uint8_t *bytes, *arena, *input, *output;
    size_t need, in_len, out_len;
    /* the runtime needs an aligned model buffer: a fresh malloc'd copy (exact size, so ASan guards its end) */
    bytes = (uint8_t *)malloc(size ? size : 1);
    if (!bytes) return 0;
    if (size) memcpy(bytes, data, size);
    if (tsptq_load(&model, bytes, size, &st) != TSPTQ_OK) {
        if (st.code == TSPTQ_OK || !st.message[0]) abort(); /* an error must say what it is */
        free(bytes);
        return 0;
    }
    need = tsptq_arena_size(&model);
    in_len = tsptq_input_bytes(&model);
    out_len = tsptq_output_bytes(&model);
    if (need > ((size_t)16 << 20) || in_len > ((size_t)4 << 20) || out_len > ((size_t)4 << 20)) {
        free(bytes);
        return 0;
    }
    arena = (uint8_t *)malloc(need ? need : 1);
    input = (uint8_t *)malloc(in_len ? in_len : 1);
    output = (uint8_t *)malloc(out_len ? out_len : 1);
    if (arena && input && output) {
        /* too small first: must be refused */
        if (need && tsptq_prepare(&model, arena, need - 1, &st) != TSPTQ_ERR_ARENA_TOO_SMALL) abort();
        /* precomputed multipliers that are all zero: refused unless the model needs none (or they are zero) */
        {
            size_t plen = tsptq_persistent_size(&model);
            uint8_t *params = (uint8_t *)calloc(plen ? plen : 1, 1);
            if (params) tsptq_prepare_with_params(&model, params, plen, arena, tsptq_activation_size(&model), &st);
            free(params);
        }
        if (tsptq_prepare(&model, arena, need, &st) == TSPTQ_OK) {
            size_t i;
            for (i = 0; i < in_len; i++) input[i] = (uint8_t)(i * 131u + size);
            if (tsptq_invoke(&model, input, in_len + 1, output, out_len, &st) != TSPTQ_ERR_INPUT_SIZE) abort();
            if (tsptq_invoke(&model, input, in_len, output, out_len, &st) != TSPTQ_OK) abort();
        }
    }
    free(output);
    free(input);
    free(arena);
    free(bytes);
    return 0;
}
