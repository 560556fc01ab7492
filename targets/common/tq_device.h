/* The tsptq device program: the board side of the serial protocol (docs/serial-protocol.md), shared by every target.
 *
 * A target supplies a tq_board (its buffers, a byte writer, tick counters, a reset) and feeds every received byte to
 * tq_device_feed; the device decodes frames, executes commands with the tsptq runtime and writes replies through
 * board->write. No dynamic allocation: the model bytes and the arena are the board's static buffers; the input,
 * output and per-op tick buffers are carved from the arena after the runtime's planned part.
 *
 *   static tq_device dev;
 *   tq_device_init(&dev, &board);            // sends the BOOT frame
 *   tq_device_set_model(&dev, flash_model, flash_model_size);   // optional: a model baked into the firmware
 *   for (;;) tq_device_feed(&dev, uart_getc());
 */
#ifndef TQ_DEVICE_H
#define TQ_DEVICE_H

#include <stddef.h>
#include <stdint.h>

#include "tsptq.h"

#define TQ_PROTOCOL_VERSION 1
#ifndef TQ_MAX_BODY
#define TQ_MAX_BODY 1024
#endif
/* packet = seq + cmd + body + crc32 */
#define TQ_MAX_PACKET (TQ_MAX_BODY + 6)

enum { /* commands (requests); a reply carries cmd | 0x80 */
    TQ_CMD_HELLO = 0x01,
    TQ_CMD_RESET = 0x02,
    TQ_CMD_UPLOAD_BEGIN = 0x10,
    TQ_CMD_UPLOAD_CHUNK = 0x11,
    TQ_CMD_UPLOAD_COMMIT = 0x12,
    TQ_CMD_INPUT = 0x20,
    TQ_CMD_INVOKE = 0x21,
    TQ_CMD_OUTPUT = 0x22,
    TQ_CMD_PROFILE = 0x30,
    TQ_CMD_BOOT = 0xFE /* unsolicited, seq 0 */
};

enum { /* reply status codes */
    TQ_OK = 0,
    TQ_BAD_REQUEST = 1,
    TQ_TOO_BIG = 2,
    TQ_NO_UPLOAD = 3,
    TQ_OUT_OF_RANGE = 4,
    TQ_CRC_MISMATCH = 5,
    TQ_MODEL_REJECTED = 6,
    TQ_NO_MODEL = 7,
    TQ_ARENA_TOO_SMALL = 8,
    TQ_INVOKE_FAILED = 9,
    TQ_INPUT_CRC = 10
};

typedef struct {
    const char *board;      /* name reported by HELLO, e.g. "mps2-an386" */
    const char *tick_unit;  /* "ns", "cycles" or "systick" */
    uint32_t tick_hz;       /* rate of ticks()/clock(); 0 when not a time base */
    uint8_t *model_buf;     /* where uploads land; 16-byte aligned */
    uint32_t model_capacity;
    uint8_t *arena;         /* runtime arena, then input/output/profile buffers; 16-byte aligned */
    uint32_t arena_capacity;
    void (*write)(const uint8_t *bytes, size_t n); /* blocking: returns when all n bytes are queued/sent */
    uint64_t (*ticks)(void);                       /* whole-invoke timing */
    uint32_t (*clock)(void);                       /* per-op profiler (same unit as ticks, modulo 2^32) */
    void (*reset)(void); /* RESET: reboot the board after the reply is sent; NULL: soft reset (state cleared, BOOT) */
} tq_board;

typedef struct {
    const tq_board *board;
    /* frame receiver (COBS decoding into rx) */
    uint8_t rx[TQ_MAX_PACKET + 8];
    uint32_t rx_len;
    uint8_t rx_code, rx_left, rx_overflow; /* rx_code: the current COBS block's code (0: none yet) */
    /* the last executed request (seq, cmd, crc) and its reply packet, for retries */
    uint8_t last_valid, last_seq, last_cmd;
    uint32_t last_crc;
    uint8_t tx[TQ_MAX_PACKET];
    uint32_t tx_len;
    /* upload */
    uint8_t uploading;
    uint32_t upload_size, upload_crc, upload_received;
    /* the committed model: model_bytes is board->model_buf after an upload, or the boot model */
    uint8_t has_model;
    uint32_t model_size, model_crc;
    const uint8_t *model_bytes;
    uint32_t arena_used; /* runtime plan + input + output + op ticks */
    uint32_t input_bytes, output_bytes, output_len_valid; /* output_len_valid: an INVOKE has filled output */
    uint8_t *input, *output;
    uint32_t *op_ticks;
    tsptq_model model;
    /* the model given by tq_device_set_model, restored by a soft reset while an upload has not overwritten it */
    const uint8_t *boot_model;
    uint32_t boot_size, boot_crc;
    /* threads per inference, given to tsptq_set_threads after each load (the POSIX agent's --threads, set after
     * tq_device_init); 0 or 1: one, what bare-metal boards run */
    uint32_t threads;
} tq_device;

void tq_device_init(tq_device *dev, const tq_board *board);
void tq_device_feed(tq_device *dev, uint8_t byte);

/* Commit a model that is already in memory (e.g. baked into flash) as if it had been uploaded: HELLO then reports
 * its size and CRC, and a host that wants this model skips the upload. `bytes` (16-byte aligned) must stay valid;
 * it may be board->model_buf (an upload then replaces it). Call after tq_device_init; a soft RESET restores it.
 * Returns TQ_OK or the status an UPLOAD_COMMIT of these bytes would answer (TQ_MODEL_REJECTED, ...). */
int tq_device_set_model(tq_device *dev, const uint8_t *bytes, uint32_t size);

/* CRC-32 (IEEE, zlib's crc32): crc = tq_crc32(0, data, n); chains as tq_crc32(prev, more, m). */
uint32_t tq_crc32(uint32_t crc, const uint8_t *data, size_t n);

#endif
