/*
 * worker.c: a worker thread's loop, its request router, and its orderly stop.
 *
 * Routing is a short table of path shapes; a path that matches with another method gets 405,
 * one that matches nothing gets OpenAI's 404 "Invalid URL (METHOD /path)".
 */
#include "gateway/worker.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "admin/admin.h"
#include "core/clock.h"
#include "core/crypto.h"
#include "core/err.h"
#include "core/log.h"
#include "core/mem.h"
#include "dashboard/dashboard.h"
#include "gateway/access_log.h"
#include "gateway/batch.h"
#include "gateway/metrics.h"
#include "gateway/proxy.h"
#include "monitor/feedback.h"
#include "policy/auth.h"

static atomic_bool is_ready = true;

bool
tg_gateway_is_ready(void)
{
    return atomic_load(&is_ready);
}

void
tg_gateway_set_ready(bool ready)
{
    atomic_store(&is_ready, ready);
}

struct tg_state *
tg_worker_state(struct tg_worker *w)
{
    if (w->state == NULL || w->state->generation != tg_state_generation()) {
        struct tg_state *s = tg_state_acquire();
        if (s != NULL) {
            tg_state_unref(w->state);
            w->state = s;
        }
    }
    return w->state;
}

/* ---- routing ----------------------------------------------------------------------------- */

enum route_kind {
    R_HEALTH,
    R_METRICS,
    R_READY,
    R_MODELS,
    R_MODEL,
    R_API,
    R_ADMIN,
    R_BATCH,
    R_FEEDBACK,
    R_DASHBOARD,
};

struct route {
    enum route_kind kind;
    enum tg_http_method method;
    const char *path; /* exact, or a prefix when it ends in '/' */
};

static const struct route routes[] = {
    {R_HEALTH, TG_HTTP_GET, "/healthz"},
    {R_METRICS, TG_HTTP_GET, "/metrics"},
    {R_READY, TG_HTTP_GET, "/readyz"},
    {R_MODELS, TG_HTTP_GET, "/v1/models"},
    {R_MODEL, TG_HTTP_GET, "/v1/models/"},
    {R_API, TG_HTTP_POST, "/v1/chat/completions"},
    {R_API, TG_HTTP_POST, "/v1/completions"},
    {R_API, TG_HTTP_POST, "/v1/embeddings"},
    {R_API, TG_HTTP_POST, "/v1/responses"},
    {R_API, TG_HTTP_POST, "/v1/moderations"},
    {R_ADMIN, TG_HTTP_OTHER, "/v1/organization/"},
    {R_BATCH, TG_HTTP_OTHER, "/v1/files"},
    {R_BATCH, TG_HTTP_OTHER, "/v1/files/"},
    {R_BATCH, TG_HTTP_OTHER, "/v1/batches"},
    {R_BATCH, TG_HTTP_OTHER, "/v1/batches/"},
    {R_FEEDBACK, TG_HTTP_POST, "/v1/feedback"},
    {R_DASHBOARD, TG_HTTP_GET, "/dashboard"},
    {R_DASHBOARD, TG_HTTP_GET, "/dashboard/"},
};

static bool
path_matches(const struct route *r, const char *path)
{
    size_t n = strlen(r->path);
    if (r->path[n - 1] == '/') {
        /* The dashboard's prefix is also its page ("/dashboard/" itself). */
        return strncmp(path, r->path, n) == 0 && (path[n] != '\0' || r->kind == R_DASHBOARD);
    }
    return strcmp(path, r->path) == 0;
}

static void
respond_json(struct tg_http_req *req, int status, const char *json)
{
    tg_http_respond(req, status, "application/json", NULL, 0, json, strlen(json));
}

/* Authenticates req; on failure answers 401 and returns NULL. */
static const struct tg_key_entry *
authenticate(struct tg_http_req *req, const struct tg_state *st)
{
    const struct tg_state_env *env = tg_state_env_get();
    const char *auth = tg_http_req_header(req, "authorization");
    const struct tg_key_entry *key = NULL;
    enum tg_auth_result r =
        tg_auth_bearer(st->keys, env->pepper, env->pepper_len, auth, tg_clock_unix_ms(), &key);
    if (r == TG_AUTH_OK) {
        return key;
    }
    char msg[320];
    tg_auth_message(r, auth, msg, sizeof(msg));
    tg_http_respond_error(req, 401, msg, "invalid_request_error", NULL,
                          r == TG_AUTH_MISSING ? NULL : "invalid_api_key");
    return NULL;
}

static void
forbid(struct tg_http_req *req, const char *message)
{
    tg_http_respond_error(req, 403, message, "invalid_request_error", NULL, "missing_scope");
}

/* Inference routes: a project key whose project is active and matches OpenAI-Project. */
static const struct tg_project *
project_for(struct tg_http_req *req, const struct tg_state *st, const struct tg_key_entry *key)
{
    if (key->kind != TG_KEY_PROJECT) {
        forbid(req, "Admin keys cannot make API requests; use a project key.");
        return NULL;
    }
    const struct tg_project *p = tg_state_project(st, key->project_id);
    if (p == NULL || p->is_archived) {
        forbid(req, "The project of this API key is archived or does not exist.");
        return NULL;
    }
    const char *want = tg_http_req_header(req, "openai-project");
    if (want != NULL && strcmp(want, p->id) != 0 && strcmp(want, p->name) != 0) {
        tg_http_respond_error(req, 401,
                              "The OpenAI-Project header does not match the project of this "
                              "API key.",
                              "invalid_request_error", NULL, "mismatched_project");
        return NULL;
    }
    return p;
}

#define TEST_CLOCK_PATH "/v1/organization/_test/clock"

/*
 * Tests only (docs/internals.md): POST /v1/organization/_test/clock {"now_ms": N} moves the
 * Unix clock every thread reads to N ({"now_ms": null} puts it back), so end-to-end tests can
 * cross a month boundary. The route exists only when TOLLGATE_TEST_CLOCK=1; an owner key is
 * required like any billing change.
 */
static void
test_clock(struct tg_http_req *req, const struct tg_key_entry *key)
{
    if (req->method != TG_HTTP_POST) {
        tg_http_respond_error(req, 405, "Use POST " TEST_CLOCK_PATH ".", "invalid_request_error",
                              NULL, NULL);
        return;
    }
    if (key->role == NULL || strcmp(key->role, "owner") != 0) {
        forbid(req, "Only organization owners can move the test clock.");
        return;
    }
    json_t *body = json_loadb(req->body.data, req->body.len, 0, NULL);
    json_t *now = json_object_get(body, "now_ms");
    int64_t real_now = tg_clock_unix_ms() - tg_clock_test_offset_ms();
    if (json_is_integer(now) && json_integer_value(now) > 0) {
        tg_clock_set_test_offset_ms(json_integer_value(now) - real_now);
    } else if (json_is_null(now)) {
        tg_clock_set_test_offset_ms(0);
    } else {
        json_decref(body);
        tg_http_respond_error(req, 400, "Expected {\"now_ms\": a positive integer or null}.",
                              "invalid_request_error", "now_ms", NULL);
        return;
    }
    json_decref(body);
    char out[160];
    snprintf(out, sizeof(out), "{\"object\":\"test_clock\",\"now_ms\":%lld,\"offset_ms\":%lld}",
             (long long)tg_clock_unix_ms(), (long long)tg_clock_test_offset_ms());
    tg_log_warn("test clock moved: offset %lld ms", (long long)tg_clock_test_offset_ms());
    respond_json(req, 200, out);
}

/* ---- GET /metrics -------------------------------------------------------------------------- */

/* Scrapes being formatted at once, process-wide. Each holds a copy of the series table and
 * its text, so past the bound a scrape is refused (503) rather than growing memory. */
#define MAX_SCRAPES 4
static atomic_int n_scrapes;

struct scrape_job {
    uv_work_t work;
    struct tg_http_req *req;
    struct tg_state *st; /* a reference: the gauges borrow its strings */
    struct tg_metrics_gauges g;
    struct tg_buf out;
};

/* True when req carries metrics.bearer_token (or none is set); else answers 401. The token
 * and the credential are compared as SHA-256 digests: constant time whatever the lengths. */
static bool
scrape_allowed(struct tg_http_req *req, const struct tg_state *st)
{
    const char *want = st != NULL ? st->config->metrics_token : NULL;
    if (want == NULL) {
        return true;
    }
    const char *auth = tg_http_req_header(req, "authorization");
    unsigned char a[TG_SHA256_BYTES], b[TG_SHA256_BYTES];
    bool is_bearer = auth != NULL && strncasecmp(auth, "Bearer ", 7) == 0;
    tg_sha256(is_bearer ? auth + 7 : "", is_bearer ? strlen(auth + 7) : 0, a);
    tg_sha256(want, strlen(want), b);
    if (is_bearer && tg_mem_equal_ct(a, b, sizeof(a))) {
        return true;
    }
    tg_http_respond_error(req, 401,
                          auth == NULL ? "This endpoint needs the metrics token: send it as "
                                         "Authorization: Bearer <token> (metrics.bearer_token)."
                                       : "The metrics token is not correct (metrics.bearer_token).",
                          "invalid_request_error", NULL, auth == NULL ? NULL : "invalid_api_key");
    return false;
}

/* On the thread pool: the text is formatted off the loop, so a large exposition never holds
 * up this worker's requests. */
static void
scrape_work(uv_work_t *wk)
{
    struct scrape_job *j = wk->data;
    tg_metrics_render(&j->out, &j->g);
}

static void
scrape_done(uv_work_t *wk, int status)
{
    struct scrape_job *j = wk->data;
    if (status != 0 || j->out.len == 0) {
        tg_http_respond_error(j->req, 500, "The metrics could not be formatted.", "server_error",
                              NULL, NULL);
    } else {
        tg_http_respond(j->req, 200, "text/plain; version=0.0.4; charset=utf-8", NULL, 0,
                        j->out.data, j->out.len);
    }
    tg_buf_deinit(&j->out);
    tg_metrics_gauges_deinit(&j->g);
    tg_state_unref(j->st);
    free(j);
    atomic_fetch_sub(&n_scrapes, 1);
}

/* GET /metrics: ids and counts, never keys or text. The gauges are sampled here (each value
 * copied out under its owner's lock), the text formatted on the thread pool. */
static void
scrape(struct tg_worker *w, struct tg_http_req *req)
{
    struct tg_state *st = tg_worker_state(w);
    if (!scrape_allowed(req, st)) {
        return;
    }
    if (atomic_fetch_add(&n_scrapes, 1) >= MAX_SCRAPES) {
        atomic_fetch_sub(&n_scrapes, 1);
        tg_http_respond_error(req, 503,
                              "Too many metrics scrapes are being formatted at once; retry "
                              "shortly.",
                              "server_error", NULL, NULL);
        return;
    }
    struct scrape_job *j = tg_xcalloc(1, sizeof(*j));
    j->req = req;
    tg_buf_init(&j->out, 0);
    j->g.open_connections = tg_metrics_connections();
    j->g.ledger_depth = w->ledger ? (int64_t)tg_ledger_depth(w->ledger) : -1;
    j->g.access_log_dropped = (int64_t)tg_access_log_dropped();
    if (st != NULL) {
        atomic_fetch_add(&st->refs, 1);
        j->st = st;
        tg_metrics_gauges_sample(&j->g, st, tg_state_env_get()->admission, tg_clock_unix_ms(),
                                 tg_clock_mono_ms());
    }
    j->work.data = j;
    if (uv_queue_work(&w->loop, &j->work, scrape_work, scrape_done) != 0) {
        scrape_done(&j->work, UV_ECANCELED);
    }
}

static void
dispatch(struct tg_worker *w, struct tg_http_req *req, const struct route *r)
{
    tg_metrics_set_connections(w->index, tg_http_server_connections(w->http));
    if (r->kind == R_METRICS) {
        scrape(w, req);
        return;
    }
    if (r->kind == R_DASHBOARD) {
        /* Static page and assets: the page signs in with an admin key it keeps itself. */
        tg_dashboard_serve(req);
        return;
    }
    if (r->kind == R_HEALTH) {
        respond_json(req, 200, "{\"status\":\"ok\"}");
        return;
    }
    if (r->kind == R_READY) {
        bool ready = tg_gateway_is_ready() && !w->is_stopping;
        respond_json(req, ready ? 200 : 503,
                     ready ? "{\"status\":\"ready\"}" : "{\"status\":\"shutting down\"}");
        return;
    }
    struct tg_state *st = tg_worker_state(w);
    if (r->kind == R_ADMIN && tg_admin_is_public(req)) {
        /* Invite acceptance: the invitee has no key yet; the one-time token is the proof. */
        tg_admin_handle_public(req, &w->loop, st);
        return;
    }
    const struct tg_key_entry *key = authenticate(req, st);
    if (key == NULL) {
        return;
    }
    if (r->kind == R_ADMIN) {
        if (key->kind != TG_KEY_ADMIN) {
            forbid(req, "This endpoint requires an admin key; project keys cannot use the "
                        "admin API.");
            return;
        }
        if (strcmp(req->path, TEST_CLOCK_PATH) == 0 && tg_clock_test_enabled()) {
            test_clock(req, key);
            return;
        }
        tg_admin_handle(req, &w->loop, st, key);
        return;
    }
    const struct tg_project *p = project_for(req, st, key);
    if (p == NULL) {
        return;
    }
    if (r->kind == R_MODELS || r->kind == R_MODEL) {
        tg_proxy_models(req, st, p, r->kind == R_MODEL ? req->path + strlen(r->path) : NULL);
        return;
    }
    if (r->kind == R_FEEDBACK) {
        tg_feedback_handle(w, req, st, key, p);
        return;
    }
    if (r->kind == R_BATCH) {
        tg_batch_handle(w, req, st, key, p);
        return;
    }
    enum tg_api api;
    tg_api_from_path(req->path, &api);
    tg_proxy_handle(w, req, api, st, key, p);
}

static void
on_request(struct tg_http_req *req, void *ctx)
{
    struct tg_worker *w = ctx;
    bool path_known = false;
    for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
        const struct route *r = &routes[i];
        if (!path_matches(r, req->path)) {
            continue;
        }
        path_known = true;
        if (r->method == TG_HTTP_OTHER || r->method == req->method ||
            (r->method == TG_HTTP_GET && req->method == TG_HTTP_HEAD)) {
            dispatch(w, req, r);
            return;
        }
    }
    char msg[300];
    snprintf(msg, sizeof(msg), "Invalid URL (%s %.200s)", req->method_name, req->path);
    tg_http_respond_error(req, path_known ? 405 : 404, msg, "invalid_request_error", NULL, NULL);
}

/* ---- lifecycle --------------------------------------------------------------------------- */

static void
close_walk(uv_handle_t *h, void *arg)
{
    if (!uv_is_closing(h)) {
        uv_close(h, NULL);
    }
}

static void
on_http_closed(struct tg_http_server *s, void *arg)
{
    struct tg_worker *w = arg;
    tg_upstream_client_free(w->upstream);
    w->upstream = NULL;
    uv_close((uv_handle_t *)&w->wake, NULL);
    uv_close((uv_handle_t *)&w->grace, NULL);
}

static void
maybe_finish_stop(struct tg_worker *w)
{
    if (w->http != NULL && tg_http_server_requests_in_flight(w->http) == 0 && w->calls == NULL) {
        struct tg_http_server *s = w->http;
        w->http = NULL;
        uv_timer_stop(&w->grace);
        tg_http_server_free(s, on_http_closed, w);
    }
}

/* Runs every 20 ms while stopping: ends the worker once nothing is in flight, and cancels
 * what is left when the grace period is over (each cancelled call is still accounted). */
static void
on_grace(uv_timer_t *t)
{
    struct tg_worker *w = t->data;
    if (w->http == NULL) {
        return;
    }
    uint64_t grace = tg_state_env_get()->config->shutdown_grace_ms;
    if (!w->is_cancelled && uv_now(&w->loop) - w->stop_ms >= grace) {
        w->is_cancelled = true;
        tg_log_warn("worker %d: grace period over, cancelling in-flight calls", w->index);
        tg_proxy_cancel_all(w);
    }
    maybe_finish_stop(w);
}

static void
on_wake(uv_async_t *a)
{
    struct tg_worker *w = a->data;
    if (!atomic_load(&w->stop_requested) || w->is_stopping || w->http == NULL) {
        return;
    }
    w->is_stopping = true;
    w->stop_ms = uv_now(&w->loop);
    tg_http_server_stop(w->http);
    uv_timer_start(&w->grace, on_grace, 0, 20);
}

static void
worker_main(void *arg)
{
    struct tg_worker *w = arg;
    const struct tg_config *cfg = tg_state_env_get()->config;
    w->grace.data = w;
    int rc = tg_upstream_client_new(&w->loop, &w->upstream);
    if (rc == 0) {
        rc = tg_http_server_new(&w->loop, cfg->listen_host, cfg->listen_port, &cfg->http,
                                on_request, w, &w->http);
    }
    w->start_rc = rc;
    uv_sem_post(&w->started);
    if (rc < 0) {
        if (w->upstream != NULL) {
            tg_upstream_client_free(w->upstream);
        }
        uv_close((uv_handle_t *)&w->wake, NULL);
        uv_close((uv_handle_t *)&w->grace, NULL);
        uv_run(&w->loop, UV_RUN_DEFAULT);
        return;
    }
    uv_run(&w->loop, UV_RUN_DEFAULT);
    uv_walk(&w->loop, close_walk, NULL);
    uv_run(&w->loop, UV_RUN_DEFAULT);
    tg_state_unref(w->state);
    w->state = NULL;
}

int
tg_worker_start(struct tg_worker *w, int index, struct tg_ledger *ledger)
{
    memset(w, 0, sizeof(*w));
    w->index = index;
    w->ledger = ledger;
    atomic_init(&w->stop_requested, false);
    uv_loop_init(&w->loop);
    uv_async_init(&w->loop, &w->wake, on_wake);
    w->wake.data = w;
    uv_timer_init(&w->loop, &w->grace);
    uv_sem_init(&w->started, 0);
    if (uv_thread_create(&w->thread, worker_main, w) != 0) {
        return TG_EIO;
    }
    uv_sem_wait(&w->started);
    uv_sem_destroy(&w->started);
    return w->start_rc;
}

void
tg_worker_request_stop(struct tg_worker *w)
{
    atomic_store(&w->stop_requested, true);
    uv_async_send(&w->wake);
}

void
tg_worker_join(struct tg_worker *w)
{
    uv_thread_join(&w->thread);
    uv_loop_close(&w->loop);
}
