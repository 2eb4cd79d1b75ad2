/*
 * proxy_mb.c: embedding micro-batching of the inference path (gateway/microbatch.h says how
 * requests merge and answers split; this file gathers the calls and answers them).
 */
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "core/log.h"
#include "core/mem.h"
#include "gateway/proxy_int.h"

/* ---- embedding micro-batching (gateway/microbatch.h) ------------------------------------- */

/*
 * A batch gathers, on one worker, embeddings calls of one project, route, provider and
 * request key (model and parameters but input and user) for window_ms or until max_inputs.
 * Its first call leads: it goes upstream with the merged body (retries and fallbacks
 * included), and when it finishes, its answer is split among the members (or its error given
 * to each). Every member stays in the worker's call list, so each is accounted on its own:
 * admission was per member, and each settles and gets a ledger row with its share.
 */
struct mb_timer {
    uv_timer_t t; /* first: the handle's address is the struct's */
    struct mb_batch *b;
};

struct mb_batch {
    struct mb_batch *next;
    struct tg_worker *w;
    const struct tg_project *project;
    const struct tg_model_route *route;
    const struct tg_provider *provider;
    const char *key; /* the first member's mbreq.key */
    struct call **members;
    size_t n;
    size_t cap;
    size_t n_inputs;
    size_t max_inputs;
    struct mb_timer *timer;
    struct tg_buf body; /* the merged request */
};

/* The batches still gathering on this thread (one worker loop per thread). */
static _Thread_local struct mb_batch *mb_pending;

static void
mb_timer_closed(uv_handle_t *h)
{
    free(h); /* the struct mb_timer */
}

static void
mb_free(struct mb_batch *b)
{
    tg_buf_deinit(&b->body);
    free(b->members);
    free(b);
}

/* Takes b off the pending list and stops its timer. */
static void
mb_unpend(struct mb_batch *b)
{
    for (struct mb_batch **p = &mb_pending; *p != NULL; p = &(*p)->next) {
        if (*p == b) {
            *p = b->next;
            break;
        }
    }
    b->next = NULL;
    if (b->timer != NULL) {
        uv_timer_stop(&b->timer->t);
        b->timer->b = NULL;
        uv_close((uv_handle_t *)&b->timer->t, mb_timer_closed);
        b->timer = NULL;
    }
}

/* The leader's upstream body: the merged request, its model as the leader's current body has
 * it (a retry on another deployment re-prepared that body). */
int
proxy_mb_body(struct call *c)
{
    struct mb_batch *b = c->mb;
    struct tg_mb_req head;
    int rc = tg_mb_req_parse(c->upstream_body, c->upstream_body_len, &head);
    if (rc < 0) {
        return rc;
    }
    const struct tg_mb_req **reqs = tg_xcalloc(b->n, sizeof(*reqs));
    reqs[0] = &head;
    for (size_t i = 1; i < b->n; i++) {
        reqs[i] = &b->members[i]->mbreq;
    }
    tg_buf_reset(&b->body);
    rc = tg_mb_merge(reqs, b->n, &b->body);
    free(reqs);
    tg_mb_req_deinit(&head);
    if (rc == 0) {
        c->upstream_body = b->body.data;
        c->upstream_body_len = b->body.len;
    }
    return rc;
}

static void
mb_flush(struct mb_batch *b)
{
    mb_unpend(b);
    struct call *lead = b->members[0];
    if (b->n == 1) {
        mb_free(b); /* nothing joined: the call goes as it came */
        proxy_go_route(lead);
        return;
    }
    for (size_t i = 0; i < b->n; i++) {
        /* A merged answer is not any one member's answer to cache. */
        b->members[i]->is_cache_store = false;
    }
    lead->mb = b;
    if (proxy_mb_body(lead) < 0) {
        proxy_set_error(lead, 500, "server_error", "The batched request could not be prepared.");
        lead->mode = RELAY_BUFFER;
        proxy_finish(lead);
        return;
    }
    tg_log_debug("microbatch: request %s leads %zu requests, %zu inputs", lead->req->id, b->n,
                 b->n_inputs);
    proxy_go_route(lead);
}

static void
mb_on_timer(uv_timer_t *t)
{
    struct mb_timer *mt = (struct mb_timer *)t;
    if (mt->b != NULL) {
        mb_flush(mt->b);
    }
}

static void
mb_add(struct mb_batch *b, struct call *c)
{
    if (b->n == b->cap) {
        b->cap = b->cap ? b->cap * 2 : 8;
        struct call **m = tg_xcalloc(b->cap, sizeof(*m));
        if (b->n > 0) {
            memcpy(m, b->members, b->n * sizeof(*m));
        }
        free(b->members);
        b->members = m;
    }
    b->members[b->n++] = c;
    b->n_inputs += c->mbreq.n_inputs;
}

/* Puts an embeddings call of a project with batching on into a batch. Returns false when the
 * call goes alone now (batching off, a request that cannot merge, as many inputs as a batch
 * holds). */
bool
proxy_mb_join(struct call *c)
{
    if (c->api != TG_API_EMBEDDINGS || c->is_stream) {
        return false;
    }
    const struct tg_mb_settings s = c->project->embedding_batching;
    if (!s.enabled || tg_mb_req_parse(c->upstream_body, c->upstream_body_len, &c->mbreq) != 0 ||
        c->mbreq.n_inputs >= (size_t)s.max_inputs) {
        return false;
    }
    struct mb_batch *b = mb_pending;
    for (; b != NULL; b = b->next) {
        if (b->w == c->w && b->project == c->project && b->route == c->route &&
            b->provider == c->provider && strcmp(b->key, c->mbreq.key) == 0) {
            break;
        }
    }
    if (b != NULL && b->n_inputs + c->mbreq.n_inputs > b->max_inputs) {
        mb_flush(b); /* full enough: it goes, and c starts the next one */
        b = NULL;
    }
    if (b == NULL) {
        b = tg_xcalloc(1, sizeof(*b));
        b->w = c->w;
        b->project = c->project;
        b->route = c->route;
        b->provider = c->provider;
        b->key = c->mbreq.key;
        b->max_inputs = (size_t)s.max_inputs;
        tg_buf_init(&b->body, 0);
        b->timer = tg_xcalloc(1, sizeof(*b->timer));
        b->timer->b = b;
        uv_timer_init(&c->w->loop, &b->timer->t);
        uv_timer_start(&b->timer->t, mb_on_timer, (uint64_t)s.window_ms, 0);
        b->next = mb_pending;
        mb_pending = b;
    }
    mb_add(b, c);
    if (b->n_inputs == b->max_inputs) {
        mb_flush(b);
    }
    return true;
}

/* The leader c finishes: each follower gets its part of c's answer (or c's error) and is
 * finished; c keeps its own part. */
void
proxy_mb_answer(struct call *c)
{
    struct mb_batch *b = c->mb;
    c->mb = NULL;
    size_t n = b->n;
    struct tg_buf *outs = tg_xcalloc(n, sizeof(*outs));
    int64_t *prompt = tg_xcalloc(n, sizeof(*prompt));
    const struct tg_mb_req **reqs = tg_xcalloc(n, sizeof(*reqs));
    for (size_t i = 0; i < n; i++) {
        tg_buf_init(&outs[i], c->state->config->max_response_bytes);
        reqs[i] = &b->members[i]->mbreq;
    }
    bool ok = c->mode == RELAY_BUFFER && c->client_status >= 200 && c->client_status < 300;
    int64_t total = 0;
    if (ok && tg_mb_split_answer(c->resp.data ? c->resp.data : "", c->resp.len, reqs, n, outs,
                                 prompt, &total) < 0) {
        proxy_set_error(c, 502, "server_error",
                        "The upstream answer to a batched embeddings request did not hold one "
                        "embedding per input.");
        ok = false;
    }
    if (!ok) {
        c->usage.is_known = false; /* no member is billed for an answer it did not get */
    }
    for (size_t i = 0; i < n; i++) {
        struct call *m = b->members[i];
        if (m != c) {
            m->provider = c->provider;
            m->upstream_model = c->upstream_model;
            m->price = c->price;
            m->route = c->route;
            m->dep = c->dep;
            m->attempt = c->attempt;
            m->upstream_status = c->upstream_status;
            m->first_byte_us = c->first_byte_us;
            m->mode = RELAY_BUFFER;
            m->client_status = c->client_status;
            copy_field(m->error, sizeof(m->error), c->error);
        }
        m->usage = c->usage;
        if (ok) {
            m->usage.prompt_tokens = prompt[i];
            tg_buf_reset(&m->resp);
            tg_buf_append(&m->resp, outs[i].data, outs[i].len);
        } else if (m != c) {
            tg_buf_reset(&m->resp);
            tg_buf_append(&m->resp, c->resp.data ? c->resp.data : "", c->resp.len);
        }
        tg_buf_deinit(&outs[i]);
    }
    for (size_t i = 0; i < n; i++) {
        if (b->members[i] != c) {
            proxy_finish(b->members[i]);
        }
    }
    free(outs);
    free(prompt);
    free(reqs);
    mb_free(b);
}

/* Shutdown: the batches still gathering on w answer 503 (each member accounted). */
void
proxy_mb_cancel_pending(struct tg_worker *w)
{
    struct mb_batch *next = NULL;
    for (struct mb_batch *b = mb_pending; b != NULL; b = next) {
        next = b->next;
        if (b->w != w) {
            continue;
        }
        mb_unpend(b);
        for (size_t i = 0; i < b->n; i++) {
            struct call *m = b->members[i];
            proxy_set_error(m, 503, "server_error", "The gateway is shutting down.");
            m->mode = RELAY_BUFFER;
            proxy_finish(m);
        }
        mb_free(b);
    }
}
