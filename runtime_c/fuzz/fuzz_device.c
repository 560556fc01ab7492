/* libFuzzer target of the device program (targets/common/device.c): whatever bytes the fuzzer makes are committed as
 * a model, as UPLOAD_COMMIT does (tq_device_set_model), on a board whose upload buffer and arena are heap blocks of
 * exactly their capacity, so ASan sees any write past them; a model that commits is then run through the serial
 * protocol itself (INVOKE, OUTPUT, PROFILE frames fed to tq_device_feed). Any crash, out-of-bounds access or
 * undefined behaviour is a bug: a model that does not fit must be answered with TQ_ARENA_TOO_SMALL (or
 * TQ_MODEL_REJECTED), never carved into an arena it does not fit.
 *
 *   clang -std=c99 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
 *         -Iruntime_c/include -Iruntime_c/src -Itargets/common runtime_c/fuzz/fuzz_device.c \
 *         targets/common/device.c runtime_c/src/... -lm -o fuzz_device
 *   ./fuzz_device runtime_c/fuzz/corpus/FILE.tflite ...                 (regression: run each file once)
 *   ./fuzz_device -max_total_time=20 CORPUS_DIR runtime_c/fuzz/corpus   (fuzzing)
 *
 * runtime_c/fuzz/corpus/ holds files that once broke something (arena_wrap_reshape.tflite: an int8 input
 * [1,1657009,864,1] -> RESHAPE, 1,431,655,776 bytes of plan; runtime + input + output wrapped 32-bit arithmetic to
 * 36 bytes, and commit() zeroed 1.43 GB past a 48 MB arena).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tq_device.h"

#define MODEL_CAPACITY (2u << 20)
#define ARENA_CAPACITY (1u << 20)

static uint8_t *model_buf, *arena;
static tq_board board;
static tq_device dev;

static void sink(const uint8_t *bytes, size_t n) {
    (void)bytes;
    (void)n;
}

/* COBS-encode seq cmd body crc32 and feed it to the device, byte by byte, with the closing zero. */
static void send_frame(uint8_t seq, uint8_t cmd, const uint8_t *body, uint32_t len) {
    static uint8_t p[TQ_MAX_PACKET];
    uint32_t n = 0, crc, start = 0, i;
    p[n++] = seq;
    p[n++] = cmd;
    memcpy(p + n, body, len);
    n += len;
    crc = tq_crc32(0, p, n);
    for (i = 0; i < 4; i++) p[n++] = (uint8_t)(crc >> (8 * i));
    for (;;) {
        uint32_t run = 0;
        while (start + run < n && p[start + run] != 0 && run < 254) run++;
        tq_device_feed(&dev, (uint8_t)(run + 1));
        for (i = 0; i < run; i++) tq_device_feed(&dev, p[start + i]);
        start += run;
        if (start == n) break;
        if (run < 254) start++;
    }
    tq_device_feed(&dev, 0);
}

static void put32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)v, p[1] = (uint8_t)(v >> 8), p[2] = (uint8_t)(v >> 16), p[3] = (uint8_t)(v >> 24);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    uint8_t body[8];
    int code;
    if (!model_buf) {
        model_buf = (uint8_t *)malloc(MODEL_CAPACITY); /* malloc: 16-byte aligned, ASan-guarded ends */
        arena = (uint8_t *)malloc(ARENA_CAPACITY);
        if (!model_buf || !arena) abort();
        board.board = "fuzz";
        board.tick_unit = "ns";
        board.model_buf = model_buf;
        board.model_capacity = MODEL_CAPACITY;
        board.arena = arena;
        board.arena_capacity = ARENA_CAPACITY;
        board.write = sink;
    }
    if (!size || size > MODEL_CAPACITY) return 0;
    tq_device_init(&dev, &board);
    memcpy(model_buf, data, size);
    code = tq_device_set_model(&dev, model_buf, (uint32_t)size);
    if (code != TQ_OK) {
        /* refused: a clear status with a message, and no model */
        if ((code != TQ_MODEL_REJECTED && code != TQ_ARENA_TOO_SMALL) || dev.has_model || dev.tx[2] != code ||
            dev.tx_len <= 3)
            abort();
        return 0;
    }
    if (!dev.has_model || dev.arena_used > ARENA_CAPACITY || dev.input < arena || dev.op_ticks == NULL ||
        dev.input + dev.input_bytes > arena + ARENA_CAPACITY || dev.output + dev.output_bytes > arena + ARENA_CAPACITY)
        abort();
    /* the input commit() zeroed, by its CRC; then the output and the profile */
    put32(body, tq_crc32(0, dev.input, dev.input_bytes));
    send_frame(1, TQ_CMD_INVOKE, body, 4);
    if (dev.tx[2] != TQ_OK && dev.tx[2] != TQ_INVOKE_FAILED) abort();
    put32(body, 0);
    body[4] = (uint8_t)(dev.output_bytes > 1000 ? 1000 : dev.output_bytes), body[5] = 0;
    send_frame(2, TQ_CMD_OUTPUT, body, 6);
    memset(body, 0, 4);
    body[2] = body[3] = 0xFF;
    send_frame(3, TQ_CMD_PROFILE, body, 4);
    if (dev.tx[2] != TQ_OK) abort();
    return 0;
}
