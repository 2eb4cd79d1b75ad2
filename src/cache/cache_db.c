/*
 * cache_db.c: the response cache in the database (the store's cache_entries table), and the
 * process-wide caches of every backend.
 *
 * The store does the work; this file maps entries to store records and counts hits, misses
 * and puts, which the database does not keep. Entries outlive a restart, and several
 * gateways on one store share them. Every operation blocks on the database, so the proxy
 * runs them on the libuv thread pool.
 */
#include "cache/cache.h"
#include "cache/cache_int.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/err.h"
#include "core/log.h"
#include "core/mem.h"
#include "store/store.h"

struct db_cache {
    struct tg_cache base; /* first: the ops receive &base */
    struct tg_store *store;
    atomic_uint_fast64_t hits;
    atomic_uint_fast64_t misses;
    atomic_uint_fast64_t puts;
};

static struct db_cache *
db_of(struct tg_cache *c)
{
    return (struct db_cache *)c;
}

static void
copy_text(char *dst, size_t cap, const char *src)
{
    snprintf(dst, cap, "%s", src != NULL ? src : "");
}

static int
on_rec(const struct tg_cache_rec *r, void *arg)
{
    struct tg_cache_entry *out = arg;
    memset(out, 0, sizeof(*out));
    out->status = r->status;
    out->is_stream = r->is_stream;
    copy_text(out->content_type, sizeof(out->content_type), r->content_type);
    copy_text(out->project_id, sizeof(out->project_id), r->project_id);
    copy_text(out->model, sizeof(out->model), r->model);
    out->prompt_tokens = r->prompt_tokens;
    out->cached_tokens = r->cached_tokens;
    out->completion_tokens = r->completion_tokens;
    out->reasoning_tokens = r->reasoning_tokens;
    out->cost_micros = r->cost_micros;
    out->created_ms = r->created_ms;
    out->expires_ms = r->expires_ms;
    struct tg_cache_entry src = *out;
    src.body = (char *)r->body;
    src.body_len = r->body_len;
    return tg_cache_entry_copy(out, &src);
}

static int
db_get(struct tg_cache *c, const unsigned char key[TG_CACHE_KEY_BYTES], struct tg_cache_entry *out)
{
    struct db_cache *d = db_of(c);
    memset(out, 0, sizeof(*out));
    int rc = d->store->ops->cache_get(d->store, key, tg_clock_unix_ms(), on_rec, out);
    if (rc != 0) {
        tg_cache_entry_deinit(out);
        atomic_fetch_add(&d->misses, 1);
        return rc == TG_ENOTFOUND ? TG_ENOTFOUND : TG_EIO;
    }
    atomic_fetch_add(&d->hits, 1);
    return 0;
}

static int
db_put(struct tg_cache *c, const unsigned char key[TG_CACHE_KEY_BYTES],
       const struct tg_cache_entry *e, int64_t ttl_ms)
{
    struct db_cache *d = db_of(c);
    int64_t now = tg_clock_unix_ms();
    struct tg_cache_rec r = {
        .key = key,
        .status = e->status,
        .is_stream = e->is_stream,
        .content_type = e->content_type,
        .project_id = e->project_id,
        .model = e->model,
        .prompt_tokens = e->prompt_tokens,
        .cached_tokens = e->cached_tokens,
        .completion_tokens = e->completion_tokens,
        .reasoning_tokens = e->reasoning_tokens,
        .cost_micros = e->cost_micros,
        .created_ms = e->created_ms > 0 ? e->created_ms : now,
        .expires_ms = ttl_ms > 0 ? now + ttl_ms : 0,
        .body = e->body,
        .body_len = e->body_len,
    };
    int rc = d->store->ops->cache_put(d->store, &r);
    if (rc == TG_ETOOBIG) {
        return rc;
    }
    if (rc != 0) {
        return TG_EIO;
    }
    atomic_fetch_add(&d->puts, 1);
    return 0;
}

static int
db_invalidate(struct tg_cache *c, const struct tg_cache_filter *f, size_t *n_removed)
{
    struct db_cache *d = db_of(c);
    int64_t before = f->older_than_ms > 0 ? tg_clock_unix_ms() - f->older_than_ms : 0;
    size_t n = 0;
    int rc = d->store->ops->cache_invalidate(d->store, f->all, f->project_id, f->model, before, &n);
    if (n_removed != NULL) {
        *n_removed = n;
    }
    return rc == 0 ? 0 : TG_EIO;
}

static void
db_stats(struct tg_cache *c, struct tg_cache_stats *out)
{
    struct db_cache *d = db_of(c);
    memset(out, 0, sizeof(*out));
    out->hits = atomic_load(&d->hits);
    out->misses = atomic_load(&d->misses);
    out->puts = atomic_load(&d->puts);
    /* Counts are best effort: a failed read leaves them 0 (the store logged it). */
    (void)d->store->ops->cache_stats(d->store, &out->n_entries, &out->bytes);
}

static void
db_free(struct tg_cache *c)
{
    free(db_of(c));
}

static const struct tg_cache_ops db_ops = {
    .name = "db",
    .get = db_get,
    .put = db_put,
    .invalidate = db_invalidate,
    .stats = db_stats,
    .free = db_free,
};

struct tg_cache *
tg_cache_db_new(struct tg_store *store)
{
    struct db_cache *d = tg_xcalloc(1, sizeof(*d));
    d->base.ops = &db_ops;
    d->store = store;
    return &d->base;
}

/* ---- process-wide caches -------------------------------------------------------------- */

static pthread_mutex_t shared_lock = PTHREAD_MUTEX_INITIALIZER;
static struct tg_cache *shared_fs;
static struct tg_cache *shared_db;
static struct tg_store *shared_db_store;

static size_t
fs_cap(void)
{
    size_t cap = (size_t)256 << 20;
    const char *env = getenv("TOLLGATE_CACHE_FS_BYTES");
    if (env && *env) {
        char *end;
        unsigned long long v = strtoull(env, &end, 10);
        if (*end == '\0' && v > 0) {
            cap = (size_t)v;
        }
    }
    return cap;
}

struct tg_cache *
tg_cache_shared(enum tg_cache_backend b, const char *data_dir, struct tg_store *store)
{
    if (b == TG_CACHE_MEMORY) {
        return tg_cache_shared_memory();
    }
    struct tg_cache *c = NULL;
    pthread_mutex_lock(&shared_lock);
    if (b == TG_CACHE_FS) {
        if (shared_fs == NULL && data_dir != NULL) {
            char dir[4096];
            snprintf(dir, sizeof(dir), "%s/cache", data_dir);
            if (tg_cache_fs_new(dir, fs_cap(), &shared_fs) != 0) {
                tg_log_error("cache: cannot open the file-system cache in %s", dir);
                shared_fs = NULL;
            }
        }
        c = shared_fs;
    } else if (b == TG_CACHE_DB && store != NULL) {
        /* One store per process in the gateway; a different one (tests) gets a new cache. */
        if (shared_db == NULL || shared_db_store != store) {
            tg_cache_free(shared_db);
            shared_db = tg_cache_db_new(store);
            shared_db_store = store;
        }
        c = shared_db;
    }
    pthread_mutex_unlock(&shared_lock);
    return c;
}

void
tg_cache_shared_close(void)
{
    pthread_mutex_lock(&shared_lock);
    tg_cache_free(shared_fs);
    tg_cache_free(shared_db);
    shared_fs = shared_db = NULL;
    shared_db_store = NULL;
    pthread_mutex_unlock(&shared_lock);
}
