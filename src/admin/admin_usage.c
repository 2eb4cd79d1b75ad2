/*
 * admin_usage.c: OpenAI's Usage API over the ledger (GET /organization/usage/{completions,
 * embeddings,moderations}): time buckets of token and request sums, optionally grouped by
 * project, key and model.
 *
 * As OpenAI's: start_time (required), end_time, bucket_width 1m | 1h | 1d (default 1d),
 * project_ids, api_key_ids, models (each repeatable), group_by project_id | api_key_id |
 * model, limit in buckets (1d: default 7, at most 31; 1h: 24, 168; 1m: 60, 1440) and the
 * page cursor (next_page). Every bucket of the page is listed, empty ones with no results.
 * Results carry cost_micros besides OpenAI's members (the ledger's exact sum).
 *
 * ?format=csv answers text/csv instead: a header row, then one row per bucket and group
 * (empty buckets have none) over the whole window, unpaged (admin_report.h).
 *
 * Usage spans every project and carries spend, so it is an owner route (billing); readers see
 * no usage, which also keeps one project's spend hidden from another project's members.
 */
#include <stdlib.h>
#include <string.h>

#include "admin/admin_int.h"
#include "admin/admin_report.h"
#include "core/json.h"

static void
append_nullable(struct tg_buf *b, const char *s)
{
    if (s == NULL) {
        tg_buf_append_str(b, "null");
    } else {
        tg_json_quote(b, s);
    }
}

static void
result_json(struct tg_buf *b, const char *kind, const struct admin_report_row *r)
{
    tg_buf_appendf(b,
                   "{\"object\":\"organization.usage.%s.result\",\"input_tokens\":%lld,"
                   "\"input_cached_tokens\":%lld,\"input_uncached_tokens\":%lld,"
                   "\"output_tokens\":%lld,\"output_reasoning_tokens\":%lld,"
                   "\"num_model_requests\":%lld,\"cost_micros\":%lld,\"project_id\":",
                   kind, (long long)r->prompt_tokens, (long long)r->cached_tokens,
                   (long long)(r->prompt_tokens - r->cached_tokens),
                   (long long)r->completion_tokens, (long long)r->reasoning_tokens,
                   (long long)r->requests, (long long)r->cost_micros);
    append_nullable(b, r->project_id);
    tg_buf_append_str(b, ",\"api_key_id\":");
    append_nullable(b, r->key_id);
    tg_buf_append_str(b, ",\"model\":");
    append_nullable(b, r->model);
    tg_buf_append_str(b, "}");
}

static void
page_json(struct admin_job *j, const char *kind, const struct admin_report_window *w,
          const struct admin_report *rep)
{
    struct tg_buf *b = &j->out;
    size_t k = 0;
    tg_buf_append_str(b, "{\"object\":\"page\",\"data\":[");
    for (int64_t i = 0; i < w->n_buckets; i++) {
        int64_t start = w->first_ms + i * w->bucket_ms;
        tg_buf_appendf(b,
                       "%s{\"object\":\"bucket\",\"start_time\":%lld,\"end_time\":%lld,"
                       "\"results\":[",
                       i ? "," : "", (long long)(start / 1000),
                       (long long)((start + w->bucket_ms) / 1000));
        for (size_t n = 0; k < rep->n_rows && rep->rows[k].bucket_ms == start; k++, n++) {
            tg_buf_append_str(b, n ? "," : "");
            result_json(b, kind, &rep->rows[k]);
        }
        tg_buf_append_str(b, "]}");
    }
    tg_buf_appendf(b, "],\"has_more\":%s,\"next_page\":", w->has_more ? "true" : "false");
    if (w->has_more) {
        char cursor[24];
        admin_report_cursor(w->next_s, cursor);
        tg_json_quote(b, cursor);
    } else {
        tg_buf_append_str(b, "null");
    }
    tg_buf_append_str(b, "}");
}

static void
page_csv(struct admin_job *j, const struct admin_report_window *w, const struct admin_report *rep)
{
    struct tg_buf *b = &j->out;
    tg_buf_append_str(b, "start_time,end_time,bucket_start,project_id,api_key_id,model,"
                         "num_model_requests,input_tokens,input_cached_tokens,output_tokens,"
                         "output_reasoning_tokens,cost_micros\r\n");
    for (size_t k = 0; k < rep->n_rows; k++) {
        const struct admin_report_row *r = &rep->rows[k];
        tg_buf_appendf(b, "%lld,%lld,", (long long)(r->bucket_ms / 1000),
                       (long long)((r->bucket_ms + w->bucket_ms) / 1000));
        admin_iso_time(b, r->bucket_ms);
        tg_buf_append_str(b, ",");
        admin_csv_field(b, r->project_id);
        tg_buf_append_str(b, ",");
        admin_csv_field(b, r->key_id);
        tg_buf_append_str(b, ",");
        admin_csv_field(b, r->model);
        tg_buf_appendf(b, ",%lld,%lld,%lld,%lld,%lld,%lld\r\n", (long long)r->requests,
                       (long long)r->prompt_tokens, (long long)r->cached_tokens,
                       (long long)r->completion_tokens, (long long)r->reasoning_tokens,
                       (long long)r->cost_micros);
    }
    j->content_type = "text/csv; charset=utf-8";
}

static void
usage(struct admin_job *j, const char *kind)
{
    /* OpenAI's other groupings (user_id, batch, service_tier) are accepted and show null. */
    static const char *const groups[] = {"project_id", "api_key_id",   "model", "user_id",
                                         "batch",      "service_tier", NULL};
    const char *width = admin_query(j, "bucket_width");
    int64_t bucket_ms = 86400000;
    int64_t def_limit = 7;
    int64_t max_limit = 31;
    if (width != NULL && strcmp(width, "1m") == 0) {
        bucket_ms = 60000;
        def_limit = 60;
        max_limit = 1440;
    } else if (width != NULL && strcmp(width, "1h") == 0) {
        bucket_ms = 3600000;
        def_limit = 24;
        max_limit = 168;
    } else if (width != NULL && strcmp(width, "1d") != 0) {
        admin_error(j, 400, "bucket_width must be 1m, 1h or 1d.", "bucket_width", NULL);
        return;
    }
    struct admin_report_window w;
    struct admin_report_spec spec = {0};
    bool is_csv = false;
    if (!admin_report_groups_check(j, groups) ||
        !admin_report_params(j, bucket_ms, def_limit, max_limit, true, &w, &spec, &is_csv)) {
        return;
    }
    spec.by_project = admin_report_has_group(j, "project_id");
    spec.by_key = admin_report_has_group(j, "api_key_id");
    spec.by_model = admin_report_has_group(j, "model");
    /* OpenAI's completions usage covers every text-generation endpoint; the others are one
     * endpoint each, named as the ledger names them (tg_api_name). */
    static const char *const generation[] = {"chat.completions", "completions", "responses"};
    bool is_generation = strcmp(kind, "completions") == 0;
    struct admin_report rep;
    admin_report_init(&rep, &spec);
    int rc = admin_report_load(&rep, j->store, j->state->org_id, &w, is_generation ? NULL : kind,
                               is_generation ? generation : NULL,
                               is_generation ? sizeof(generation) / sizeof(generation[0]) : 0);
    if (rc < 0) {
        admin_store_error(j, rc, "usage");
    } else if (is_csv) {
        page_csv(j, &w, &rep);
    } else {
        page_json(j, kind, &w, &rep);
    }
    admin_report_deinit(&rep);
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
