/* The tsptq device program for Linux/POSIX boards (targets `host` and `rpi`): the serial protocol of
 * docs/serial-protocol.md on a serial port or pseudo-terminal (--port), or on stdin/stdout (--stdio, for SSH).
 *
 *   agent --port /dev/ttyUSB0 [--baud 115200] [--board rpi] [--model-capacity BYTES] [--arena-capacity BYTES]
 *         [--threads N]  (N threads per inference: the runtime's thread pool, a TSPTQ_THREADS=1 build)
 *   agent --stdio [--model FILE]        (--model: start with this model committed, as a board with it in flash)
 *
 * Built with -DTQ_EMBEDDED_MODEL (and tsptq.deploy.targets' generated tq_embedded_model), it starts with that model.
 *
 * Ticks are CLOCK_MONOTONIC nanoseconds. RESET is a soft reset (state cleared, BOOT sent). Exits 0 when the port
 * hangs up or stdin ends. */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "tq_device.h"

/* Static buffers cost nothing until touched (bss); larger capacities are allocated. */
#define DEFAULT_MODEL_CAPACITY (64u << 20)
#define DEFAULT_ARENA_CAPACITY (48u << 20)
static uint8_t model_mem[DEFAULT_MODEL_CAPACITY + 16];
static uint8_t arena_mem[DEFAULT_ARENA_CAPACITY + 16];

#ifdef TQ_EMBEDDED_MODEL
extern const uint8_t tq_embedded_model[];
extern const uint32_t tq_embedded_model_len;
#endif

static int out_fd = 1;
static tq_device dev;

static void die(const char *what, const char *detail) {
    fprintf(stderr, "agent: %s%s%s\n", what, detail ? ": " : "", detail ? detail : "");
    exit(2);
}

static uint8_t *aligned16(uint8_t *p) { return p + ((16 - ((uintptr_t)p & 15)) & 15); }

static uint8_t *buffer(uint8_t *mem, uint32_t mem_size, uint32_t capacity) {
    void *p = NULL;
    if (capacity <= mem_size) return aligned16(mem);
    if (posix_memalign(&p, 16, capacity) != 0) die("cannot allocate the requested capacity", NULL);
    return (uint8_t *)p;
}

static void write_all(const uint8_t *bytes, size_t n) {
    while (n) {
        ssize_t k = write(out_fd, bytes, n);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) exit(0); /* the port hung up (EIO, EPIPE): nobody is listening any more */
        bytes += k, n -= (size_t)k;
    }
}

static uint64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}
static uint32_t now_ns32(void) { return (uint32_t)now_ns(); }

static speed_t baud_constant(long baud) {
    switch (baud) {
    case 9600: return B9600;
    case 19200: return B19200;
    case 38400: return B38400;
    case 57600: return B57600;
    case 115200: return B115200;
#ifdef B230400
    case 230400: return B230400;
#endif
#ifdef B460800
    case 460800: return B460800;
#endif
#ifdef B921600
    case 921600: return B921600;
#endif
    default: break;
    }
    return B0;
}

/* --baud: a whole decimal number among the rates above, or the agent says so and exits (never silently 115200). */
static const char baud_rates[] = "9600, 19200, 38400, 57600, 115200"
#ifdef B230400
                                 ", 230400"
#endif
#ifdef B460800
                                 ", 460800"
#endif
#ifdef B921600
                                 ", 921600"
#endif
    ;

static long parse_baud(const char *s) {
    char *end;
    long v;
    errno = 0;
    v = strtol(s, &end, 10);
    if (!*s || *end || errno || v <= 0 || baud_constant(v) == B0) {
        fprintf(stderr, "agent: unsupported --baud %s (one of %s)\n", s, baud_rates);
        exit(2);
    }
    return v;
}

/* Raw 8N1: no echo, no line editing, no CR/LF translation, no flow control, no signals. */
static void make_raw(int fd, long baud) {
    struct termios t;
    if (tcgetattr(fd, &t) != 0) return; /* not a terminal (a pipe): nothing to set */
    t.c_iflag &= ~(tcflag_t)(IGNBRK | BRKINT | PARMRK | ISTRIP | INLCR | IGNCR | ICRNL | IXON | IXOFF | IXANY);
    t.c_oflag &= ~(tcflag_t)OPOST;
    t.c_lflag &= ~(tcflag_t)(ECHO | ECHONL | ICANON | ISIG | IEXTEN);
    t.c_cflag &= ~(tcflag_t)(CSIZE | PARENB | CSTOPB);
    t.c_cflag |= CS8 | CREAD | CLOCAL;
    t.c_cc[VMIN] = 1;
    t.c_cc[VTIME] = 0;
    if (baud) {
        cfsetispeed(&t, baud_constant(baud));
        cfsetospeed(&t, baud_constant(baud));
    }
    if (tcsetattr(fd, TCSANOW, &t) != 0) die("cannot set the port to raw mode", strerror(errno));
}

static uint32_t parse_size(const char *s, const char *flag) {
    char *end;
    unsigned long long v = strtoull(s, &end, 0);
    if (*end || !*s || v == 0 || v > 0xFFFFFFF0u) die("bad value for", flag);
    return (uint32_t)v;
}

static uint32_t read_model_file(const char *path, uint8_t *buf, uint32_t capacity) {
    FILE *f = fopen(path, "rb");
    size_t n;
    if (!f) die("cannot open --model", path);
    n = fread(buf, 1, capacity, f);
    if (!feof(f) && fgetc(f) != EOF) die("--model does not fit --model-capacity", path);
    fclose(f);
    return (uint32_t)n;
}

/* --threads: 1 to tsptq_max_threads() (the runtime's pool: 1 in a build without TSPTQ_THREADS) */
static uint32_t parse_threads(const char *s) {
    char *end;
    long v = strtol(s, &end, 10);
    if (!*s || *end || v < 1 || v > tsptq_max_threads()) {
        fprintf(stderr, "agent: --threads %s: this build runs 1 to %d threads\n", s, tsptq_max_threads());
        exit(2);
    }
    return (uint32_t)v;
}

int main(int argc, char **argv) {
    const char *port = NULL, *model_path = NULL;
    int use_stdio = 0, in_fd;
    uint32_t threads = 1;
    long baud = 115200;
    static tq_board board;
    static uint8_t chunk[4096];
    int i;

    board.board = "host";
    board.tick_unit = "ns";
    board.tick_hz = 1000000000u;
    board.model_capacity = DEFAULT_MODEL_CAPACITY;
    board.arena_capacity = DEFAULT_ARENA_CAPACITY;
    for (i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--stdio")) {
            use_stdio = 1;
            continue;
        }
        if (!v) die("missing value or unknown option", a);
        if (!strcmp(a, "--port")) port = v;
        else if (!strcmp(a, "--board")) board.board = v;
        else if (!strcmp(a, "--baud")) baud = parse_baud(v);
        else if (!strcmp(a, "--model")) model_path = v;
        else if (!strcmp(a, "--model-capacity")) board.model_capacity = parse_size(v, a);
        else if (!strcmp(a, "--arena-capacity")) board.arena_capacity = parse_size(v, a);
        else if (!strcmp(a, "--threads")) threads = parse_threads(v);
        else die("unknown option", a);
        i++;
    }
    if (!port == !use_stdio) {
        fprintf(stderr, "usage: agent (--port TTY [--baud N] | --stdio) [--board NAME] [--model FILE]\n"
                        "             [--model-capacity BYTES] [--arena-capacity BYTES] [--threads N]\n");
        return 2;
    }
    board.model_buf = buffer(model_mem, DEFAULT_MODEL_CAPACITY, board.model_capacity);
    board.arena = buffer(arena_mem, DEFAULT_ARENA_CAPACITY, board.arena_capacity);
    board.write = write_all;
    board.ticks = now_ns;
    board.clock = now_ns32;
    board.reset = NULL;
    signal(SIGPIPE, SIG_IGN);

    if (use_stdio) {
        in_fd = 0, out_fd = 1;
        make_raw(0, 0); /* only when stdin is a terminal (ssh -t) */
    } else {
        in_fd = out_fd = open(port, O_RDWR | O_NOCTTY);
        if (in_fd < 0) die(port, strerror(errno));
        make_raw(in_fd, baud);
    }
    fprintf(stderr, "agent: board %s on %s, model capacity %u B, arena capacity %u B, %u thread(s)\n", board.board,
            use_stdio ? "stdio" : port, (unsigned)board.model_capacity, (unsigned)board.arena_capacity,
            (unsigned)threads);

    tq_device_init(&dev, &board);
    dev.threads = threads;
#ifdef TQ_EMBEDDED_MODEL
    if (!model_path && tq_device_set_model(&dev, tq_embedded_model, tq_embedded_model_len) != TQ_OK)
        fprintf(stderr, "agent: the embedded model was rejected: %.*s\n", (int)dev.tx_len - 3, (const char *)dev.tx + 3);
#endif
    if (model_path) {
        uint32_t n = read_model_file(model_path, board.model_buf, board.model_capacity);
        int st = tq_device_set_model(&dev, board.model_buf, n);
        if (st != TQ_OK) /* the reply an UPLOAD_COMMIT would have had: status byte at tx[2], then the message */
            fprintf(stderr, "agent: --model %s rejected: %.*s\n", model_path, (int)dev.tx_len - 3, (const char *)dev.tx + 3);
    }
    for (;;) {
        ssize_t n = read(in_fd, chunk, sizeof chunk), k;
        if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
        if (n == 0 || (n < 0 && errno == EIO)) return 0; /* end of input, or the other end of the pty closed */
        if (n < 0) die("read", strerror(errno));
        for (k = 0; k < n; k++) tq_device_feed(&dev, chunk[k]);
    }
}
