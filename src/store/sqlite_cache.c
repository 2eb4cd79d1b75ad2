/*
 * sqlite_cache.c: the SQLite store's response cache entries. See sqlite.c for the design and
 * sqlite_int.h for the helpers.
 */
#include "store/sqlite_int.h"

#include "core/err.h"

/* ---- response cache ---------------------------------------------------------------------- */

struct cache_walk {
    tg_store_cache_cb cb;
    void *arg;
    const unsigned char *key;
    int64_t now_ms;
    int n;
    bool is_expired;
};

static int
cache_row(sqlite3_stmt *st, void *arg)
{
    struct cache_walk *w = arg;
    struct tg_cache_rec r = {
        .key = w->key,
        .status = sqlite3_column_int(st, 0),
        .is_stream = sqlite3_column_int(st, 1) != 0,
        .content_type = sq_col_text(st, 2),
        .project_id = sq_col_text(st, 3),
        .model = sq_col_text(st, 4),
        .prompt_tokens = sqlite3_column_int64(st, 5),
        .cached_tokens = sqlite3_column_int64(st, 6),
        .completion_tokens = sqlite3_column_int64(st, 7),
        .reasoning_tokens = sqlite3_column_int64(st, 8),
        .cost_micros = sqlite3_column_int64(st, 9),
        .created_ms = sqlite3_column_int64(st, 10),
        .expires_ms = sqlite3_column_int64(st, 11),
    };
    if (r.expires_ms > 0 && r.expires_ms <= w->now_ms) {
        w->is_expired = true;
        return 0;
    }
    /* column_blob before column_bytes: the documented order for a stable pointer. */
    const void *body = sqlite3_column_blob(st, 12);
    r.body_len = (size_t)sqlite3_column_bytes(st, 12);
    r.body = body != NULL ? body : "";
    w->n++;
    return w->cb(&r, w->arg);
}

int
sq_cache_get(struct tg_store *store, const unsigned char *key, int64_t now_ms, tg_store_cache_cb cb,
             void *arg)
{
    struct sq *s = sq_of(store);
    struct cache_walk w = {cb, arg, key, now_ms, 0, false};
    sq_lock(s);
    sqlite3_stmt *st = sq_stmt(s, S_CACHE_GET);
    int rc = st != NULL ? 0 : TG_ESTORE;
    if (rc == 0) {
        sqlite3_bind_blob(st, 1, key, TG_SHA256_BYTES, SQLITE_STATIC);
        rc = sq_each_row(s, st, cache_row, &w, "get cache entry");
    }
    if (rc == 0 && w.is_expired) {
        st = sq_stmt(s, S_CACHE_DELETE_KEY);
        if (st != NULL) {
            sqlite3_bind_blob(st, 1, key, TG_SHA256_BYTES, SQLITE_STATIC);
            (void)sq_run(s, st, "delete expired cache entry"); /* a miss either way */
        }
    }
    sq_unlock(s);
    return rc == 0 && w.n == 0 ? TG_ENOTFOUND : rc;
}

int
sq_cache_put(struct tg_store *store, const struct tg_cache_rec *r)
{
    struct sq *s = sq_of(store);
    if (r->body_len > INT32_MAX) {
        return TG_ETOOBIG;
    }
    sq_lock(s);
    sqlite3_stmt *st = sq_stmt(s, S_CACHE_PUT);
    int rc = st != NULL ? 0 : TG_ESTORE;
    if (rc == 0) {
        sqlite3_bind_blob(st, 1, r->key, TG_SHA256_BYTES, SQLITE_STATIC);
        sqlite3_bind_int(st, 2, r->status);
        sqlite3_bind_int(st, 3, r->is_stream ? 1 : 0);
        sqlite3_bind_text(st, 4, r->content_type ? r->content_type : "", -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 5, r->project_id ? r->project_id : "", -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 6, r->model ? r->model : "", -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 7, r->prompt_tokens);
        sqlite3_bind_int64(st, 8, r->cached_tokens);
        sqlite3_bind_int64(st, 9, r->completion_tokens);
        sqlite3_bind_int64(st, 10, r->reasoning_tokens);
        sqlite3_bind_int64(st, 11, r->cost_micros);
        sqlite3_bind_int64(st, 12, r->created_ms);
        sqlite3_bind_int64(st, 13, r->expires_ms);
        /* An empty body binds an empty blob: NULL would break the NOT NULL column. */
        sqlite3_bind_blob(st, 14, r->body != NULL ? r->body : "", (int)r->body_len, SQLITE_STATIC);
        rc = sq_run(s, st, "put cache entry");
    }
    sq_unlock(s);
    return rc;
}

int
sq_cache_invalidate(struct tg_store *store, bool all, const char *project_id, const char *model,
                    int64_t created_before_ms, size_t *n_removed)
{
    struct sq *s = sq_of(store);
    sq_lock(s);
    sqlite3_stmt *st = sq_stmt(s, S_CACHE_INVALIDATE);
    int rc = st != NULL ? 0 : TG_ESTORE;
    if (rc == 0) {
        sqlite3_bind_int(st, 1, all ? 1 : 0);
        sq_bind_text(st, 2, project_id);
        sq_bind_text(st, 3, model);
        sqlite3_bind_int64(st, 4, created_before_ms);
        rc = sq_run(s, st, "invalidate cache entries");
    }
    if (n_removed != NULL) {
        *n_removed = rc == 0 ? (size_t)sqlite3_changes(s->db) : 0;
    }
    sq_unlock(s);
    return rc;
}

static int
cache_stats_row(sqlite3_stmt *st, void *arg)
{
    int64_t *v = arg;
    v[0] = sqlite3_column_int64(st, 0);
    v[1] = sqlite3_column_int64(st, 1);
    return 0;
}

int
sq_cache_stats(struct tg_store *store, size_t *n_entries, size_t *bytes)
{
    struct sq *s = sq_of(store);
    int64_t v[2] = {0, 0};
    sq_lock(s);
    sqlite3_stmt *st = sq_stmt(s, S_CACHE_STATS);
    int rc = st != NULL ? sq_each_row(s, st, cache_stats_row, v, "cache stats") : TG_ESTORE;
    sq_unlock(s);
    *n_entries = (size_t)v[0];
    *bytes = (size_t)v[1];
    return rc;
}
