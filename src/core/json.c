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
