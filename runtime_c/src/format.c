/* tsptq runtime: status messages. A small formatter (no libc, no allocation) for tsptq_status.message, the error
 * names and the version string. */
#include "runtime.h"

static size_t put_str(char *out, size_t cap, size_t n, const char *s, size_t len) {
    size_t i;
    for (i = 0; i < len && s[i]; i++)
        if (n + 1 < cap) out[n++] = (s[i] >= 32 && s[i] < 127) ? s[i] : '?';
    return n;
}

static size_t put_u64(char *out, size_t cap, size_t n, uint64_t v, int neg) {
    char tmp[24];
    int k = 0;
    if (neg && n + 1 < cap) out[n++] = '-';
    do {
        tmp[k++] = (char)('0' + (int)(v % 10));
        v /= 10;
    } while (v);
    while (k--)
        if (n + 1 < cap) out[n++] = tmp[k];
    return n;
}

static size_t put_i64(char *out, size_t cap, size_t n, int64_t v) {
    return v < 0 ? put_u64(out, cap, n, (uint64_t)0 - (uint64_t)v, 1) : put_u64(out, cap, n, (uint64_t)v, 0);
}

int tq_vformat(char *out, size_t cap, const char *fmt, va_list ap) {
    size_t n = 0;
    if (!out || !cap) return 0;
    for (; *fmt; fmt++) {
        if (*fmt != '%') {
            if (n + 1 < cap) out[n++] = *fmt;
            continue;
        }
        fmt++;
        if (*fmt == 's') {
            const char *s = va_arg(ap, const char *);
            n = put_str(out, cap, n, s ? s : "(null)", (size_t)-1);
        } else if (fmt[0] == '.' && fmt[1] == '*' && fmt[2] == 's') {
            int len = va_arg(ap, int);
            const char *s = va_arg(ap, const char *);
            fmt += 2;
            if (s && len > 0) n = put_str(out, cap, n, s, (size_t)len);
        } else if (*fmt == 'd') {
            n = put_i64(out, cap, n, va_arg(ap, int));
        } else if (*fmt == 'u') {
            n = put_u64(out, cap, n, va_arg(ap, unsigned), 0);
        } else if (*fmt == 'L') {
            n = put_i64(out, cap, n, va_arg(ap, int64_t));
        } else if (*fmt == 'Z') {
            n = put_u64(out, cap, n, (uint64_t)va_arg(ap, size_t), 0);
        } else if (*fmt == '%') {
            if (n + 1 < cap) out[n++] = '%';
        } else {
            break;
        }
    }
    out[n] = 0;
    return (int)n;
}

int tq_fail(tsptq_status *st, int code, const char *fmt, ...) {
    if (st) {
        va_list ap;
        va_start(ap, fmt);
        st->code = code;
        tq_vformat(st->message, sizeof st->message, fmt, ap);
        va_end(ap);
    }
    return code;
}

void tq_ok(tsptq_status *st) {
    if (st) {
        st->code = TSPTQ_OK;
        st->message[0] = 0;
    }
}

const char *tsptq_error_name(int code) {
    static const char *const names[] = {
        "TSPTQ_OK", "TSPTQ_ERR_ARGUMENT", "TSPTQ_ERR_BAD_IDENTIFIER", "TSPTQ_ERR_CORRUPTED", "TSPTQ_ERR_INVALID_MODEL",
        "TSPTQ_ERR_UNSUPPORTED_OP", "TSPTQ_ERR_BAD_QUANTIZATION", "TSPTQ_ERR_VERSION", "TSPTQ_ERR_TOO_MANY",
        "TSPTQ_ERR_ALIGNMENT", "TSPTQ_ERR_ARENA_TOO_SMALL", "TSPTQ_ERR_INPUT_SIZE", "TSPTQ_ERR_OUTPUT_SIZE"};
    return code >= 0 && code < (int)(sizeof names / sizeof names[0]) ? names[code] : "TSPTQ_ERR_UNKNOWN";
}

const char *tsptq_version(void) { return TSPTQ_VERSION_STRING; }
