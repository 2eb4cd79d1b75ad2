/*
 * admin_usage.c: OpenAI's Usage API over the ledger (GET /organization/usage/{completions,
 * embeddings,moderations}): time buckets of token and request sums, optionally grouped by
 * project, key and model.
 *
 * Usage spans every project and carries spend, so it is an owner route (billing); readers see
 * no usage, which also keeps one project's spend hidden from another project's members.
 */
#include <stdlib.h>
#include <string.h>

#include "admin/admin_int.h"
#include "core/clock.h"
#include "core/json.h"

struct usage_scan {
    struct admin_job *j;
    const char *kind;
    int64_t bucket_ms;
    int64_t open_bucket;
    size_t n_results;
};

static void
append_nullable(struct tg_buf *b, const char *s)
{
    if (s == NULL) {
        tg_buf_append_str(b, "null");
    } else {
        tg_json_quote(b, s);
    }
}

static int
scan_usage(const struct tg_usage_result *r, void *arg)
{
    struct usage_scan *s = arg;
    struct tg_buf *b = &s->j->out;
    if (r->bucket_start_ms != s->open_bucket) {
        if (s->open_bucket >= 0) {
            tg_buf_append_str(b, "]},");
        }
        s->open_bucket = r->bucket_start_ms;
        s->n_results = 0;
        tg_buf_appendf(b,
                       "{\"object\":\"bucket\",\"start_time\":%lld,\"end_time\":%lld,"
                       "\"results\":[",
                       (long long)(r->bucket_start_ms / 1000),
                       (long long)((r->bucket_start_ms + s->bucket_ms) / 1000));
    }
    tg_buf_append_str(b, s->n_results++ ? "," : "");
    tg_buf_appendf(b,
                   "{\"object\":\"organization.usage.%s.result\",\"input_tokens\":%lld,"
                   "\"input_cached_tokens\":%lld,\"output_tokens\":%lld,"
                   "\"output_reasoning_tokens\":%lld,\"num_model_requests\":%lld,"
                   "\"cost_micros\":%lld,\"project_id\":",
                   s->kind, (long long)r->prompt_tokens, (long long)r->cached_tokens,
                   (long long)r->completion_tokens, (long long)r->reasoning_tokens,
                   (long long)r->requests, (long long)r->cost_micros);
    append_nullable(b, r->project_id);
    tg_buf_append_str(b, ",\"api_key_id\":");
    append_nullable(b, r->key_id);
    tg_buf_append_str(b, ",\"model\":");
    append_nullable(b, r->model);
    tg_buf_append_str(b, "}");
    return 0;
}

static bool
has_group(struct tg_http_req *req, const char *name)
{
    const char *vals[8];
    size_t n = tg_http_req_query_all(req, "group_by", vals, 8);
    for (size_t i = 0; i < n && i < 8; i++) {
        /* Accept both repeated parameters and a comma-separated list. */
        const char *p = strstr(vals[i], name);
        size_t len = strlen(name);
        if (p != NULL && (p == vals[i] || p[-1] == ',') && (p[len] == '\0' || p[len] == ',')) {
            return true;
        }
    }
    return false;
}

static void
usage(struct admin_job *j, const char *kind)
{
    struct tg_http_req *req = j->req;
    const char *start = admin_query(j, "start_time");
    const char *end = admin_query(j, "end_time");
    const char *width = admin_query(j, "bucket_width");
    if (start == NULL) {
        admin_error(j, 400, "start_time is required (Unix seconds).", "start_time", NULL);
        return;
    }
    int64_t bucket_ms = 86400000;
    if (width != NULL && strcmp(width, "1m") == 0) {
        bucket_ms = 60000;
    } else if (width != NULL && strcmp(width, "1h") == 0) {
        bucket_ms = 3600000;
    } else if (width != NULL && strcmp(width, "1d") != 0) {
        admin_error(j, 400, "bucket_width must be 1m, 1h or 1d.", "bucket_width", NULL);
        return;
    }
    /* OpenAI's completions usage covers every text-generation endpoint; the others are one
     * endpoint each, named as the ledger names them (tg_api_name). */
    static const char *const generation[] = {"chat.completions", "completions", "responses"};
    bool is_generation = strcmp(kind, "completions") == 0;
    struct tg_usage_query q = {
        .org_id = j->state->org_id,
        .start_ms = strtoll(start, NULL, 10) * 1000,
        .end_ms = end ? strtoll(end, NULL, 10) * 1000 : tg_clock_unix_ms() + 1,
        .bucket_ms = bucket_ms,
        .project_id = admin_query(j, "project_ids"),
        .key_id = admin_query(j, "api_key_ids"),
        .model = admin_query(j, "models"),
        .endpoint = is_generation ? NULL : kind,
        .endpoints = is_generation ? generation : NULL,
        .n_endpoints = is_generation ? sizeof(generation) / sizeof(generation[0]) : 0,
        .group_by_project = has_group(req, "project_id"),
        .group_by_key = has_group(req, "api_key_id"),
        .group_by_model = has_group(req, "model"),
    };
    if (q.project_id != NULL) {
        const struct tg_project *p = tg_state_project(j->state, q.project_id);
        q.project_id = p ? p->id : q.project_id;
    }
    struct usage_scan s = {.j = j, .kind = kind, .bucket_ms = bucket_ms, .open_bucket = -1};
    tg_buf_append_str(&j->out, "{\"object\":\"page\",\"data\":[");
    int rc = j->store->ops->usage_query(j->store, &q, scan_usage, &s);
    if (rc < 0) {
        admin_store_error(j, rc, "usage");
        return;
    }
    tg_buf_append_str(&j->out, s.open_bucket >= 0 ? "]}" : "");
    tg_buf_append_str(&j->out, "],\"has_more\":false,\"next_page\":null}");
}

static void
usage_completions(struct admin_job *j)
{
    usage(j, "completions");
}

static void
usage_embeddings(struct admin_job *j)
{
    usage(j, "embeddings");
}

static void
usage_moderations(struct admin_job *j)
{
    usage(j, "moderations");
}

const struct admin_route tg_admin_routes_usage[] = {
    {TG_HTTP_GET, "usage/completions", ADMIN_OWNER,
     "Token and request usage of chat, completions and responses", usage_completions},
    {TG_HTTP_GET, "usage/embeddings", ADMIN_OWNER, "Usage of embeddings", usage_embeddings},
    {TG_HTTP_GET, "usage/moderations", ADMIN_OWNER, "Usage of moderations", usage_moderations},
    {0, NULL, 0, NULL, NULL},
};
