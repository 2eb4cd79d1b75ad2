/*
 * proxy_cache.c: the response cache step of the inference path (cache/cache.h).
 *
 * Before going upstream, a call of a project with the cache on is looked up (in memory on the
 * loop thread, fs and db backends on the thread pool); a hit is replayed through the relay
 * (proxy_cache_replay) so it gets the same framing and ledger row as a live answer. After the
 * relay, settling stores a successful, complete answer when the request allowed it.
 */
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "core/clock.h"
#include "core/err.h"
#include "core/log.h"
#include "core/mem.h"
#include "gateway/proxy_int.h"

/* ---- response cache ------------------------------------------------------------------ */

/*
 * One cache operation of the fs or db backend on the libuv thread pool: both block (file
 * system, database), so they never run on the loop thread. A lookup keeps its call waiting
 * (the request stays valid until it is answered) and answers or goes upstream in the after-work
 * callback; a put owns a copy of the entry and nothing of the call, which may be gone.
 */
struct cache_job {
    uv_work_t work;
    struct call *c; /* lookup: the waiting call; put: NULL */
    enum tg_cache_backend backend;
    const char *data_dir; /* the config's, which lives as long as the process */
    struct tg_store *store;
    unsigned char key[TG_CACHE_KEY_BYTES];
    struct tg_cache_entry e; /* lookup: the entry found; put: the copy to store */
    struct tg_http_header *mark;
    int64_t max_age_ms;
    int64_t ttl_ms;
    int rc;
};

static struct cache_job *
cache_job_new(const struct call *c)
{
    struct cache_job *j = tg_xcalloc(1, sizeof(*j));
    j->work.data = j;
    j->backend = c->cache_backend;
    j->data_dir = c->state->config->data_dir;
    j->store = tg_state_env_get()->store;
    memcpy(j->key, c->cache_key, TG_CACHE_KEY_BYTES);
    j->rc = TG_EIO;
    return j;
}

static void
cache_put_work(uv_work_t *w)
{
    struct cache_job *j = w->data;
    struct tg_cache *cache = tg_cache_shared(j->backend, j->data_dir, j->store);
    j->rc = cache != NULL ? tg_cache_put(cache, j->key, &j->e, j->ttl_ms) : TG_EIO;
}

static void
cache_put_done(uv_work_t *w, int status)
{
    struct cache_job *j = w->data;
    if (status == 0 && j->rc < 0) {
        tg_log_debug("cache: an answer was not stored: %s", tg_strerror(j->rc));
    }
    tg_cache_entry_deinit(&j->e);
    free(j);
}

/* Stores a successful, complete answer when the request allowed it (after the relay). */
void
proxy_cache_store(struct call *c, const struct tg_usage *u, int64_t cost_micros)
{
    bool is_sse = c->mode == RELAY_SSE;
    bool ok = is_sse ? c->saw_terminal && !c->is_stream_failed
                     : c->mode == RELAY_BUFFER && !c->is_too_big;
    if (!c->is_cache_store || !ok || c->is_client_gone || c->upstream_status != 200 ||
        c->client_status != 200 || !u->is_known) {
        return;
    }
    struct tg_cache_entry e;
    memset(&e, 0, sizeof(e));
    e.status = 200;
    e.is_stream = is_sse;
    copy_field(e.content_type, sizeof(e.content_type),
               is_sse ? "text/event-stream; charset=utf-8" : "application/json");
    copy_field(e.project_id, sizeof(e.project_id), c->project->id);
    copy_field(e.model, sizeof(e.model), c->model);
    e.prompt_tokens = u->prompt_tokens;
    e.cached_tokens = u->cached_tokens;
    e.completion_tokens = u->completion_tokens;
    e.reasoning_tokens = u->reasoning_tokens;
    e.cost_micros = cost_micros;
    e.created_ms = tg_clock_unix_ms();
    struct tg_buf *b = is_sse ? &c->cache_raw : &c->resp;
    e.body = b->data ? b->data : (char *)"";
    e.body_len = b->len;
    if (c->cache_backend != TG_CACHE_MEMORY) {
        struct cache_job *j = cache_job_new(c);
        j->ttl_ms = c->cache_ttl_ms;
        if (tg_cache_entry_copy(&j->e, &e) != 0 ||
            uv_queue_work(&c->w->loop, &j->work, cache_put_work, cache_put_done) != 0) {
            tg_cache_entry_deinit(&j->e);
            free(j);
        }
        return;
    }
    int rc = tg_cache_put(tg_cache_shared_memory(), c->cache_key, &e, c->cache_ttl_ms);
    if (rc < 0) {
        tg_log_debug("cache: request %s not stored: %s", c->req->id, tg_strerror(rc));
    }
}

/* Answers c from e when it is fresh enough for the client and servable in the form asked;
 * false leaves c untouched for the upstream. The caller still owns e. */
static bool
cache_try_hit(struct call *c, struct tg_http_header *mark, int64_t max_age_ms,
              const struct tg_cache_entry *e)
{
    bool is_fresh = max_age_ms < 0 || tg_clock_unix_ms() - e->created_ms <= max_age_ms;
    /* A cached stream is not rebuilt into JSON: a JSON request for it goes upstream and its
     * answer replaces the entry. */
    bool is_servable = !e->is_stream || c->is_stream;
    if (!is_fresh || !is_servable) {
        return false;
    }
    mark->value = "hit";
    c->is_cache_hit = true;
    c->is_cache_store = false;
    c->cache_saved_micros = e->cost_micros;
    proxy_cache_replay(c, e); /* answers the request, which frees c: not touched after this */
    return true;
}

static void
cache_get_work(uv_work_t *w)
{
    struct cache_job *j = w->data;
    struct tg_cache *cache = tg_cache_shared(j->backend, j->data_dir, j->store);
    j->rc = cache != NULL ? tg_cache_get(cache, j->key, &j->e) : TG_EIO;
}

static void
cache_get_done(uv_work_t *w, int status)
{
    struct cache_job *j = w->data;
    struct call *c = j->c;
    bool is_hit = false;
    if (status == 0 && j->rc == 0) {
        is_hit = cache_try_hit(c, j->mark, j->max_age_ms, &j->e);
        tg_cache_entry_deinit(&j->e);
    } else if (status == 0 && j->rc != TG_ENOTFOUND) {
        tg_log_debug("cache: lookup for request %s failed: %s", c->req->id, tg_strerror(j->rc));
    }
    free(j);
    if (!is_hit) {
        proxy_go_upstream(c);
    }
}

/*
 * The cache step: for a project whose settings enable the cache, looks the request up (unless
 * the client said no-cache, no-store, bypass or refresh) and answers a hit. Returns true when
 * the request was answered, or is waiting for an fs or db lookup on the thread pool (which
 * answers it or sends it upstream). On a miss it arms the store of the answer (unless no-store or
 * bypass) and marks the response "x-tollgate-cache: miss".
 */
bool
proxy_cache_lookup(struct call *c)
{
    const struct tg_cache_settings cs = c->project->cache;
    if (!cs.enabled ||
        (c->api != TG_API_CHAT && c->api != TG_API_COMPLETIONS && c->api != TG_API_EMBEDDINGS) ||
        c->n_pass >= MAX_PASS_HEADERS) {
        return false;
    }
    struct tg_cache_control cc;
    tg_cache_control_parse(tg_http_req_header(c->req, "cache-control"),
                           tg_http_req_header(c->req, "x-tollgate-cache"), &cc);
    /* The project's own partition unless the operator shares it (cache.shared_projects). */
    const char *partition =
        tg_config_cache_shared(c->state->config, c->project->name) ? "shared" : c->project->id;
    if (tg_cache_key(partition, tg_api_path(c->api), c->req->body.data, c->req->body.len,
                     c->cache_key) != 0) {
        return false;
    }
    struct tg_http_header *mark = &c->pass[c->n_pass++];
    mark->name = "x-tollgate-cache";
    mark->value = "miss";
    c->is_cache_checked = cc.lookup;
    c->is_cache_store = cc.store;
    c->cache_backend = cs.backend;
    c->cache_ttl_ms = cs.ttl_s * 1000;
    if (!cc.lookup) {
        return false;
    }
    if (cs.backend != TG_CACHE_MEMORY) {
        struct cache_job *j = cache_job_new(c);
        j->c = c;
        j->mark = mark;
        j->max_age_ms = cc.max_age_ms;
        if (uv_queue_work(&c->w->loop, &j->work, cache_get_work, cache_get_done) != 0) {
            free(j);
            return false;
        }
        return true; /* cache_get_done answers it or sends it upstream */
    }
    struct tg_cache_entry e;
    if (tg_cache_get(tg_cache_shared_memory(), c->cache_key, &e) != 0) {
        return false;
    }
    bool is_hit = cache_try_hit(c, mark, cc.max_age_ms, &e);
    tg_cache_entry_deinit(&e);
    return is_hit;
}
