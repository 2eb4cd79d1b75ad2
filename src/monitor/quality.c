/*
 * quality.c: quality signals from answer texts (quality.h). The spans come from objects the
 * caller validated, so walking an array needs only to balance brackets outside strings.
 */
#include "monitor/quality.h"

#include <stdio.h>
#include <string.h>

static bool
is_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* The next element of the array span from *pos (start at 0); false at its end. */
static bool
next_elem(struct tg_json_span arr, size_t *pos, struct tg_json_span *out)
{
    if (arr.p == NULL || arr.len < 2 || arr.p[0] != '[') {
        return false;
    }
    size_t i = *pos == 0 ? 1 : *pos;
    while (i < arr.len && (is_ws(arr.p[i]) || arr.p[i] == ',')) {
        i++;
    }
    if (i >= arr.len || arr.p[i] == ']') {
        return false;
    }
    size_t start = i;
    int depth = 0;
    bool in_str = false;
    for (; i < arr.len; i++) {
        char c = arr.p[i];
        if (in_str) {
            if (c == '\\') {
                i++;
            } else if (c == '"') {
                in_str = false;
            }
            continue;
        }
        if (c == '"') {
            in_str = true;
        } else if (c == '{' || c == '[') {
            depth++;
        } else if (c == '}' || c == ']') {
            if (depth == 0) {
                break; /* the array's own end */
            }
            depth--;
        } else if (c == ',' && depth == 0) {
            break;
        }
    }
    size_t end = i < arr.len ? i : arr.len; /* an escape at the very end cannot overrun */
    while (end > start && is_ws(arr.p[end - 1])) {
        end--;
    }
    *out = (struct tg_json_span){arr.p + start, end - start};
    *pos = end;
    return true;
}

static bool
is_null(struct tg_json_span v)
{
    return v.p == NULL || (v.len == 4 && memcmp(v.p, "null", 4) == 0);
}

/* A value that carries something: a non-empty string, array or object. */
static bool
has_content(struct tg_json_span v)
{
    if (is_null(v) || v.len < 2) {
        return false;
    }
    if (v.p[0] == '"') {
        return v.len > 2;
    }
    if (v.p[0] == '[' || v.p[0] == '{') {
        for (size_t i = 1; i < v.len; i++) {
            if (!is_ws(v.p[i])) {
                return v.p[i] != ']' && v.p[i] != '}';
            }
        }
    }
    return false;
}

static bool
str_is(struct tg_json_span v, const char *s)
{
    const char *p;
    size_t n;
    return tg_json_span_plain_string(v, &p, &n) && n == strlen(s) && memcmp(p, s, n) == 0;
}

static void
copy_str(struct tg_json_span v, char *out, size_t cap)
{
    const char *p;
    size_t n;
    if (cap > 0 && tg_json_span_plain_string(v, &p, &n)) {
        n = n < cap - 1 ? n : cap - 1;
        memcpy(out, p, n);
        out[n] = '\0';
    }
}

void
tg_quality_choices(struct tg_json_span choices, char *finish_reason, size_t cap, bool *is_empty,
                   bool *is_refusal)
{
    size_t pos = 0;
    struct tg_json_span first;
    if (!next_elem(choices, &pos, &first)) {
        return;
    }
    static const char *const names[4] = {"finish_reason", "message", "delta", "text"};
    struct tg_json_span v[4];
    if (tg_json_members(first.p, first.len, names, 4, v) < 0) {
        return;
    }
    if (!is_null(v[0])) {
        copy_str(v[0], finish_reason, cap);
    }
    if (has_content(v[3])) {
        *is_empty = false;
    }
    struct tg_json_span msg = !is_null(v[1]) ? v[1] : v[2];
    if (is_null(msg) || msg.p[0] != '{') {
        return;
    }
    static const char *const mnames[4] = {"content", "tool_calls", "function_call", "refusal"};
    struct tg_json_span m[4];
    if (tg_json_members(msg.p, msg.len, mnames, 4, m) < 0) {
        return;
    }
    if (has_content(m[0]) || has_content(m[1]) || has_content(m[2])) {
        *is_empty = false;
    }
    if (has_content(m[3])) {
        *is_refusal = true; /* a refusal is an answer of its own, not an empty one */
        *is_empty = false;
    }
}

/* One message item's content parts: output text, refusals. */
static void
message_parts(struct tg_json_span content, bool *is_empty, bool *is_refusal)
{
    static const char *const names[3] = {"type", "text", "refusal"};
    size_t pos = 0;
    struct tg_json_span part;
    while (next_elem(content, &pos, &part)) {
        struct tg_json_span v[3];
        if (tg_json_members(part.p, part.len, names, 3, v) < 0) {
            continue;
        }
        if (str_is(v[0], "refusal")) {
            *is_refusal = true;
            *is_empty = false;
        } else if (has_content(v[1])) {
            *is_empty = false;
        }
    }
}

void
tg_quality_responses(struct tg_json_span output, struct tg_json_span status,
                     struct tg_json_span incomplete, char *finish_reason, size_t cap,
                     bool *is_empty, bool *is_refusal)
{
    if (str_is(status, "completed")) {
        snprintf(finish_reason, cap, "stop");
    } else if (str_is(status, "incomplete") && !is_null(incomplete) && incomplete.p[0] == '{') {
        static const char *const rname[1] = {"reason"};
        struct tg_json_span r;
        if (tg_json_members(incomplete.p, incomplete.len, rname, 1, &r) >= 0) {
            if (str_is(r, "max_output_tokens")) {
                snprintf(finish_reason, cap, "length");
            } else {
                copy_str(r, finish_reason, cap);
            }
        }
    }
    static const char *const names[2] = {"type", "content"};
    size_t pos = 0;
    struct tg_json_span item;
    while (next_elem(output, &pos, &item)) {
        struct tg_json_span v[2];
        if (tg_json_members(item.p, item.len, names, 2, v) < 0) {
            continue;
        }
        if (str_is(v[0], "message")) {
            message_parts(v[1], is_empty, is_refusal);
        } else if (!str_is(v[0], "reasoning")) {
            *is_empty = false; /* a function, tool or other call */
        }
    }
}
