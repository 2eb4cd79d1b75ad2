/*
 * admin_report.c: pages of time buckets over the ledger, shared by the usage and costs APIs
 * (see admin_report.h).
 *
 * The store sums the ledger per bucket and group in SQL; this file only narrows its answer
 * (a filter of several values is a grouping in SQL plus a check here) and merges the groups
 * the caller did not ask for. Every sum stays an integer, so what the answers show adds up
 * to the ledger's rows to the token and the micro-dollar.
 */
#include "admin/admin_report.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/clock.h"
#include "core/mem.h"

#define CURSOR_PREFIX "page_"

static int64_t
floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

bool
admin_report_window_make(int64_t start_s, int64_t end_ms, int64_t bucket_ms, int64_t limit,
                         int64_t page_s, struct admin_report_window *out)
{
    memset(out, 0, sizeof(*out));
    out->bucket_ms = bucket_ms;
    int64_t start_ms = start_s * 1000;
    int64_t first = floor_div(start_ms, bucket_ms) * bucket_ms;
    if (page_s >= 0) {
        int64_t p = page_s * 1000;
        if (p < first || p % bucket_ms != 0 || (p >= end_ms && p != first)) {
            return false;
        }
        first = p;
    }
    out->first_ms = first;
    int64_t left = end_ms > first ? (end_ms - first + bucket_ms - 1) / bucket_ms : 0;
    out->n_buckets = left < limit ? left : limit;
    int64_t page_end = first + out->n_buckets * bucket_ms;
    out->start_ms = start_ms > first ? start_ms : first;
    out->end_ms = end_ms < page_end ? end_ms : page_end;
    out->has_more = left > limit;
    out->next_s = out->has_more ? page_end / 1000 : 0;
    return true;
}

void
admin_report_cursor(int64_t s, char out[24])
{
    snprintf(out, 24, CURSOR_PREFIX "%016llx", (unsigned long long)s);
}

bool
admin_report_cursor_parse(const char *text, int64_t *s_out)
{
    size_t plen = strlen(CURSOR_PREFIX);
    if (strncmp(text, CURSOR_PREFIX, plen) != 0 || strlen(text) != plen + 16) {
        return false;
    }
    uint64_t v = 0;
    for (const char *p = text + plen; *p != '\0'; p++) {
        int d = (*p >= '0' && *p <= '9') ? *p - '0' : (*p >= 'a' && *p <= 'f') ? *p - 'a' + 10 : -1;
        if (d < 0) {
            return false;
        }
        v = v << 4 | (uint64_t)d;
    }
    /* Bucket starts are whole seconds after 1970 and far below 2^62 ms. */
    if (v > (uint64_t)INT64_MAX / 1000) {
        return false;
    }
    *s_out = (int64_t)v;
    return true;
}

/* ---- rows -------------------------------------------------------------------------------- */

void
admin_report_init(struct admin_report *r, const struct admin_report_spec *spec)
{
    memset(r, 0, sizeof(*r));
    r->spec = *spec;
}

static void
row_free(struct admin_report_row *row)
{
    free(row->project_id);
    free(row->key_id);
    free(row->model);
}

void
admin_report_deinit(struct admin_report *r)
{
    for (size_t i = 0; i < r->n_rows; i++) {
        row_free(&r->rows[i]);
    }
    free(r->rows);
    memset(r, 0, sizeof(*r));
}

static bool
in_list(const char *v, const char *const *list, size_t n)
{
    if (n <= 1) {
        return true; /* none, or the one value the store filtered on */
    }
    for (size_t i = 0; v != NULL && i < n; i++) {
        if (strcmp(v, list[i]) == 0) {
            return true;
        }
    }
    return false;
}

void
admin_report_add(struct admin_report *r, const struct tg_usage_result *u)
{
    const struct admin_report_spec *sp = &r->spec;
    if (!in_list(u->project_id, sp->project_ids, sp->n_project_ids) ||
        !in_list(u->key_id, sp->key_ids, sp->n_key_ids) ||
        !in_list(u->model, sp->models, sp->n_models)) {
        return;
    }
    if (r->n_rows == r->rows_cap) {
        r->rows_cap = r->rows_cap ? r->rows_cap * 2 : 64;
        r->rows = tg_xrealloc(r->rows, r->rows_cap * sizeof(r->rows[0]));
    }
    struct admin_report_row *row = &r->rows[r->n_rows++];
    *row = (struct admin_report_row){
        .bucket_ms = u->bucket_start_ms,
        .project_id = sp->by_project && u->project_id ? tg_xstrdup(u->project_id) : NULL,
        .key_id = sp->by_key && u->key_id ? tg_xstrdup(u->key_id) : NULL,
        .model = sp->by_model && u->model ? tg_xstrdup(u->model) : NULL,
        .requests = u->requests,
        .prompt_tokens = u->prompt_tokens,
        .cached_tokens = u->cached_tokens,
        .completion_tokens = u->completion_tokens,
        .reasoning_tokens = u->reasoning_tokens,
        .cost_micros = u->cost_micros,
    };
}

static int
str_cmp(const char *a, const char *b)
{
    if (a == NULL || b == NULL) {
        return (a != NULL) - (b != NULL);
    }
    return strcmp(a, b);
}

static int
row_cmp(const void *pa, const void *pb)
{
    const struct admin_report_row *a = pa;
    const struct admin_report_row *b = pb;
    if (a->bucket_ms != b->bucket_ms) {
        return a->bucket_ms < b->bucket_ms ? -1 : 1;
    }
    int c = str_cmp(a->project_id, b->project_id);
    if (c == 0) {
        c = str_cmp(a->key_id, b->key_id);
    }
    return c != 0 ? c : str_cmp(a->model, b->model);
}

void
admin_report_finish(struct admin_report *r)
{
    if (r->n_rows == 0) {
        return;
    }
    qsort(r->rows, r->n_rows, sizeof(r->rows[0]), row_cmp);
    size_t out = 0;
    for (size_t i = 1; i < r->n_rows; i++) {
        struct admin_report_row *keep = &r->rows[out];
        struct admin_report_row *row = &r->rows[i];
        if (row_cmp(keep, row) != 0) {
            r->rows[++out] = *row;
            continue;
        }
        keep->requests += row->requests;
        keep->prompt_tokens += row->prompt_tokens;
        keep->cached_tokens += row->cached_tokens;
        keep->completion_tokens += row->completion_tokens;
        keep->reasoning_tokens += row->reasoning_tokens;
        keep->cost_micros += row->cost_micros;
        row_free(row);
    }
    r->n_rows = out + 1;
}

static int
load_cb(const struct tg_usage_result *u, void *arg)
{
    admin_report_add(arg, u);
    return 0;
}

int
admin_report_load(struct admin_report *r, struct tg_store *store, const char *org_id,
                  const struct admin_report_window *w, const char *endpoint,
                  const char *const *endpoints, size_t n_endpoints)
{
    const struct admin_report_spec *sp = &r->spec;
    if (w->n_buckets == 0) {
        return 0;
    }
    struct tg_usage_query q = {
        .org_id = org_id,
        .start_ms = w->start_ms,
        .end_ms = w->end_ms,
        .bucket_ms = w->bucket_ms,
        .project_id = sp->n_project_ids == 1 ? sp->project_ids[0] : NULL,
        .key_id = sp->n_key_ids == 1 ? sp->key_ids[0] : NULL,
        .model = sp->n_models == 1 ? sp->models[0] : NULL,
        .endpoint = endpoint,
        .endpoints = endpoints,
        .n_endpoints = n_endpoints,
        .group_by_project = sp->by_project || sp->n_project_ids > 1,
        .group_by_key = sp->by_key || sp->n_key_ids > 1,
        .group_by_model = sp->by_model || sp->n_models > 1,
    };
    int rc = store->ops->usage_query(store, &q, load_cb, r);
    admin_report_finish(r);
    return rc;
}

/* ---- request parameters ------------------------------------------------------------------ */

static bool
parse_int(const char *s, int64_t min, int64_t max, int64_t *out)
{
    char *end = NULL;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < min || v > max) {
        return false;
    }
    *out = v;
    return true;
}

/* Splits the values of a list filter (repeated, name[] or comma-separated) into out, in the
 * request's arena. Returns false after answering 400 when there are too many. */
static bool
list_param(struct admin_job *j, const char *name, const char **out, size_t *n_out)
{
    const char *vals[ADMIN_REPORT_MAX_IDS + 1];
    size_t n = tg_http_req_query_all(j->req, name, vals, ADMIN_REPORT_MAX_IDS + 1);
    size_t k = 0;
    for (size_t i = 0; i < n && i <= ADMIN_REPORT_MAX_IDS; i++) {
        const char *p = vals[i];
        while (*p != '\0') {
            size_t len = strcspn(p, ",");
            if (len > 0) {
                if (k == ADMIN_REPORT_MAX_IDS) {
                    char msg[120];
                    snprintf(msg, sizeof(msg), "%s may hold at most %d values.", name,
                             ADMIN_REPORT_MAX_IDS);
                    admin_error(j, 400, msg, name, NULL);
                    return false;
                }
                out[k++] = tg_arena_strndup(&j->req->arena, p, len);
            }
            p += len + (p[len] == ',');
        }
    }
    *n_out = k;
    return true;
}

bool
admin_report_has_group(struct admin_job *j, const char *column)
{
    const char *vals[16];
    size_t n = tg_http_req_query_all(j->req, "group_by", vals, 16);
    size_t len = strlen(column);
    for (size_t i = 0; i < n && i < 16; i++) {
        for (const char *p = vals[i]; *p != '\0';) {
            size_t l = strcspn(p, ",");
            if (l == len && strncmp(p, column, len) == 0) {
                return true;
            }
            p += l + (p[l] == ',');
        }
    }
    return false;
}

bool
admin_report_groups_check(struct admin_job *j, const char *const *allowed)
{
    const char *vals[16];
    size_t n = tg_http_req_query_all(j->req, "group_by", vals, 16);
    for (size_t i = 0; i < n && i < 16; i++) {
        for (const char *p = vals[i]; *p != '\0';) {
            size_t l = strcspn(p, ",");
            bool ok = l == 0;
            for (size_t a = 0; !ok && allowed[a] != NULL; a++) {
                ok = strlen(allowed[a]) == l && strncmp(p, allowed[a], l) == 0;
            }
            if (!ok) {
                char msg[160];
                snprintf(msg, sizeof(msg), "group_by does not accept '%.*s'.",
                         (int)(l > 60 ? 60 : l), p);
                admin_error(j, 400, msg, "group_by", NULL);
                return false;
            }
            p += l + (p[l] == ',');
        }
    }
    return true;
}

bool
admin_report_params(struct admin_job *j, int64_t bucket_ms, int64_t def_limit, int64_t max_limit,
                    bool with_models, struct admin_report_window *w, struct admin_report_spec *spec,
                    bool *is_csv)
{
    /* Unix seconds up to year 9999: far from any overflow once multiplied to ms. */
    const int64_t max_s = 253402300799;
    const char *start = admin_query(j, "start_time");
    const char *end = admin_query(j, "end_time");
    const char *limit = admin_query(j, "limit");
    const char *page = admin_query(j, "page");
    const char *format = admin_query(j, "format");
    int64_t start_s = 0;
    int64_t end_s = 0;
    int64_t lim = def_limit;
    int64_t page_s = -1;
    char msg[160];
    if (start == NULL || !parse_int(start, 0, max_s, &start_s)) {
        admin_error(j, 400, "start_time is required: Unix seconds.", "start_time", NULL);
        return false;
    }
    if (end != NULL && (!parse_int(end, 0, max_s, &end_s) || end_s <= start_s)) {
        admin_error(j, 400, "end_time must be Unix seconds after start_time.", "end_time", NULL);
        return false;
    }
    if (limit != NULL && !parse_int(limit, 1, max_limit, &lim)) {
        snprintf(msg, sizeof(msg), "limit must be an integer from 1 to %lld for this bucket_width.",
                 (long long)max_limit);
        admin_error(j, 400, msg, "limit", NULL);
        return false;
    }
    *is_csv = false;
    if (format != NULL && strcmp(format, "csv") == 0) {
        *is_csv = true;
    } else if (format != NULL && strcmp(format, "json") != 0) {
        admin_error(j, 400, "format must be json or csv.", "format", NULL);
        return false;
    }
    if (page != NULL && page[0] != '\0' && !admin_report_cursor_parse(page, &page_s)) {
        admin_error(j, 400, "page is not a cursor of this list (use next_page).", "page", NULL);
        return false;
    }
    int64_t end_ms = end != NULL ? end_s * 1000 : tg_clock_unix_ms() + 1;
    if (*is_csv) {
        /* One file for the whole window: CSV has no place for a cursor. */
        lim = ADMIN_REPORT_CSV_MAX_BUCKETS;
        page_s = -1;
    }
    if (!admin_report_window_make(start_s, end_ms, bucket_ms, lim, page_s, w)) {
        admin_error(j, 400, "page is not a cursor of this list (use next_page).", "page", NULL);
        return false;
    }
    if (*is_csv && w->has_more) {
        snprintf(msg, sizeof(msg),
                 "A CSV answer covers at most %d buckets: narrow start_time and end_time.",
                 ADMIN_REPORT_CSV_MAX_BUCKETS);
        admin_error(j, 400, msg, "end_time", NULL);
        return false;
    }
    if (!list_param(j, "project_ids", spec->project_ids, &spec->n_project_ids) ||
        !list_param(j, "api_key_ids", spec->key_ids, &spec->n_key_ids) ||
        (with_models && !list_param(j, "models", spec->models, &spec->n_models))) {
        return false;
    }
    for (size_t i = 0; i < spec->n_project_ids; i++) {
        /* Names are accepted as everywhere in the admin API; unknown ids stay as given (an
         * archived or deleted project still has its ledger rows). */
        const struct tg_project *p = tg_state_project(j->state, spec->project_ids[i]);
        spec->project_ids[i] = p ? p->id : spec->project_ids[i];
    }
    return true;
}

/* ---- costs --------------------------------------------------------------------------------- */

void
admin_cost_split(int64_t cost_micros, int64_t prompt_tokens, int64_t cached_tokens,
                 int64_t completion_tokens, const struct tg_price *price, int64_t out[3])
{
    int64_t uncached = prompt_tokens > cached_tokens ? prompt_tokens - cached_tokens : 0;
    int64_t tokens[3] = {uncached, cached_tokens > 0 ? cached_tokens : 0,
                         completion_tokens > 0 ? completion_tokens : 0};
    /* Weights (tokens x micro-dollars per 1M) are 128-bit: each is below 2^126. */
    unsigned __int128 wt[3] = {0, 0, 0};
    unsigned __int128 total = 0;
    if (price != NULL) {
        int64_t p[3] = {price->input_micros, price->cached_input_micros, price->output_micros};
        for (int i = 0; i < 3; i++) {
            wt[i] = (unsigned __int128)tokens[i] * (unsigned __int128)(p[i] > 0 ? p[i] : 0);
            total += wt[i];
        }
    }
    if (total == 0) {
        for (int i = 0; i < 3; i++) {
            wt[i] = (unsigned __int128)tokens[i];
            total += wt[i];
        }
    }
    /* Keep the weights below 2^64 so cost (< 2^63) x weight fits in 128 bits; only absurd
     * token counts lose precision in the shares, never in their sum. */
    while (total >> 64 != 0) {
        total = 0;
        for (int i = 0; i < 3; i++) {
            wt[i] >>= 1;
            total += wt[i];
        }
    }
    out[0] = out[1] = out[2] = 0;
    if (total == 0 || cost_micros <= 0) {
        out[0] = cost_micros;
        return;
    }
    /* Largest remainder: each part is rounded down, and the few micro-dollars left go to the
     * parts whose exact shares lost the most, so the parts sum to the cost. */
    unsigned __int128 rem[3];
    int64_t given = 0;
    for (int i = 0; i < 3; i++) {
        unsigned __int128 num = (unsigned __int128)cost_micros * wt[i];
        out[i] = (int64_t)(num / total);
        rem[i] = num % total;
        given += out[i];
    }
    for (int64_t left = cost_micros - given; left > 0; left--) {
        int best = 0;
        for (int i = 1; i < 3; i++) {
            if (rem[i] > rem[best]) {
                best = i;
            }
        }
        out[best]++;
        rem[best] = 0;
    }
}

/* ---- formats --------------------------------------------------------------------------------- */

void
admin_csv_field(struct tg_buf *b, const char *s)
{
    if (s == NULL) {
        return;
    }
    bool is_formula = s[0] == '=' || s[0] == '+' || s[0] == '-' || s[0] == '@';
    bool must_quote = strpbrk(s, ",\"\r\n") != NULL;
    if (!is_formula && !must_quote) {
        tg_buf_append_str(b, s);
        return;
    }
    tg_buf_append_str(b, must_quote ? "\"" : "");
    tg_buf_append_str(b, is_formula ? "'" : "");
    for (const char *p = s; *p != '\0'; p++) {
        tg_buf_append(b, p, 1);
        if (*p == '"') {
            tg_buf_append(b, "\"", 1);
        }
    }
    tg_buf_append_str(b, must_quote ? "\"" : "");
}

void
admin_usd_number(struct tg_buf *b, int64_t micros)
{
    char text[40];
    tg_price_format_usd(micros, text, sizeof(text));
    tg_buf_append_str(b, text);
}

void
admin_iso_time(struct tg_buf *b, int64_t ms)
{
    time_t t = (time_t)floor_div(ms, 1000);
    struct tm tm;
    char text[40];
    gmtime_r(&t, &tm);
    strftime(text, sizeof(text), "%Y-%m-%dT%H:%M:%SZ", &tm);
    tg_buf_append_str(b, text);
}
