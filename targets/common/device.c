/* The board side of the tsptq serial protocol (docs/serial-protocol.md): COBS frames in, commands run with the tsptq
 * runtime, one reply frame out per request. Shared by every target; no allocation, no stdio (bare-metal safe). */
#include <stdint.h>
#include <string.h>

#include "tq_device.h"

/* ---- CRC-32 (IEEE 802.3, zlib's), four bits at a time: a 64-byte table instead of 1 KiB -------------------------- */

static const uint32_t crc_nibble[16] = {
    0x00000000, 0x1DB71064, 0x3B6E20C8, 0x26D930AC, 0x76DC4190, 0x6B6B51F4, 0x4DB26158, 0x5005713C,
    0xEDB88320, 0xF00F9344, 0xD6D6A3E8, 0xCB61B38C, 0x9B64C2B0, 0x86D3D2D4, 0xA00AE278, 0xBDBDF21C};

uint32_t tq_crc32(uint32_t crc, const uint8_t *data, size_t n) {
    size_t i;
    crc = ~crc;
    for (i = 0; i < n; i++) {
        crc ^= data[i];
        crc = (crc >> 4) ^ crc_nibble[crc & 15];
        crc = (crc >> 4) ^ crc_nibble[crc & 15];
    }
    return ~crc;
}

static uint32_t le16(const uint8_t *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8; }
static uint32_t le32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
/* 64-bit: the arena layout adds sizes of up to 2^32 each, which 32-bit arithmetic wraps (a model that needs 4 GB
 * would look like it needs 36 bytes). Callers pass values below 2^35, so nothing here can wrap. */
static uint64_t align16(uint64_t n) { return (n + 15u) & ~(uint64_t)15u; }

/* ---- sending: COBS-encode a packet straight to board->write ---------------------------------------------------- */

static void send_packet(const tq_board *b, const uint8_t *p, uint32_t n) {
    uint32_t start = 0;
    uint8_t code, zero = 0;
    for (;;) {
        uint32_t run = 0;
        while (start + run < n && p[start + run] != 0 && run < 254) run++;
        code = (uint8_t)(run + 1);
        b->write(&code, 1);
        if (run) b->write(p + start, run);
        start += run;
        if (start == n) break; /* the last block: its implied zero is not part of the packet */
        if (run < 254) start++; /* the zero this block's code stands for (a full block implies none) */
    }
    b->write(&zero, 1);
}

static void send_boot(const tq_board *b) {
    uint8_t p[8] = {0, TQ_CMD_BOOT, TQ_PROTOCOL_VERSION & 0xFF, TQ_PROTOCOL_VERSION >> 8, 0, 0, 0, 0};
    uint32_t crc = tq_crc32(0, p, 4);
    uint8_t zero = 0;
    p[4] = (uint8_t)crc, p[5] = (uint8_t)(crc >> 8), p[6] = (uint8_t)(crc >> 16), p[7] = (uint8_t)(crc >> 24);
    b->write(&zero, 1); /* ends whatever a boot loader printed, so BOOT is not glued to it */
    send_packet(b, p, 8);
}

/* ---- building the reply in dev->tx (seq cmd status data...; the CRC is appended when it is sent) ------------------ */

#define TX_END (2 + TQ_MAX_BODY) /* the body may fill the packet up to here */

static void put_bytes(tq_device *d, const void *src, uint32_t n) {
    uint32_t room = TX_END - d->tx_len;
    if (n > room) n = room;
    memcpy(d->tx + d->tx_len, src, n);
    d->tx_len += n;
}
static void put_u8(tq_device *d, uint32_t v) {
    uint8_t b = (uint8_t)v;
    put_bytes(d, &b, 1);
}
static void put_u16(tq_device *d, uint32_t v) {
    put_u8(d, v);
    put_u8(d, v >> 8);
}
static void put_u32(tq_device *d, uint32_t v) {
    put_u16(d, v);
    put_u16(d, v >> 16);
}
static void put_text(tq_device *d, const char *s) { put_bytes(d, s, (uint32_t)strlen(s)); }
static void put_str8(tq_device *d, const char *s) {
    size_t n = strlen(s);
    if (n > 255) n = 255;
    put_u8(d, (uint32_t)n);
    put_bytes(d, s, (uint32_t)n);
}
static void put_dec(tq_device *d, uint64_t v) {
    char tmp[20];
    int k = 0;
    do {
        tmp[k++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (k--) put_bytes(d, &tmp[k], 1);
}
static void put_hex(tq_device *d, uint32_t v) {
    int k;
    put_text(d, "0x");
    for (k = 28; k >= 0; k -= 4) put_bytes(d, &"0123456789abcdef"[(v >> k) & 15], 1);
}

/* Start the reply over with a status byte; an error's message follows with put_text/put_dec. */
static int status(tq_device *d, int code) {
    d->tx_len = 2;
    put_u8(d, (uint32_t)code);
    return code;
}
static int fail(tq_device *d, int code, const char *message) {
    status(d, code);
    put_text(d, message);
    return code;
}
static int fail_runtime(tq_device *d, int code, const tsptq_status *st) {
    status(d, code);
    put_text(d, tsptq_error_name(st->code));
    put_text(d, ": ");
    put_text(d, st->message);
    return code;
}

/* ---- the model ------------------------------------------------------------------------------------------------- */

static void drop_model(tq_device *d) {
    d->has_model = 0;
    d->model_size = d->model_crc = 0;
    d->model_bytes = NULL;
    d->output_len_valid = 0;
}

/* Where the runtime's part (need bytes), the input, the output and the profile lie in the arena, each 16-byte
 * aligned; the total, or all ones when it is not a size a 32-bit arena_capacity can hold (the runtime never gives
 * one). */
static uint64_t layout(uint64_t need, uint64_t in, uint64_t out, uint64_t n_ops, uint64_t *input_at,
                       uint64_t *output_at, uint64_t *ticks_at) {
    if (need > 0xFFFFFFFFu || in > 0xFFFFFFFFu || out > 0xFFFFFFFFu || n_ops > 0xFFFFFFFFu) return ~(uint64_t)0;
    *input_at = align16(need);
    *output_at = align16(*input_at + in);
    *ticks_at = align16(*output_at + out);
    return *ticks_at + 4u * n_ops; /* < 2^35: no wrap in 64 bits */
}

/* Load and prepare `bytes`, carve the input, output and op-tick buffers after the runtime's arena
 * (without the prepacked weights of a host SIMD build where the capacity lacks room for them):
 *   [runtime arena | input | output | op ticks], each part 16-byte aligned, all within board->arena_capacity.
 * Every size and offset is computed in 64 bits and compared with the capacity before anything is written: the
 * runtime accepts models whose plan is up to 2 GB, and input + output of such a model can pass 4 GB. */
static int commit(tq_device *d, const uint8_t *bytes, uint32_t size, uint32_t crc) {
    const tq_board *b = d->board;
    tsptq_status st;
    uint64_t need, in, out, n_ops, input_at = 0, output_at = 0, ticks_at = 0, total;

    drop_model(d);
    if (tsptq_load(&d->model, bytes, size, &st) != TSPTQ_OK) return fail_runtime(d, TQ_MODEL_REJECTED, &st);
    if (d->threads > 1 && tsptq_set_threads(&d->model, (int)d->threads, &st) != TSPTQ_OK)
        return fail_runtime(d, TQ_MODEL_REJECTED, &st);
    need = (uint64_t)tsptq_arena_size(&d->model);
    in = (uint64_t)tsptq_input_bytes(&d->model);
    out = (uint64_t)tsptq_output_bytes(&d->model);
    n_ops = (uint64_t)tsptq_num_ops(&d->model);
    total = layout(need, in, out, n_ops, &input_at, &output_at, &ticks_at);
    if (total > b->arena_capacity && tsptq_prepacked_size(&d->model)) {
        /* without the prepacked weights (host SIMD builds): the same bytes, packed per call */
        need -= (uint64_t)tsptq_prepacked_size(&d->model);
        total = layout(need, in, out, n_ops, &input_at, &output_at, &ticks_at);
    }
    if (total > b->arena_capacity) {
        status(d, TQ_ARENA_TOO_SMALL);
        put_text(d, "the model needs ");
        if (total == ~(uint64_t)0) put_text(d, "more than 4294967295");
        else put_dec(d, total);
        put_text(d, " bytes of arena (runtime ");
        put_dec(d, need);
        put_text(d, " + input ");
        put_dec(d, in);
        put_text(d, " + output ");
        put_dec(d, out);
        put_text(d, " + profile ");
        put_dec(d, 4u * n_ops);
        put_text(d, ", each 16-byte aligned), arena_capacity is ");
        put_dec(d, b->arena_capacity);
        put_text(d, " bytes");
        return TQ_ARENA_TOO_SMALL;
    }
    /* the runtime gets its own part, [0, input_at), checked above to lie within the capacity: it can write
     * nothing past it, and its own check (need <= the length given) then holds by construction */
    if (tsptq_prepare(&d->model, b->arena, (size_t)input_at, &st) != TSPTQ_OK)
        return fail_runtime(d, st.code == TSPTQ_ERR_ARENA_TOO_SMALL ? TQ_ARENA_TOO_SMALL : TQ_MODEL_REJECTED, &st);
    d->input = b->arena + (size_t)input_at;
    d->output = b->arena + (size_t)output_at;
    d->op_ticks = (uint32_t *)(void *)(b->arena + (size_t)ticks_at);
    memset(d->input, 0, (size_t)in);
    memset(d->op_ticks, 0, (size_t)(4u * n_ops));
    if (b->clock) tsptq_set_profiler(&d->model, b->clock, d->op_ticks);
    d->input_bytes = (uint32_t)in;
    d->output_bytes = (uint32_t)out;
    d->arena_used = (uint32_t)total; /* <= arena_capacity, a uint32_t */
    d->model_bytes = bytes;
    d->model_size = size;
    d->model_crc = crc;
    d->has_model = 1;
    status(d, TQ_OK);
    put_u32(d, d->arena_used);
    put_u32(d, (uint32_t)n_ops);
    put_u32(d, d->input_bytes);
    put_u32(d, d->output_bytes);
    return TQ_OK;
}

int tq_device_set_model(tq_device *d, const uint8_t *bytes, uint32_t size) {
    int code;
    d->uploading = 0;
    d->boot_model = NULL;
    if (!bytes || !size) {
        drop_model(d);
        return TQ_BAD_REQUEST;
    }
    d->boot_crc = tq_crc32(0, bytes, size);
    code = commit(d, bytes, size, d->boot_crc);
    d->last_valid = 0; /* tx holds commit's reply, which answers no request */
    if (code == TQ_OK) {
        d->boot_model = bytes;
        d->boot_size = size;
    }
    return code;
}

/* What a reboot does: forget the upload, the model in RAM and the remembered reply; keep a model in flash. */
static void soft_reset(tq_device *d) {
    d->uploading = 0;
    d->upload_received = 0;
    drop_model(d);
    if (d->boot_model) {
        commit(d, d->boot_model, d->boot_size, d->boot_crc);
    }
    d->last_valid = 0;
    d->rx_len = d->rx_code = d->rx_left = d->rx_overflow = 0;
    send_boot(d->board);
}

/* ---- commands (each fills the reply in tx and returns its status) ---------------------------------------------- */

static int cmd_hello(tq_device *d, uint32_t len) {
    const tq_board *b = d->board;
    if (len) return fail(d, TQ_BAD_REQUEST, "HELLO takes no body");
    status(d, TQ_OK);
    put_u16(d, TQ_PROTOCOL_VERSION);
    put_u16(d, TQ_MAX_BODY);
    put_u32(d, b->tick_hz);
    put_u32(d, b->model_capacity);
    put_u32(d, b->arena_capacity);
    put_u32(d, d->model_size);
    put_u32(d, d->model_crc);
    put_str8(d, tsptq_version());
    put_str8(d, b->board ? b->board : "");
    put_str8(d, b->tick_unit ? b->tick_unit : "");
    return TQ_OK;
}

static int cmd_upload_begin(tq_device *d, const uint8_t *body, uint32_t len) {
    const tq_board *b = d->board;
    uint32_t size;
    uintptr_t boot, buf;
    if (len != 8) return fail(d, TQ_BAD_REQUEST, "UPLOAD_BEGIN takes size:u32 crc:u32");
    size = le32(body);
    d->uploading = 0;
    drop_model(d);
    if (size == 0) return fail(d, TQ_BAD_REQUEST, "empty model");
    if (size > b->model_capacity) {
        status(d, TQ_TOO_BIG);
        put_text(d, "model of ");
        put_dec(d, size);
        put_text(d, " bytes does not fit model_capacity ");
        put_dec(d, b->model_capacity);
        put_text(d, " bytes");
        return TQ_TOO_BIG;
    }
    /* the upload overwrites a boot model that lives in model_buf: a reset must not restore it then. The ranges
     * [boot, boot + boot_size) and [buf, buf + model_capacity) overlap; differences, not sums, so that a buffer at
     * the top of a 32-bit address space cannot wrap the test */
    boot = (uintptr_t)d->boot_model, buf = (uintptr_t)b->model_buf;
    if (d->boot_model && (boot >= buf ? boot - buf < b->model_capacity : buf - boot < d->boot_size))
        d->boot_model = NULL;
    d->uploading = 1;
    d->upload_size = size;
    d->upload_crc = le32(body + 4);
    d->upload_received = 0;
    return status(d, TQ_OK);
}

static int cmd_upload_chunk(tq_device *d, const uint8_t *body, uint32_t len) {
    uint32_t offset, n;
    if (len < 4) return fail(d, TQ_BAD_REQUEST, "UPLOAD_CHUNK takes offset:u32 data");
    if (!d->uploading) return fail(d, TQ_NO_UPLOAD, "no upload in progress (the board reset?): send UPLOAD_BEGIN");
    offset = le32(body);
    n = len - 4;
    if (offset > d->upload_received) {
        status(d, TQ_OUT_OF_RANGE);
        put_text(d, "chunk at offset ");
        put_dec(d, offset);
        put_text(d, " leaves a gap: ");
        put_dec(d, d->upload_received);
        put_text(d, " bytes received");
        return TQ_OUT_OF_RANGE;
    }
    if (n > d->upload_size - offset) {
        status(d, TQ_OUT_OF_RANGE);
        put_text(d, "chunk ends past the announced size of ");
        put_dec(d, d->upload_size);
        put_text(d, " bytes");
        return TQ_OUT_OF_RANGE;
    }
    memcpy(d->board->model_buf + offset, body + 4, n);
    if (offset + n > d->upload_received) d->upload_received = offset + n;
    status(d, TQ_OK);
    put_u32(d, d->upload_received);
    return TQ_OK;
}

static int cmd_upload_commit(tq_device *d, uint32_t len) {
    uint32_t crc;
    if (len) return fail(d, TQ_BAD_REQUEST, "UPLOAD_COMMIT takes no body");
    if (!d->uploading) return fail(d, TQ_NO_UPLOAD, "no upload in progress (the board reset?): send UPLOAD_BEGIN");
    if (d->upload_received != d->upload_size) {
        status(d, TQ_OUT_OF_RANGE);
        put_text(d, "only ");
        put_dec(d, d->upload_received);
        put_text(d, " of ");
        put_dec(d, d->upload_size);
        put_text(d, " bytes received");
        return TQ_OUT_OF_RANGE;
    }
    d->uploading = 0;
    crc = tq_crc32(0, d->board->model_buf, d->upload_size);
    if (crc != d->upload_crc) {
        status(d, TQ_CRC_MISMATCH);
        put_text(d, "the model's CRC-32 is ");
        put_hex(d, crc);
        put_text(d, ", UPLOAD_BEGIN announced ");
        put_hex(d, d->upload_crc);
        return TQ_CRC_MISMATCH;
    }
    return commit(d, d->board->model_buf, d->upload_size, crc);
}

static int cmd_input(tq_device *d, const uint8_t *body, uint32_t len) {
    uint32_t offset, n;
    if (len < 4) return fail(d, TQ_BAD_REQUEST, "INPUT takes offset:u32 data");
    if (!d->has_model) return fail(d, TQ_NO_MODEL, "no model: upload one first");
    offset = le32(body);
    n = len - 4;
    if (offset > d->input_bytes || n > d->input_bytes - offset) {
        status(d, TQ_OUT_OF_RANGE);
        put_text(d, "input chunk ends past the model's ");
        put_dec(d, d->input_bytes);
        put_text(d, " input bytes");
        return TQ_OUT_OF_RANGE;
    }
    memcpy(d->input + offset, body + 4, n);
    return status(d, TQ_OK);
}

static int cmd_invoke(tq_device *d, const uint8_t *body, uint32_t len) {
    const tq_board *b = d->board;
    tsptq_status st;
    uint32_t crc;
    uint64_t t0, t1;
    if (len != 4) return fail(d, TQ_BAD_REQUEST, "INVOKE takes input_crc:u32");
    if (!d->has_model) return fail(d, TQ_NO_MODEL, "no model: upload one first");
    crc = tq_crc32(0, d->input, d->input_bytes);
    if (crc != le32(body)) {
        status(d, TQ_INPUT_CRC);
        put_text(d, "the input's CRC-32 is ");
        put_hex(d, crc);
        put_text(d, ", INVOKE announced ");
        put_hex(d, le32(body));
        return TQ_INPUT_CRC;
    }
    d->output_len_valid = 0;
    memset(d->op_ticks, 0, 4u * (uint32_t)tsptq_num_ops(&d->model));
    t0 = b->ticks ? b->ticks() : 0;
    if (tsptq_invoke(&d->model, d->input, d->input_bytes, d->output, d->output_bytes, &st) != TSPTQ_OK)
        return fail_runtime(d, TQ_INVOKE_FAILED, &st);
    t1 = b->ticks ? b->ticks() : 0;
    d->output_len_valid = 1;
    status(d, TQ_OK);
    put_u32(d, (uint32_t)(t1 - t0));
    put_u32(d, (uint32_t)((t1 - t0) >> 32));
    put_u32(d, d->output_bytes);
    put_u32(d, tq_crc32(0, d->output, d->output_bytes));
    put_bytes(d, d->output, d->output_bytes); /* as much as fits: OUTPUT reads the rest */
    return TQ_OK;
}

static int cmd_output(tq_device *d, const uint8_t *body, uint32_t len) {
    uint32_t offset, n;
    if (len != 6) return fail(d, TQ_BAD_REQUEST, "OUTPUT takes offset:u32 length:u16");
    if (!d->has_model) return fail(d, TQ_NO_MODEL, "no model: upload one first");
    if (!d->output_len_valid) return fail(d, TQ_OUT_OF_RANGE, "no output: INVOKE first");
    offset = le32(body);
    n = le16(body + 4);
    if (n > TQ_MAX_BODY - 1 || offset > d->output_bytes || n > d->output_bytes - offset) {
        status(d, TQ_OUT_OF_RANGE);
        put_text(d, "OUTPUT range outside the ");
        put_dec(d, d->output_bytes);
        put_text(d, " output bytes, or longer than max_body - 1");
        return TQ_OUT_OF_RANGE;
    }
    status(d, TQ_OK);
    put_bytes(d, d->output + offset, n);
    return TQ_OK;
}

static int cmd_profile(tq_device *d, const uint8_t *body, uint32_t len) {
    uint32_t k, count, n_ops;
    if (len != 4) return fail(d, TQ_BAD_REQUEST, "PROFILE takes first:u16 count:u16");
    if (!d->has_model) return fail(d, TQ_NO_MODEL, "no model: upload one first");
    n_ops = (uint32_t)tsptq_num_ops(&d->model);
    k = le16(body);
    count = le16(body + 2);
    if (k > n_ops) return fail(d, TQ_OUT_OF_RANGE, "PROFILE: first is past the last op");
    status(d, TQ_OK);
    put_u16(d, n_ops);
    for (; k < n_ops && count; k++, count--) {
        const char *name = tsptq_op_name(&d->model, k);
        uint32_t name_len = (uint32_t)strlen(name ? name : "");
        if (name_len > 255) name_len = 255;
        if (TX_END - d->tx_len < 5 + name_len) break; /* the host pages on */
        put_u32(d, d->op_ticks[k]);
        put_str8(d, name ? name : "");
    }
    return TQ_OK;
}

static void dispatch(tq_device *d, uint8_t cmd, const uint8_t *body, uint32_t len) {
    switch (cmd) {
    case TQ_CMD_HELLO: cmd_hello(d, len); break;
    case TQ_CMD_RESET:
        if (len) fail(d, TQ_BAD_REQUEST, "RESET takes no body");
        else status(d, TQ_OK);
        break;
    case TQ_CMD_UPLOAD_BEGIN: cmd_upload_begin(d, body, len); break;
    case TQ_CMD_UPLOAD_CHUNK: cmd_upload_chunk(d, body, len); break;
    case TQ_CMD_UPLOAD_COMMIT: cmd_upload_commit(d, len); break;
    case TQ_CMD_INPUT: cmd_input(d, body, len); break;
    case TQ_CMD_INVOKE: cmd_invoke(d, body, len); break;
    case TQ_CMD_OUTPUT: cmd_output(d, body, len); break;
    case TQ_CMD_PROFILE: cmd_profile(d, body, len); break;
    default: fail(d, TQ_BAD_REQUEST, "unknown command"); break;
    }
}

/* ---- receiving: one checked packet ------------------------------------------------------------------------------ */

static void handle_packet(tq_device *d, const uint8_t *p, uint32_t n) {
    uint32_t crc;
    uint8_t seq, cmd;
    if (n < 6) return;
    crc = le32(p + n - 4);
    if (tq_crc32(0, p, n - 4) != crc) return;
    seq = p[0], cmd = p[1];
    if (cmd & 0x80) return; /* a reply or a BOOT (an echoing line): not for us */
    if (d->last_valid && seq == d->last_seq && cmd == d->last_cmd && crc == d->last_crc) {
        send_packet(d->board, d->tx, d->tx_len); /* a retry: the reply was lost, do not run it twice */
        return;
    }
    d->tx[0] = seq;
    d->tx[1] = (uint8_t)(cmd | 0x80);
    d->tx_len = 2;
    dispatch(d, cmd, p + 2, n - 6);
    crc = tq_crc32(0, d->tx, d->tx_len); /* tx has room for it: put_* stop at TX_END, 4 bytes before its end */
    d->tx[d->tx_len] = (uint8_t)crc, d->tx[d->tx_len + 1] = (uint8_t)(crc >> 8);
    d->tx[d->tx_len + 2] = (uint8_t)(crc >> 16), d->tx[d->tx_len + 3] = (uint8_t)(crc >> 24);
    d->tx_len += 4;
    d->last_valid = 1, d->last_seq = seq, d->last_cmd = cmd, d->last_crc = le32(p + n - 4);
    send_packet(d->board, d->tx, d->tx_len);
    if (cmd == TQ_CMD_RESET && d->tx[2] == TQ_OK) {
        if (d->board->reset) d->board->reset(); /* a real reboot: tq_device_init runs again */
        else soft_reset(d);
    }
}

/* COBS decoding, a byte at a time: rx_left data bytes remain in the current block; a block whose code is below 0xFF
 * is followed by an implied zero, written when the next block starts (the last block's is not part of the packet). */
void tq_device_feed(tq_device *d, uint8_t byte) {
    if (byte == 0) { /* end of frame: whole blocks only, and not too long */
        if (d->rx_code != 0 && d->rx_left == 0 && !d->rx_overflow) handle_packet(d, d->rx, d->rx_len);
        d->rx_len = 0, d->rx_code = 0, d->rx_left = 0, d->rx_overflow = 0;
        return;
    }
    if (d->rx_overflow) return;
    if (d->rx_left == 0) { /* a code byte */
        if (d->rx_code != 0 && d->rx_code != 0xFF) {
            if (d->rx_len >= TQ_MAX_PACKET) {
                d->rx_overflow = 1;
                return;
            }
            d->rx[d->rx_len++] = 0;
        }
        d->rx_code = byte;
        d->rx_left = (uint8_t)(byte - 1);
        return;
    }
    if (d->rx_len >= TQ_MAX_PACKET) {
        d->rx_overflow = 1;
        return;
    }
    d->rx[d->rx_len++] = byte;
    d->rx_left--;
}

void tq_device_init(tq_device *d, const tq_board *board) {
    memset(d, 0, sizeof *d);
    d->board = board;
    send_boot(board);
}
