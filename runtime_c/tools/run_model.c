/* A host driver of the tsptq runtime (not part of the core: it uses stdio/stdlib). Used by tests/test_c_runtime.py
 * for the sanitizer build and handy for debugging:
 *
 *   run_model MODEL.tflite                 print the arena plan
 *   run_model MODEL.tflite IN.bin OUT.bin  run every image of IN.bin (concatenated int8 inputs), write the outputs
 *   run_model --threads N MODEL ...        the same on N threads (tsptq_set_threads; a TSPTQ_THREADS=1 build)
 *
 * Exit status: 0 on success, 2 + the tsptq error code on a runtime error (the message goes to stderr). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tsptq.h"

static tsptq_model model;

static unsigned char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    unsigned char *buf;
    long n;
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = (unsigned char *)malloc(n > 0 ? (size_t)n : 1); /* malloc: 16-byte aligned on the hosts we build for */
    if (buf && n > 0 && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    *len = n > 0 ? (size_t)n : 0;
    return buf;
}

int main(int argc, char **argv) {
    tsptq_status st;
    size_t len = 0, in_len = 0, ib, ob, i, n;
    unsigned char *bytes, *inputs = NULL, *arena, *outputs;
    FILE *out;
    int threads = 1;
    if (argc >= 3 && !strcmp(argv[1], "--threads")) {
        threads = atoi(argv[2]);
        argv[2] = argv[0];
        argv += 2;
        argc -= 2;
    }
    if (argc != 2 && argc != 4) {
        fprintf(stderr, "usage: %s [--threads N] MODEL.tflite [IN.bin OUT.bin]\n", argv[0]);
        return 1;
    }
    bytes = read_file(argv[1], &len);
    if (!bytes) {
        fprintf(stderr, "cannot read %s\n", argv[1]);
        return 1;
    }
    if (tsptq_load(&model, bytes, len, &st) != TSPTQ_OK) {
        fprintf(stderr, "%s: %s\n", tsptq_error_name(st.code), st.message);
        return 2 + st.code;
    }
    if (tsptq_set_threads(&model, threads, &st) != TSPTQ_OK) {
        fprintf(stderr, "%s: %s\n", tsptq_error_name(st.code), st.message);
        return 2 + st.code;
    }
    printf("arena %lu persistent %lu prepacked %lu activations %lu lower_bound %lu\n",
           (unsigned long)tsptq_arena_size(&model), (unsigned long)tsptq_persistent_size(&model),
           (unsigned long)tsptq_prepacked_size(&model), (unsigned long)tsptq_activation_size(&model),
           (unsigned long)tsptq_activation_lower_bound(&model));
    arena = (unsigned char *)malloc(tsptq_arena_size(&model) + 1);
    if (!arena || tsptq_prepare(&model, arena, tsptq_arena_size(&model), &st) != TSPTQ_OK) {
        fprintf(stderr, "%s: %s\n", tsptq_error_name(st.code), st.message);
        return 2 + st.code;
    }
    if (argc == 2) return 0;
    inputs = read_file(argv[2], &in_len);
    ib = tsptq_input_bytes(&model);
    ob = tsptq_output_bytes(&model);
    n = ib ? in_len / ib : 0;
    if (!inputs || n * ib != in_len || !n) {
        fprintf(stderr, "%s must hold a whole number (> 0) of %lu-byte inputs\n", argv[2], (unsigned long)ib);
        return 1;
    }
    outputs = (unsigned char *)malloc(n * ob);
    for (i = 0; i < n; i++)
        if (tsptq_invoke(&model, inputs + i * ib, ib, outputs + i * ob, ob, &st) != TSPTQ_OK) {
            fprintf(stderr, "%s: %s\n", tsptq_error_name(st.code), st.message);
            return 2 + st.code;
        }
    out = fopen(argv[3], "wb");
    if (!out || fwrite(outputs, 1, n * ob, out) != n * ob) return 1;
    fclose(out);
    free(outputs);
    free(inputs);
    free(arena);
    free(bytes);
    return 0;
}
