/* tsptq runtime: the 'tsptq' metadata JSON (metadata_json.h). A scanner, not a parser: top-level keys only,
 * escapes left as they are, nesting by a counter (no recursion), nothing read outside s[0..n). */
#include <string.h>

#include "metadata_json.h"

typedef struct {
    const uint8_t *s;
    uint32_t n, i;
} js;

static void js_ws(js *j) {
    while (j->i < j->n && (j->s[j->i] == ' ' || j->s[j->i] == '\t' || j->s[j->i] == '\n' || j->s[j->i] == '\r'))
        j->i++;
}

/* A string at j->i: returns 1 and its raw bytes [*a, *b) (escapes left as they are). */
static int js_string(js *j, uint32_t *a, uint32_t *b) {
    if (j->i >= j->n || j->s[j->i] != '"') return 0;
    *a = ++j->i;
    while (j->i < j->n && j->s[j->i] != '"') j->i += (j->s[j->i] == '\\') ? 2 : 1;
    if (j->i >= j->n) return 0;
    *b = j->i++;
    return 1;
}

/* Skip one value (iteratively: nesting depth is a counter, no recursion). */
static int js_skip(js *j) {
    uint32_t depth = 0, a, b;
    do {
        js_ws(j);
        if (j->i >= j->n) return 0;
        switch (j->s[j->i]) {
        case '"':
            if (!js_string(j, &a, &b)) return 0;
            break;
        case '{': case '[':
            depth++;
            j->i++;
            continue;
        case '}': case ']':
            if (!depth) return 0;
            depth--;
            j->i++;
            break;
        case ',': case ':':
            if (!depth) return 0;
            j->i++;
            continue;
        default: /* number or literal */
            if (!((j->s[j->i] >= '0' && j->s[j->i] <= '9') || j->s[j->i] == '-' || j->s[j->i] == 't' ||
                  j->s[j->i] == 'f' || j->s[j->i] == 'n'))
                return 0;
            while (j->i < j->n && j->s[j->i] != ',' && j->s[j->i] != '}' && j->s[j->i] != ']' && j->s[j->i] != ' ' &&
                   j->s[j->i] != '\n' && j->s[j->i] != '\t' && j->s[j->i] != '\r' && j->s[j->i] != ':')
                j->i++;
        }
    } while (depth);
    return 1;
}

int tq_json_meta(const uint8_t *s, uint32_t n, int64_t *version) {
    js j;
    int has_format = 0, has_version = 0;
    uint32_t a, b;
    j.s = s;
    j.n = n;
    j.i = 0;
    js_ws(&j);
    if (j.i >= n || s[j.i] != '{') return 0;
    j.i++;
    js_ws(&j);
    if (j.i < n && s[j.i] == '}') return 0;
    for (;;) {
        js_ws(&j);
        if (!js_string(&j, &a, &b)) return 0;
        js_ws(&j);
        if (j.i >= n || s[j.i] != ':') return 0;
        j.i++;
        js_ws(&j);
        if (b - a == 7 && memcmp(s + a, "version", 7) == 0) {
            int neg = 0;
            int64_t v = 0;
            uint32_t digits = 0;
            has_version = 0;
            if (j.i < n && s[j.i] == '-') {
                neg = 1;
                j.i++;
            }
            while (j.i < n && s[j.i] >= '0' && s[j.i] <= '9') {
                if (v < ((int64_t)1 << 62) / 10) v = v * 10 + (s[j.i] - '0');
                else v = (int64_t)1 << 62;
                j.i++;
                digits++;
            }
            if (!digits) {
                if (!js_skip(&j)) return 0; /* not a number: no integer version */
            } else if (j.i < n && (s[j.i] == '.' || s[j.i] == 'e' || s[j.i] == 'E')) {
                if (!js_skip(&j)) return 0; /* a float: not an integer version */
            } else {
                has_version = 1;
                *version = neg ? -v : v;
            }
        } else if (b - a == 6 && memcmp(s + a, "format", 6) == 0) {
            uint32_t c, d;
            if (j.i < n && s[j.i] == '"') {
                if (!js_string(&j, &c, &d)) return 0;
                has_format = (d - c == 5 && memcmp(s + c, "tsptq", 5) == 0);
            } else {
                has_format = 0;
                if (!js_skip(&j)) return 0;
            }
        } else if (!js_skip(&j)) {
            return 0;
        }
        js_ws(&j);
        if (j.i >= n) return 0;
        if (s[j.i] == ',') {
            j.i++;
            continue;
        }
        if (s[j.i] == '}') break;
        return 0;
    }
    return has_format && has_version;
}

#define OPFAIL(code, ...) (tq_fail(st, (code), __VA_ARGS__), 0)

int tq_json_check_two_scale(const tsptq_model *m, const uint8_t *s, uint32_t n, tsptq_status *st) {
    js j;
    uint32_t a, b, i, n_keys = 0, n_details = 0, value = 0;
    int found = 0;
    j.s = s;
    j.n = n;
    j.i = 0;
    for (i = 0; i < m->n_tensors; i++) n_details += m->tensors[i].has_details;
    /* find the top-level "two_scale" value (the metadata was parsed once already: it is an object) */
    js_ws(&j);
    j.i++;
    for (;;) {
        js_ws(&j);
        if (!js_string(&j, &a, &b)) break;
        js_ws(&j);
        if (j.i >= j.n || j.s[j.i] != ':') break;
        j.i++;
        js_ws(&j);
        if (b - a == 9 && memcmp(j.s + a, "two_scale", 9) == 0) {
            found = 1;
            value = j.i;
        }
        if (!js_skip(&j)) break;
        js_ws(&j);
        if (j.i >= j.n || j.s[j.i] != ',') break;
        j.i++;
    }
    if (found) {
        j.i = value;
        if (j.i >= j.n || j.s[j.i] != '{')
            return OPFAIL(TSPTQ_ERR_INVALID_MODEL, "the 'tsptq' metadata's two_scale entry is not a map");
        j.i++;
        js_ws(&j);
        if (j.i < j.n && j.s[j.i] == '}') j.i++;
        else
            for (;;) {
                int match = 0;
                js_ws(&j);
                if (!js_string(&j, &a, &b)) return OPFAIL(TSPTQ_ERR_INVALID_MODEL, "unreadable two_scale metadata");
                for (i = 0; i < m->n_tensors && !match; i++) {
                    const tsptq_tensor *t = &m->tensors[i];
                    match = t->has_details && t->name_len == b - a && memcmp(t->name, j.s + a, b - a) == 0;
                }
                if (!match)
                    return OPFAIL(TSPTQ_ERR_INVALID_MODEL, "metadata describes two-scale tensor '%.*s', which the graph "
                                                           "does not have (or has as a plain affine tensor)",
                                  (int)(b - a > 64 ? 64 : b - a), (const char *)j.s + a);
                n_keys++;
                js_ws(&j);
                if (j.i >= j.n || j.s[j.i] != ':') return OPFAIL(TSPTQ_ERR_INVALID_MODEL, "unreadable two_scale metadata");
                j.i++;
                if (!js_skip(&j)) return OPFAIL(TSPTQ_ERR_INVALID_MODEL, "unreadable two_scale metadata");
                js_ws(&j);
                if (j.i < j.n && j.s[j.i] == ',') {
                    j.i++;
                    continue;
                }
                if (j.i < j.n && j.s[j.i] == '}') break;
                return OPFAIL(TSPTQ_ERR_INVALID_MODEL, "unreadable two_scale metadata");
            }
    }
    if (n_keys != n_details)
        return OPFAIL(TSPTQ_ERR_INVALID_MODEL, "%u tensors have a two-scale code but the metadata describes %u",
                      n_details, n_keys);
    return 1;
}

#undef OPFAIL
