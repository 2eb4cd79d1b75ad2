/*
 * sqlite_ledger.c: the SQLite store's ledger (batch append, lookup by request), usage
 * queries and spend by level. See sqlite.c for the design and sqlite_int.h for the helpers.
 */
#include "store/sqlite_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"

/* ---- ledger ------------------------------------------------------------------------------ */

/* Binds r as the row at index `at` of the statement (parameters at * 23 + 1 ...). */
static void
bind_row(sqlite3_stmt *st, int at, const struct tg_ledger_row *r)
{
    /* The row's strings are fixed arrays; SQLITE_STATIC is fine since each is bound and
     * stepped within the append. */
    int p = at * LEDGER_ROW_PARAMS;
    sq_bind_text(st, p + 1, r->request_id);
    sqlite3_bind_int(st, p + 2, r->attempt);
    sqlite3_bind_int64(st, p + 3, r->time_ms);
    sq_bind_text(st, p + 4, r->org_id);
    sq_bind_text(st, p + 5, r->project_id);
    sq_bind_text(st, p + 6, r->key_id);
    sq_bind_text(st, p + 7, r->user_id);
    sq_bind_text(st, p + 8, r->endpoint);
    sq_bind_text(st, p + 9, r->model_requested);
    sq_bind_text(st, p + 10, r->provider);
    sq_bind_text(st, p + 11, r->deployment);
    sqlite3_bind_int64(st, p + 12, r->prompt_tokens);
    sqlite3_bind_int64(st, p + 13, r->cached_tokens);
    sqlite3_bind_int64(st, p + 14, r->completion_tokens);
    sqlite3_bind_int64(st, p + 15, r->reasoning_tokens);
    sqlite3_bind_int64(st, p + 16, r->cost_micros);
    sqlite3_bind_int(st, p + 17, r->status);
    sqlite3_bind_int64(st, p + 18, r->latency_ms);
    sqlite3_bind_int64(st, p + 19, r->ttft_ms);
    sqlite3_bind_int(st, p + 20, r->is_stream ? 1 : 0);
    sqlite3_bind_int(st, p + 21, r->is_usage_estimated ? 1 : 0);
    sq_bind_text(st, p + 22, r->error);
    sqlite3_bind_int64(st, p + 23, r->saved_micros);
}

/* Inserts rows[0..n) in groups of LEDGER_GROUP_ROWS, the rest one by one. */
static int
insert_rows(struct sq *s, const struct tg_ledger_row *rows, size_t n)
{
    size_t i = 0;
    int rc = 0;
    sqlite3_stmt *group = n >= LEDGER_GROUP_ROWS ? sq_stmt(s, S_LEDGER_INSERT_GROUP) : NULL;
    for (; group != NULL && rc == 0 && n - i >= LEDGER_GROUP_ROWS; i += LEDGER_GROUP_ROWS) {
        for (int k = 0; k < LEDGER_GROUP_ROWS; k++) {
            bind_row(group, k, &rows[i + (size_t)k]);
        }
        rc = sq_run(s, group, "append ledger rows");
    }
    sqlite3_stmt *one = i < n ? sq_stmt(s, S_LEDGER_INSERT) : NULL;
    for (; one != NULL && rc == 0 && i < n; i++) {
        bind_row(one, 0, &rows[i]);
        rc = sq_run(s, one, "append ledger row");
    }
    if (rc == 0 && i < n) {
        rc = TG_ESTORE; /* a statement could not be prepared (sq_stmt logged it) */
    }
    return rc;
}

int
sq_ledger_append(struct tg_store *store, const struct tg_ledger_row *rows, size_t n)
{
    if (n == 0) {
        return 0;
    }
    struct sq *s = sq_of(store);
    sq_lock(s);
    int rc = sq_tx_begin(s);
    if (rc == 0) {
        rc = sq_tx_end(s, insert_rows(s, rows, n));
    }
    sq_unlock(s);
    return rc;
}

/* ---- usage --------------------------------------------------------------------------------- */

static void
bind_usage(sqlite3_stmt *st, const struct tg_usage_query *q, const char *endpoints)
{
    sq_bind_text(st, 1, q->org_id);
    sqlite3_bind_int64(st, 2, q->start_ms);
    sqlite3_bind_int64(st, 3, q->end_ms);
    sqlite3_bind_int64(st, 4, q->bucket_ms);
    sq_bind_text(st, 5, q->project_id);
    sq_bind_text(st, 6, q->key_id);
    sq_bind_text(st, 7, q->model);
    sq_bind_text(st, 8, q->endpoint);
    sq_bind_text(st, 9, endpoints);
    sqlite3_bind_int(st, 10, q->group_by_project);
    sqlite3_bind_int(st, 11, q->group_by_key);
    sqlite3_bind_int(st, 12, q->group_by_model);
}

int
sq_usage_query(struct tg_store *store, const struct tg_usage_query *q, tg_store_usage_cb cb,
               void *arg)
{
    if (q->bucket_ms <= 0 || q->org_id == NULL) {
        return TG_EINVAL;
    }
    struct sq *s = sq_of(store);
    char *endpoints = sq_strings_json(q->endpoints, q->n_endpoints);
    sq_lock(s);
    sqlite3_stmt *st = sq_stmt(s, S_USAGE);
    int rc = st != NULL ? 0 : TG_ESTORE;
    int step = SQLITE_DONE;
    if (rc == 0) {
        bind_usage(st, q, endpoints);
    }
    while (rc == 0 && (step = sqlite3_step(st)) == SQLITE_ROW) {
        /* sum() of integer columns is exact integer arithmetic (it fails rather than wrap
         * past 2^63), so the totals equal the rows to the token and the micro-dollar. */
        struct tg_usage_result r = {
            .bucket_start_ms = sqlite3_column_int64(st, 0),
            .project_id = sq_col_text(st, 1),
            .key_id = sq_col_text(st, 2),
            .model = sq_col_text(st, 3),
            .requests = sqlite3_column_int64(st, 4),
            .prompt_tokens = sqlite3_column_int64(st, 5),
            .cached_tokens = sqlite3_column_int64(st, 6),
            .completion_tokens = sqlite3_column_int64(st, 7),
            .reasoning_tokens = sqlite3_column_int64(st, 8),
            .cost_micros = sqlite3_column_int64(st, 9),
        };
        rc = cb(&r, arg);
    }
    if (rc == 0 && step != SQLITE_DONE) {
        rc = sq_fail(s, sqlite3_extended_errcode(s->db), "usage query");
    }
    if (st != NULL) {
        sq_done(st);
    }
    sq_unlock(s);
    free(endpoints);
    return rc;
}

int
sq_spend_by_level(struct tg_store *store, const char *org_id, int64_t since_ms,
                  tg_store_spend_cb cb, void *arg)
{
    if (org_id == NULL) {
        return TG_EINVAL;
    }
    struct sq *s = sq_of(store);
    sq_lock(s);
    sqlite3_stmt *st = sq_stmt(s, S_SPEND);
    int rc = st != NULL ? 0 : TG_ESTORE;
    int step = SQLITE_DONE;
    if (rc == 0) {
        sq_bind_text(st, 1, org_id);
        sqlite3_bind_int64(st, 2, since_ms);
    }
    while (rc == 0 && (step = sqlite3_step(st)) == SQLITE_ROW) {
        struct tg_spend_rec r = {sq_col_text(st, 0), sq_col_text(st, 1),
                                 sqlite3_column_int64(st, 2)};
        rc = cb(&r, arg);
    }
    if (rc == 0 && step != SQLITE_DONE) {
        rc = sq_fail(s, sqlite3_extended_errcode(s->db), "spend query");
    }
    if (st != NULL) {
        sq_done(st);
    }
    sq_unlock(s);
    return rc;
}

/* ---- ledger lookup --------------------------------------------------------------------------- */

static void
col_copy(sqlite3_stmt *st, int i, char *out, size_t cap)
{
    const char *v = sq_col_text(st, i);
    snprintf(out, cap, "%s", v != NULL ? v : "");
}

struct ledger_walk {
    tg_store_ledger_cb cb;
    void *arg;
    bool is_found;
};

static int
ledger_row(sqlite3_stmt *st, void *arg)
{
    struct ledger_walk *w = arg;
    struct tg_ledger_row r;
    memset(&r, 0, sizeof(r));
    col_copy(st, 0, r.request_id, sizeof(r.request_id));
    r.attempt = sqlite3_column_int(st, 1);
    r.time_ms = sqlite3_column_int64(st, 2);
    col_copy(st, 3, r.org_id, sizeof(r.org_id));
    col_copy(st, 4, r.project_id, sizeof(r.project_id));
    col_copy(st, 5, r.key_id, sizeof(r.key_id));
    col_copy(st, 6, r.user_id, sizeof(r.user_id));
    col_copy(st, 7, r.endpoint, sizeof(r.endpoint));
    col_copy(st, 8, r.model_requested, sizeof(r.model_requested));
    col_copy(st, 9, r.provider, sizeof(r.provider));
    col_copy(st, 10, r.deployment, sizeof(r.deployment));
    r.prompt_tokens = sqlite3_column_int64(st, 11);
    r.cached_tokens = sqlite3_column_int64(st, 12);
    r.completion_tokens = sqlite3_column_int64(st, 13);
    r.reasoning_tokens = sqlite3_column_int64(st, 14);
    r.cost_micros = sqlite3_column_int64(st, 15);
    r.status = sqlite3_column_int(st, 16);
    r.latency_ms = sqlite3_column_int64(st, 17);
    r.ttft_ms = sqlite3_column_int64(st, 18);
    r.is_stream = sqlite3_column_int(st, 19) != 0;
    r.is_usage_estimated = sqlite3_column_int(st, 20) != 0;
    col_copy(st, 21, r.error, sizeof(r.error));
    r.saved_micros = sqlite3_column_int64(st, 22);
    w->is_found = true;
    return w->cb(&r, w->arg);
}

int
sq_ledger_find(struct tg_store *store, const char *request_id, const char *project_id,
               tg_store_ledger_cb cb, void *arg)
{
    struct sq *s = sq_of(store);
    struct ledger_walk w = {cb, arg, false};
    sq_lock(s);
    sqlite3_stmt *st = sq_stmt(s, S_LEDGER_FIND);
    int rc = st != NULL ? 0 : TG_ESTORE;
    if (rc == 0) {
        sq_bind_text(st, 1, request_id);
        sq_bind_text(st, 2, project_id);
        rc = sq_each_row(s, st, ledger_row, &w, "find ledger row");
    }
    sq_unlock(s);
    return rc == 0 && !w.is_found ? TG_ENOTFOUND : rc;
}
