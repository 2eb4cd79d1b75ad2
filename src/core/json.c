/* json.c: jansson helpers (see json.h). */
#include "core/json.h"

#include <stdio.h>
#include <string.h>

#include "core/err.h"

bool
tg_json_depth_ok(const char *text, size_t len, int max_depth)
{
    int depth = 0;
    bool in_string = false;
    for (size_t i = 0; i < len; i++) {
        char c = text[i];
        if (in_string) {
            if (c == '\\') {
                i++;
            } else if (c == '"') {
                in_string = false;
            }
            continue;
        }
        switch (c) {
        case '"':
            in_string = true;
            break;
        case '{':
        case '[':
            if (++depth > max_depth) {
                return false;
            }
            break;
        case '}':
        case ']':
            depth--;
            break;
        default:
            break;
        }
    }
    return true;
}

json_t *
tg_json_parse(const char *text, size_t len, int max_depth, char *err, size_t err_cap)
{
    if (!tg_json_depth_ok(text, len, max_depth)) {
        snprintf(err, err_cap, "JSON nested deeper than %d levels", max_depth);
        return NULL;
    }
    json_error_t je;
    json_t *v = json_loadb(text, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &je);
    if (v == NULL) {
        snprintf(err, err_cap, "Invalid JSON at line %d, column %d: %s", je.line, je.column,
                 je.text);
    }
    return v;
}

static int
dump_cb(const char *buffer, size_t size, void *data)
{
    return tg_buf_append(data, buffer, size) < 0 ? -1 : 0;
}

int
tg_json_dump_buf(const json_t *v, struct tg_buf *out)
{
    return json_dump_callback(v, dump_cb, out, JSON_COMPACT | JSON_ENCODE_ANY) < 0 ? TG_ETOOBIG : 0;
}

int
tg_json_quote(struct tg_buf *out, const char *s)
{
    json_t *str = json_string(s);
    if (str == NULL) {
        /* Not valid UTF-8: quote a sanitized copy rather than fail. */
        str = json_string("(invalid UTF-8)");
    }
    int rc = tg_json_dump_buf(str, out);
    json_decref(str);
    return rc;
}

const char *
tg_json_str(const json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

int64_t
tg_json_int(const json_t *obj, const char *key, int64_t def)
{
    json_t *v = json_object_get(obj, key);
    return json_is_integer(v) ? (int64_t)json_integer_value(v) : def;
}

bool
tg_json_bool(const json_t *obj, const char *key, bool def)
{
    json_t *v = json_object_get(obj, key);
    return json_is_boolean(v) ? json_is_true(v) : def;
}

static int
append_nullable(struct tg_buf *out, const char *s)
{
    return s == NULL ? tg_buf_append_str(out, "null") : tg_json_quote(out, s);
}

int
tg_json_error_body(struct tg_buf *out, const char *message, const char *type, const char *param,
                   const char *code)
{
    int rc = tg_buf_append_str(out, "{\"error\":{\"message\":");
    rc = rc < 0 ? rc : tg_json_quote(out, message);
    rc = rc < 0 ? rc : tg_buf_append_str(out, ",\"type\":");
    rc = rc < 0 ? rc : append_nullable(out, type);
    rc = rc < 0 ? rc : tg_buf_append_str(out, ",\"param\":");
    rc = rc < 0 ? rc : append_nullable(out, param);
    rc = rc < 0 ? rc : tg_buf_append_str(out, ",\"code\":");
    rc = rc < 0 ? rc : append_nullable(out, code);
    rc = rc < 0 ? rc : tg_buf_append_str(out, "}}");
    return rc;
}

/* A recursive-descent validator over [p, end). Depth is bounded by the caller's text length
 * only through recursion, so it is capped at SCAN_MAX_DEPTH to keep the stack small. */
#define SCAN_MAX_DEPTH 512

struct scan {
    const char *p;
    const char *end;
    int depth;
    int max_depth;
    bool check_utf8;  /* reject strings that are not UTF-8 (tg_json_members) */
    bool has_uescape; /* a \u escape was seen */
};

/* Skips one UTF-8 sequence whose lead byte c (>= 0x80) was just consumed; false when the bytes
 * are not well-formed UTF-8 (overlong forms, surrogates and code points past U+10FFFF too). */
static bool
scan_utf8_tail(struct scan *s, unsigned char c)
{
    unsigned char lo = 0x80, hi = 0xBF;
    int n;
    if (c >= 0xC2 && c <= 0xDF) {
        n = 1;
    } else if (c >= 0xE0 && c <= 0xEF) {
        n = 2;
        lo = c == 0xE0 ? 0xA0 : 0x80;
        hi = c == 0xED ? 0x9F : 0xBF;
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 3;
        lo = c == 0xF0 ? 0x90 : 0x80;
        hi = c == 0xF4 ? 0x8F : 0xBF;
    } else {
        return false;
    }
    for (int i = 0; i < n; i++) {
        if (s->p >= s->end) {
            return false;
        }
        unsigned char b = (unsigned char)*s->p++;
        if (b < lo || b > hi) {
            return false;
        }
        lo = 0x80;
        hi = 0xBF;
    }
    return true;
}

static void
skip_ws(struct scan *s)
{
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r')) {
        s->p++;
    }
}

static bool scan_value(struct scan *s);

/*
 * Whether the 8 bytes at p are all plain string bytes: none is '"', '\\' or a control byte,
 * nor (when UTF-8 is checked) 0x80 or above. Word-at-a-time (the has-zero-byte and
 * has-less-than tricks): a false "no" can only come with a true one in the same word, and the
 * caller then takes those bytes one at a time.
 */
static inline bool
is_plain8(const char *p, bool check_utf8)
{
    const uint64_t ones = 0x0101010101010101ULL;
    const uint64_t highs = 0x8080808080808080ULL;
    uint64_t w;
    memcpy(&w, p, sizeof(w));
    uint64_t quote = w ^ (ones * '"');
    uint64_t bslash = w ^ (ones * '\\');
    uint64_t stop = ((quote - ones) & ~quote) | ((bslash - ones) & ~bslash) |
                    ((w - ones * 0x20) & ~w) | (check_utf8 ? w : 0);
    return (stop & highs) == 0;
}

static bool
scan_string(struct scan *s)
{
    s->p++; /* opening quote */
    while (s->p < s->end) {
        const char *p = s->p; /* a local, so the loop keeps it in a register */
        if (s->check_utf8) {
            while (s->end - p >= 8 && is_plain8(p, true)) {
                p += 8;
            }
        } else {
            while (s->end - p >= 8 && is_plain8(p, false)) {
                p += 8;
            }
        }
        s->p = p;
        if (s->p >= s->end) {
            break;
        }
        unsigned char c = (unsigned char)*s->p++;
        if (c == '"') {
            return true;
        }
        if (c < 0x20) {
            return false;
        }
        if (c >= 0x80 && s->check_utf8 && !scan_utf8_tail(s, c)) {
            return false;
        }
        if (c == '\\') {
            if (s->p >= s->end) {
                return false;
            }
            c = (unsigned char)*s->p++;
            if (c == 'u') {
                s->has_uescape = true;
                for (int i = 0; i < 4; i++) {
                    if (s->p >= s->end || !strchr("0123456789abcdefABCDEF", *s->p) ||
                        *s->p == '\0') {
                        return false;
                    }
                    s->p++;
                }
            } else if (!strchr("\"\\/bfnrt", c) || c == '\0') {
                return false;
            }
        }
    }
    return false;
}

static bool
scan_digits(struct scan *s)
{
    const char *start = s->p;
    while (s->p < s->end && *s->p >= '0' && *s->p <= '9') {
        s->p++;
    }
    return s->p > start;
}

static bool
scan_number(struct scan *s)
{
    if (*s->p == '-') {
        s->p++;
    }
    if (s->p < s->end && *s->p == '0') {
        s->p++;
    } else if (!scan_digits(s)) {
        return false;
    }
    if (s->p < s->end && *s->p == '.') {
        s->p++;
        if (!scan_digits(s)) {
            return false;
        }
    }
    if (s->p < s->end && (*s->p == 'e' || *s->p == 'E')) {
        s->p++;
        if (s->p < s->end && (*s->p == '+' || *s->p == '-')) {
            s->p++;
        }
        if (!scan_digits(s)) {
            return false;
        }
    }
    return true;
}

static bool
scan_literal(struct scan *s, const char *lit)
{
    size_t n = strlen(lit);
    if ((size_t)(s->end - s->p) < n || memcmp(s->p, lit, n) != 0) {
        return false;
    }
    s->p += n;
    return true;
}

static bool
scan_container(struct scan *s, char close, bool is_object)
{
    if (++s->depth > s->max_depth) {
        return false;
    }
    s->p++;
    skip_ws(s);
    if (s->p < s->end && *s->p == close) {
        s->p++;
        s->depth--;
        return true;
    }
    for (;;) {
        if (is_object) {
            skip_ws(s);
            if (s->p >= s->end || *s->p != '"' || !scan_string(s)) {
                return false;
            }
            skip_ws(s);
            if (s->p >= s->end || *s->p++ != ':') {
                return false;
            }
        }
        if (!scan_value(s)) {
            return false;
        }
        skip_ws(s);
        if (s->p >= s->end) {
            return false;
        }
        char c = *s->p++;
        if (c == close) {
            s->depth--;
            return true;
        }
        if (c != ',') {
            return false;
        }
    }
}

static bool
scan_value(struct scan *s)
{
    skip_ws(s);
    if (s->p >= s->end) {
        return false;
    }
    switch (*s->p) {
    case '{':
        return scan_container(s, '}', true);
    case '[':
        return scan_container(s, ']', false);
    case '"':
        return scan_string(s);
    case 't':
        return scan_literal(s, "true");
    case 'f':
        return scan_literal(s, "false");
    case 'n':
        return scan_literal(s, "null");
    default:
        return (*s->p == '-' || (*s->p >= '0' && *s->p <= '9')) && scan_number(s);
    }
}

bool
tg_json_is_valid(const char *text, size_t len)
{
    struct scan s = {text, text + len, 0, SCAN_MAX_DEPTH, false, false};
    if (!scan_value(&s)) {
        return false;
    }
    skip_ws(&s);
    return s.p == s.end;
}

int
tg_json_members(const char *text, size_t len, const char *const *names, size_t n,
                struct tg_json_span *out)
{
    return tg_json_members_depth(text, len, SCAN_MAX_DEPTH, names, n, out);
}

int
tg_json_members_depth(const char *text, size_t len, int max_depth, const char *const *names,
                      size_t n, struct tg_json_span *out)
{
    if (n > TG_JSON_MAX_NAMES) {
        return -1;
    }
    size_t name_len[TG_JSON_MAX_NAMES];
    for (size_t i = 0; i < n; i++) {
        out[i] = (struct tg_json_span){NULL, 0};
        name_len[i] = strlen(names[i]);
    }
    if (max_depth < 1) {
        return -1;
    }
    struct scan s = {text, text + len, 1, max_depth < SCAN_MAX_DEPTH ? max_depth : SCAN_MAX_DEPTH,
                     true, false};
    skip_ws(&s);
    if (s.p >= s.end || *s.p != '{') {
        return -1;
    }
    s.p++;
    skip_ws(&s);
    bool is_empty = s.p < s.end && *s.p == '}';
    if (is_empty) {
        s.p++;
    }
    while (!is_empty) {
        skip_ws(&s);
        if (s.p >= s.end || *s.p != '"') {
            return -1;
        }
        const char *key = s.p + 1;
        if (!scan_string(&s)) {
            return -1;
        }
        size_t key_len = (size_t)(s.p - 1 - key);
        skip_ws(&s);
        if (s.p >= s.end || *s.p++ != ':') {
            return -1;
        }
        skip_ws(&s);
        const char *value = s.p;
        if (!scan_value(&s)) {
            return -1;
        }
        for (size_t i = 0; i < n; i++) {
            if (name_len[i] == key_len && memcmp(names[i], key, key_len) == 0) {
                out[i] = (struct tg_json_span){value, (size_t)(s.p - value)};
            }
        }
        skip_ws(&s);
        if (s.p >= s.end) {
            return -1;
        }
        char c = *s.p++;
        if (c == '}') {
            break;
        }
        if (c != ',') {
            return -1;
        }
    }
    skip_ws(&s);
    if (s.p != s.end) {
        return -1;
    }
    return s.has_uescape ? 0 : 1;
}

bool
tg_json_span_plain_string(struct tg_json_span span, const char **str, size_t *len)
{
    if (span.p == NULL || span.len < 2 || span.p[0] != '"' ||
        memchr(span.p, '\\', span.len) != NULL) {
        return false;
    }
    *str = span.p + 1;
    *len = span.len - 2;
    return true;
}
