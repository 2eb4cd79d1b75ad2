/*
 * api.c: the relayed endpoints and the usage each reports (see api.h).
 *
 * The usage parser reads provider replies, so it trusts nothing: a count must be a
 * non-negative JSON integer, and the optional detail counts (cached, reasoning) are clamped to
 * the totals they are subsets of, so a confused provider can never make the ledger bill a
 * token twice. One table row per endpoint names the members to read.
 */
#include "upstream/api.h"

#include <string.h>

#include "core/json.h"

struct api_info {
    const char *path;
    const char *name;
    /* Usage member names; NULL where the endpoint reports no such count. */
    const char *input;
    const char *output;
    const char *input_details;
    const char *output_details;
};

static const struct api_info apis[TG_API_COUNT] = {
    [TG_API_CHAT] = {"/chat/completions", "chat.completions", "prompt_tokens", "completion_tokens",
                     "prompt_tokens_details", "completion_tokens_details"},
    [TG_API_COMPLETIONS] = {"/completions", "completions", "prompt_tokens", "completion_tokens",
                            "prompt_tokens_details", "completion_tokens_details"},
    [TG_API_EMBEDDINGS] = {"/embeddings", "embeddings", "prompt_tokens", NULL, NULL, NULL},
    [TG_API_RESPONSES] = {"/responses", "responses", "input_tokens", "output_tokens",
                          "input_tokens_details", "output_tokens_details"},
    [TG_API_MODERATIONS] = {"/moderations", "moderations", NULL, NULL, NULL, NULL},
};

const char *
tg_api_path(enum tg_api api)
{
    return (unsigned)api < TG_API_COUNT ? apis[api].path : "";
}

const char *
tg_api_name(enum tg_api api)
{
    return (unsigned)api < TG_API_COUNT ? apis[api].name : "unknown";
}

bool
tg_api_from_path(const char *path, enum tg_api *out)
{
    if (path == NULL || strncmp(path, "/v1/", 4) != 0) {
        return false;
    }
    for (int i = 0; i < TG_API_COUNT; i++) {
        if (strcmp(path + 3, apis[i].path) == 0) {
            *out = (enum tg_api)i;
            return true;
        }
    }
    return false;
}

/* A required count: present, an integer, not negative. */
static bool
read_count(const json_t *obj, const char *key, int64_t *out)
{
    const json_t *v = json_object_get(obj, key);
    if (!json_is_integer(v) || json_integer_value(v) < 0) {
        return false;
    }
    *out = (int64_t)json_integer_value(v);
    return true;
}

/* An optional detail count (obj.details.key), clamped to [0, total]; 0 when absent or odd. */
static int64_t
read_detail(const json_t *obj, const char *details, const char *key, int64_t total)
{
    if (details == NULL) {
        return 0;
    }
    int64_t v = 0;
    if (!read_count(json_object_get(obj, details), key, &v)) {
        return 0;
    }
    return v > total ? total : v;
}

bool
tg_usage_parse(enum tg_api api, const json_t *usage, struct tg_usage *out)
{
    if ((unsigned)api >= TG_API_COUNT || !json_is_object(usage)) {
        return false;
    }
    const struct api_info *a = &apis[api];
    if (a->input == NULL) {
        return false; /* moderations: metered by request count */
    }
    struct tg_usage u = {0};
    if (!read_count(usage, a->input, &u.prompt_tokens)) {
        return false;
    }
    if (a->output != NULL && !read_count(usage, a->output, &u.completion_tokens)) {
        return false;
    }
    u.cached_tokens = read_detail(usage, a->input_details, "cached_tokens", u.prompt_tokens);
    u.reasoning_tokens =
        read_detail(usage, a->output_details, "reasoning_tokens", u.completion_tokens);
    u.is_known = true;
    *out = u;
    return true;
}

bool
tg_usage_from_response(enum tg_api api, const json_t *body, struct tg_usage *out)
{
    if (!json_is_object(body)) {
        return false;
    }
    return tg_usage_parse(api, json_object_get(body, "usage"), out);
}

/* A count written as JSON: digits only (an integer, not negative), few enough for int64. */
static bool
span_count(struct tg_json_span v, int64_t *out)
{
    if (v.p == NULL || v.len == 0 || v.len > 18) {
        return false;
    }
    int64_t n = 0;
    for (size_t i = 0; i < v.len; i++) {
        if (v.p[i] < '0' || v.p[i] > '9') {
            return false;
        }
        n = n * 10 + (v.p[i] - '0');
    }
    *out = n;
    return true;
}

/* The text variant of read_detail: details.key, clamped to [0, total]; 0 when absent or odd. */
static int64_t
span_detail(struct tg_json_span details, const char *key, int64_t total)
{
    struct tg_json_span v;
    int64_t n = 0;
    if (details.p == NULL || details.p[0] != '{' ||
        tg_json_members(details.p, details.len, &key, 1, &v) < 0 || !span_count(v, &n)) {
        return 0;
    }
    return n > total ? total : n;
}

bool
tg_usage_parse_text(enum tg_api api, const char *text, size_t len, struct tg_usage *out)
{
    if ((unsigned)api >= TG_API_COUNT || apis[api].input == NULL) {
        return false;
    }
    const struct api_info *a = &apis[api];
    const char *names[4] = {a->input, a->output ? a->output : "",
                            a->input_details ? a->input_details : "",
                            a->output_details ? a->output_details : ""};
    struct tg_json_span v[4];
    if (text == NULL || tg_json_members(text, len, names, 4, v) < 0) {
        return false;
    }
    struct tg_usage u = {0};
    if (!span_count(v[0], &u.prompt_tokens) ||
        (a->output != NULL && !span_count(v[1], &u.completion_tokens))) {
        return false;
    }
    u.cached_tokens = a->input_details ? span_detail(v[2], "cached_tokens", u.prompt_tokens) : 0;
    u.reasoning_tokens =
        a->output_details ? span_detail(v[3], "reasoning_tokens", u.completion_tokens) : 0;
    u.is_known = true;
    *out = u;
    return true;
}
